//! The module's configuration: the `[modules.NAME]` table of the router's
//! `config.toml` (merged with what the front end that started the router
//! passed), handed over as a JSON object in `NORGOPOLIS_MODULE_CONFIG`.
//! It is read when the module starts; an edit takes effect at the module's
//! next start (`norgopolis restart NAME`).

use serde::de::DeserializeOwned;

use crate::Error;

pub use norgopolis_common::places::MODULE_CONFIG_ENV;

/// The configuration as a JSON value: an object, empty when the module has
/// none or was not started by a router.
///
/// Fails with `FailedPrecondition` when the variable holds anything but a
/// JSON object.
pub fn module_config_value() -> Result<serde_json::Value, Error> {
    let text = match std::env::var(MODULE_CONFIG_ENV) {
        Ok(text) if !text.trim().is_empty() => text,
        Ok(_) | Err(std::env::VarError::NotPresent) => return Ok(empty()),
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(bad(format_args!("it is not UTF-8")));
        }
    };
    match serde_json::from_str(&text) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        Ok(other) => Err(bad(format_args!("expected a JSON object, got {other}"))),
        Err(e) => Err(bad(format_args!("it is not JSON: {e}"))),
    }
}

/// The configuration decoded into `T` (a struct with `#[serde(default)]`
/// fields reads a missing configuration as its defaults).
///
/// Fails with `FailedPrecondition` naming the variable and what did not fit.
pub fn module_config<T: DeserializeOwned>() -> Result<T, Error> {
    serde_json::from_value(module_config_value()?)
        .map_err(|e| bad(format_args!("it does not fit: {e}")))
}

fn empty() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

fn bad(why: std::fmt::Arguments<'_>) -> Error {
    Error::failed_precondition(format!(
        "bad module configuration in ${MODULE_CONFIG_ENV}: {why}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq, Default)]
    #[serde(default)]
    struct Notes {
        root: String,
        depth: u32,
    }

    /// One test: the variable is process-wide.
    #[test]
    fn reads_decodes_and_explains() {
        std::env::remove_var(MODULE_CONFIG_ENV);
        assert_eq!(module_config_value().unwrap(), serde_json::json!({}));
        assert_eq!(module_config::<Notes>().unwrap(), Notes::default());

        std::env::set_var(MODULE_CONFIG_ENV, r#"{"root":"~/n","depth":2}"#);
        assert_eq!(
            module_config::<Notes>().unwrap(),
            Notes {
                root: "~/n".into(),
                depth: 2
            }
        );

        for (text, what) in [
            ("[1]", "expected a JSON object"),
            ("{", "not JSON"),
            (r#"{"depth":"deep"}"#, "does not fit"),
        ] {
            std::env::set_var(MODULE_CONFIG_ENV, text);
            let e = module_config::<Notes>().unwrap_err();
            assert_eq!(e.code(), crate::Code::FailedPrecondition);
            assert!(e.message().contains(MODULE_CONFIG_ENV), "{e}");
            assert!(e.message().contains(what), "{text}: {e}");
        }
        std::env::remove_var(MODULE_CONFIG_ENV);
    }
}
