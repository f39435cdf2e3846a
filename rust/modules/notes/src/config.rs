//! The module's configuration: the server hands it the `[modules.notes]`
//! table of `config.toml` as JSON in `NORGOPOLIS_MODULE_CONFIG`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Environment variable holding the module's config table as JSON.
pub use norgopolis_sdk::MODULE_CONFIG_ENV as CONFIG_ENV;

/// A bad configuration, named precisely.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON of the expected shape.
    #[error("{CONFIG_ENV} is not a valid [modules.notes] table: {0}")]
    Json(#[from] serde_json::Error),
    /// A workspace name that could not be used in `$name/` links.
    #[error("workspace name {0:?} must be non-empty and contain no '/'")]
    BadName(String),
    /// The variable itself is unusable (not UTF-8, not a JSON object).
    #[error("{0}")]
    Env(String),
    /// Neither `cache_dir` nor a home directory.
    #[error("no cache directory: set cache_dir, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
}

/// One configured workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// Its name, as in `$name/` links and the `workspace` argument.
    pub name: String,
    /// Its root, `~` expanded (canonical when it exists).
    pub root: PathBuf,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Workspaces, sorted by name.
    pub workspaces: Vec<Workspace>,
    /// Where the index cache lives.
    pub cache_dir: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    workspaces: std::collections::BTreeMap<String, String>,
    cache_dir: Option<String>,
}

impl Config {
    /// Reads [`CONFIG_ENV`] through the SDK (absent or empty: no
    /// workspaces).
    pub fn from_env() -> Result<Config, ConfigError> {
        let value = norgopolis_sdk::module_config_value()
            .map_err(|e| ConfigError::Env(e.message().to_string()))?;
        Self::from_raw(serde_json::from_value(value)?)
    }

    /// Parses the JSON table.
    pub fn from_json(json: &str) -> Result<Config, ConfigError> {
        let raw: Raw = if json.trim().is_empty() {
            Raw {
                workspaces: Default::default(),
                cache_dir: None,
            }
        } else {
            serde_json::from_str(json)?
        };
        Self::from_raw(raw)
    }

    /// Checks and expands the decoded table.
    fn from_raw(raw: Raw) -> Result<Config, ConfigError> {
        let mut workspaces = Vec::new();
        for (name, path) in raw.workspaces {
            if name.is_empty() || name.contains('/') {
                return Err(ConfigError::BadName(name));
            }
            let root = expand_home(&path);
            let root = std::fs::canonicalize(&root).unwrap_or(root);
            workspaces.push(Workspace { name, root });
        }
        let cache_dir = match raw.cache_dir {
            Some(dir) => expand_home(&dir),
            None => default_cache_dir().ok_or(ConfigError::NoCacheDir)?,
        };
        Ok(Config {
            workspaces,
            cache_dir,
        })
    }
}

/// `$XDG_CACHE_HOME/norgopolis/notes`, else `~/.cache/norgopolis/notes`.
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home().map(|h| h.join(".cache")))?;
    Some(base.join("norgopolis").join("notes"))
}

/// The user's home directory.
pub fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `~` and `~/…` from `$HOME`; anything else unchanged.
pub fn expand_home(path: &str) -> PathBuf {
    match (path, home()) {
        ("~", Some(h)) => h,
        (p, Some(h)) if p.starts_with("~/") => h.join(&p[2..]),
        (p, _) => PathBuf::from(p),
    }
}

/// `path` with `.` and `..` resolved without touching the disk.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_workspaces_and_cache_dir() {
        let c = Config::from_json(r#"{"workspaces":{"notes":"/x/notes"},"cache_dir":"/c"}"#)
            .expect("config");
        assert_eq!(c.workspaces[0].name, "notes");
        assert_eq!(c.workspaces[0].root, PathBuf::from("/x/notes"));
        assert_eq!(c.cache_dir, PathBuf::from("/c"));
    }

    #[test]
    fn empty_means_no_workspaces() {
        assert!(Config::from_json("").expect("empty").workspaces.is_empty());
        assert!(Config::from_json("{}").expect("{}").workspaces.is_empty());
    }

    #[test]
    fn unknown_keys_and_bad_names_are_errors() {
        let e = Config::from_json(r#"{"workspace":{}}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `workspace`"), "{e}");
        let e = Config::from_json(r#"{"workspaces":{"a/b":"/x"}}"#).unwrap_err();
        assert!(e.to_string().contains("a/b"), "{e}");
    }

    #[test]
    fn normalize_resolves_dots() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
    }
}
