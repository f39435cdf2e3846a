//! Where norgopolis keeps its files.
//!
//! The runtime dir (socket and locks) must be private to the user: a socket
//! in a directory others can write to could be replaced under us, so an
//! unsafe directory is refused rather than "fixed".

use std::{
    env,
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

/// Env var overriding the socket path (tests run isolated servers with it).
pub const SOCKET_ENV: &str = "NORGOPOLIS_SOCKET";
/// Env var with colon-separated module directories.
pub const MODULES_DIR_ENV: &str = "NORGOPOLIS_MODULES_DIR";
/// Env var overriding the server log path.
pub const LOG_ENV: &str = "NORGOPOLIS_LOG";
/// Env var overriding the config file path.
pub const CONFIG_ENV: &str = "NORGOPOLIS_CONFIG";
/// Env var naming the server binary clients spawn.
pub const SERVER_ENV: &str = "NORGOPOLIS_SERVER";
/// Env var set for module processes: their own module name.
pub const MODULE_ENV: &str = "NORGOPOLIS_MODULE";
/// Env var set for module processes: the transport the router expects on
/// their stdio, `grpc` or `lean` (from `transport` in `module.toml`).
pub const TRANSPORT_ENV: &str = "NORGOPOLIS_TRANSPORT";
/// Set by the router for each module it starts: the module's
/// `[modules.NAME]` configuration as a JSON object (`{}` when it has none).
pub const MODULE_CONFIG_ENV: &str = "NORGOPOLIS_MODULE_CONFIG";

/// A runtime directory or file could not be used safely.
#[derive(Debug, thiserror::Error)]
pub enum PlacesError {
    /// Neither `$HOME` nor an XDG variable told us where to put a file.
    #[error("cannot locate {what}: set ${var}")]
    Unlocated {
        /// What we tried to place.
        what: &'static str,
        /// The variable that would fix it.
        var: &'static str,
    },
    /// Creating or inspecting the runtime dir failed.
    #[error("runtime dir {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The runtime dir belongs to another user.
    #[error("runtime dir {path} is owned by uid {owner}, not by you (uid {me}); remove it or set {SOCKET_ENV}")]
    ForeignOwner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        me: u32,
    },
    /// The runtime dir is open to group or others.
    #[error("runtime dir {path} has mode {mode:o}, open to other users; run `chmod 700 {path}`")]
    OpenMode {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The runtime dir path is a symlink (refused: never followed).
    #[error("runtime dir {path} is a symbolic link; refusing to follow it")]
    Symlink {
        /// The directory.
        path: PathBuf,
    },
}

/// The files one server instance uses, all derived from its socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Places {
    /// The Unix socket clients connect to.
    pub socket: PathBuf,
    /// Held (flock) by the server for its whole life.
    pub server_lock: PathBuf,
    /// Held by a client while it checks for and spawns a server.
    pub spawn_lock: PathBuf,
    /// The running server's pid.
    pub pid_file: PathBuf,
}

/// File name of the socket in the default runtime dir.
pub const DEFAULT_SOCKET_NAME: &str = "norgopolis.sock";

impl Places {
    /// The places for this user: `$NORGOPOLIS_SOCKET` if set, otherwise the
    /// socket in the per-user runtime dir. Does not create anything.
    pub fn from_env() -> Result<Self, PlacesError> {
        match env::var_os(SOCKET_ENV).filter(|s| !s.is_empty()) {
            Some(sock) => Ok(Self::for_socket(PathBuf::from(sock))),
            None => Ok(Self::for_socket(runtime_dir()?.join(DEFAULT_SOCKET_NAME))),
        }
    }

    /// Places beside a given socket. The default socket name gets the plain
    /// names (`server.lock`, …); any other socket prefixes them with its file
    /// name so isolated servers can share a directory.
    pub fn for_socket(socket: PathBuf) -> Self {
        let dir = socket.parent().map(Path::to_path_buf).unwrap_or_default();
        let file = socket
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sibling = |name: &str| {
            if file == DEFAULT_SOCKET_NAME {
                dir.join(name)
            } else {
                dir.join(format!("{file}.{name}"))
            }
        };
        Places {
            server_lock: sibling("server.lock"),
            spawn_lock: sibling("spawn.lock"),
            pid_file: sibling("server.pid"),
            socket,
        }
    }

    /// Directory holding the socket and lock files.
    pub fn dir(&self) -> &Path {
        self.socket.parent().unwrap_or(Path::new("/"))
    }

