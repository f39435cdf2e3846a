//! JSON <-> MessagePack for the command line.
//!
//! JSON in: integers stay integers (i64, or u64 above `i64::MAX`), other
//! numbers become 64-bit floats, objects become maps with string keys.
//!
//! MessagePack out, where JSON has no exact counterpart:
//! - binary (and strings that are not valid UTF-8): a string if the bytes
//!   are valid UTF-8, otherwise an array of byte values (0–255);
//! - map keys that are not strings: integers, floats, booleans and nil as
//!   their JSON text (`1`, `2.5`, `true`, `null`), anything else as the
//!   compact JSON of the converted key; if two keys end up equal the later
//!   one wins;
//! - NaN and infinities (not representable in JSON): `null`;
//! - extension values: `{"ext": <type>, "data": [<bytes>]}`.

use rmpv::Value as Mp;
use serde_json::{Map, Number, Value as Json};

/// Converts a JSON value into a MessagePack value.
pub fn json_to_msgpack(v: &Json) -> Mp {
    match v {
        Json::Null => Mp::Nil,
        Json::Bool(b) => Mp::Boolean(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Mp::from(i)
            } else if let Some(u) = n.as_u64() {
                Mp::from(u)
            } else {
                Mp::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Mp::from(s.as_str()),
        Json::Array(a) => Mp::Array(a.iter().map(json_to_msgpack).collect()),
        Json::Object(o) => Mp::Map(
            o.iter()
                .map(|(k, v)| (Mp::from(k.as_str()), json_to_msgpack(v)))
                .collect(),
        ),
    }
}

/// Converts a MessagePack value into JSON (see the module docs for the
/// cases JSON cannot hold exactly).
pub fn msgpack_to_json(v: &Mp) -> Json {
    match v {
        Mp::Nil => Json::Null,
        Mp::Boolean(b) => Json::Bool(*b),
        Mp::Integer(i) => {
            if let Some(n) = i.as_i64() {
                Json::from(n)
            } else if let Some(n) = i.as_u64() {
                Json::from(n)
            } else {
                Json::Null
            }
        }
        // Through the f32's own shortest text, so 0.1f32 prints as 0.1.
        Mp::F32(f) => float(format!("{f}").parse().unwrap_or(f64::NAN)),
        Mp::F64(f) => float(*f),
        Mp::String(s) => match s.as_str() {
            Some(s) => Json::from(s),
            None => bytes(s.as_bytes()),
        },
        Mp::Binary(b) => bytes(b),
        Mp::Array(a) => Json::Array(a.iter().map(msgpack_to_json).collect()),
        Mp::Map(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                out.insert(key_text(k), msgpack_to_json(v));
            }
            Json::Object(out)
        }
        Mp::Ext(ty, data) => {
            let mut out = Map::new();
            out.insert("ext".into(), Json::from(*ty));
            out.insert("data".into(), byte_array(data));
            Json::Object(out)
        }
    }
}

fn float(f: f64) -> Json {
    Number::from_f64(f).map(Json::Number).unwrap_or(Json::Null)
}

fn bytes(b: &[u8]) -> Json {
    match std::str::from_utf8(b) {
        Ok(s) => Json::from(s),
        Err(_) => byte_array(b),
    }
}

fn byte_array(b: &[u8]) -> Json {
    Json::Array(b.iter().map(|&x| Json::from(x)).collect())
}

fn key_text(k: &Mp) -> String {
    match msgpack_to_json(k) {
        Json::String(s) => s,
        other => other.to_string(),
    }
}

/// Encodes a MessagePack value to bytes.
pub fn encode(v: &Mp) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, v);
    out
}

/// Decodes MessagePack bytes (empty = nil) into a value.
pub fn decode(mut bytes: &[u8]) -> Result<Mp, rmpv::decode::Error> {
    if bytes.is_empty() {
        return Ok(Mp::Nil);
    }
    rmpv::decode::read_value(&mut bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roundtrip(j: Json) -> Json {
        let bytes = encode(&json_to_msgpack(&j));
        msgpack_to_json(&decode(&bytes).unwrap())
    }

    #[test]
    fn json_survives_a_roundtrip() {
        let j = json!({
            "s": "héllo", "i": -3, "u": u64::MAX, "f": 1.5, "one": 1.0,
            "n": null, "b": true, "a": [1, [2, {"x": []}]], "o": {}
        });
        assert_eq!(roundtrip(j.clone()), j);
    }

    #[test]
    fn integers_stay_integers_and_floats_stay_floats() {
        assert!(json_to_msgpack(&json!(7)).is_i64());
        assert!(json_to_msgpack(&json!(-7)).is_i64());
        assert!(json_to_msgpack(&json!(u64::MAX)).is_u64());
        assert!(json_to_msgpack(&json!(7.0)).is_f64());
        assert_eq!(roundtrip(json!(7.0)).to_string(), "7.0");
        assert_eq!(roundtrip(json!(7)).to_string(), "7");
    }

    #[test]
    fn binary_is_a_string_when_utf8_else_bytes() {
        assert_eq!(msgpack_to_json(&Mp::Binary(b"abc".to_vec())), json!("abc"));
        assert_eq!(
            msgpack_to_json(&Mp::Binary(vec![0xff, 0, 7])),
            json!([255, 0, 7])
        );
        let bad_str = decode(&[0xa2, 0xc3, 0x28]).unwrap();
        assert_eq!(msgpack_to_json(&bad_str), json!([0xc3, 0x28]));
    }

    #[test]
    fn non_string_keys_are_stringified() {
        let m = Mp::Map(vec![
            (Mp::from(1), Mp::from("int")),
            (Mp::Boolean(true), Mp::from("bool")),
            (Mp::Nil, Mp::from("nil")),
            (Mp::F64(2.5), Mp::from("float")),
            (
                Mp::Array(vec![Mp::from(1), Mp::from("x")]),
                Mp::from("array"),
            ),
            (Mp::Binary(b"k".to_vec()), Mp::from("bin")),
        ]);
        assert_eq!(
            msgpack_to_json(&m),
            json!({"1": "int", "true": "bool", "null": "nil", "2.5": "float",
                   "[1,\"x\"]": "array", "k": "bin"})
        );
    }

    #[test]
    fn special_values() {
        assert_eq!(msgpack_to_json(&Mp::F64(f64::NAN)), Json::Null);
        assert_eq!(msgpack_to_json(&Mp::F32(0.1)).to_string(), "0.1");
        assert_eq!(
            msgpack_to_json(&Mp::Ext(5, vec![1, 2])),
            json!({"ext": 5, "data": [1, 2]})
        );
        assert_eq!(decode(&[]).unwrap(), Mp::Nil);
    }
}
