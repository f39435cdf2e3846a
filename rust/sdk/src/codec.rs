//! MessagePack for arguments and results, through serde like the rest of
//! norgopolis (structs as maps), plus a readable name for an argument type
//! to put in "expects …" messages.

use serde::{de::DeserializeOwned, Serialize};

/// Decodes call arguments; absent or empty arguments read as nil. The
/// error says what was received (the decoder alone only names markers).
pub(crate) fn decode<A: DeserializeOwned>(bytes: &[u8]) -> Result<A, String> {
    norgopolis_proto::msgpack::decode(bytes).map_err(|e| {
        let detail = match e {
            norgopolis_proto::msgpack::MsgpackError::Decode(e) => e.to_string(),
            other => other.to_string(),
        };
        format!("got {} ({detail})", describe(bytes))
    })
}

/// Longest preview of a received value in an error message, in chars.
const PREVIEW_CHARS: usize = 60;

/// "string \"many\"", "map {x: 1}", "nil": kind and a short preview.
fn describe(bytes: &[u8]) -> String {
    use rmpv::Value as V;
    let value = match norgopolis_proto::msgpack::decode_value(bytes) {
        Ok(value) => value,
        Err(_) => return "bytes that are not MessagePack".into(),
    };
    let kind = match &value {
        V::Nil => return "nil".into(),
        V::Boolean(_) => "boolean",
        V::Integer(_) => "integer",
        V::F32(_) | V::F64(_) => "float",
        V::String(_) => "string",
        V::Binary(_) => "binary",
        V::Array(_) => "array",
        V::Map(_) => "map",
        V::Ext(..) => "extension",
    };
    let preview = value.to_string();
    let mut short: String = preview.chars().take(PREVIEW_CHARS).collect();
    if short.len() < preview.len() {
        short.push('…');
    }
    format!("{kind} {short}")
}

/// Encodes one result item.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    norgopolis_proto::msgpack::encode(value).map_err(|e| e.to_string())
}

/// Describes `A` for callers: the Rust type name without module paths
/// (`Option<String>`, `CountArgs`), with the dynamic cases spelled out.
pub(crate) fn shape_of<A>() -> String {
    let full = std::any::type_name::<A>();
    let short = strip_paths(full);
    match short.as_str() {
        "Value" => "any value".into(),
        "()" => "no arguments (nil)".into(),
        _ => short,
    }
}

/// `core::option::Option<alloc::string::String>` -> `Option<String>`.
fn strip_paths(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut segment = String::new();
    for c in name.chars() {
        // Braces belong to paths too: `f::{{closure}}::Local`.
        if c.is_alphanumeric() || matches!(c, '_' | ':' | '{' | '}') {
            segment.push(c);
        } else {
            out.push_str(last_segment(&segment));
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(last_segment(&segment));
    out
}

fn last_segment(path: &str) -> &str {
    path.rsplit("::").next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    #[test]
    fn shapes_are_short() {
        assert_eq!(shape_of::<u64>(), "u64");
        assert_eq!(shape_of::<Option<String>>(), "Option<String>");
        assert_eq!(
            shape_of::<std::collections::HashMap<String, Vec<i32>>>(),
            "HashMap<String, Vec<i32>>"
        );
        assert_eq!(shape_of::<Value>(), "any value");
        struct Local;
        assert_eq!(shape_of::<Local>(), "Local");
        assert_eq!(shape_of::<()>(), "no arguments (nil)");
    }

    #[test]
    fn empty_args_are_nil() {
        assert_eq!(decode::<Value>(&[]).unwrap(), Value::Nil);
        assert_eq!(decode::<Option<u8>>(&[]).unwrap(), None);
        assert_eq!(decode::<()>(&[]).unwrap(), ());
    }

    /// Echo relies on dynamic values surviving decode + encode unchanged,
    /// including the kinds serde has no native notion of.
    #[test]
    fn dynamic_values_round_trip_exactly() {
        let value = Value::Map(vec![
            (Value::from("nil"), Value::Nil),
            (Value::from("bin"), Value::Binary(vec![0, 159, 255])),
            (Value::from("f32"), Value::F32(1.5)),
            (Value::from("f64"), Value::F64(-0.25)),
            (Value::from("neg"), Value::from(i64::MIN)),
            (Value::from("big"), Value::from(u64::MAX)),
            (Value::from("ext"), Value::Ext(7, vec![1, 2, 3])),
            (
                Value::from(1),
                Value::Array(vec![Value::from(true), Value::Map(vec![])]),
            ),
        ]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &value).unwrap();
        let decoded: Value = decode(&bytes).unwrap();
        assert_eq!(decoded, value);
        let encoded = encode(&decoded).unwrap();
        assert_eq!(encoded, bytes);
    }

    #[test]
    fn decode_errors_name_the_problem() {
        let bytes = encode("text").unwrap();
        let err = decode::<u64>(&bytes).unwrap_err();
        assert!(err.starts_with("got string \"text\" ("), "{err}");
        let long = encode(&"x".repeat(500)).unwrap();
        let err = decode::<u64>(&long).unwrap_err();
        assert!(err.len() < 200 && err.contains('…'), "{err}");
        assert!(decode::<u64>(&[]).unwrap_err().starts_with("got nil ("));
        assert!(decode::<u64>(&[0xc1])
            .unwrap_err()
            .starts_with("got bytes that are not"));
    }
}
