//! `docs/protocol.md` against the Rust codec: every byte example in the
//! document (its ```lean blocks) must decode to the frame its `# KIND …`
//! line describes, and that frame must encode to exactly those bytes. The
//! specification others implement from cannot drift from the codec.

use std::collections::HashMap;

use norgopolis_proto::lean_frame::{decode, encode, Frame, HEADER_LEN};

/// One example: the frame its comment line describes, and its bytes.
struct Example {
    line: usize,
    described: String,
    bytes: Vec<u8>,
}

fn document() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// The examples of every ```lean block, in order.
fn examples(doc: &str) -> Vec<Example> {
    let mut out: Vec<Example> = Vec::new();
    let mut in_block = false;
    for (n, line) in doc.lines().enumerate() {
        let line_no = n + 1;
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_block = trimmed == "```lean";
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(described) = trimmed.strip_prefix('#') {
            out.push(Example {
                line: line_no,
                described: described.trim().to_string(),
                bytes: Vec::new(),
            });
            continue;
        }
        let hex = trimmed.split(';').next().unwrap_or_default();
        let current = out
            .last_mut()
            .unwrap_or_else(|| panic!("line {line_no}: bytes before any `# KIND` line"));
        current.bytes.extend(hex_bytes(hex, line_no));
    }
    out
}

fn hex_bytes(text: &str, line: usize) -> Vec<u8> {
    text.split_whitespace()
        .map(|b| {
            u8::from_str_radix(b, 16)
                .unwrap_or_else(|_| panic!("line {line}: {b:?} is not a hex byte"))
        })
        .collect()
}

/// `KIND key=value …` with values `123`, `none`, `"text"` or `[hex bytes]`.
fn parse_description(text: &str, line: usize) -> (String, HashMap<String, String>) {
    let (kind, mut rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut fields = HashMap::new();
    while let Some((key, after)) = rest.trim_start().split_once('=') {
        let (value, tail) = match after.chars().next() {
            Some(open @ ('"' | '[')) => {
                let close = if open == '"' { '"' } else { ']' };
                let end = after[1..]
                    .find(close)
                    .unwrap_or_else(|| panic!("line {line}: unclosed {open}"));
                (&after[1..=end], &after[end + 2..])
            }
            _ => after.split_once(' ').unwrap_or((after, "")),
        };
        fields.insert(key.to_string(), value.to_string());
        rest = tail;
    }
    (kind.to_string(), fields)
}

fn frame_from(example: &Example) -> Frame {
    let line = example.line;
    let (kind, f) = parse_description(&example.described, line);
    let get = |key: &str| {
        f.get(key)
            .cloned()
            .unwrap_or_else(|| panic!("line {line}: {kind} needs {key}="))
    };
    let num = |key: &str| -> u64 {
        get(key)
            .parse()
            .unwrap_or_else(|_| panic!("line {line}: {key} is not a number"))
    };
    let id = || num("id") as u32;
    let deadline = || match get("deadline_ms").as_str() {
        "none" => None,
        _ => Some(num("deadline_ms")),
    };
    match kind.as_str() {
        "HELLO" => Frame::Hello,
        "CALL" => Frame::Call {
            id: id(),
            function: get("function"),
            args: hex_bytes(&get("args"), line),
            deadline_ms: deadline(),
        },
        "ROUTE" => Frame::Route {
            id: id(),
            module: get("module"),
            function: get("function"),
            args: hex_bytes(&get("args"), line),
            deadline_ms: deadline(),
        },
        "ITEM" => Frame::Item {
            id: id(),
            data: hex_bytes(&get("data"), line),
        },
        "END" => Frame::End { id: id() },
        "ERROR" => Frame::Error {
            id: id(),
            code: num("code") as i32,
            message: get("message"),
        },
        "CANCEL" => Frame::Cancel { id: id() },
        "PING" => Frame::Ping {
            nonce: num("nonce"),
        },
        "PONG" => Frame::Pong {
            nonce: num("nonce"),
        },
        "CREDIT" => Frame::Credit {
            id: id(),
            items: num("items") as u32,
        },
        "PROVIDE" => Frame::Provide {
            id: id(),
            module: get("module"),
            // Comma-separated; empty for none.
            functions: get("functions")
                .split(',')
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .collect(),
        },
        other => panic!("line {line}: unknown frame kind {other}"),
    }
}

#[test]
fn every_byte_example_in_the_protocol_document_matches_the_codec() {
    let examples = examples(&document());
    let mut kinds: Vec<&'static str> = Vec::new();
    for example in &examples {
        let expected = frame_from(example);
        let bytes = &example.bytes;
        let line = example.line;
        assert!(
            bytes.len() >= HEADER_LEN,
            "line {line}: shorter than a header"
        );
        let length = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(
            length + 4,
            bytes.len(),
            "line {line}: the length field says {length} bytes follow"
        );
        let id = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
        let decoded = decode(id, bytes[8], bytes[HEADER_LEN..].to_vec())
            .unwrap_or_else(|e| panic!("line {line}: the codec refuses the example: {e}"));
        assert_eq!(decoded, expected, "line {line}: decodes differently");
        let mut encoded = Vec::new();
        encode(&expected, &mut encoded).unwrap();
        assert_eq!(
            &encoded, bytes,
            "line {line}: the codec encodes differently"
        );
        kinds.push(expected.kind_name());
    }
    // Every frame kind is shown at least once.
    for kind in [
        "HELLO", "CALL", "ITEM", "END", "ERROR", "CANCEL", "PING", "PONG", "CREDIT", "ROUTE",
        "PROVIDE",
    ] {
        assert!(kinds.contains(&kind), "no byte example of {kind}");
    }
}

#[test]
fn the_document_states_the_codecs_constants() {
    let doc = document();
    let credit = norgopolis_proto::lean_frame::INITIAL_CREDIT.to_string();
    assert!(
        doc.contains(&format!("starts at **{credit}**")),
        "the initial credit in docs/protocol.md is not {credit}"
    );
    let magic = std::str::from_utf8(norgopolis_proto::lean_frame::MAGIC).unwrap();
    assert!(doc.contains(&format!("`{magic}`")));
}
