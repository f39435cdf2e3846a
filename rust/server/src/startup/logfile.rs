//! The server log of a detached server: capped in size and rotated while
//! running, not only at start. When it grows past the cap it is renamed to
//! `<log>.1` (replacing an older one) and a fresh file takes its place, so
//! the log never holds more than about twice the cap on disk.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::{
        fd::AsRawFd,
        unix::fs::{MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
    sync::Mutex,
};

use tracing_subscriber::fmt::MakeWriter;

/// A log file that rotates itself at `max` bytes.
pub struct RotatingLog {
    path: PathBuf,
    max: u64,
    state: Mutex<State>,
}

struct State {
    file: File,
    size: u64,
    /// stdout and stderr follow the current file.
    captures_stdio: bool,
}

/// The path a rotated log moves to.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut old = path.as_os_str().to_owned();
    old.push(".1");
    PathBuf::from(old)
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        // A symlink squatting the log path is refused, never followed.
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

impl RotatingLog {
    /// Opens (appending to) `path`, rotating first if it is over `max`.
    pub fn open(path: &Path, max: u64) -> std::io::Result<Self> {
        let mut file = open(path)?;
        let mut size = file.metadata()?.size();
        if size >= max {
            std::fs::rename(path, rotated_path(path))?;
            file = open(path)?;
            size = 0;
        }
        Ok(RotatingLog {
            path: path.to_path_buf(),
            max,
            state: Mutex::new(State {
                file,
                size,
                captures_stdio: false,
            }),
        })
    }

    /// Points stdout and stderr at the current file, so stray output (a
    /// panic message) lands in the log too.
    pub fn capture_stdio(&self) -> std::io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        redirect_stdio(&state.file)?;
        state.captures_stdio = true;
        Ok(())
    }

    fn write_record(&self, buf: &[u8]) -> std::io::Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.file.write_all(buf)?;
        state.size += buf.len() as u64;
        if state.size >= self.max {
            // A failed rotation keeps logging to the old file.
            if let Err(e) = self.rotate(&mut state) {
                let _ = writeln!(state.file, "cannot rotate the log: {e}");
            }
        }
        Ok(())
    }

    fn rotate(&self, state: &mut State) -> std::io::Result<()> {
        std::fs::rename(&self.path, rotated_path(&self.path))?;
        let file = open(&self.path)?;
        if state.captures_stdio {
            redirect_stdio(&file)?;
        }
        state.file = file;
        state.size = 0;
        Ok(())
    }
}

fn redirect_stdio(file: &File) -> std::io::Result<()> {
    for fd in [1, 2] {
        // SAFETY: dup2 onto the standard descriptors, which we own for life.
        if unsafe { libc::dup2(file.as_raw_fd(), fd) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// One log record's writer.
pub struct LogWriter<'a>(&'a RotatingLog);

impl Write for LogWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // tracing's formatter hands over each record in one call, so a record
        // never straddles a rotation.
        self.0.write_record(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for RotatingLog {
    type Writer = LogWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.log");
        let log = RotatingLog::open(&path, 100).unwrap();
        for i in 0..9 {
            log.write_record(format!("record {i:02} ..........\n").as_bytes())
                .unwrap();
        }
        let current = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(rotated_path(&path)).unwrap();
        assert!(current.len() < 100, "{current}");
        assert!(old.len() >= 100 && old.len() < 200, "{old}");
        assert!(current.ends_with("record 08 ..........\n"), "{current}");
    }

    #[test]
    fn symlinked_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "keep").unwrap();
        let path = dir.path().join("server.log");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(RotatingLog::open(&path, 100).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }
}
