//! Lua values <-> MessagePack values (`rmpv::Value`).
//!
//! The mapping is documented for users in `lua/norgopolis/init.lua`; the
//! rules here must stay in step with it. Everything that cannot be sent
//! faithfully is refused with an error naming where in the value it sits,
//! never silently dropped or rounded.

use mlua::{Lua, Table, Value};
use rmpv::Value as Mp;

/// Deepest table nesting accepted either way; deeper usually means a table
/// that contains itself.
pub const MAX_DEPTH: usize = 100;

/// Largest magnitude at which every integer is exactly a Lua number
/// (LuaJIT numbers are doubles).
const EXACT_INT: i64 = 1 << 53;

/// A Lua value could not be sent as MessagePack.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// A table's keys are all integers but not exactly `1..n`.
    #[error("{path} is a sparse array (integer keys that are not 1..n: {count} keys, largest {max}); fill holes with vim.NIL")]
    Sparse {
        /// Where the table sits in the value.
        path: String,
        /// How many keys it has.
        count: usize,
        /// Its largest integer key.
        max: f64,
    },
    /// A table mixes integer and string keys.
    #[error(
        "{path} mixes array items (integer keys) with string keys; send either a list or a map"
    )]
    Mixed {
        /// Where the table sits in the value.
        path: String,
    },
    /// A table key of a type MessagePack maps cannot carry for us.
    #[error("{path} has a {kind} key; only string keys (maps) or 1..n (lists) can be sent")]
    BadKey {
        /// Where the table sits in the value.
        path: String,
        /// Lua type of the key.
        kind: String,
    },
    /// A function, userdata, thread or other host object.
    #[error("cannot send a {kind} ({path}); only nil, booleans, numbers, strings and tables can be sent")]
    Unsupported {
        /// Where the value sits.
        path: String,
        /// Its Lua type.
        kind: String,
    },
    /// Nested too deeply.
    #[error("{path} is nested more than {MAX_DEPTH} tables deep (does a table contain itself?)")]
    TooDeep {
        /// Where the limit was hit.
        path: String,
    },
    /// The Lua API itself failed (out of memory, ...).
    #[error("{0}")]
    Lua(#[from] mlua::Error),
}

