//! Finding a module by name in the modules dirs.
//!
//! Names are validated by the caller before we get here, so joining them to
//! a directory can never escape it.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use super::manifest::{Manifest, ManifestError};

/// A module found on disk, ready to be started.
#[derive(Debug, Clone)]
pub struct Located {
    /// Module name.
    pub name: String,
    /// The executable to run.
    pub exec: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The manifest, for module folders that have one.
    pub manifest: Option<Manifest>,
    /// The bare executable or the module folder.
    pub origin: PathBuf,
}

/// Why a module could not be located.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// No dir holds the module.
    #[error("module '{name}' not found in {}", list_dirs(.dirs))]
    NotFound {
        /// The module name.
        name: String,
        /// The dirs searched.
        dirs: Vec<PathBuf>,
    },
    /// The module exists but its manifest is broken.
    #[error("module '{name}': bad manifest {0}", name = .1)]
    Manifest(#[source] ManifestError, String),
    /// The module folder names no runnable executable.
    #[error("module '{name}': {path} is not an executable file")]
    NotExecutable {
        /// The module name.
        name: String,
        /// The offending path.
        path: PathBuf,
    },
}

fn list_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "no modules dirs (none configured)".into();
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `path` (following symlinks) is an executable regular file.
pub fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Looks `name` up in `dirs`, in order.
pub fn locate(name: &str, dirs: &[PathBuf]) -> Result<Located, LocateError> {
    for dir in dirs {
        let candidate = dir.join(name);
        if let Some(found) = at_path(name, &candidate)? {
            return Ok(found);
        }
    }
    Err(LocateError::NotFound {
        name: name.to_string(),
        dirs: dirs.to_vec(),
    })
}

/// Reads a module at an explicit path: an executable, or a folder holding
/// `module.toml` and/or an executable named like the folder.
pub fn at_path(name: &str, path: &Path) -> Result<Option<Located>, LocateError> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(None);
    };
    if meta.is_file() {
        if !is_executable(path) {
            return Err(LocateError::NotExecutable {
                name: name.into(),
                path: path.into(),
            });
        }
        return Ok(Some(Located {
            name: name.into(),
            exec: path.into(),
            args: vec![],
            manifest: None,
            origin: path.into(),
        }));
    }
    if !meta.is_dir() {
        return Ok(None);
    }
    let manifest_path = path.join(super::manifest::MANIFEST_FILE);
    let manifest = if manifest_path.exists() {
        Some(
            Manifest::load(&manifest_path, name)
                .map_err(|e| LocateError::Manifest(e, name.into()))?,
        )
    } else {
        None
    };
    let exec = path.join(
        manifest
            .as_ref()
            .and_then(|m| m.exec.clone())
            .unwrap_or_else(|| PathBuf::from(name)),
    );
    if !is_executable(&exec) {
        if manifest.is_none() {
            // A folder without manifest or executable is not a module.
            return Ok(None);
        }
        return Err(LocateError::NotExecutable {
            name: name.into(),
            path: exec,
        });
    }
    Ok(Some(Located {
        name: name.into(),
        args: manifest
            .as_ref()
            .map(|m| m.args.clone())
            .unwrap_or_default(),
        exec,
        manifest,
        origin: path.into(),
    }))
}

/// Every module name available in `dirs` (first dir wins), with its
/// location or the error that makes it unusable.
pub fn scan(dirs: &[PathBuf]) -> Vec<(String, Result<Located, LocateError>)> {
    let mut seen = std::collections::BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if seen.contains_key(&name) || norgopolis_common::validate_module_name(&name).is_err() {
                continue;
            }
            match at_path(&name, &entry.path()) {
                Ok(Some(found)) => {
                    seen.insert(name, Ok(found));
                }
                Ok(None) => {}
                Err(e) => {
                    seen.insert(name, Err(e));
                }
            }
        }
    }
    seen.into_iter().collect()
}
