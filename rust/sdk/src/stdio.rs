//! Taking over stdin/stdout as the router connection.
//!
//! The protocol gets private duplicates of fds 0 and 1; fd 1 then points
//! at stderr and fd 0 at /dev/null. A stray `println!` in a module (or in a
//! library it uses) thus lands in the router's log instead of corrupting
//! the HTTP/2 stream, and child processes cannot read the router's bytes.
//!
//! Pipes (what the router gives) are driven non-blocking through tokio.
//! Anything else (a terminal, a file) falls back to a plain thread for
//! stdin, because tokio's own stdin reads on its blocking pool, which keeps
//! the runtime from shutting down until the read returns.

use std::{
    fs::File,
    io::Read,
    os::fd::{AsFd, AsRawFd, OwnedFd},
};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// The reading and writing ends of the router connection.
pub(crate) struct Stdio {
    pub(crate) reader: Box<dyn AsyncRead + Send + Unpin>,
    pub(crate) writer: Box<dyn AsyncWrite + Send + Unpin>,
}

/// Duplicates stdin/stdout for the protocol and neutralises fds 0 and 1.
/// Must run inside a tokio runtime.
pub(crate) fn take() -> std::io::Result<Stdio> {
    let input = std::io::stdin().as_fd().try_clone_to_owned()?;
    let output = std::io::stdout().as_fd().try_clone_to_owned()?;
    let devnull = File::open("/dev/null")?;
    nix::unistd::dup2(devnull.as_raw_fd(), 0)?;
    nix::unistd::dup2(2, 1)?;
    Ok(Stdio {
        reader: reader(input)?,
        writer: writer(output)?,
    })
}

fn is_fifo(fd: &OwnedFd) -> bool {
    use nix::sys::stat::{fstat, SFlag};
    fstat(fd.as_raw_fd())
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO)
}

fn reader(fd: OwnedFd) -> std::io::Result<Box<dyn AsyncRead + Send + Unpin>> {
    if is_fifo(&fd) {
        return Ok(Box::new(tokio::net::unix::pipe::Receiver::from_owned_fd(
            fd,
        )?));
    }
    let (mut sink, source) = tokio::io::duplex(64 * 1024);
    let runtime = tokio::runtime::Handle::current();
    let mut file = File::from(fd);
    std::thread::Builder::new()
        .name("norgopolis-stdin".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!("reading stdin failed: {e}");
                        break;
                    }
                };
                if runtime.block_on(sink.write_all(&buf[..n])).is_err() {
                    break;
                }
            }
            // Dropping `sink` is the EOF the connection sees.
        })?;
    Ok(Box::new(source))
}

fn writer(fd: OwnedFd) -> std::io::Result<Box<dyn AsyncWrite + Send + Unpin>> {
    if is_fifo(&fd) {
        return Ok(Box::new(tokio::net::unix::pipe::Sender::from_owned_fd(fd)?));
    }
    Ok(Box::new(tokio::fs::File::from_std(File::from(fd))))
}
