//! Function signatures in `module.toml`: a small type notation for the
//! arguments and result of a function, parsed once when the manifest is
//! read, and the check of a call's MessagePack arguments against it.
//!
//! ```text
//! type    = member { "|" member }
//! member  = primary [ "?" ]                  -- T? is T | nil
//! primary = "nil" | "boolean" | "integer" | "number" | "string" | "binary" | "any"
//!         | "[" type "]"                     -- array, every item a T
//!         | "{" [ entry { "," entry } [ "," ] ] "}"
//!         | "(" type ")"
//! entry   = key [ "?" ] ":" type             -- k?: the key may be absent (or nil)
//!         | "..."                            -- further keys are allowed
//! key     = identifier | "quoted string"
//! ```
//!
//! A map refuses keys it does not list unless it ends in `...`. The CLI
//! shows the signatures and judges manifests through the same parser.

use std::fmt;

use rmpv::ValueRef;

/// Deepest nesting of brackets a signature may have: far more than any
/// real shape, and it keeps parsing and checking off the stack's limits.
const MAX_NESTING: usize = 32;

/// A type of the notation.
#[derive(Debug, Clone, PartialEq)]
pub enum Type {
    /// Only nil.
    Nil,
    /// `true` or `false`.
    Boolean,
    /// A MessagePack integer.
    Integer,
    /// An integer or a float.
    Number,
    /// A UTF-8 string.
    String,
    /// Raw bytes (MessagePack bin).
    Binary,
    /// Any value at all.
    Any,
    /// An array whose every item is of the type.
    Array(Box<Type>),
    /// A map with string keys.
    Map(MapType),
    /// One of several types.
    Union(Vec<Type>),
}

/// The keys of a map type.
#[derive(Debug, Clone, PartialEq)]
pub struct MapType {
    /// Declared keys, in the order written.
    pub fields: Vec<Field>,
    /// Whether keys it does not declare are allowed (`...`).
    pub open: bool,
}

/// One key of a map type.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The key.
    pub name: String,
    /// Whether it may be absent (or nil).
    pub optional: bool,
    /// The type of its value.
    pub ty: Type,
}

/// A signature that could not be parsed: what is wrong and where (1-based
/// column, in characters).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct SyntaxError {
    /// Where the problem is.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Why arguments do not fit a signature: the place (`args.limit`,
/// `args.items[2]`) and the problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct Mismatch {
    /// Where in the value, starting at `args`.
    pub path: String,
    /// What is wrong there.
    pub problem: String,
}

impl Type {
    /// Parses the notation (see the module documentation).
    pub fn parse(text: &str) -> Result<Type, SyntaxError> {
        let mut p = Parser {
            chars: text.chars().collect(),
            pos: 0,
            depth: 0,
        };
        let ty = p.union()?;
        p.skip_space();
        if p.pos < p.chars.len() {
            return Err(p.error(format!("unexpected {:?} after the type", p.chars[p.pos])));
        }
        Ok(ty)
    }

    /// Checks `bytes`, one MessagePack value (a call's arguments), against
    /// this type; the error names the place from `args` down.
    pub fn check_msgpack(&self, bytes: &[u8]) -> Result<(), Mismatch> {
        if *self == Type::Any {
            // Nothing to check: not even worth decoding.
            return Ok(());
        }
        let mut rd = bytes;
        let value = rmpv::decode::read_value_ref(&mut rd).map_err(|e| Mismatch {
            path: "args".into(),
            problem: format!("not a MessagePack value ({e})"),
        })?;
        self.check(&value, &mut "args".to_string())
    }

