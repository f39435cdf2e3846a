//! Call arguments of a given encoded size.
//!
//! "64 B" and "64 KiB" are MessagePack strings of ASCII `x`: a string is
//! what a Neorg module typically gets (buffer text), and the Lua bench sends
//! the same values, so every front end moves the same bytes.

/// Characters of the string whose MessagePack encoding is 64 bytes long
/// (str8: two header bytes).
pub const SMALL_CHARS: usize = 62;
/// Characters of the large string (str32: five header bytes).
pub const LARGE_CHARS: usize = 64 * 1024;

/// MessagePack encoding of a string of `chars` ASCII `x`.
pub fn string_of(chars: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(chars + 5);
    match chars {
        0..=31 => out.push(0xa0 | chars as u8),
        32..=0xff => out.extend_from_slice(&[0xd9, chars as u8]),
        0x100..=0xffff => {
            out.push(0xda);
            out.extend_from_slice(&(chars as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdb);
            out.extend_from_slice(&(chars as u32).to_be_bytes());
        }
    }
    out.resize(out.len() + chars, b'x');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_have_the_advertised_size_and_decode() {
        let small = string_of(SMALL_CHARS);
        assert_eq!(small.len(), 64);
        let text: String = norgopolis_proto::msgpack::decode(&small).unwrap();
        assert_eq!(text.len(), SMALL_CHARS);
        for chars in [0, 5, 31, 32, 255, 256, 65535, LARGE_CHARS] {
            let bytes = string_of(chars);
            let text: String = norgopolis_proto::msgpack::decode(&bytes).unwrap();
            assert_eq!(text.len(), chars, "{chars}");
            assert_eq!(norgopolis_proto::msgpack::encode(&text).unwrap(), bytes);
        }
    }
}
