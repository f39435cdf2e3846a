//! The lean module transport: length-prefixed frames on a module's
//! stdin/stdout instead of gRPC over HTTP/2.
//!
//! It is opt-in (`transport = "lean"` in `module.toml`) and only spoken by
//! modules built with our SDK; the router tells the module at spawn
//! (`NORGOPOLIS_TRANSPORT=lean`). Both ends use this one codec, so the
//! router and the SDK cannot drift apart.
//!
//! Every frame is `u32 length` (of what follows), `u32 call id`, `u8 kind`,
//! payload; integers little-endian. The module speaks first: a `HELLO`
//! frame whose payload is the magic `NPL1` (the protocol version is its
//! last byte). A module that starts with anything else (an HTTP/2
//! preface, a stray print) is not speaking lean.
//!
//! | kind | direction | payload |
//! |---|---|---|
//! | `HELLO` | module → router | `NPL1` |
//! | `CALL` | router → module | `u8` flags (bit 0: deadline present), [`u64` ms left], `u16` name length, name, MessagePack arguments |
//! | `ITEM` | module → router | one MessagePack result |
//! | `END` | module → router | empty: the call succeeded |
//! | `ERROR` | module → router | `i32` gRPC code, UTF-8 message: the call failed |
//! | `CANCEL` | router → module | empty: the caller went away |
//! | `PING` / `PONG` | router → module / back | `u64` nonce (call id 0) |
//! | `CREDIT` | router → module | `u32` count: the module may send that many more `ITEM`s of the call |
//! | `ROUTE` | client → router | as `CALL`, with `u16` module name length and module name before the function's |
//!
//! The same frames also serve clients of the router on its socket (see
//! `norgopolis-client`): there the client greets first with `HELLO`, the
//! router answers with its own, and calls start with `ROUTE` (naming the
//! module) instead of `CALL`; everything else is as between router and
//! module, the client in the router's part and the router in the module's.
//!
//! Flow control is per call: a module sends at most [`INITIAL_CREDIT`]
//! items of a call plus what `CREDIT` frames granted since, and the router
//! grants more as its caller takes them. A caller that stops reading thus
//! stops its own call only; the module's other calls go on.

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    sync::{mpsc, oneshot},
};

/// The hello's payload: the magic, whose last byte is the protocol version.
pub const MAGIC: &[u8; 4] = b"NPL1";

/// Value of `NORGOPOLIS_TRANSPORT` asking a module to speak lean.
pub const TRANSPORT_LEAN: &str = "lean";

/// Value of `NORGOPOLIS_TRANSPORT` for gRPC (the default).
pub const TRANSPORT_GRPC: &str = "grpc";

/// Bytes of a frame header: length, call id, kind.
pub const HEADER_LEN: usize = 9;

/// The part of a frame's length that is not payload: call id and kind.
const ID_AND_KIND: usize = 5;

/// Largest batch of frames gathered into one write; a larger backlog is
/// written in several, so one write never holds an unbounded copy.
const BATCH_BYTES: usize = 256 * 1024;

/// Most of its batch buffer a writer keeps while nothing is queued.
const IDLE_BUFFER: usize = 16 * 1024;

/// Frame kinds on the wire.
mod kind {
    pub const HELLO: u8 = 0;
    pub const CALL: u8 = 1;
    pub const ITEM: u8 = 2;
    pub const END: u8 = 3;
    pub const ERROR: u8 = 4;
    pub const CANCEL: u8 = 5;
    pub const PING: u8 = 6;
    pub const PONG: u8 = 7;
    pub const CREDIT: u8 = 8;
    pub const ROUTE: u8 = 9;
    pub const PROVIDE: u8 = 10;
}