/// A MessagePack value could not become a Lua value.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not MessagePack.
    #[error("invalid MessagePack: {0}")]
    Invalid(String),
    /// An extension type has no Lua equivalent.
    #[error("MessagePack extension type {0} has no Lua equivalent")]
    Ext(i8),
    /// A map key Lua tables cannot hold (nil or NaN).
    #[error("a map has a {0} key, which a Lua table cannot hold")]
    BadKey(&'static str),
    /// Nested too deeply.
    #[error("value is nested more than {MAX_DEPTH} levels deep")]
    TooDeep,
    /// The Lua API itself failed.
    #[error("{0}")]
    Lua(#[from] mlua::Error),
}

/// Reads `t[key]` keeping numbers exact. mlua's generic conversion turns a
/// number within `f64::EPSILON` of an integer into that integer, so `-0.0`
/// or `1e-20` would arrive as the integer 0; only 0 is affected (for larger
/// magnitudes a fraction is at least one epsilon), so a 0 is read again as
/// a double.
pub fn exact_get(t: &Table, key: Value) -> mlua::Result<Value> {
    match t.raw_get::<Value>(key.clone())? {
        Value::Integer(0) => Ok(Value::Number(t.raw_get::<f64>(key)?)),
        v => Ok(v),
    }
}

/// Host values the mapping needs: `vim.NIL`, the `vim.empty_dict()`
/// metatable, and helpers for LuaJIT 64-bit integers.
pub struct Codec {
    lua: Lua,
    nil: Option<Value>,
    empty_dict_mt: Option<mlua::Table>,
    empty_dict: Option<mlua::Function>,
    make_int64: mlua::Function,
    tostring: mlua::Function,
}

/// Builds `int64_t`/`uint64_t` cdata from two 32-bit halves, so integers
/// beyond 2^53 reach Lua exactly.
const MAKE_INT64: &str = r#"
local ffi = require("ffi")
return function(hi, lo, unsigned)
  if unsigned then
    return ffi.cast("uint64_t", hi) * 4294967296ULL + lo
  end
  return ffi.cast("int64_t", hi) * 4294967296LL + lo
end
"#;

impl Codec {
    /// Looks the host values up once; outside Neovim (no `vim` global) nested
    /// nils stay plain nils and empty maps become `{}`.
    pub fn new(lua: &Lua) -> mlua::Result<Self> {
        let vim: Option<mlua::Table> = lua.globals().get("vim")?;
        let (nil, empty_dict_mt, empty_dict) = match vim {
            Some(vim) => (
                Some(vim.get::<Value>("NIL")?).filter(|v| !v.is_nil()),
                vim.get::<Option<mlua::Table>>("_empty_dict_mt")?,
                vim.get::<Option<mlua::Function>>("empty_dict")?,
            ),
            None => (None, None, None),
        };
        Ok(Codec {
            lua: lua.clone(),
            nil,
            empty_dict_mt,
            empty_dict,
            make_int64: lua
                .load(MAKE_INT64)
                .set_name("=norgopolis.int64")
                .call(())?,
            tostring: lua.globals().get("tostring")?,
        })
    }

    /// Encodes a Lua value as MessagePack bytes; `what` names the value in
    /// error messages (e.g. "args").
    pub fn encode_bytes(&self, value: &Value, what: &str) -> Result<Vec<u8>, EncodeError> {
        let mp = self.encode(value, what, 0)?;
        let mut out = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = rmpv::encode::write_value(&mut out, &mp);
        Ok(out)
    }

    /// Encodes a Lua value as a MessagePack value.
    pub fn encode(&self, value: &Value, path: &str, depth: usize) -> Result<Mp, EncodeError> {
        Ok(match value {
            Value::Nil => Mp::Nil,
            Value::Boolean(b) => Mp::Boolean(*b),
            Value::Integer(i) => Mp::from(*i),
            Value::Number(n) => encode_number(*n),
            Value::String(s) => {
                let bytes = s.as_bytes();
                match std::str::from_utf8(&bytes) {
                    Ok(text) => Mp::from(text),
                    Err(_) => Mp::Binary(bytes.to_vec()),
                }
            }
            Value::Table(t) => self.encode_table(t, path, depth)?,
            Value::LightUserData(p) if p.0.is_null() => Mp::Nil,
            Value::UserData(_) if self.is_nil(value) => Mp::Nil,
            Value::Other(_) => self.encode_cdata(value, path)?,
            other => {
                return Err(EncodeError::Unsupported {
                    path: path.to_owned(),
                    kind: other.type_name().to_owned(),
                })
            }
        })
    }

    fn is_nil(&self, value: &Value) -> bool {
        self.nil.as_ref().is_some_and(|nil| nil == value)
    }

    /// LuaJIT `int64_t`/`uint64_t` cdata (`123LL`, `123ULL`) become exact
    /// integers; `tostring` is the only way to read them without the FFI.
    fn encode_cdata(&self, value: &Value, path: &str) -> Result<Mp, EncodeError> {
        let text: String = self.tostring.call(value.clone())?;
        let parsed = if let Some(digits) = text.strip_suffix("ULL") {
            digits.parse::<u64>().ok().map(Mp::from)
        } else if let Some(digits) = text.strip_suffix("LL") {
            digits.parse::<i64>().ok().map(Mp::from)
        } else {
            None
        };
        parsed.ok_or_else(|| EncodeError::Unsupported {
            path: path.to_owned(),
            kind: format!("cdata ({text})"),
        })
    }

    fn encode_table(&self, t: &mlua::Table, path: &str, depth: usize) -> Result<Mp, EncodeError> {
        if depth >= MAX_DEPTH {
            // The full path of a cycle is 100 steps long; its start says enough.
            let shown: String = path.chars().take(60).collect();
            let ellipsis = if shown.len() < path.len() { "…" } else { "" };
            return Err(EncodeError::TooDeep {
                path: format!("{shown}{ellipsis}"),
            });
        }
        let mut ints: Vec<(f64, Value)> = Vec::new();
        let mut strings: Vec<(mlua::String, Value)> = Vec::new();
        let mut bad_key: Option<&'static str> = None;
        t.for_each::<Value, Value>(|k, v| {
            let v = match v {
                Value::Integer(0) => exact_get(t, k.clone())?,
                v => v,
            };
            match k {
                Value::Number(n) if n.fract() == 0.0 => ints.push((n, v)),
                Value::Integer(i) => ints.push((i as f64, v)),
                Value::String(s) => strings.push((s, v)),
                other => bad_key = bad_key.or(Some(other.type_name())),
            }
            Ok(())
        })?;
        if let Some(kind) = bad_key {
            let kind = if kind == "number" {
                "non-integer number"
            } else {
                kind
            };
            return Err(EncodeError::BadKey {
                path: path.to_owned(),
                kind: kind.to_owned(),
            });
        }
        if !ints.is_empty() && !strings.is_empty() {
            return Err(EncodeError::Mixed {
                path: path.to_owned(),
            });
        }
        if !strings.is_empty() {
            // Sorted so the same table always encodes to the same bytes.
            strings.sort_by(|a, b| a.0.as_bytes().cmp(&b.0.as_bytes()));
            let mut entries = Vec::with_capacity(strings.len());
            for (k, v) in strings {
                let key = self.encode(&Value::String(k.clone()), path, depth)?;
                let child = child_path(path, &k.to_string_lossy());
                entries.push((key, self.encode(&v, &child, depth + 1)?));
            }
            return Ok(Mp::Map(entries));
        }
        if ints.is_empty() {
            let is_dict = match (&self.empty_dict_mt, t.metatable()) {
                (Some(want), Some(have)) => want == &have,
                _ => false,
            };
            return Ok(if is_dict {
                Mp::Map(Vec::new())
            } else {
                Mp::Array(Vec::new())
            });
        }
        ints.sort_by(|a, b| a.0.total_cmp(&b.0));
        let count = ints.len();
        let max = ints[count - 1].0;
        if ints[0].0 != 1.0 || max != count as f64 {
            return Err(EncodeError::Sparse {
                path: path.to_owned(),
                count,
                max,
            });
        }
        let mut items = Vec::with_capacity(count);
        for (i, v) in ints {
            let child = format!("{path}[{i}]");
            items.push(self.encode(&v, &child, depth + 1)?);
        }
        Ok(Mp::Array(items))
    }

    /// Decodes MessagePack bytes (empty = nil) into a Lua value.
    pub fn decode_bytes(&self, bytes: &[u8]) -> Result<Value, DecodeError> {
        let mp = decode_mp(bytes)?;
        self.decode(&mp, 0)
    }

    /// Converts a MessagePack value into a Lua value. Nil is Lua nil at the
    /// top level and `vim.NIL` inside lists and maps, so no item or key is
    /// lost.
    pub fn decode(&self, mp: &Mp, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let lua = &self.lua;
        Ok(match mp {
            Mp::Nil if depth == 0 => Value::Nil,
            Mp::Nil => self.nil.clone().unwrap_or(Value::Nil),
            Mp::Boolean(b) => Value::Boolean(*b),
            Mp::Integer(i) => self.decode_int(i)?,
            Mp::F32(f) => Value::Number(f64::from(*f)),
            Mp::F64(f) => Value::Number(*f),
            Mp::String(s) => Value::String(lua.create_string(s.as_bytes())?),
            Mp::Binary(b) => Value::String(lua.create_string(b)?),
            Mp::Array(items) => {
                let t = lua.create_table_with_capacity(items.len(), 0)?;
                for (i, item) in items.iter().enumerate() {
                    t.raw_set(i + 1, self.decode(item, depth + 1)?)?;
                }
                Value::Table(t)
            }
            Mp::Map(entries) if entries.is_empty() => match &self.empty_dict {
                Some(f) => f.call(())?,
                None => Value::Table(lua.create_table()?),
            },
            Mp::Map(entries) => {
                let t = lua.create_table_with_capacity(0, entries.len())?;
                for (k, v) in entries {
                    let key = match k {
                        Mp::Nil => return Err(DecodeError::BadKey("nil")),
                        Mp::F32(f) if f.is_nan() => return Err(DecodeError::BadKey("NaN")),
                        Mp::F64(f) if f.is_nan() => return Err(DecodeError::BadKey("NaN")),
                        k => self.decode(k, depth + 1)?,
                    };
                    t.raw_set(key, self.decode(v, depth + 1)?)?;
                }
                Value::Table(t)
            }
            Mp::Ext(kind, _) => return Err(DecodeError::Ext(*kind)),
        })
    }

    fn decode_int(&self, i: &rmpv::Integer) -> Result<Value, DecodeError> {
        if let Some(v) = i.as_i64() {
            if (-EXACT_INT..=EXACT_INT).contains(&v) {
                return Ok(Value::Number(v as f64));
            }
            let hi = v >> 32;
            let lo = v & 0xffff_ffff;
            return Ok(self.make_int64.call((hi as f64, lo as f64, false))?);
        }
        // Only u64 values above i64::MAX remain.
        let v = i.as_u64().unwrap_or(u64::MAX);
        Ok(self
            .make_int64
            .call(((v >> 32) as f64, (v & 0xffff_ffff) as f64, true))?)
    }
}

/// Parses MessagePack bytes; empty input is nil (the public protocol sends
/// no bytes for "no arguments"). Trailing bytes are refused.
pub fn decode_mp(bytes: &[u8]) -> Result<Mp, DecodeError> {
    let bytes = norgopolis_proto::msgpack::nil_if_empty(bytes);
    let mut rd = bytes;
    let mp = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH + 1)
        .map_err(|e| DecodeError::Invalid(e.to_string()))?;
    if !rd.is_empty() {
        return Err(DecodeError::Invalid(format!(
            "{} trailing bytes after the value",
            rd.len()
        )));
    }
    // rmpv reads the never-used marker 0xc1 as nil; the format forbids it.
    if let Some(at) = reserved_marker(bytes) {
        return Err(DecodeError::Invalid(format!(
            "byte {at} is 0xc1, a marker MessagePack never uses"
        )));
    }
    Ok(mp)
}

