//! The conformance checks of `norgopolis module check`, in the order they
//! run (docs/protocol.md, section 10).

use std::time::{Duration, Instant};

use norgopolis_proto::lean_frame::{Frame, INITIAL_CREDIT, MAGIC};
use rmpv::Value;

use super::{
    conn::{ModuleConn, Outcome},
    values::{decode, encode, preview, same, samples},
};

/// How one check went.
pub enum Verdict {
    /// It passed; the detail says what was seen.
    Pass(String),
    /// It failed, and why.
    Fail(String),
    /// It could not run: the module lacks a conformance function.
    Skip(String),
}

/// A check's name and verdict.
pub type Row = (String, Verdict);

/// Items of the stream check.
const STREAM_ITEMS: u64 = 10_000;

/// Error codes and names, 1..16 (docs/protocol.md, section 6).
const CODE_NAMES: [&str; 16] = [
    "Cancelled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

fn lacks(function: &str) -> Verdict {
    Verdict::Skip(format!("the module has no '{function}' (conformance set)"))
}

fn error_text(outcome: &Outcome) -> String {
    match &outcome.error {
        Some((code, message)) => format!("error {code}: {message}"),
        None => format!("{} items and END", outcome.items.len()),
    }
}

/// The module's first bytes are the lean hello.
pub async fn hello(m: &mut ModuleConn) -> Verdict {
    match m.hello(Duration::from_secs(10)).await {
        Ok(bytes) if bytes == norgopolis_proto::lean_frame::hello_bytes() => {
            Verdict::Pass(format!("{:?}", std::str::from_utf8(MAGIC).unwrap_or("")))
        }
        Ok(bytes) if bytes.is_empty() => {
            Verdict::Fail("it closed its stdout without a hello".into())
        }
        Ok(bytes) => Verdict::Fail(format!(
            "it wrote {:?} instead of the hello",
            bytes.escape_ascii().to_string()
        )),
        Err(e) => Verdict::Fail(e),
    }
}

/// A `PING` is answered with its nonce.
pub async fn ping(m: &mut ModuleConn) -> Verdict {
    let nonce = 0x0123_4567_89ab_cdef;
    if let Err(e) = m.send(Frame::Ping { nonce }).await {
        return Verdict::Fail(e);
    }
    loop {
        match m.next().await {
            Ok(Frame::Pong { nonce: n }) if n == nonce => {
                return Verdict::Pass("PONG with the nonce".into())
            }
            Ok(Frame::Pong { nonce: n }) => {
                return Verdict::Fail(format!("PONG with nonce {n:#x}, not {nonce:#x}"))
            }
            Ok(_) => {}
            Err(e) => return Verdict::Fail(e),
        }
    }
}

/// An unknown function is `NotFound`.
pub async fn unknown_function(m: &mut ModuleConn) -> Verdict {
    match m
        .call("norgopolis-check-no-such-function", vec![0xc0], None)
        .await
    {
        Ok(o) if o.lacking() && o.items.is_empty() => Verdict::Pass(error_text(&o)),
        Ok(o) => Verdict::Fail(format!(
            "expected error 5 (NotFound), got {}",
            error_text(&o)
        )),
        Err(e) => Verdict::Fail(e),
    }
}

/// Every MessagePack type comes back from `echo` unchanged.
pub async fn echo_types(m: &mut ModuleConn) -> Vec<Row> {
    let mut rows = Vec::new();
    for (name, value) in samples() {
        let verdict = match m.call("echo", encode(&value), None).await {
            Ok(o) if o.lacking() => lacks("echo"),
            Ok(o) if o.error.is_some() || o.items.len() != 1 => {
                Verdict::Fail(format!("expected one item, got {}", error_text(&o)))
            }
            Ok(o) => match decode(&o.items[0]) {
                Ok(back) if same(&back, &value) => Verdict::Pass(preview(&value)),
                Ok(back) => {
                    Verdict::Fail(format!("sent {}, got {}", preview(&value), preview(&back)))
                }
                Err(e) => Verdict::Fail(format!("the result is not MessagePack: {e}")),
            },
            Err(e) => Verdict::Fail(e),
        };
        rows.push((format!("echo: {name}"), verdict));
    }
    rows
}

/// Starts `count(n)` and takes the items its initial credit allows: the
/// call's id and those items, or the verdict that ends the check.
async fn count_first_items(m: &mut ModuleConn, n: u64) -> Result<(u32, Vec<Vec<u8>>), Verdict> {
    let id = m.id();
    let args = encode(&Value::from(n));
    m.send(Frame::Call {
        id,
        function: "count".into(),
        args,
        deadline_ms: None,
    })
    .await
    .map_err(Verdict::Fail)?;
    let mut first = Vec::new();
    while first.len() < INITIAL_CREDIT as usize {
        match m.next().await {
            Ok(Frame::Item { id: i, data }) if i == id => first.push(data),
            Ok(Frame::Error { id: i, code: 5, .. }) if i == id => return Err(lacks("count")),
            Ok(Frame::End { id: i } | Frame::Error { id: i, .. }) if i == id => {
                return Err(Verdict::Fail(format!(
                    "the call ended after {} items",
                    first.len()
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(Verdict::Fail(e)),
        }
    }
    Ok((id, first))
}

/// `count` streams 10,000 items in order, sending no more than its credit.
pub async fn stream(m: &mut ModuleConn) -> Verdict {
    let started = Instant::now();
    // The first INITIAL_CREDIT items, then silence until credit is granted.
    let (id, first) = match count_first_items(m, STREAM_ITEMS).await {
        Ok(started) => started,
        Err(verdict) => return verdict,
    };
    // A module ignoring credit would send item 65 at once; waiting a while
    // for it is a bound, not a synchronisation.
    match m.next_within(Duration::from_millis(300)).await {
        Ok(Some(Frame::Item { id: i, .. })) if i == id => {
            return Verdict::Fail(format!(
                "sent item {} before any CREDIT (the initial credit is {INITIAL_CREDIT})",
                INITIAL_CREDIT + 1
            ))
        }
        Ok(_) => {}
        Err(e) => return Verdict::Fail(e),
    }
    if let Err(e) = m
        .send(Frame::Credit {
            id,
            items: INITIAL_CREDIT,
        })
        .await
    {
        return Verdict::Fail(e);
    }
    let rest = match m.collect(id).await {
        Ok(o) if o.error.is_some() => return Verdict::Fail(error_text(&o)),
        Ok(o) => o.items,
        Err(e) => return Verdict::Fail(e),
    };
    let elapsed = started.elapsed();
    for (n, item) in first.iter().chain(&rest).enumerate() {
        match decode(item) {
            Ok(v) if v.as_u64() == Some(n as u64) => {}
            Ok(v) => return Verdict::Fail(format!("item {n} is {}", preview(&v))),
            Err(e) => return Verdict::Fail(format!("item {n}: {e}")),
        }
    }
    let total = first.len() + rest.len();
    if total as u64 != STREAM_ITEMS {
        return Verdict::Fail(format!("{total} items, expected {STREAM_ITEMS}"));
    }
    Verdict::Pass(format!(
        "{total} items in order, {:.0} items/s",
        total as f64 / elapsed.as_secs_f64()
    ))
}

/// A `CANCEL` in the middle of a stream stops it: nothing more of it comes,
/// not even with credit granted after the cancel.
pub async fn cancel(m: &mut ModuleConn) -> Verdict {
    let (id, first) = match count_first_items(m, 1_000_000_000).await {
        Ok(started) => started,
        Err(verdict) => return verdict,
    };
    let items = first.len();
    let nonce = 0xcafe;
    for frame in [
        Frame::Cancel { id },
        Frame::Credit { id, items: 100_000 },
        Frame::Ping { nonce },
    ] {
        if let Err(e) = m.send(frame).await {
            return Verdict::Fail(e);
        }
    }
    // Its credit was used up before the CANCEL: any later frame of the call
    // was sent after the module read the CANCEL.
    let mut after = 0;
    loop {
        match m.next().await {
            Ok(Frame::Pong { nonce: n }) if n == nonce => break,
            Ok(Frame::Item { id: i, .. } | Frame::End { id: i } | Frame::Error { id: i, .. })
                if i == id =>
            {
                after += 1
            }
            Ok(_) => {}
            Err(e) => return Verdict::Fail(e),
        }
    }
    // The next call's answer comes after anything the cancelled call sent late.
    let check = m.id();
    if let Err(e) = m
        .send(Frame::Call {
            id: check,
            function: "echo".into(),
            args: vec![1],
            deadline_ms: None,
        })
        .await
    {
        return Verdict::Fail(e);
    }
    loop {
        match m.next().await {
            Ok(Frame::End { id: i } | Frame::Error { id: i, .. }) if i == check => break,
            Ok(Frame::Item { id: i, .. } | Frame::End { id: i } | Frame::Error { id: i, .. })
                if i == id =>
            {
                after += 1
            }
            Ok(_) => {}
            Err(e) => return Verdict::Fail(e),
        }
    }
    if after > 0 {
        return Verdict::Fail(format!("{after} frames of the call came after its CANCEL"));
    }
    Verdict::Pass(format!(
        "stopped after {items} items; nothing after the CANCEL"
    ))
}

/// `fail` with each error code gives that code and message.
pub async fn error_codes(m: &mut ModuleConn) -> Verdict {
    let mut wrong = Vec::new();
    for (n, name) in CODE_NAMES.iter().enumerate() {
        let code = n as i32 + 1;
        let message = format!("check {name} ✓");
        let args = Value::Map(vec![
            ("code".into(), (*name).into()),
            ("message".into(), message.clone().into()),
        ]);
        match m.call("fail", encode(&args), None).await {
            Ok(o) if o.lacking() && code != 5 => return lacks("fail"),
            Ok(Outcome {
                error: Some((c, msg)),
                ..
            }) if c == code && msg == message => {}
            Ok(o) => wrong.push(format!("{name}: {}", error_text(&o))),
            Err(e) => return Verdict::Fail(e),
        }
    }
    if wrong.is_empty() {
        Verdict::Pass("all 16 codes with their messages".into())
    } else {
        Verdict::Fail(wrong.join("; "))
    }
}

/// A `sleep` past its deadline fails with `DeadlineExceeded`.
pub async fn deadline(m: &mut ModuleConn) -> Verdict {
    let started = Instant::now();
    match m
        .call("sleep", encode(&Value::from(60_000)), Some(200))
        .await
    {
        Ok(o) if o.lacking() => lacks("sleep"),
        Ok(Outcome {
            error: Some((4, _)),
            ..
        }) => Verdict::Pass(format!(
            "DeadlineExceeded after {} ms",
            started.elapsed().as_millis()
        )),
        Ok(o) => Verdict::Fail(format!(
            "expected error 4 (DeadlineExceeded), got {}",
            error_text(&o)
        )),
        Err(e) => Verdict::Fail(e),
    }
}

/// An `echo` is answered while a `sleep` runs.
pub async fn concurrency(m: &mut ModuleConn) -> Verdict {
    match m.call("sleep", encode(&Value::from(1)), None).await {
        Ok(o) if o.lacking() => return lacks("sleep"),
        Ok(_) => {}
        Err(e) => return Verdict::Fail(e),
    }
    let sleeper = m.id();
    let args = encode(&Value::from(60_000));
    if let Err(e) = m
        .send(Frame::Call {
            id: sleeper,
            function: "sleep".into(),
            args,
            deadline_ms: None,
        })
        .await
    {
        return Verdict::Fail(e);
    }
    let verdict = match m
        .call("echo", encode(&Value::from("meanwhile")), None)
        .await
    {
        Ok(o) if o.lacking() => lacks("echo"),
        Ok(o) if o.error.is_none() => Verdict::Pass("echo answered while sleep(60000) ran".into()),
        Ok(o) => Verdict::Fail(error_text(&o)),
        // PATIENCE is shorter than the sleep: no answer means the calls ran one after the other.
        Err(e) => Verdict::Fail(format!(
            "{e} while sleep(60000) ran: calls do not run concurrently"
        )),
    };
    let _ = m.send(Frame::Cancel { id: sleeper }).await;
    verdict
}

/// Messages up to the size limit, both ways.
pub async fn big_messages(m: &mut ModuleConn, limit: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    // A bin32 header is 5 bytes: results of exactly `limit` bytes.
    let at_limit = limit.saturating_sub(5);
    for n in [1 << 20, at_limit] {
        let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
        let sent = Value::Binary(data);
        let verdict = match m.call("echo", encode(&sent), None).await {
            Ok(o) if o.lacking() => lacks("echo"),
            Ok(o) if o.error.is_none() && o.items.len() == 1 => match decode(&o.items[0]) {
                Ok(back) if back == sent => Verdict::Pass("came back whole".into()),
                _ => Verdict::Fail("came back changed".into()),
            },
            Ok(o) => Verdict::Fail(error_text(&o)),
            Err(e) => Verdict::Fail(e),
        };
        rows.push((format!("echo: {n} bytes of binary"), verdict));
    }
    let verdict = match m.call("big", encode(&Value::from(at_limit)), None).await {
        Ok(o) if o.lacking() => lacks("big"),
        Ok(o) if o.error.is_none() && o.items.len() == 1 => match decode(&o.items[0]) {
            Ok(Value::Binary(b))
                if b.len() == at_limit && b.iter().enumerate().all(|(i, x)| *x == i as u8) =>
            {
                Verdict::Pass(format!("a result of {limit} bytes"))
            }
            _ => Verdict::Fail("not the expected bytes".into()),
        },
        Ok(o) => Verdict::Fail(error_text(&o)),
        Err(e) => Verdict::Fail(e),
    };
    rows.push((format!("big: {at_limit} bytes"), verdict));
    rows
}

/// Closing stdin makes the module exit with status 0.
pub async fn exit_on_stdin_close(m: &mut ModuleConn) -> Verdict {
    let started = Instant::now();
    match m.close_and_wait(Duration::from_secs(10)).await {
        Ok(status) if status.success() => {
            Verdict::Pass(format!("exit 0 after {} ms", started.elapsed().as_millis()))
        }
        Ok(status) => Verdict::Fail(format!("exited with {status}")),
        Err(e) => Verdict::Fail(e),
    }
}