/// One frame of the lean transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The module's greeting, always its first frame.
    Hello,
    /// Start a call.
    Call {
        /// Chosen by the router, unique among its calls in flight.
        id: u32,
        /// Function name.
        function: String,
        /// MessagePack arguments.
        args: Vec<u8>,
        /// Milliseconds the caller still waits, if it set a deadline.
        deadline_ms: Option<u64>,
    },
    /// One result of a call.
    Item {
        /// The call.
        id: u32,
        /// One MessagePack value.
        data: Vec<u8>,
    },
    /// The call finished successfully after its items.
    End {
        /// The call.
        id: u32,
    },
    /// The call failed (after any items it sent).
    Error {
        /// The call.
        id: u32,
        /// gRPC status code.
        code: i32,
        /// Message for the caller.
        message: String,
    },
    /// The caller went away: stop the call.
    Cancel {
        /// The call.
        id: u32,
    },
    /// Liveness check from the router.
    Ping {
        /// Echoed in the answer.
        nonce: u64,
    },
    /// Answer to a ping.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// The router's caller has taken `items` more results of a call: the
    /// module may send that many more (see [`INITIAL_CREDIT`]).
    Credit {
        /// The call.
        id: u32,
        /// Results the module may send in addition.
        items: u32,
    },
    /// Start a call to a module (client → router).
    Route {
        /// Chosen by the client, unique among its calls in flight.
        id: u32,
        /// Module name.
        module: String,
        /// Function name.
        function: String,
        /// MessagePack arguments.
        args: Vec<u8>,
        /// Milliseconds the caller still waits, if it set a deadline.
        deadline_ms: Option<u64>,
    },
    /// Register this connection as module `module` (client → router); the
    /// router answers `End` (registered: from then on the router calls
    /// the client as a module) or `Error` (refused).
    Provide {
        /// Chosen by the client; the answer carries it.
        id: u32,
        /// The module name to serve under.
        module: String,
        /// The functions it serves, if it says (for `list` and completion).
        functions: Vec<String>,
    },
}

impl Frame {
    /// The frame's kind as the protocol names it ("CALL", "ITEM", …), for
    /// errors: a frame's payload can be large and is not worth logging.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Frame::Hello => "HELLO",
            Frame::Call { .. } => "CALL",
            Frame::Item { .. } => "ITEM",
            Frame::End { .. } => "END",
            Frame::Error { .. } => "ERROR",
            Frame::Cancel { .. } => "CANCEL",
            Frame::Ping { .. } => "PING",
            Frame::Pong { .. } => "PONG",
            Frame::Credit { .. } => "CREDIT",
            Frame::Route { .. } => "ROUTE",
            Frame::Provide { .. } => "PROVIDE",
        }
    }
}

/// Results a module may send for a call before the router's first
/// [`Frame::Credit`]: per-call flow control, so a caller that reads slowly
/// slows its own call down and nobody else's.
pub const INITIAL_CREDIT: u32 = 64;

/// A frame could not be read, written or understood.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The pipe failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The stream ended inside a frame.
    #[error("the stream ended in the middle of a frame")]
    Truncated,
    /// A length too small to hold a frame header.
    #[error("a frame length of {0} bytes is shorter than a frame header")]
    Short(usize),
    /// A kind this version does not know.
    #[error("unknown frame kind {kind} (call {id})")]
    UnknownKind {
        /// The call id in the header.
        id: u32,
        /// The kind byte.
        kind: u8,
    },
    /// A known kind whose payload does not fit its layout.
    #[error("malformed {what} frame: {why}")]
    Malformed {
        /// The frame kind.
        what: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A payload too big for the `u32` length field.
    #[error("a payload of {0} bytes does not fit in a frame")]
    Unencodable(usize),
}

fn malformed(what: &'static str, why: impl Into<String>) -> FrameError {
    FrameError::Malformed {
        what,
        why: why.into(),
    }
}

/// The exact bytes of the hello frame, which start every lean stream.
pub fn hello_bytes() -> [u8; HEADER_LEN + 4] {
    let mut out = [0u8; HEADER_LEN + 4];
    out[..4].copy_from_slice(&((ID_AND_KIND + 4) as u32).to_le_bytes());
    out[8] = kind::HELLO;
    out[HEADER_LEN..].copy_from_slice(MAGIC);
    out
}

fn put_header(out: &mut Vec<u8>, id: u32, kind: u8, payload_len: usize) -> Result<(), FrameError> {
    let len = u32::try_from(payload_len + ID_AND_KIND)
        .map_err(|_| FrameError::Unencodable(payload_len))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.push(kind);
    Ok(())
}

