//! Which server binary to start: explicit option, `$NORGOPOLIS_SERVER`, a
//! `norgopolis-server` beside the running executable, then `PATH`.
//!
//! An explicit option or the variable, when set, is taken at its word: if it
//! names no executable we say so rather than quietly starting some other
//! server than the one asked for.

use std::{
    ffi::OsStr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

/// No executable server binary where one was looked for.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot find the norgopolis server binary; looked at: {}", tried.join(", "))]
pub struct ServerNotFound {
    /// Every place looked at, in order.
    pub tried: Vec<String>,
}

/// File name of the server binary.
pub const SERVER_BINARY_NAME: &str = "norgopolis-server";

/// Finds the server binary for this process (see the module docs).
pub fn find_server_binary(explicit: Option<&Path>) -> Result<PathBuf, ServerNotFound> {
    let env = std::env::var_os(norgopolis_common::places::SERVER_ENV);
    let exe = std::env::current_exe().ok();
    let path = std::env::var_os("PATH");
    lookup(explicit, env.as_deref(), exe.as_deref(), path.as_deref())
}

/// The lookup with every input passed in, so the order can be tested.
fn lookup(
    explicit: Option<&Path>,
    env: Option<&OsStr>,
    current_exe: Option<&Path>,
    path_var: Option<&OsStr>,
) -> Result<PathBuf, ServerNotFound> {
    if let Some(p) = explicit {
        return checked(p, "the server binary option");
    }
    if let Some(p) = env.filter(|v| !v.is_empty()) {
        return checked(
            Path::new(p),
            &format!("${}", norgopolis_common::places::SERVER_ENV),
        );
    }
    let mut tried = vec![format!(
        "${} (unset)",
        norgopolis_common::places::SERVER_ENV
    )];
    if let Some(dir) = current_exe.and_then(Path::parent) {
        let candidate = dir.join(SERVER_BINARY_NAME);
        if is_executable(&candidate) {
            return Ok(candidate);
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
            return Ok(candidate);
        }
    }
    tried.push(format!(
        "{SERVER_BINARY_NAME} in PATH ({})",
        path_var.map(|p| p.to_string_lossy()).unwrap_or_default()
    ));
    Err(ServerNotFound { tried })
}

fn checked(p: &Path, source: &str) -> Result<PathBuf, ServerNotFound> {
    if is_executable(p) {
        Ok(p.to_path_buf())
    } else {
        Err(ServerNotFound {
            tried: vec![format!(
                "{} (from {source}: not an executable file)",
                p.display()
            )],
        })
    }
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

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

    fn exe_in(bin: &Path) -> PathBuf {
        bin.parent().unwrap().join("some-frontend")
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
            Some(&exe_in(&d.beside)),
            Some(&path_of(&[&d.path1])),
        )
        .unwrap();
        assert_eq!(got, d.explicit);
    }

    #[test]
    fn env_comes_second() {
        let d = dirs();
        let got = lookup(
            None,
            Some(d.env.as_os_str()),
            Some(&exe_in(&d.beside)),
            Some(&path_of(&[&d.path1])),
        )
        .unwrap();
        assert_eq!(got, d.env);
    }

    #[test]
    fn beside_current_exe_comes_third() {
        let d = dirs();
        let got = lookup(
            None,
            None,
            Some(&exe_in(&d.beside)),
            Some(&path_of(&[&d.path1])),
        )
        .unwrap();
        assert_eq!(got, d.beside);
    }

    #[test]
    fn path_is_searched_in_order() {
        let d = dirs();
        let got = lookup(
            None,
            Some(OsStr::new("")),
            Some(&exe_in(&d.empty)),
            Some(&path_of(&[&d.empty, &d.path2, &d.path1])),
        )
        .unwrap();
        assert_eq!(got, d.path2);
    }

    #[test]
    fn missing_everywhere_names_every_place() {
        let d = dirs();
        let err = lookup(
            None,
            None,
            Some(&exe_in(&d.empty)),
            Some(&path_of(&[&d.empty])),
        )
        .unwrap_err();
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
            None,
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
        let err = lookup(
            None,
            Some(d.empty.as_os_str()),
            Some(&exe_in(&d.beside)),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("$NORGOPOLIS_SERVER"), "{err}");
    }
}