    /// Checks a decoded value; `path` names it and is restored on return.
    pub fn check(&self, value: &ValueRef<'_>, path: &mut String) -> Result<(), Mismatch> {
        let fits = match (self, value) {
            (Type::Any, _) => true,
            (Type::Nil, ValueRef::Nil) => true,
            (Type::Boolean, ValueRef::Boolean(_)) => true,
            (Type::Integer, ValueRef::Integer(_)) => true,
            (Type::Number, ValueRef::Integer(_) | ValueRef::F32(_) | ValueRef::F64(_)) => true,
            (Type::String, ValueRef::String(s)) => s.as_str().is_some(),
            (Type::Binary, ValueRef::Binary(_)) => true,
            (Type::Array(item), ValueRef::Array(items)) => {
                return check_items(item, items, path);
            }
            // Lua sends `{}` as an empty array and `vim.empty_dict()` as an
            // empty map: for an empty value the two are the same.
            (Type::Array(_), ValueRef::Map(entries)) => entries.is_empty(),
            (Type::Map(map), ValueRef::Map(entries)) => return map.check(entries, path),
            (Type::Map(map), ValueRef::Array(items)) if items.is_empty() => {
                return map.check(&[], path);
            }
            (Type::Union(members), _) => return check_union(self, members, value, path),
            _ => false,
        };
        if fits {
            return Ok(());
        }
        Err(Mismatch {
            path: path.clone(),
            problem: format!("expected {self}, got {}", kind_of(value)),
        })
    }

    /// How tightly the type binds when written: a union inside a union
    /// needs parentheses.
    fn precedence(&self) -> u8 {
        match self {
            Type::Union(_) => 0,
            _ => 1,
        }
    }
}