/// Appends `frame` to `out`; on error `out` is left as it was.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    let result = encode_unchecked(frame, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_unchecked(frame: &Frame, out: &mut Vec<u8>) -> Result<(), FrameError> {
    match frame {
        Frame::Hello => out.extend_from_slice(&hello_bytes()),
        Frame::Call {
            id,
            function,
            args,
            deadline_ms,
        } => put_call(out, *id, kind::CALL, None, function, args, *deadline_ms)?,
        Frame::Route {
            id,
            module,
            function,
            args,
            deadline_ms,
        } => put_call(
            out,
            *id,
            kind::ROUTE,
            Some(module),
            function,
            args,
            *deadline_ms,
        )?,
        Frame::Provide {
            id,
            module,
            functions,
        } => put_provide(out, *id, module, functions)?,
        Frame::Item { id, data } => {
            put_header(out, *id, kind::ITEM, data.len())?;
            out.extend_from_slice(data);
        }
        Frame::End { id } => put_header(out, *id, kind::END, 0)?,
        Frame::Error { id, code, message } => {
            put_header(out, *id, kind::ERROR, 4 + message.len())?;
            out.extend_from_slice(&code.to_le_bytes());
            out.extend_from_slice(message.as_bytes());
        }
        Frame::Cancel { id } => put_header(out, *id, kind::CANCEL, 0)?,
        Frame::Credit { id, items } => {
            put_header(out, *id, kind::CREDIT, 4)?;
            out.extend_from_slice(&items.to_le_bytes());
        }
        Frame::Ping { nonce } | Frame::Pong { nonce } => {
            let k = if matches!(frame, Frame::Ping { .. }) {
                kind::PING
            } else {
                kind::PONG
            };
            put_header(out, 0, k, 8)?;
            out.extend_from_slice(&nonce.to_le_bytes());
        }
    }
    Ok(())
}

/// A `CALL` or `ROUTE` frame: flags, deadline, [module,] function, arguments.
fn put_call(
    out: &mut Vec<u8>,
    id: u32,
    kind: u8,
    module: Option<&str>,
    function: &str,
    args: &[u8],
    deadline_ms: Option<u64>,
) -> Result<(), FrameError> {
    let what = if module.is_some() { "ROUTE" } else { "CALL" };
    let names = module.into_iter().chain(std::iter::once(function));
    let mut names_len = 0;
    for name in names.clone() {
        u16::try_from(name.len()).map_err(|_| malformed(what, "a name longer than 65535 bytes"))?;
        names_len += 2 + name.len();
    }
    let deadline_len = if deadline_ms.is_some() { 8 } else { 0 };
    put_header(out, id, kind, 1 + deadline_len + names_len + args.len())?;
    out.push(u8::from(deadline_ms.is_some()));
    if let Some(ms) = deadline_ms {
        out.extend_from_slice(&ms.to_le_bytes());
    }
    for name in names {
        // Checked above.
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
    }
    out.extend_from_slice(args);
    Ok(())
}

/// A `PROVIDE` frame: module name, `u16` count, that many function names.
fn put_provide(
    out: &mut Vec<u8>,
    id: u32,
    module: &str,
    functions: &[String],
) -> Result<(), FrameError> {
    let count = u16::try_from(functions.len())
        .map_err(|_| malformed("PROVIDE", "more than 65535 functions"))?;
    let names = || std::iter::once(module).chain(functions.iter().map(String::as_str));
    let mut len = 2;
    for name in names() {
        u16::try_from(name.len())
            .map_err(|_| malformed("PROVIDE", "a name longer than 65535 bytes"))?;
        len += 2 + name.len();
    }
    put_header(out, id, kind::PROVIDE, len)?;
    let put_name = |out: &mut Vec<u8>, name: &str| {
        // Checked above.
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
    };
    put_name(out, module);
    out.extend_from_slice(&count.to_le_bytes());
    for name in functions {
        put_name(out, name);
    }
    Ok(())
}

/// Reads the `u16`-length-prefixed name at `*at`, moving past it.
fn take_name(what: &'static str, payload: &[u8], at: &mut usize) -> Result<String, FrameError> {
    let len = payload
        .get(*at..*at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
        .ok_or_else(|| malformed(what, "no name length"))?;
    *at += 2;
    let name = payload
        .get(*at..*at + len)
        .ok_or_else(|| malformed(what, "name cut short"))?;
    *at += len;
    std::str::from_utf8(name)
        .map(str::to_owned)
        .map_err(|_| malformed(what, "a name is not UTF-8"))
}

/// The flags and deadline that open `CALL` and `ROUTE`; `*at` moves past them.
fn take_deadline(
    what: &'static str,
    payload: &[u8],
    at: &mut usize,
) -> Result<Option<u64>, FrameError> {
    let flags = *payload.first().ok_or_else(|| malformed(what, "empty"))?;
    *at = 1;
    if flags & 1 == 0 {
        return Ok(None);
    }
    *at += 8;
    take_u64(what, &payload[1..]).map(Some)
}

fn take_u64(what: &'static str, bytes: &[u8]) -> Result<u64, FrameError> {
    let raw: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| malformed(what, "too short for its 8-byte number"))?;
    Ok(u64::from_le_bytes(raw))
}

