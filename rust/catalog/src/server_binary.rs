//! Which server binary to start: explicit option, `$NORGOPOLIS_SERVER`, a
//! `norgopolis-server` beside the front end (beside the running
//! executable; for the Neovim plugin, the builds beside the plugin), then
//! `PATH`.
//!
//! An explicit option or the variable, when set, is taken at its word: if it
//! names no executable we say so rather than quietly starting some other
//! server than the one asked for.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
};

use norgopolis_common::places::SERVER_ENV;

use crate::locate::is_executable;

/// File name of the server binary.
pub const SERVER_BINARY_NAME: &str = "norgopolis-server";

/// Which step of the lookup gave (or refused) the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerSource {
    /// The front end's own option.
    Explicit,
    /// `$NORGOPOLIS_SERVER`.
    Env,
    /// A candidate beside the front end.
    Beside,
    /// A dir of `PATH`.
    Path,
}

impl ServerSource {
    /// A short name: `explicit`, `env`, `beside` or `path`.
    pub fn kind(self) -> &'static str {
        match self {
            ServerSource::Explicit => "explicit",
            ServerSource::Env => "env",
            ServerSource::Beside => "beside",
            ServerSource::Path => "path",
        }
    }
}

/// A server binary, and the step that found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundServer {
    /// The executable.
    pub path: PathBuf,
    /// Where it came from.
    pub source: ServerSource,
}

/// No executable server binary where one was looked for.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot find the norgopolis server binary; looked at: {}", self.looked_at().join(", "))]
pub struct ServerNotFound {
    /// Set when an explicit option or `$NORGOPOLIS_SERVER` named a path
    /// that is not executable (taken at its word: nothing else was tried).
    pub refused: Option<ServerSource>,
    /// Every place looked at, in order (for `refused`, just its path).
    pub tried: Vec<String>,
}

impl ServerNotFound {
    /// The places looked at, each with why it was passed over where that
    /// is not plain absence.
    pub fn looked_at(&self) -> Vec<String> {
        let origin = match self.refused {
            Some(ServerSource::Explicit) => "the server binary option".to_string(),
            Some(_) => format!("${SERVER_ENV}"),
            None => return self.tried.clone(),
        };
        self.tried
            .iter()
            .map(|p| format!("{p} (from {origin}: not an executable file)"))
            .collect()
    }
}

/// Finds the server binary for this process (see the module docs), looking
/// beside the running executable.
pub fn find_server_binary(explicit: Option<&Path>) -> Result<PathBuf, ServerNotFound> {
    let exe = std::env::current_exe().ok();
    let beside: Vec<PathBuf> = exe
        .as_deref()
        .and_then(Path::parent)
        .map(|dir| dir.join(SERVER_BINARY_NAME))
        .into_iter()
        .collect();
    find_server(explicit, &beside).map(|found| found.path)
}

/// Finds the server binary, trying the `beside` candidates (in order)
/// after the option and the variable and before `PATH`.
pub fn find_server(
    explicit: Option<&Path>,
    beside: &[PathBuf],
) -> Result<FoundServer, ServerNotFound> {
    let env = std::env::var_os(SERVER_ENV);
    let path = std::env::var_os("PATH");
    lookup(explicit, env.as_deref(), beside, path.as_deref())
}

/// The lookup with every input passed in, so the order can be tested.
fn lookup(
    explicit: Option<&Path>,
    env: Option<&OsStr>,
    beside: &[PathBuf],
    path_var: Option<&OsStr>,
) -> Result<FoundServer, ServerNotFound> {
    if let Some(p) = explicit {
        return checked(p, ServerSource::Explicit);
    }
    if let Some(p) = env.filter(|v| !v.is_empty()) {
        return checked(Path::new(p), ServerSource::Env);
    }
    let found = |path: &Path, source| FoundServer {
        path: path.to_path_buf(),
        source,
    };
    let mut tried = vec![format!("${SERVER_ENV} (unset)")];
    for candidate in beside {
        if is_executable(candidate) {
            return Ok(found(candidate, ServerSource::Beside));
        }
        tried.push(candidate.display().to_string());
    }
    let dirs: Vec<PathBuf> = path_var
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    for dir in &dirs {
        // An empty PATH entry means the current directory; a daemon started
        // from wherever the user happens to be must not depend on that.
        if dir.as_os_str().is_empty() {
            continue;
        }
        let candidate = dir.join(SERVER_BINARY_NAME);
        if is_executable(&candidate) {
            return Ok(found(&candidate, ServerSource::Path));
        }
    }
    tried.push(format!(
        "{SERVER_BINARY_NAME} in PATH ({})",
        path_var.map(|p| p.to_string_lossy()).unwrap_or_default()
    ));
    Err(ServerNotFound {
        refused: None,
        tried,
    })
}

