//! The modules-dirs rule, stated once: the dirs a caller names (the
//! server's `--modules-dir`, the CLI's `--modules-dir`, the Neovim
//! `modules_dirs` option), else `$NORGOPOLIS_MODULES_DIR`, else
//! `modules_dirs` in `config.toml`, else `$XDG_DATA_HOME/norgopolis/modules`.
//!
//! The server, the CLI and the Neovim library all resolve through
//! [`resolve`], so `module install` writes where the server looks, and
//! `:checkhealth` shows what the server searches.

use std::path::{Path, PathBuf};

use norgopolis_common::places::{self, PlacesError};
use serde::Deserialize;

/// Where the user's modules dirs came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirsSource {
    /// Named by the caller (flags or options).
    Flags,
    /// `$NORGOPOLIS_MODULES_DIR`.
    Env,
    /// `modules_dirs` in this config file.
    Config(PathBuf),
    /// `$XDG_DATA_HOME/norgopolis/modules`.
    Default,
}

impl DirsSource {
    /// A short name for the kind of source: `flags`, `env`, `config` or
    /// `default` (what the Neovim library hands to Lua).
    pub fn kind(&self) -> &'static str {
        match self {
            DirsSource::Flags => "flags",
            DirsSource::Env => "env",
            DirsSource::Config(_) => "config",
            DirsSource::Default => "default",
        }
    }
}

impl std::fmt::Display for DirsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirsSource::Flags => f.write_str("--modules-dir"),
            DirsSource::Env => write!(f, "${}", places::MODULES_DIR_ENV),
            DirsSource::Config(path) => write!(f, "modules_dirs in {}", path.display()),
            DirsSource::Default => f.write_str("the default"),
        }
    }
}

/// What the caller knows of `config.toml`'s `modules_dirs`.
#[derive(Debug, Clone)]
pub enum ConfigDirs {
    /// Read the key from this file (`None`: `$NORGOPOLIS_CONFIG`, else
    /// `$XDG_CONFIG_HOME/norgopolis/config.toml`). A missing file has no
    /// key; relative entries are taken from the file's dir.
    Read(Option<PathBuf>),
    /// The caller has read the file already (the server checks all of it).
    Given {
        /// The file, for [`DirsSource::Config`].
        path: PathBuf,
        /// Its `modules_dirs`, relative entries already anchored.
        dirs: Option<Vec<PathBuf>>,
    },
}

/// The user's modules dirs, in search order, and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModulesDirs {
    /// Absolute dirs, searched in order; the first is the one `install`
    /// writes to.
    pub dirs: Vec<PathBuf>,
    /// Which layer of the rule chose them.
    pub source: DirsSource,
}

impl ModulesDirs {
    /// The dirs followed by `fallbacks` (bundled modules), each once:
    /// fallbacks are searched after whichever layer chose the dirs.
    pub fn with_fallbacks(&self, fallbacks: &[PathBuf]) -> Vec<PathBuf> {
        let mut all = self.dirs.clone();
        for dir in fallbacks.iter().map(|d| absolute(d.clone())) {
            if !all.contains(&dir) {
                all.push(dir);
            }
        }
        all
    }
}

/// The modules dirs could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum DirsError {
    /// No variable says where the default dir is.
    #[error(transparent)]
    Places(#[from] PlacesError),
    /// `config.toml` could not be read or its `modules_dirs` is not a list
    /// of paths.
    #[error("{}: {message}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong, with line and key where known.
        message: String,
    },
}

/// Applies the rule (see the module docs). Every dir returned is absolute,
/// taken from the current dir when relative: the server runs from `/` once
/// detached, so a relative dir would mean something else to it.
pub fn resolve(flags: &[PathBuf], config: ConfigDirs) -> Result<ModulesDirs, DirsError> {
    let (dirs, source) = if !flags.is_empty() {
        (flags.to_vec(), DirsSource::Flags)
    } else if let Some(dirs) = places::modules_dirs_from_env().filter(|d| !d.is_empty()) {
        (dirs, DirsSource::Env)
    } else if let Some((path, dirs)) = config_dirs(config)? {
        (dirs, DirsSource::Config(path))
    } else {
        (vec![places::default_modules_dir()?], DirsSource::Default)
    };
    Ok(ModulesDirs {
        dirs: dirs.into_iter().map(absolute).collect(),
        source,
    })
}