/// [`decode_mp`] then [`check`]: bytes from a peer, as a value Lua can
/// hold when placed `depth` levels deep.
pub fn decode_checked(bytes: &[u8], depth: usize) -> Result<Mp, DecodeError> {
    let mp = decode_mp(bytes)?;
    check(&mp, depth)?;
    Ok(mp)
}

/// Like [`decode_mp`], but empty input is an error: for bytes a user hands
/// to `decode`, where "no bytes" is not a value.
pub fn decode_mp_strict(bytes: &[u8]) -> Result<Mp, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Invalid(
            "no bytes (an empty string holds no value)".into(),
        ));
    }
    decode_mp(bytes)
}

/// Offset of the first 0xc1 marker in `bytes`, which hold one complete
/// value already read by rmpv (so lengths are trusted and bounded).
fn reserved_marker(bytes: &[u8]) -> Option<usize> {
    let be = |at: usize, n: usize| -> usize {
        bytes.get(at..at + n).map_or(0, |b| {
            b.iter().fold(0usize, |acc, x| (acc << 8) | *x as usize)
        })
    };
    let (mut at, mut values) = (0usize, 1usize);
    while values > 0 && at < bytes.len() {
        values -= 1;
        let m = bytes[at];
        at += 1;
        // (payload bytes after the marker, values nested inside)
        let (skip, nested) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * (m & 0x0f) as usize),
            0x90..=0x9f => (0, (m & 0x0f) as usize),
            0xa0..=0xbf => ((m & 0x1f) as usize, 0),
            0xc1 => return Some(at - 1),
            0xc4 | 0xd9 => (1 + be(at, 1), 0),
            0xc5 | 0xda => (2 + be(at, 2), 0),
            0xc6 | 0xdb => (4 + be(at, 4), 0),
            0xc7 => (2 + be(at, 1), 0),
            0xc8 => (3 + be(at, 2), 0),
            0xc9 => (5 + be(at, 4), 0),
            0xca | 0xce | 0xd2 => (4, 0),
            0xcb | 0xcf | 0xd3 => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (2, be(at, 2)),
            0xdd => (4, be(at, 4)),
            0xde => (2, 2 * be(at, 2)),
            0xdf => (4, 2 * be(at, 4)),
        };
        at += skip;
        values += nested;
    }
    None
}