    /// Creates the directory (0700) if missing and checks it is safe.
    pub fn ensure_dir(&self) -> Result<(), PlacesError> {
        ensure_private_dir(self.dir())
    }
}

/// `$XDG_RUNTIME_DIR/norgopolis`, else `/tmp/norgopolis-$UID`. Never derived
/// from `$TMPDIR`, which differs between a user's processes.
pub fn runtime_dir() -> Result<PathBuf, PlacesError> {
    match env::var_os("XDG_RUNTIME_DIR").filter(|s| !s.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir).join("norgopolis")),
        None => Ok(PathBuf::from(format!(
            "/tmp/norgopolis-{}",
            nix::unistd::geteuid()
        ))),
    }
}

/// Creates `dir` with mode 0700 if missing; refuses symlinks, directories
/// owned by another user and directories open to group or others.
pub fn ensure_private_dir(dir: &Path) -> Result<(), PlacesError> {
    let io = |source| PlacesError::Io {
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(false)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Parent missing (e.g. a fresh XDG dir): create parents normally,
            // then the leaf privately.
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(e)),
            }
        }
        Err(e) => return Err(io(e)),
    }
    check_private_dir(dir)
}

/// Checks without creating: see [`ensure_private_dir`].
pub fn check_private_dir(dir: &Path) -> Result<(), PlacesError> {
    let meta = std::fs::symlink_metadata(dir).map_err(|source| PlacesError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(PlacesError::Symlink {
            path: dir.to_path_buf(),
        });
    }
    if !meta.is_dir() {
        return Err(PlacesError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::other("not a directory"),
        });
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(PlacesError::ForeignOwner {
            path: dir.to_path_buf(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PlacesError::OpenMode {
            path: dir.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

fn home() -> Option<PathBuf> {
    env::var_os("HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
}

fn xdg(var: &'static str, fallback: &str) -> Result<PathBuf, PlacesError> {
    if let Some(dir) = env::var_os(var).filter(|s| !s.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    home()
        .map(|h| h.join(fallback))
        .ok_or(PlacesError::Unlocated {
            what: "user directories",
            var,
        })
}

/// The server log: `$NORGOPOLIS_LOG`, else `$XDG_STATE_HOME/norgopolis/server.log`.
pub fn log_path() -> Result<PathBuf, PlacesError> {
    if let Some(p) = env::var_os(LOG_ENV).filter(|s| !s.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    Ok(xdg("XDG_STATE_HOME", ".local/state")?.join("norgopolis/server.log"))
}

/// The config file: `$NORGOPOLIS_CONFIG`, else `$XDG_CONFIG_HOME/norgopolis/config.toml`.
pub fn config_path() -> Result<PathBuf, PlacesError> {
    if let Some(p) = env::var_os(CONFIG_ENV).filter(|s| !s.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    Ok(xdg("XDG_CONFIG_HOME", ".config")?.join("norgopolis/config.toml"))
}

/// The default user modules dir: `$XDG_DATA_HOME/norgopolis/modules`.
pub fn default_modules_dir() -> Result<PathBuf, PlacesError> {
    Ok(xdg("XDG_DATA_HOME", ".local/share")?.join("norgopolis/modules"))
}

/// Module dirs from `$NORGOPOLIS_MODULES_DIR` (colon-separated), if set.
pub fn modules_dirs_from_env() -> Option<Vec<PathBuf>> {
    let raw = env::var_os(MODULES_DIR_ENV).filter(|s| !s.is_empty())?;
    Some(
        env::split_paths(&raw)
            .filter(|p| !p.as_os_str().is_empty())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_socket_gets_plain_names() {
        let p = Places::for_socket(PathBuf::from("/r/norgopolis.sock"));
        assert_eq!(p.server_lock, PathBuf::from("/r/server.lock"));
        assert_eq!(p.spawn_lock, PathBuf::from("/r/spawn.lock"));
        assert_eq!(p.pid_file, PathBuf::from("/r/server.pid"));
    }

    #[test]
    fn custom_socket_gets_prefixed_names() {
        let p = Places::for_socket(PathBuf::from("/t/a.sock"));
        assert_eq!(p.server_lock, PathBuf::from("/t/a.sock.server.lock"));
    }

    #[test]
    fn open_dir_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("rt");
        ensure_private_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = ensure_private_dir(&d).unwrap_err();
        assert!(
            matches!(err, PlacesError::OpenMode { mode: 0o755, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 700"));
    }

    #[test]
    fn symlink_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        ensure_private_dir(&real).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(
            ensure_private_dir(&link),
            Err(PlacesError::Symlink { .. })
        ));
    }
}
