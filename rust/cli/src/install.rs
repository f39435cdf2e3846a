//! `norgopolis module install | remove | list`: the user modules dir on
//! disk. None of this needs a server: a running one finds a newly installed
//! module on its next load.
//!
//! Installs are staged beside their destination and renamed into place, so
//! a server never sees half a module, and a module process running the old
//! executable keeps running it.

use std::{
    ffi::OsString,
    fs,
    io::{self, ErrorKind},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use norgopolis_catalog::{
    dirs::{self, ConfigDirs},
    locate::{self, Located},
    manifest::MANIFEST_FILE,
};

/// A failed module command: a gRPC-style code name and a message.
#[derive(Debug)]
pub struct InstallError {
    /// "NotFound", "AlreadyExists", "FailedPrecondition", …
    pub code: &'static str,
    /// What went wrong, naming the paths involved.
    pub message: String,
}

impl InstallError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        InstallError {
            code,
            message: message.into(),
        }
    }

    fn io(what: String, e: io::Error) -> Self {
        let code = match e.kind() {
            ErrorKind::NotFound => "NotFound",
            ErrorKind::PermissionDenied => "PermissionDenied",
            ErrorKind::AlreadyExists => "AlreadyExists",
            _ => "Internal",
        };
        InstallError::new(code, format!("{what}: {e}"))
    }
}

type Result<T> = std::result::Result<T, InstallError>;

/// A module now in the user modules dir.
#[derive(Debug)]
pub struct Installed {
    /// Its name.
    pub name: String,
    /// Its manifest's version ("" when none).
    pub version: String,
    /// The executable or folder in the modules dir.
    pub path: PathBuf,
    /// Whether an older copy was replaced.
    pub replaced: bool,
    /// Dependencies not found in any modules dir.
    pub missing_dependencies: Vec<String>,
}

/// The modules dirs in search order, by the catalog's rule (the server's):
/// `--modules-dir` flags, else `$NORGOPOLIS_MODULES_DIR`, else
/// `modules_dirs` in `config.toml`, else the default. The first one is the
/// user modules dir that `install` writes to.
pub fn modules_dirs(flags: &[PathBuf]) -> Result<Vec<PathBuf>> {
    dirs::resolve(flags, ConfigDirs::Read(None))
        .map(|found| found.dirs)
        .map_err(|e| InstallError::new("FailedPrecondition", e.to_string()))
}

fn check_name(name: &str) -> Result<()> {
    norgopolis_common::validate_module_name(name)
        .map_err(|e| InstallError::new("InvalidArgument", e.to_string()))
}

/// The name a path installs under: `--name`, else the manifest's `name`,
/// else the file or folder name.
fn name_for(src: &Path, name: Option<&str>) -> Result<String> {
    if let Some(n) = name {
        return Ok(n.to_string());
    }
    let manifest = src.join(MANIFEST_FILE);
    if manifest.is_file() {
        // Only the `name` key matters here; the full check comes after.
        #[derive(serde::Deserialize)]
        struct NameOnly {
            name: Option<String>,
        }
        let declared = fs::read_to_string(&manifest)
            .ok()
            .and_then(|t| toml::from_str::<NameOnly>(&t).ok())
            .and_then(|m| m.name);
        if let Some(n) = declared {
            return Ok(n);
        }
    }
    // The name as given (a symlink's own name, not its target's).
    let file_name = std::path::absolute(src)
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()));
    file_name.ok_or_else(|| {
        InstallError::new(
            "InvalidArgument",
            format!(
                "{}: cannot tell the module name; pass --name",
                src.display()
            ),
        )
    })
}

/// Checks `src` as the server would load it under `name`.
fn check_module(name: &str, src: &Path) -> Result<Located> {
    match locate::at_path(name, src) {
        Ok(Some(found)) => Ok(found),
        Ok(None) if !src.exists() => Err(InstallError::new(
            "NotFound",
            format!("{}: no such file or folder", src.display()),
        )),
        Ok(None) => Err(InstallError::new(
            "FailedPrecondition",
            format!(
                "{}: not a module (a module is an executable, or a folder with {MANIFEST_FILE} or an executable named '{name}')",
                src.display()
            ),
        )),
        Err(e) => Err(InstallError::new("FailedPrecondition", e.to_string())),
    }
}

