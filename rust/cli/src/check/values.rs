//! MessagePack values the checker sends through `echo`, and how it
//! compares what comes back (maps in any order).

use rmpv::Value;

/// One named sample per MessagePack type and edge.
pub fn samples() -> Vec<(&'static str, Value)> {
    let map = |pairs: Vec<(Value, Value)>| Value::Map(pairs);
    vec![
        ("nil", Value::Nil),
        ("true", Value::Boolean(true)),
        ("false", Value::Boolean(false)),
        ("positive fixint", Value::from(7)),
        ("negative fixint", Value::from(-5)),
        (
            "uint8/16/32",
            Value::Array(vec![200.into(), 60_000.into(), 4_000_000_000u64.into()]),
        ),
        (
            "int8/16/32",
            Value::Array(vec![
                (-100).into(),
                (-30_000).into(),
                (-2_000_000_000i64).into(),
            ]),
        ),
        ("uint64 max", Value::from(u64::MAX)),
        ("int64 min", Value::from(i64::MIN)),
        ("2^53 + 1", Value::from((1u64 << 53) + 1)),
        (
            "float64",
            Value::Array(vec![1.5.into(), (-0.25).into(), 1e300.into()]),
        ),
        ("empty string", Value::from("")),
        ("UTF-8 string", Value::from("héllo, wörld ✓ 🦀")),
        ("string over 255 bytes", Value::from("x".repeat(70_000))),
        ("binary", Value::Binary(vec![0, 0xff, 0xfe, 1, 0x80, 0])),
        ("empty array", Value::Array(vec![])),
        (
            "array with nil inside",
            Value::Array(vec![1.into(), Value::Nil, "a".into(), true.into()]),
        ),
        ("empty map", map(vec![])),
        (
            "map",
            map(vec![
                ("a".into(), 1.into()),
                ("b".into(), Value::Array(vec![1.into(), 2.into()])),
            ]),
        ),
        (
            "map with integer keys",
            map(vec![(1.into(), "one".into()), (2.into(), "two".into())]),
        ),
        ("map with a nil value", map(vec![("k".into(), Value::Nil)])),
        ("extension", Value::Ext(5, vec![1, 2, 3])),
        ("fixed extension", Value::Ext(-3, vec![9; 4])),
        (
            "nested",
            map(vec![(
                "list".into(),
                Value::Array(vec![map(vec![(
                    "deep".into(),
                    Value::Array(vec![Value::Ext(1, vec![7; 8]), Value::Binary(vec![0xff])]),
                )])]),
            )]),
        ),
    ]
}

/// Encodes `value`.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, value);
    out
}

/// Decodes one value, or says why not.
pub fn decode(bytes: &[u8]) -> Result<Value, String> {
    let mut reader = bytes;
    let value = rmpv::decode::read_value(&mut reader).map_err(|e| e.to_string())?;
    if !reader.is_empty() {
        return Err(format!("{} bytes after the value", reader.len()));
    }
    Ok(value)
}

/// Equal as values: maps with the same pairs in any order.
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.iter().any(|(k2, v2)| same(k, k2) && same(v, v2)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

/// A short picture of a value for the table.
pub fn preview(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}