fn absolute(dir: PathBuf) -> PathBuf {
    std::path::absolute(&dir).unwrap_or(dir)
}

/// The config file's `modules_dirs` and the file, when it sets the key.
fn config_dirs(config: ConfigDirs) -> Result<Option<(PathBuf, Vec<PathBuf>)>, DirsError> {
    match config {
        ConfigDirs::Given { path, dirs } => Ok(dirs.map(|d| (path, d))),
        ConfigDirs::Read(path) => {
            let path = match path {
                Some(p) => p,
                None => match places::config_path() {
                    Ok(p) => p,
                    // Nowhere to look: no config, as for the server.
                    Err(_) => return Ok(None),
                },
            };
            Ok(read_config_dirs(&path)?.map(|d| (path, d)))
        }
    }
}

/// Only the key this rule needs; the server checks the rest of the file.
#[derive(Deserialize)]
struct DirsKey {
    modules_dirs: Option<Vec<PathBuf>>,
}

/// `modules_dirs` of the config file at `path`, relative entries taken from
/// the file's dir; `None` when there is no such file or key.
pub fn read_config_dirs(path: &Path) -> Result<Option<Vec<PathBuf>>, DirsError> {
    let bad = |message: String| DirsError::Config {
        path: path.to_path_buf(),
        message,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    let key: DirsKey = toml::from_str(&text).map_err(|e| bad(e.to_string().trim().to_owned()))?;
    let base = path.parent().unwrap_or(Path::new("/"));
    Ok(key
        .modules_dirs
        .map(|dirs| dirs.into_iter().map(|d| base.join(d)).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("config.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn flags_win_and_relative_dirs_become_absolute() {
        let got = resolve(&[PathBuf::from("mods")], ConfigDirs::Read(None)).unwrap();
        assert_eq!(got.source, DirsSource::Flags);
        assert!(got.dirs[0].is_absolute(), "{:?}", got.dirs);
        assert!(got.dirs[0].ends_with("mods"));
    }

    #[test]
    fn config_entries_are_taken_from_the_config_dir() {
        let t = tempfile::tempdir().unwrap();
        let path = write(
            t.path(),
            "linger = \"1s\"\nmodules_dirs = [\"rel\", \"/abs\"]\n",
        );
        let dirs = read_config_dirs(&path).unwrap().unwrap();
        assert_eq!(dirs, vec![t.path().join("rel"), PathBuf::from("/abs")]);
    }

    #[test]
    fn a_missing_config_or_key_says_nothing() {
        let t = tempfile::tempdir().unwrap();
        assert!(read_config_dirs(&t.path().join("none.toml"))
            .unwrap()
            .is_none());
        let path = write(t.path(), "linger = \"1s\"\n");
        assert!(read_config_dirs(&path).unwrap().is_none());
    }

    #[test]
    fn a_bad_key_names_file_line_and_key() {
        let t = tempfile::tempdir().unwrap();
        let path = write(t.path(), "\nmodules_dirs = \"/one\"\n");
        let msg = read_config_dirs(&path).unwrap_err().to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("modules_dirs"), "{msg}");
    }

    #[test]
    fn given_config_dirs_are_used_as_handed() {
        let path = PathBuf::from("/c/config.toml");
        let given = ConfigDirs::Given {
            path: path.clone(),
            dirs: Some(vec![PathBuf::from("/c/m")]),
        };
        match config_dirs(given).unwrap() {
            Some((p, d)) => {
                assert_eq!(p, path);
                assert_eq!(d, vec![PathBuf::from("/c/m")]);
            }
            None => panic!("the handed dirs were dropped"),
        }
    }

    #[test]
    fn fallbacks_come_last_and_once() {
        let dirs = ModulesDirs {
            dirs: vec![PathBuf::from("/a"), PathBuf::from("/b")],
            source: DirsSource::Flags,
        };
        let all = dirs.with_fallbacks(&[PathBuf::from("/b"), PathBuf::from("/c")]);
        assert_eq!(all, ["/a", "/b", "/c"].map(PathBuf::from).to_vec());
    }
}