/// Builds a frame from its header fields and payload (taken by value, so
/// results are not copied).
pub fn decode(id: u32, kind: u8, mut payload: Vec<u8>) -> Result<Frame, FrameError> {
    Ok(match kind {
        kind::HELLO => {
            if payload != MAGIC {
                return Err(malformed(
                    "HELLO",
                    format!(
                        "magic {:?}, expected {:?}",
                        payload.escape_ascii().to_string(),
                        "NPL1"
                    ),
                ));
            }
            Frame::Hello
        }
        kind::CALL => {
            let mut at = 0;
            let deadline_ms = take_deadline("CALL", &payload, &mut at)?;
            let function = take_name("CALL", &payload, &mut at)?;
            payload.drain(..at);
            Frame::Call {
                id,
                function,
                args: payload,
                deadline_ms,
            }
        }
        kind::ROUTE => {
            let mut at = 0;
            let deadline_ms = take_deadline("ROUTE", &payload, &mut at)?;
            let module = take_name("ROUTE", &payload, &mut at)?;
            let function = take_name("ROUTE", &payload, &mut at)?;
            payload.drain(..at);
            Frame::Route {
                id,
                module,
                function,
                args: payload,
                deadline_ms,
            }
        }
        kind::PROVIDE => {
            let mut at = 0;
            let module = take_name("PROVIDE", &payload, &mut at)?;
            let count = payload
                .get(at..at + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .ok_or_else(|| malformed("PROVIDE", "no function count"))?;
            at += 2;
            let functions = (0..count)
                .map(|_| take_name("PROVIDE", &payload, &mut at))
                .collect::<Result<_, _>>()?;
            Frame::Provide {
                id,
                module,
                functions,
            }
        }
        kind::ITEM => Frame::Item { id, data: payload },
        kind::END => Frame::End { id },
        kind::ERROR => {
            let code = payload
                .get(..4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| malformed("ERROR", "no status code"))?;
            // A message that is not valid UTF-8 still reaches the caller.
            let message = String::from_utf8_lossy(&payload[4..]).into_owned();
            Frame::Error { id, code, message }
        }
        kind::CANCEL => Frame::Cancel { id },
        kind::PING => Frame::Ping {
            nonce: take_u64("PING", &payload)?,
        },
        kind::PONG => Frame::Pong {
            nonce: take_u64("PONG", &payload)?,
        },
        kind::CREDIT => Frame::Credit {
            id,
            items: payload
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| malformed("CREDIT", "no item count"))?,
        },
        kind => return Err(FrameError::UnknownKind { id, kind }),
    })
}

/// What [`FrameReader::next`] read.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A whole frame.
    Frame(Frame),
    /// A frame over the reader's limit, skipped without buffering it.
    Oversized {
        /// Its call id.
        id: u32,
        /// Its payload length.
        len: usize,
    },
}

/// Reads frames from a byte stream, never buffering more than `limit`
/// payload bytes for one frame.
pub struct FrameReader<R> {
    inner: BufReader<R>,
    limit: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Frames from `reader`; payloads over `limit` bytes are skipped.
    pub fn new(reader: R, limit: usize) -> Self {
        Self::with_buffer(reader, limit, 64 * 1024)
    }

    /// As [`FrameReader::new`], reading through a buffer of `buffer`
    /// bytes: small for peers that send small frames (a lean client's
    /// calls and credit), since every open connection keeps one.
    pub fn with_buffer(reader: R, limit: usize, buffer: usize) -> Self {
        Self {
            inner: BufReader::with_capacity(buffer, reader),
            limit,
        }
    }

    /// Reads up to `n` bytes exactly as they come (for checking the
    /// hello); fewer only at the end of the stream.
    pub async fn read_prefix(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        (&mut self.inner)
            .take(n as u64)
            .read_to_end(&mut out)
            .await?;
        Ok(out)
    }

