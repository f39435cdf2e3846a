//! Registering a connection as an external module: the handshake every
//! provider (the SDK's `Module::provide`, Neovim's `provide`) starts with.
//!
//! The connection opens as a lean client's (our hello, the router's), then
//! sends `PROVIDE` with the module's name and functions; the router answers
//! `END` (registered: from then on it calls us as a module) or `ERROR`
//! (refused). See docs/protocol.md, section 11.

use std::path::PathBuf;

use norgopolis_proto::lean_frame::{self, Frame, FrameError, FrameReader, Incoming};
use tokio::{
    io::AsyncWriteExt,
    net::unix::{OwnedReadHalf, OwnedWriteHalf},
};

use crate::{open_socket, ClientError, ConnectOptions};

/// The id of the `PROVIDE` frame (nothing else is in flight yet).
const PROVIDE_ID: u32 = 1;

/// A connection registered as a module: the router's calls arrive on
/// `frames` (read past its answer), answers go to `writer`.
pub struct Registered {
    /// The socket connected to.
    pub socket: PathBuf,
    /// The router's frames.
    pub frames: FrameReader<OwnedReadHalf>,
    /// Our end for answers.
    pub writer: OwnedWriteHalf,
}

/// Connects to `options`' socket (never starting a server) and registers
/// the connection as module `module` serving `functions`. A refusal is a
/// [`ClientError::Call`] with the router's code (`AlreadyExists`: the
/// name is taken; `InvalidArgument`: a bad name).
pub async fn register(
    options: &ConnectOptions,
    module: &str,
    functions: Vec<String>,
) -> Result<Registered, ClientError> {
    let (socket, stream) = open_socket(options).await?;
    let (reader, mut writer) = stream.into_split();
    let mut opening = lean_frame::hello_bytes().to_vec();
    let provide = Frame::Provide {
        id: PROVIDE_ID,
        module: module.to_owned(),
        functions,
    };
    lean_frame::encode(&provide, &mut opening).map_err(|e| ClientError::Call {
        code: tonic::Code::InvalidArgument,
        message: format!("cannot register module '{module}': {e}"),
    })?;
    let gone = |source: std::io::Error| ClientError::Connect {
        socket: socket.clone(),
        source,
    };
    writer.write_all(&opening).await.map_err(gone)?;
    let mut frames = FrameReader::new(reader, u32::MAX as usize);
    let greeting = next(&mut frames).await.map_err(gone)?;
    if greeting != Frame::Hello {
        return Err(unexpected(module, &greeting));
    }
    match next(&mut frames).await.map_err(gone)? {
        Frame::End { id: PROVIDE_ID } => Ok(Registered {
            socket,
            frames,
            writer,
        }),
        Frame::Error {
            id: PROVIDE_ID,
            code,
            message,
        } => Err(ClientError::Call {
            code: tonic::Code::from_i32(code),
            message: format!("the router refused to register module '{module}': {message}"),
        }),
        other => Err(unexpected(module, &other)),
    }
}

fn unexpected(module: &str, frame: &Frame) -> ClientError {
    ClientError::Call {
        code: tonic::Code::Internal,
        message: format!(
            "the router answered the registration of module '{module}' with a {} frame",
            frame.kind_name()
        ),
    }
}

/// The router's next frame during the handshake; its end is an error.
async fn next(frames: &mut FrameReader<OwnedReadHalf>) -> std::io::Result<Frame> {
    let closed = || {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the router closed the connection during the handshake",
        )
    };
    match frames.next().await {
        Ok(Some(Incoming::Frame(frame))) => Ok(frame),
        Ok(Some(Incoming::Oversized { .. })) => Err(std::io::Error::other("an oversized frame")),
        Ok(None) | Err(FrameError::Truncated) => Err(closed()),
        Err(FrameError::Io(e)) => Err(e),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}