fn check_items(item: &Type, items: &[ValueRef<'_>], path: &mut String) -> Result<(), Mismatch> {
    let len = path.len();
    for (i, v) in items.iter().enumerate() {
        // 1-based, as Lua callers count.
        path.push_str(&format!("[{}]", i + 1));
        let checked = item.check(v, path);
        path.truncate(len);
        checked?;
    }
    Ok(())
}

/// A union fits when one member does. When none does, the error of the
/// only member of the value's kind (a map for a map) says more than the
/// whole union; otherwise the union is named.
fn check_union(
    whole: &Type,
    members: &[Type],
    value: &ValueRef<'_>,
    path: &mut String,
) -> Result<(), Mismatch> {
    let mut same_kind = Vec::new();
    for m in members {
        match m.check(value, path) {
            Ok(()) => return Ok(()),
            Err(e) if m.accepts_kind_of(value) => same_kind.push(e),
            Err(_) => {}
        }
    }
    if same_kind.len() == 1 {
        return Err(same_kind.remove(0));
    }
    Err(Mismatch {
        path: path.clone(),
        problem: format!("expected {whole}, got {}", kind_of(value)),
    })
}

impl Type {
    /// Whether the value is of the kind this (non-union) type describes,
    /// whatever its contents.
    fn accepts_kind_of(&self, value: &ValueRef<'_>) -> bool {
        matches!(
            (self, value),
            (Type::Array(_), ValueRef::Array(_)) | (Type::Map(_), ValueRef::Map(_))
        )
    }
}

impl MapType {
    fn check(
        &self,
        entries: &[(ValueRef<'_>, ValueRef<'_>)],
        path: &mut String,
    ) -> Result<(), Mismatch> {
        let mut seen = vec![false; self.fields.len()];
        for (k, v) in entries {
            let Some(key) = (match k {
                ValueRef::String(s) => s.as_str(),
                _ => None,
            }) else {
                return Err(Mismatch {
                    path: path.clone(),
                    problem: format!("map keys must be strings, got a key of kind {}", kind_of(k)),
                });
            };
            let Some(i) = self.fields.iter().position(|f| f.name == key) else {
                if self.open {
                    continue;
                }
                let expected: Vec<&str> = self.fields.iter().map(|f| f.name.as_str()).collect();
                return Err(Mismatch {
                    path: path.clone(),
                    problem: format!(
                        "unexpected key {key:?} (expected {})",
                        if expected.is_empty() {
                            "no keys".to_string()
                        } else {
                            expected.join(", ")
                        }
                    ),
                });
            };
            let field = &self.fields[i];
            if field.optional && matches!(v, ValueRef::Nil) {
                continue;
            }
            seen[i] = true;
            let len = path.len();
            push_key(path, key);
            let checked = field.ty.check(v, path);
            path.truncate(len);
            checked?;
        }
        for (field, seen) in self.fields.iter().zip(seen) {
            if !seen && !field.optional {
                let len = path.len();
                push_key(path, &field.name);
                let missing = Mismatch {
                    path: path.clone(),
                    problem: format!("missing (expected {})", field.ty),
                };
                path.truncate(len);
                return Err(missing);
            }
        }
        Ok(())
    }
}

/// `.key`, or `["odd key"]` for keys that are not identifiers.
fn push_key(path: &mut String, key: &str) {
    if is_identifier(key) {
        path.push('.');
        path.push_str(key);
    } else {
        path.push_str(&format!("[{key:?}]"));
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What a value is, in the notation's words.
fn kind_of(value: &ValueRef<'_>) -> &'static str {
    match value {
        ValueRef::Nil => "nil",
        ValueRef::Boolean(_) => "boolean",
        ValueRef::Integer(_) => "integer",
        ValueRef::F32(_) | ValueRef::F64(_) => "number",
        ValueRef::String(s) if s.as_str().is_some() => "string",
        ValueRef::String(_) => "a string that is not UTF-8",
        ValueRef::Binary(_) => "binary",
        ValueRef::Array(_) => "array",
        ValueRef::Map(_) => "map",
        ValueRef::Ext(..) => "extension value",
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Nil => f.write_str("nil"),
            Type::Boolean => f.write_str("boolean"),
            Type::Integer => f.write_str("integer"),
            Type::Number => f.write_str("number"),
            Type::String => f.write_str("string"),
            Type::Binary => f.write_str("binary"),
            Type::Any => f.write_str("any"),
            Type::Array(item) => write!(f, "[{item}]"),
            Type::Map(map) => {
                f.write_str("{")?;
                let mut first = true;
                for field in &map.fields {
                    if !first {
                        f.write_str(", ")?;
                    }
                    first = false;
                    if is_identifier(&field.name) {
                        f.write_str(&field.name)?;
                    } else {
                        write!(f, "{:?}", field.name)?;
                    }
                    let q = if field.optional { "?" } else { "" };
                    write!(f, "{q}: {}", field.ty)?;
                }
                if map.open {
                    f.write_str(if first { "..." } else { ", ..." })?;
                }
                f.write_str("}")
            }
            Type::Union(members) => {
                for (i, m) in members.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" | ")?;
                    }
                    if m.precedence() == 0 {
                        write!(f, "({m})")?;
                    } else {
                        write!(f, "{m}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// A recursive-descent parser over the characters of a signature.
struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn error(&self, message: String) -> SyntaxError {
        SyntaxError {
            column: self.pos + 1,
            message,
        }
    }

    fn skip_space(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_space();
        self.chars.get(self.pos).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            return true;
        }
        false
    }

    fn expect(&mut self, c: char, what: &str) -> Result<(), SyntaxError> {
        if self.eat(c) {
            return Ok(());
        }
        let found = match self.peek() {
            Some(f) => format!("{f:?}"),
            None => "the end".into(),
        };
        Err(self.error(format!("expected {c:?} {what}, found {found}")))
    }

    fn union(&mut self) -> Result<Type, SyntaxError> {
        let mut members = vec![self.member()?];
        while self.eat('|') {
            members.push(self.member()?);
        }
        Ok(union_of(members))
    }

    fn member(&mut self) -> Result<Type, SyntaxError> {
        let ty = self.primary()?;
        if self.eat('?') {
            return Ok(union_of(vec![ty, Type::Nil]));
        }
        Ok(ty)
    }

    fn nested<T>(
        &mut self,
        inner: impl FnOnce(&mut Self) -> Result<T, SyntaxError>,
    ) -> Result<T, SyntaxError> {
        if self.depth >= MAX_NESTING {
            return Err(self.error(format!("nested more than {MAX_NESTING} deep")));
        }
        self.depth += 1;
        let result = inner(self);
        self.depth -= 1;
        result
    }

    fn primary(&mut self) -> Result<Type, SyntaxError> {
        match self.peek() {
            Some('[') => {
                self.pos += 1;
                let item = self.nested(Self::union)?;
                self.expect(']', "to close the array")?;
                Ok(Type::Array(Box::new(item)))
            }
            Some('{') => {
                self.pos += 1;
                self.nested(Self::map)
            }
            Some('(') => {
                self.pos += 1;
                let ty = self.nested(Self::union)?;
                self.expect(')', "to close the parenthesis")?;
                Ok(ty)
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                let word = self.identifier();
                Ok(match word.as_str() {
                    "nil" => Type::Nil,
                    "boolean" => Type::Boolean,
                    "integer" => Type::Integer,
                    "number" => Type::Number,
                    "string" => Type::String,
                    "binary" => Type::Binary,
                    "any" => Type::Any,
                    _ => {
                        self.pos = start;
                        return Err(self.error(format!(
                            "unknown type {word:?} (types: nil, boolean, integer, number, \
                             string, binary, any, [T], {{key: T}}, T | U, T?)"
                        )));
                    }
                })
            }
            Some(c) => Err(self.error(format!("expected a type, found {c:?}"))),
            None => Err(self.error("expected a type, found the end".into())),
        }
    }

    fn identifier(&mut self) -> String {
        let start = self.pos;
        while self
            .chars
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// The entries of a map type, after its `{`.
    fn map(&mut self) -> Result<Type, SyntaxError> {
        let mut map = MapType {
            fields: Vec::new(),
            open: false,
        };
        loop {
            if self.eat('}') {
                return Ok(Type::Map(map));
            }
            if map.open {
                return Err(self.error("`...` must be the last entry of a map".into()));
            }
            if self.peek() == Some('.') {
                let start = self.pos;
                self.pos += 1;
                if !(self.eat('.') && self.eat('.')) {
                    self.pos = start;
                    return Err(self.error("expected `...` or a key".into()));
                }
                map.open = true;
            } else {
                let field = self.field()?;
                if map.fields.iter().any(|f| f.name == field.name) {
                    return Err(self.error(format!("key {:?} is declared twice", field.name)));
                }
                map.fields.push(field);
            }
            if !self.eat(',') {
                self.expect('}', "or ',' in the map")?;
                return Ok(Type::Map(map));
            }
        }
    }

    fn field(&mut self) -> Result<Field, SyntaxError> {
        let start = self.pos;
        let name = match self.peek() {
            Some('"') => self.quoted()?,
            Some(c) if c.is_ascii_alphabetic() || c == '_' => self.identifier(),
            Some(c) => return Err(self.error(format!("expected a key, found {c:?}"))),
            None => return Err(self.error("expected a key, found the end".into())),
        };
        if name.is_empty() {
            self.pos = start;
            return Err(self.error("a key is empty".into()));
        }
        let optional = self.eat('?');
        self.expect(':', &format!("after the key {name:?}"))?;
        let ty = self.union()?;
        Ok(Field { name, optional, ty })
    }

    /// A key in double quotes (`\"` and `\\` escape).
    fn quoted(&mut self) -> Result<String, SyntaxError> {
        let open = self.pos;
        self.pos += 1;
        let mut s = String::new();
        loop {
            match self.chars.get(self.pos).copied() {
                None => {
                    self.pos = open;
                    return Err(self.error("unterminated quoted key".into()));
                }
                Some('"') => {
                    self.pos += 1;
                    return Ok(s);
                }
                Some('\\') => {
                    let escaped = self.chars.get(self.pos + 1).copied();
                    match escaped {
                        Some(c @ ('"' | '\\')) => s.push(c),
                        _ => return Err(self.error("only \\\" and \\\\ escape in a key".into())),
                    }
                    self.pos += 2;
                }
                Some(c) => {
                    s.push(c);
                    self.pos += 1;
                }
            }
        }
    }
}

/// One type, or a union of several (nested unions flattened, repeats dropped).
fn union_of(members: Vec<Type>) -> Type {
    let mut flat: Vec<Type> = Vec::new();
    for m in members {
        let parts = match m {
            Type::Union(parts) => parts,
            other => vec![other],
        };
        for p in parts {
            if !flat.contains(&p) {
                flat.push(p);
            }
        }
    }
    if flat.len() == 1 {
        return flat.remove(0);
    }
    Type::Union(flat)
}

#[cfg(test)]
mod tests {
    use rmpv::Value;

    use super::*;

    fn ty(text: &str) -> Type {
        Type::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn check(text: &str, value: Value) -> Result<(), String> {
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &value).unwrap();
        ty(text).check_msgpack(&bytes).map_err(|e| e.to_string())
    }

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    #[test]
    fn each_primitive_accepts_its_kind_only() {
        let values = [
            ("nil", Value::Nil),
            ("boolean", Value::Boolean(true)),
            ("integer", Value::from(-3)),
            ("number", Value::F64(1.5)),
            ("string", Value::from("s")),
            ("binary", Value::Binary(vec![0, 255])),
        ];
        for (name, _) in &values {
            for (kind, value) in &values {
                let fits = name == kind || (*name == "number" && *kind == "integer");
                let result = check(name, value.clone());
                assert_eq!(result.is_ok(), fits, "{name} vs {kind}: {result:?}");
                if !fits {
                    assert_eq!(
                        result.unwrap_err(),
                        format!("args: expected {name}, got {kind}")
                    );
                }
            }
            assert!(check("any", values[0].1.clone()).is_ok());
        }
        assert!(check("any", map(vec![("x", Value::Nil)])).is_ok());
        // fixstr of two bytes that are not UTF-8
        assert_eq!(
            ty("string")
                .check_msgpack(&[0xa2, 0xff, 0xfe])
                .unwrap_err()
                .to_string(),
            "args: expected string, got a string that is not UTF-8"
        );
    }

    #[test]
    fn arrays_name_the_item() {
        assert!(check("[string]", Value::Array(vec!["a".into(), "b".into()])).is_ok());
        assert!(check("[string]", Value::Array(vec![])).is_ok());
        assert!(
            check("[string]", map(vec![])).is_ok(),
            "an empty map is an empty list"
        );
        assert_eq!(
            check("[string]", Value::Array(vec!["a".into(), 2.into()])).unwrap_err(),
            "args[2]: expected string, got integer"
        );
        assert_eq!(
            check(
                "[[integer]]",
                Value::Array(vec![Value::Array(vec![1.into(), "x".into()])])
            )
            .unwrap_err(),
            "args[1][2]: expected integer, got string"
        );
    }

    #[test]
    fn maps_name_the_field() {
        let t = "{ path: string, limit?: integer }";
        assert!(check(t, map(vec![("path", "a".into())])).is_ok());
        assert!(check(t, map(vec![("path", "a".into()), ("limit", 3.into())])).is_ok());
        assert!(check(t, map(vec![("path", "a".into()), ("limit", Value::Nil)])).is_ok());
        assert_eq!(
            check(t, map(vec![("path", "a".into()), ("limit", "3".into())])).unwrap_err(),
            "args.limit: expected integer, got string"
        );
        assert_eq!(
            check(t, map(vec![("limit", 3.into())])).unwrap_err(),
            "args.path: missing (expected string)"
        );
        assert_eq!(
            check(t, map(vec![("path", "a".into()), ("limt", 3.into())])).unwrap_err(),
            "args: unexpected key \"limt\" (expected path, limit)"
        );
        assert_eq!(
            check(t, Value::Array(vec![])).unwrap_err(),
            "args.path: missing (expected string)",
            "an empty list is an empty map"
        );
        assert_eq!(
            check(t, "x".into()).unwrap_err(),
            "args: expected {path: string, limit?: integer}, got string"
        );
        assert_eq!(
            check(t, Value::Map(vec![(1.into(), 2.into())])).unwrap_err(),
            "args: map keys must be strings, got a key of kind integer"
        );
        assert!(check("{a: any, ...}", map(vec![("a", 1.into()), ("b", 2.into())])).is_ok());
        assert_eq!(
            check(
                "{\"odd key\": {deep: [boolean]}}",
                map(vec![(
                    "odd key",
                    map(vec![("deep", Value::Array(vec![true.into(), 1.into()]))])
                )])
            )
            .unwrap_err(),
            "args[\"odd key\"].deep[2]: expected boolean, got integer"
        );
    }

    #[test]
    fn unions_and_optionals() {
        let t = "integer | {n: integer, delay_ms?: integer}";
        assert!(check(t, 3.into()).is_ok());
        assert!(check(t, map(vec![("n", 3.into())])).is_ok());
        // The only map member explains a bad map.
        assert_eq!(
            check(t, map(vec![("n", "3".into())])).unwrap_err(),
            "args.n: expected integer, got string"
        );
        assert_eq!(
            check(t, "3".into()).unwrap_err(),
            "args: expected integer | {n: integer, delay_ms?: integer}, got string"
        );
        assert!(check("string?", Value::Nil).is_ok());
        assert!(check("string?", "x".into()).is_ok());
        assert_eq!(
            check("string?", 1.into()).unwrap_err(),
            "args: expected string | nil, got integer"
        );
        assert_eq!(ty("(integer | string) | nil"), ty("integer | string | nil"));
        assert_eq!(ty("integer | integer"), Type::Integer);
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "nil",
            "[string]",
            "{path: string, limit?: integer}",
            "integer | {n: integer, ...}",
            "[integer | string]",
            "{\"a b\": any}",
            "{...}",
            "{}",
        ] {
            assert_eq!(ty(text).to_string(), text);
            assert_eq!(ty(&ty(text).to_string()), ty(text));
        }
        assert_eq!(ty("[(integer | nil)]").to_string(), "[integer | nil]");
    }

    #[test]
    fn syntax_errors_give_the_column() {
        let cases = [
            ("strin", 1, "unknown type \"strin\""),
            ("{ path: strng }", 9, "unknown type \"strng\""),
            (
                "[string",
                8,
                "expected ']' to close the array, found the end",
            ),
            (
                "{a: integer b: string}",
                13,
                "expected '}' or ',' in the map",
            ),
            ("{a integer}", 4, "expected ':' after the key \"a\""),
            ("{a: integer, a: string}", 23, "declared twice"),
            ("integer |", 10, "expected a type, found the end"),
            ("", 1, "expected a type"),
            ("integer string", 9, "unexpected 's' after the type"),
            ("{..., a: any}", 7, "`...` must be the last entry"),
            ("{\"a: any}", 2, "unterminated quoted key"),
            ("{1: any}", 2, "expected a key, found '1'"),
        ];
        for (text, column, message) in cases {
            let e = Type::parse(text).unwrap_err();
            assert_eq!(e.column, column, "{text}: {e}");
            assert!(e.message.contains(message), "{text}: {e}");
        }
        let deep = "[".repeat(40) + "any" + &"]".repeat(40);
        assert!(Type::parse(&deep).unwrap_err().message.contains("nested"));
    }

    #[test]
    fn bad_msgpack_is_a_mismatch_not_a_panic() {
        let e = ty("nil").check_msgpack(&[0xa5, b'a']).unwrap_err();
        assert_eq!(e.path, "args");
        assert!(e.problem.contains("not a MessagePack value"), "{e}");
        assert!(ty("nil").check_msgpack(&[]).is_err());
    }
}
