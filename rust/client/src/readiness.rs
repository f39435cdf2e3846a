//! The one line a starting server writes to its `--ready-fd`.

/// What the server said about its start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// `ready <pid>`: listening; the daemon's pid.
    Ready(u32),
    /// `error <message>`: it could not start.
    Failed(String),
    /// Anything else (a server of another make, or a broken one).
    Garbled(String),
}

/// Reads one readiness line (with or without its newline).
pub fn parse_line(line: &str) -> Readiness {
    let line = line.trim_end_matches(['\n', '\r']);
    if let Some(rest) = line.strip_prefix("ready ") {
        if let Ok(pid) = rest.trim().parse::<u32>() {
            return Readiness::Ready(pid);
        }
    }
    if let Some(msg) = line.strip_prefix("error") {
        if msg.is_empty() || msg.starts_with(' ') {
            return Readiness::Failed(msg.trim_start().to_string());
        }
    }
    Readiness::Garbled(line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_with_pid() {
        assert_eq!(parse_line("ready 4242\n"), Readiness::Ready(4242));
        assert_eq!(parse_line("ready 1"), Readiness::Ready(1));
    }

    #[test]
    fn error_keeps_the_whole_message() {
        assert_eq!(
            parse_line("error cannot bind /x.sock: permission denied\n"),
            Readiness::Failed("cannot bind /x.sock: permission denied".into())
        );
        assert_eq!(parse_line("error\n"), Readiness::Failed(String::new()));
    }

    #[test]
    fn anything_else_is_garbled() {
        for l in [
            "", "ready", "ready x", "ready -1", "errors 1", "READY 1", "hello",
        ] {
            assert!(
                matches!(parse_line(l), Readiness::Garbled(_)),
                "{l:?} -> {:?}",
                parse_line(l)
            );
        }
    }
}
