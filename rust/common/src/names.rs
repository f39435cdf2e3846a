//! Module name rules. A name is checked before anything touches the disk,
//! so `../x` or `/bin/sh` can never become a path.

/// Longest accepted module name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Why a module name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name was empty.
    #[error("module name is empty")]
    Empty,
    /// The name was longer than [`MAX_NAME_LEN`].
    #[error("module name is {len} bytes long; the limit is {MAX_NAME_LEN}")]
    TooLong {
        /// Length of the refused name.
        len: usize,
    },
    /// The name held a character outside `[A-Za-z0-9_-]`.
    #[error("module name {name:?} may only contain letters, digits, '_' and '-'")]
    BadCharacter {
        /// The refused name (escaped when printed).
        name: String,
    },
}

/// Accepts plain identifiers (`[A-Za-z0-9_-]+`, at most [`MAX_NAME_LEN`] bytes).
pub fn validate_module_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(NameError::BadCharacter {
            name: name.chars().take(MAX_NAME_LEN).collect(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass() {
        for ok in ["echo", "a", "neorg-db", "x_1", &"a".repeat(MAX_NAME_LEN)] {
            assert_eq!(validate_module_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn paths_and_junk_are_refused() {
        for bad in [
            "",
            "../x",
            "/bin/sh",
            "a/b",
            ".",
            "..",
            "a b",
            "é",
            "a\0b",
            &"a".repeat(65),
        ] {
            assert!(validate_module_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