fn checked(p: &Path, source: ServerSource) -> Result<FoundServer, ServerNotFound> {
    if is_executable(p) {
        Ok(FoundServer {
            path: p.to_path_buf(),
            source,
        })
    } else {
        Err(ServerNotFound {
            refused: Some(source),
            tried: vec![p.display().to_string()],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{ffi::OsString, os::unix::fs::PermissionsExt};

    struct Dirs {
        _tmp: tempfile::TempDir,
        explicit: PathBuf,
        env: PathBuf,
        beside: PathBuf,
        path1: PathBuf,
        path2: PathBuf,
        empty: PathBuf,
    }

    /// Five dirs, each with its own executable `norgopolis-server` except
    /// `empty`.
    fn dirs() -> Dirs {
        let tmp = tempfile::tempdir().unwrap();
        let mk = |name: &str, with_binary: bool| {
            let d = tmp.path().join(name);
            std::fs::create_dir(&d).unwrap();
            let bin = d.join(SERVER_BINARY_NAME);
            if with_binary {
                std::fs::write(&bin, "#!/bin/sh\n").unwrap();
                std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            bin
        };
        Dirs {
            explicit: mk("explicit", true),
            env: mk("env", true),
            beside: mk("beside", true),
            path1: mk("path1", true),
            path2: mk("path2", true),
            empty: mk("empty", false),
            _tmp: tmp,
        }
    }

    fn beside(bin: &Path) -> Vec<PathBuf> {
        vec![bin.to_path_buf()]
    }

    fn path_of(bins: &[&Path]) -> OsString {
        std::env::join_paths(bins.iter().map(|b| b.parent().unwrap())).unwrap()
    }

    #[test]
    fn explicit_wins_over_everything() {
        let d = dirs();
        let got = lookup(
            Some(&d.explicit),
            Some(d.env.as_os_str()),
            &beside(&d.beside),
            Some(&path_of(&[&d.path1])),
        )
        .unwrap()
        .path;
        assert_eq!(got, d.explicit);
    }

    #[test]
    fn env_comes_second() {
        let d = dirs();
        let got = lookup(
            None,
            Some(d.env.as_os_str()),
            &beside(&d.beside),
            Some(&path_of(&[&d.path1])),
        )
        .unwrap()
        .path;
        assert_eq!(got, d.env);
    }

    #[test]
    fn beside_current_exe_comes_third() {
        let d = dirs();
        let got = lookup(None, None, &beside(&d.beside), Some(&path_of(&[&d.path1])))
            .unwrap()
            .path;
        assert_eq!(got, d.beside);
    }

    #[test]
    fn path_is_searched_in_order() {
        let d = dirs();
        let got = lookup(
            None,
            Some(OsStr::new("")),
            &beside(&d.empty),
            Some(&path_of(&[&d.empty, &d.path2, &d.path1])),
        )
        .unwrap()
        .path;
        assert_eq!(got, d.path2);
    }

    #[test]
    fn missing_everywhere_names_every_place() {
        let d = dirs();
        let err = lookup(None, None, &beside(&d.empty), Some(&path_of(&[&d.empty]))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("$NORGOPOLIS_SERVER"), "{msg}");
        assert!(msg.contains(&d.empty.display().to_string()), "{msg}");
        assert!(msg.contains("in PATH"), "{msg}");
    }

    #[test]
    fn explicit_that_is_not_executable_is_an_error_not_a_fallback() {
        let d = dirs();
        std::fs::set_permissions(&d.explicit, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = lookup(
            Some(&d.explicit),
            Some(d.env.as_os_str()),
            &[],
            Some(&path_of(&[&d.path1])),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains(&d.explicit.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn env_naming_a_missing_file_is_an_error() {
        let d = dirs();
        let err = lookup(None, Some(d.empty.as_os_str()), &beside(&d.beside), None).unwrap_err();
        assert!(err.to_string().contains("$NORGOPOLIS_SERVER"), "{err}");
    }
}
