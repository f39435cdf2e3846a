//! The optional config file (`config.toml`). Unknown keys are errors: a
//! typo must not silently change nothing.

use std::{path::Path, path::PathBuf, time::Duration};

use anyhow::Context;
use serde::Deserialize;

use crate::settings::parse_duration;

/// Contents of `config.toml`; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Socket path.
    pub socket: Option<PathBuf>,
    /// Module dirs, searched in order.
    pub modules_dirs: Option<Vec<PathBuf>>,
    /// Exit delay after the last session ("3s").
    linger: Option<String>,
    /// Exit delay for a server that never had a session ("300s").
    idle_timeout: Option<String>,
    /// Largest message, in bytes.
    pub max_message_size: Option<usize>,
}

impl Config {
    /// Reads `path`; a missing file is an empty config, a bad one an error
    /// naming the file, line and key.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let config: Config = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("config {}: {}", path.display(), e.to_string().trim()))?;
        for (key, value) in [
            ("linger", &config.linger),
            ("idle_timeout", &config.idle_timeout),
        ] {
            if let Some(v) = value {
                parse_duration(v)
                    .map_err(|e| anyhow::anyhow!("config {}: key `{key}`: {e}", path.display()))?;
            }
        }
        Ok(config)
    }

    /// The `linger` value, already validated by [`Config::load`].
    pub fn linger(&self) -> Option<Duration> {
        self.linger.as_deref().and_then(|v| parse_duration(v).ok())
    }

    /// The `idle_timeout` value, already validated by [`Config::load`].
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
            .as_deref()
            .and_then(|v| parse_duration(v).ok())
    }
}
