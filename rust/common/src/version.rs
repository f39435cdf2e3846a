//! This build's version, the test override of it, and the one comparison
//! that decides whether a server is older than its client (the upgrade
//! handover: a newer client asks an older server to retire).

use std::{cmp::Ordering, sync::OnceLock};

/// Environment variable that replaces [`version`] in builds with debug
/// assertions, so that tests can run "an older" and "a newer" norgopolis
/// from one build. Shipped (`dist`, release) builds ignore it.
pub const VERSION_OVERRIDE_ENV: &str = "NORGOPOLIS_VERSION_OVERRIDE";

/// Version of this norgopolis build as compiled in (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The version this process speaks as: [`VERSION`], or in debug builds
/// `$NORGOPOLIS_VERSION_OVERRIDE` when set and a valid version. Read once,
/// here only, so server, client, CLI and the Neovim library agree.
pub fn version() -> &'static str {
    static RESOLVED: OnceLock<String> = OnceLock::new();
    RESOLVED.get_or_init(|| {
        if cfg!(debug_assertions) {
            if let Ok(v) = std::env::var(VERSION_OVERRIDE_ENV) {
                if parse(&v).is_some() {
                    return v;
                }
            }
        }
        VERSION.to_string()
    })
}

/// Orders two versions by their numeric `MAJOR.MINOR.PATCH`; a pre-release
/// (`-…`) sorts before its release, and build metadata (`+…`) is ignored.
/// `None` if either is not a version, which callers treat as "not older"
/// (never retire a server we cannot place).
pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    let (a, b) = (parse(a)?, parse(b)?);
    Some(a.0.cmp(&b.0).then_with(|| match (a.1, b.1) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => x.cmp(y),
    }))
}

/// Whether `theirs` is a strictly older version than `ours`.
pub fn is_older(theirs: &str, ours: &str) -> bool {
    compare(theirs, ours) == Some(Ordering::Less)
}

type Parsed<'a> = ([u64; 3], Option<&'a str>);

fn parse(v: &str) -> Option<Parsed<'_>> {
    let v = v.split('+').next()?;
    let (core, pre) = match v.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (v, None),
    };
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let numbers = [parts.next()??, parts.next()??, parts.next()??];
    if parts.next().is_some() || pre == Some("") {
        return None;
    }
    Some((numbers, pre))
}

/// What a retiring server says when it refuses a session or a call: the
/// refusal is `Unavailable` and its message starts with this, so clients
/// know the call was not run and may go to the successor with it.
pub const RETIRING: &str = "norgopolis server retiring";

/// The refusal message of a server retiring for `successor`.
pub fn retiring_message(successor: &str) -> String {
    format!("{RETIRING} (replaced by norgopolis {successor}): not run; retry on the new server")
}

/// Whether a status message is a retiring server's refusal.
pub fn is_retiring(message: &str) -> bool {
    message.starts_with(RETIRING)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically_and_pre_releases_come_first() {
        assert!(is_older("0.1.0", "0.2.0"));
        assert!(is_older("0.9.0", "0.10.0"));
        assert!(is_older("1.2.3-rc.1", "1.2.3"));
        assert!(!is_older("1.2.3", "1.2.3+build"));
        assert!(!is_older("0.2.0", "0.1.0"));
        assert!(!is_older("0.1.0", "0.1.0"));
    }

    #[test]
    fn what_is_not_a_version_is_never_older() {
        for bad in ["", "1", "1.2", "1.2.3.4", "a.b.c", "1.2.3-", "future"] {
            assert!(!is_older(bad, "9.9.9"), "{bad:?}");
            assert_eq!(compare(bad, "1.0.0"), None, "{bad:?}");
        }
    }

    #[test]
    fn a_retiring_refusal_is_recognised() {
        assert!(is_retiring(&retiring_message("0.2.0")));
        assert!(retiring_message("0.2.0").contains("0.2.0"));
        assert!(!is_retiring("server is shutting down"));
    }
}