    /// The next frame; `None` when the stream ends between frames. Not
    /// cancel safe: a frame half read is lost, so keep the future alive.
    pub async fn next(&mut self) -> Result<Option<Incoming>, FrameError> {
        let mut header = [0u8; HEADER_LEN];
        let first = self.inner.read(&mut header).await?;
        if first == 0 {
            return Ok(None);
        }
        if first < HEADER_LEN {
            self.inner
                .read_exact(&mut header[first..])
                .await
                .map_err(truncated)?;
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let id = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let kind = header[8];
        let payload_len = len.checked_sub(ID_AND_KIND).ok_or(FrameError::Short(len))?;
        if payload_len > self.limit {
            let skipped = tokio::io::copy(
                &mut (&mut self.inner).take(payload_len as u64),
                &mut tokio::io::sink(),
            )
            .await?;
            if skipped < payload_len as u64 {
                return Err(FrameError::Truncated);
            }
            return Ok(Some(Incoming::Oversized {
                id,
                len: payload_len,
            }));
        }
        let mut payload = vec![0; payload_len];
        self.inner
            .read_exact(&mut payload)
            .await
            .map_err(truncated)?;
        decode(id, kind, payload).map(|f| Some(Incoming::Frame(f)))
    }
}

fn truncated(e: std::io::Error) -> FrameError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        FrameError::Truncated
    } else {
        FrameError::Io(e)
    }
}

/// What a writer task is asked to do.
#[derive(Debug)]
pub enum Outgoing {
    /// Write a frame.
    Frame(Frame),
    /// Answer once every frame queued before this is written.
    Flushed(oneshot::Sender<()>),
}