/// Checks off the main thread that a value can become a Lua value, so a
/// stream item that cannot is reported as the call's error.
pub fn check(mp: &Mp, depth: usize) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    match mp {
        Mp::Ext(kind, _) => Err(DecodeError::Ext(*kind)),
        Mp::Array(items) => items.iter().try_for_each(|v| check(v, depth + 1)),
        Mp::Map(entries) => entries.iter().try_for_each(|(k, v)| {
            match k {
                Mp::Nil => return Err(DecodeError::BadKey("nil")),
                Mp::F32(f) if f.is_nan() => return Err(DecodeError::BadKey("NaN")),
                Mp::F64(f) if f.is_nan() => return Err(DecodeError::BadKey("NaN")),
                _ => {}
            }
            check(k, depth + 1)?;
            check(v, depth + 1)
        }),
        _ => Ok(()),
    }
}

/// A number with no fractional part that fits in 64 bits is an integer (its
/// exact value); anything else (fractions, -0.0, inf, NaN, huge) is a float.
fn encode_number(n: f64) -> Mp {
    let integral = n.is_finite() && n.fract() == 0.0 && !(n == 0.0 && n.is_sign_negative());
    if integral {
        // 2^63 and 2^64 are exact doubles, so these bounds are exact.
        if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&n) {
            return Mp::from(n as i64);
        }
        if (0.0..18_446_744_073_709_551_616.0).contains(&n) {
            return Mp::from(n as u64);
        }
    }
    Mp::F64(n)
}

/// `args.name` for identifiers, `args["odd key"]` otherwise.
fn child_path(path: &str, key: &str) -> String {
    let ident = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ident {
        format!("{path}.{key}")
    } else {
        format!("{path}[{key:?}]")
    }
}
