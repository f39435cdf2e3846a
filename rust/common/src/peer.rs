//! Who is at the other end of a Unix socket.
//!
//! Clients ask before sending a byte (a server of another user must never
//! see a call); the server asks before it removes a socket it found. For a
//! listening peer the kernel reports the credentials it had at `listen()`.

use std::{io, os::fd::AsFd};

/// The effective uid of the process at the other end of `socket`.
pub fn peer_uid(socket: &impl AsFd) -> io::Result<u32> {
    imp::peer_uid(socket)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
    use std::{io, os::fd::AsFd};

    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

    pub fn peer_uid(socket: &impl AsFd) -> io::Result<u32> {
        let cred = getsockopt(socket, PeerCredentials).map_err(io::Error::from)?;
        Ok(cred.uid())
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod imp {
    use std::{
        io,
        os::fd::{AsFd, AsRawFd},
    };

    pub fn peer_uid(socket: &impl AsFd) -> io::Result<u32> {
        let mut uid: libc::uid_t = 0;
        let mut gid: libc::gid_t = 0;
        // SAFETY: getpeereid writes two integers we own, on an fd we borrow.
        let rc = unsafe { libc::getpeereid(socket.as_fd().as_raw_fd(), &mut uid, &mut gid) };
        if rc == 0 {
            Ok(uid)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Our own effective uid (what a trusted peer must match).
pub fn my_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_pair_peer_is_ourselves() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(peer_uid(&a).unwrap(), my_uid());
    }

    #[test]
    fn a_non_socket_is_an_error() {
        let f = tempfile::tempfile().unwrap();
        assert!(peer_uid(&f).is_err());
    }
}