/// Writes queued frames until the queue closes: whatever is queued when
/// the writer wakes is gathered into one write, so a burst costs one
/// system call and a lone frame goes out at once. A frame that cannot be encoded is reported as
/// an error, ending the writer.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    mut w: W,
) -> Result<(), FrameError> {
    let mut buf = Vec::new();
    let mut flushed = Vec::new();
    while let Some(first) = rx.recv().await {
        buf.clear();
        // Only what is queued now: a producer queueing frames as fast as
        // they are gathered would otherwise hold the first one back until
        // the batch is full.
        let mut queued = rx.len();
        let mut next = Some(first);
        while let Some(out) = next.take() {
            match out {
                Outgoing::Frame(frame) => encode(&frame, &mut buf)?,
                Outgoing::Flushed(tx) => flushed.push(tx),
            }
            if queued > 0 && buf.len() < BATCH_BYTES {
                queued -= 1;
                next = rx.try_recv().ok();
            }
        }
        w.write_all(&buf).await?;
        w.flush().await?;
        for tx in flushed.drain(..) {
            let _ = tx.send(());
        }
        // A connection gone quiet keeps no burst-sized buffer: thousands
        // may be open.
        if rx.is_empty() && buf.capacity() > IDLE_BUFFER {
            buf = Vec::new();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame) {
        let mut buf = Vec::new();
        encode(&frame, &mut buf).unwrap();
        let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(len + 4, buf.len(), "{frame:?}");
        let id = u32::from_le_bytes(buf[4..8].try_into().unwrap());
        let back = decode(id, buf[8], buf[HEADER_LEN..].to_vec()).unwrap();
        assert_eq!(back, frame);
    }

    #[test]
    fn every_frame_round_trips() {
        round_trip(Frame::Hello);
        round_trip(Frame::Call {
            id: 7,
            function: "count".into(),
            args: vec![0x93, 1, 2, 3],
            deadline_ms: Some(1500),
        });
        round_trip(Frame::Call {
            id: u32::MAX,
            function: String::new(),
            args: vec![],
            deadline_ms: None,
        });
        round_trip(Frame::Item {
            id: 1,
            data: vec![0xc0],
        });
        round_trip(Frame::End { id: 2 });
        round_trip(Frame::Error {
            id: 3,
            code: 5,
            message: "no such thing: ü".into(),
        });
        round_trip(Frame::Cancel { id: 4 });
        round_trip(Frame::Ping { nonce: 9 });
        round_trip(Frame::Pong { nonce: u64::MAX });
        round_trip(Frame::Credit { id: 7, items: 32 });
        round_trip(Frame::Route {
            id: 8,
            module: "echo".into(),
            function: "echo".into(),
            args: vec![0xa2, b'h', b'i'],
            deadline_ms: Some(250),
        });
        round_trip(Frame::Provide {
            id: 1,
            module: "notes".into(),
            functions: vec!["query".into(), "ü".into()],
        });
        round_trip(Frame::Provide {
            id: 2,
            module: "bare".into(),
            functions: vec![],
        });
        round_trip(Frame::Route {
            id: 9,
            module: String::new(),
            function: "ü".into(),
            args: vec![],
            deadline_ms: None,
        });
    }

    #[test]
    fn the_hello_is_the_magic_in_a_frame() {
        let mut buf = Vec::new();
        encode(&Frame::Hello, &mut buf).unwrap();
        assert_eq!(buf, hello_bytes());
        assert!(buf.ends_with(b"NPL1"));
        assert_eq!(buf.len(), 13);
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        assert!(matches!(
            decode(0, kind::HELLO, b"NPL2".to_vec()),
            Err(FrameError::Malformed { what: "HELLO", .. })
        ));
        for payload in [vec![], vec![1], vec![0, 5], vec![0, 9, 0, b'a']] {
            assert!(decode(1, kind::CALL, payload).is_err());
        }
        // A module name, then a function name cut short.
        for payload in [
            vec![0],
            vec![0, 1, 0, b'm'],
            vec![0, 1, 0, b'm', 3, 0, b'f'],
        ] {
            assert!(decode(1, kind::ROUTE, payload).is_err());
        }
        // A module name, then no count, or a count with a name missing.
        for payload in [vec![1, 0, b'm'], vec![1, 0, b'm', 1, 0]] {
            assert!(decode(1, kind::PROVIDE, payload).is_err());
        }
        assert!(decode(1, kind::ERROR, vec![1, 2]).is_err());
        assert!(decode(0, kind::PING, vec![1; 7]).is_err());
        assert!(matches!(
            decode(1, 200, vec![]),
            Err(FrameError::UnknownKind { id: 1, kind: 200 })
        ));
        // Not UTF-8: still delivered.
        let e = decode(1, kind::ERROR, vec![2, 0, 0, 0, 0xff]).unwrap();
        assert!(matches!(e, Frame::Error { code: 2, .. }));
    }

    #[tokio::test]
    async fn the_reader_splits_a_stream_and_skips_oversized_frames() {
        let mut bytes = Vec::new();
        encode(&Frame::Hello, &mut bytes).unwrap();
        encode(
            &Frame::Item {
                id: 1,
                data: vec![7; 100],
            },
            &mut bytes,
        )
        .unwrap();
        encode(&Frame::End { id: 1 }, &mut bytes).unwrap();
        let mut r = FrameReader::new(bytes.as_slice(), 50);
        assert_eq!(r.next().await.unwrap(), Some(Incoming::Frame(Frame::Hello)));
        assert_eq!(
            r.next().await.unwrap(),
            Some(Incoming::Oversized { id: 1, len: 100 })
        );
        assert_eq!(
            r.next().await.unwrap(),
            Some(Incoming::Frame(Frame::End { id: 1 }))
        );
        assert_eq!(r.next().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_frame_is_truncated() {
        let mut bytes = Vec::new();
        encode(
            &Frame::Item {
                id: 1,
                data: vec![7; 10],
            },
            &mut bytes,
        )
        .unwrap();
        for cut in [3, HEADER_LEN + 2] {
            let mut r = FrameReader::new(&bytes[..cut], 1 << 20);
            assert!(
                matches!(r.next().await, Err(FrameError::Truncated)),
                "{cut}"
            );
        }
        let short = [1u8, 0, 0, 0, 0, 0, 0, 0, 2];
        let mut r = FrameReader::new(short.as_slice(), 1 << 20);
        assert!(matches!(r.next().await, Err(FrameError::Short(1))));
    }

    #[tokio::test]
    async fn the_writer_batches_and_answers_flushes_in_order() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done) = oneshot::channel();
        tx.send(Outgoing::Frame(Frame::Item {
            id: 1,
            data: vec![1],
        }))
        .unwrap();
        tx.send(Outgoing::Flushed(done_tx)).unwrap();
        tx.send(Outgoing::Frame(Frame::End { id: 1 })).unwrap();
        drop(tx);
        let mut out = Vec::new();
        write_frames(rx, &mut out).await.unwrap();
        done.await.unwrap();
        let mut r = FrameReader::new(out.as_slice(), 1 << 20);
        assert!(matches!(
            r.next().await.unwrap(),
            Some(Incoming::Frame(Frame::Item { id: 1, .. }))
        ));
        assert!(matches!(
            r.next().await.unwrap(),
            Some(Incoming::Frame(Frame::End { id: 1 }))
        ));
    }
}