/// Copies an executable or module folder into the first of `dirs`.
pub fn install_path(
    src: &Path,
    name: Option<&str>,
    force: bool,
    dirs: &[PathBuf],
) -> Result<Installed> {
    let name = name_for(src, name)?;
    check_name(&name)?;
    let found = check_module(&name, src)?;
    let Some(dir) = dirs.first() else {
        return Err(InstallError::new("FailedPrecondition", "no modules dir"));
    };
    fs::create_dir_all(dir)
        .map_err(|e| InstallError::io(format!("cannot create {}", dir.display()), e))?;
    let dest = dir.join(&name);
    let replaced = fs::symlink_metadata(&dest).is_ok();
    if replaced && !force {
        return Err(InstallError::new(
            "AlreadyExists",
            format!(
                "module '{name}' is already installed at {} (use --force to replace it)",
                dest.display()
            ),
        ));
    }
    let staging = dir.join(format!(".{name}.installing-{}", std::process::id()));
    remove_any(&staging);
    let copied = if src.is_dir() {
        copy_dir(src, &staging)
    } else {
        fs::copy(src, &staging).map(|_| ())
    };
    if let Err(e) = copied {
        remove_any(&staging);
        return Err(InstallError::io(
            format!("cannot copy {} to {}", src.display(), dir.display()),
            e,
        ));
    }
    if let Err(e) = swap_in(&staging, &dest) {
        remove_any(&staging);
        return Err(InstallError::io(
            format!("cannot install into {}", dest.display()),
            e,
        ));
    }
    let missing_dependencies = found
        .manifest
        .as_ref()
        .map(|m| {
            m.dependencies
                .iter()
                .filter(|d| locate::locate(d, dirs).is_err())
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    Ok(Installed {
        version: found.manifest.map(|m| m.version).unwrap_or_default(),
        name,
        path: dest,
        replaced,
        missing_dependencies,
    })
}

/// Moves `staging` to `dest`, replacing whatever is there.
fn swap_in(staging: &Path, dest: &Path) -> io::Result<()> {
    // A file replaces a file atomically; anything else (a folder) is moved
    // aside first.
    let both_files = staging.is_file()
        && fs::symlink_metadata(dest)
            .map(|m| !m.is_dir())
            .unwrap_or(true);
    if both_files {
        return fs::rename(staging, dest);
    }
    let old = dest.with_file_name(format!(
        ".{}.old-{}",
        dest.file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let had_old = match fs::rename(dest, &old) {
        Ok(()) => true,
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    if let Err(e) = fs::rename(staging, dest) {
        if had_old {
            let _ = fs::rename(&old, dest);
        }
        return Err(e);
    }
    if had_old {
        remove_any(&old);
    }
    Ok(())
}

/// Copies a folder, following symlinks (a module must not depend on where
/// it was installed from); permissions are kept.
fn copy_dir(src: &Path, dest: &Path) -> io::Result<()> {
    fs::create_dir(dest)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dest.join(entry.file_name());
        if fs::metadata(&from)?.is_dir() {
            copy_dir(&from, &to)?;
        } else {
            fs::copy(&from, &to)?;
        }
    }
    let perms = fs::metadata(src)?.permissions();
    fs::set_permissions(dest, perms)
}

fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// Builds `spec` (`CRATE`, `CRATE@VERSION`, or a path to a local crate)
/// with `cargo install` into a temporary root and installs its binary as a
/// module folder whose manifest records the crate's version.
pub fn install_cargo(
    spec: &str,
    name: Option<&str>,
    force: bool,
    cargo_args: &[String],
    dirs: &[PathBuf],
) -> Result<Installed> {
    let root = tempfile::Builder::new()
        .prefix("norgopolis-cargo-")
        .tempdir()
        .map_err(|e| InstallError::io("cannot create a temporary dir".into(), e))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(&cargo);
    cmd.arg("install").arg("--root").arg(root.path());
    let local = Path::new(spec);
    if spec.contains('/') || spec.starts_with('.') || local.is_dir() {
        let path = std::path::absolute(local)
            .map_err(|e| InstallError::io(format!("bad crate path {spec}"), e))?;
        cmd.arg("--path").arg(path);
    } else {
        cmd.arg(spec);
    }
    cmd.args(cargo_args)
        .stdin(Stdio::null())
        // Our stdout is for results; cargo's chatter goes to stderr.
        .stdout(io::stderr());
    let status = cmd
        .status()
        .map_err(|e| InstallError::io(format!("cannot run {}", Path::new(&cargo).display()), e))?;
    if !status.success() {
        return Err(InstallError::new(
            "FailedPrecondition",
            format!("`cargo install {spec}` failed ({status})"),
        ));
    }
    let bins = list_bins(&root.path().join("bin"))?;
    let bin = match (name, bins.as_slice()) {
        (_, []) => {
            return Err(InstallError::new(
                "FailedPrecondition",
                format!("`cargo install {spec}` installed no binary"),
            ))
        }
        (_, [only]) => only.clone(),
        (Some(n), many) if many.iter().any(|b| b == n) => n.to_string(),
        (_, many) => {
            return Err(InstallError::new(
                "InvalidArgument",
                format!(
                    "crate {spec} has several binaries ({}); pass --name to pick one",
                    many.join(", ")
                ),
            ))
        }
    };
    let name = name.unwrap_or(&bin).to_string();
    check_name(&name)?;
    let folder = root.path().join("module").join(&name);
    fs::create_dir_all(&folder)
        .map_err(|e| InstallError::io(format!("cannot create {}", folder.display()), e))?;
    fs::rename(root.path().join("bin").join(&bin), folder.join(&name))
        .map_err(|e| InstallError::io("cannot stage the built binary".into(), e))?;
    let version = crate_version(root.path()).unwrap_or_default();
    let manifest = format!(
        "# Installed by `norgopolis module install --cargo {spec}`.\nname = {name:?}\nversion = {version:?}\n"
    );
    fs::write(folder.join(MANIFEST_FILE), manifest)
        .map_err(|e| InstallError::io("cannot write the module manifest".into(), e))?;
    install_path(&folder, Some(&name), force, dirs)
}

fn list_bins(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => {
            return Err(InstallError::io(
                format!("cannot read {}", dir.display()),
                e,
            ))
        }
    };
    let mut bins: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    bins.sort();
    Ok(bins)
}

/// The installed crate's version, from cargo's `.crates.toml` in `root`
/// (keys look like `"name 1.2.3 (source)"`).
fn crate_version(root: &Path) -> Option<String> {
    let text = fs::read_to_string(root.join(".crates.toml")).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    let key = table.get("v1")?.as_table()?.keys().next()?.clone();
    key.split_whitespace().nth(1).map(str::to_owned)
}

/// Deletes module `name` from the user modules dir (the first of `dirs`).
pub fn remove(name: &str, dirs: &[PathBuf]) -> Result<PathBuf> {
    check_name(name)?;
    let Some(dir) = dirs.first() else {
        return Err(InstallError::new("FailedPrecondition", "no modules dir"));
    };
    let target = dir.join(name);
    let meta = match fs::symlink_metadata(&target) {
        Ok(m) => m,
        Err(_) => {
            let elsewhere = dirs[1..]
                .iter()
                .map(|d| d.join(name))
                .find(|p| fs::symlink_metadata(p).is_ok());
            let hint = match elsewhere {
                Some(p) => format!(
                    " (it is at {}, outside the user modules dir; remove it by hand)",
                    p.display()
                ),
                None => String::new(),
            };
            return Err(InstallError::new(
                "NotFound",
                format!(
                    "module '{name}' is not installed in {}{hint}",
                    dir.display()
                ),
            ));
        }
    };
    let removed = if meta.is_dir() {
        fs::remove_dir_all(&target)
    } else {
        fs::remove_file(&target)
    };
    removed.map_err(|e| InstallError::io(format!("cannot remove {}", target.display()), e))?;
    Ok(target)
}

/// One module found on disk, for `module list`.
pub struct Listed {
    /// Module name.
    pub name: String,
    /// The module, or why it cannot load.
    pub found: std::result::Result<Located, locate::LocateError>,
}

/// Every module in `dirs` (the first dir holding a name wins).
pub fn list(dirs: &[PathBuf]) -> Vec<Listed> {
    locate::scan(dirs)
        .into_iter()
        .map(|(name, found)| Listed { name, found })
        .collect()
}
