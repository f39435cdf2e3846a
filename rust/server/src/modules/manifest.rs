//! `module.toml`: what a module folder says about itself.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Restart policy of a module.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Crashes are reported; the next call loads the module again.
    #[default]
    Never,
    /// Crashes are followed by a restart with backoff.
    OnFailure,
}

/// A declared function, for completion and introspection.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FunctionDecl {
    /// Just a name.
    Name(String),
    /// A name with documentation.
    Documented {
        /// The function name.
        name: String,
        /// What it does (not yet served: ListModules carries names only).
        #[allow(dead_code)]
        #[serde(default)]
        doc: String,
    },
}

impl FunctionDecl {
    /// The function's name.
    pub fn name(&self) -> &str {
        match self {
            FunctionDecl::Name(n) => n,
            FunctionDecl::Documented { name, .. } => name,
        }
    }
}

/// Parsed `module.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Module name; must equal the folder name when given.
    pub name: Option<String>,
    /// Module version.
    #[serde(default)]
    pub version: String,
    /// One-line description.
    #[serde(default)]
    pub description: String,
    /// Executable, relative to the module folder (default: the module name).
    pub exec: Option<PathBuf>,
    /// Arguments for the executable.
    #[serde(default)]
    pub args: Vec<String>,
    /// Modules that must be loadable before this one.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Load when the server starts.
    #[serde(default)]
    pub autostart: bool,
    /// What to do when the module crashes (acted on by the restart policy, not yet).
    #[allow(dead_code)]
    #[serde(default)]
    pub restart: Restart,
    /// Declared functions.
    #[serde(default)]
    pub functions: Vec<FunctionDecl>,
}

/// A manifest that could not be used; names the file and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ManifestError {
    /// The manifest file.
    pub path: PathBuf,
    /// What is wrong (with line and key where TOML knows them).
    pub message: String,
}

impl Manifest {
    /// Reads and checks `path`, the manifest of module `folder_name`.
    pub fn load(path: &Path, folder_name: &str) -> Result<Self, ManifestError> {
        let err = |message: String| ManifestError {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let manifest: Manifest =
            toml::from_str(&text).map_err(|e| err(e.to_string().trim().replace('\n', " ")))?;
        if let Some(name) = &manifest.name {
            if name != folder_name {
                return Err(err(format!(
                    "key `name`: {name:?} does not match the folder name {folder_name:?}"
                )));
            }
        }
        for dep in &manifest.dependencies {
            norgopolis_common::validate_module_name(dep)
                .map_err(|e| err(format!("key `dependencies`: {e}")))?;
        }
        if let Some(exec) = &manifest.exec {
            if exec.is_absolute() || exec.components().any(|c| c.as_os_str() == "..") {
                return Err(err(format!(
                    "key `exec`: {} must be a path inside the module folder",
                    exec.display()
                )));
            }
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Manifest, ManifestError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("module.toml");
        std::fs::write(&p, text).unwrap();
        Manifest::load(&p, "db")
    }

    #[test]
    fn full_manifest() {
        let m = load(
            r#"name = "db"
version = "1.0"
exec = "bin/db"
args = ["--fast"]
dependencies = ["parser"]
autostart = true
restart = "on-failure"
functions = ["query", { name = "index", doc = "reindex" }]
"#,
        )
        .unwrap();
        assert_eq!(m.restart, Restart::OnFailure);
        assert_eq!(m.functions[1].name(), "index");
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let e = load("nme = \"db\"\n").unwrap_err().to_string();
        assert!(e.contains("module.toml") && e.contains("nme"), "{e}");
    }

    #[test]
    fn escaping_exec_is_refused() {
        let e = load("exec = \"../evil.sh\"\n").unwrap_err().to_string();
        assert!(e.contains("exec"), "{e}");
    }
}
