//! What a module is told of its configuration: its `[modules.NAME]` table
//! from the config file, merged with what the front end that started the
//! server passed (`--module-config NAME=JSON`, which wins), as a JSON object
//! in `NORGOPOLIS_MODULE_CONFIG`. The file is read again at every module
//! start, so an edit takes effect when the module next starts.

use std::{collections::BTreeMap, path::PathBuf};

use serde_json::{Map, Value};

use crate::config::file::{Config, ConfigError};

/// One `--module-config NAME=JSON` flag.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleConfigArg {
    /// The module.
    pub name: String,
    /// Its configuration (a JSON object).
    pub config: Map<String, Value>,
}

/// Parses `NAME=JSON`, where JSON must be an object.
pub fn parse_module_config_arg(text: &str) -> Result<ModuleConfigArg, String> {
    let (name, json) = text.split_once('=').ok_or_else(|| {
        format!("{text:?} is not NAME=JSON (e.g. notes='{{\"root\":\"~/notes\"}}')")
    })?;
    norgopolis_common::validate_module_name(name).map_err(|e| e.to_string())?;
    match serde_json::from_str(json) {
        Ok(Value::Object(config)) => Ok(ModuleConfigArg {
            name: name.to_string(),
            config,
        }),
        Ok(other) => Err(format!(
            "the configuration of module '{name}' must be a JSON object, got {other}"
        )),
        Err(e) => Err(format!(
            "the configuration of module '{name}' is not JSON: {e}"
        )),
    }
}

/// Where each module's configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct ModuleConfigs {
    /// The config file, read again at each module start.
    file: Option<PathBuf>,
    /// From the command line, per module; merged over the file's.
    overrides: BTreeMap<String, Map<String, Value>>,
}

impl ModuleConfigs {
    /// Configurations read from `file` (when there is one) with `args`
    /// merged over them; a later flag for the same module over an earlier.
    pub fn new(file: Option<PathBuf>, args: Vec<ModuleConfigArg>) -> Self {
        let mut overrides: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for arg in args {
            merge(overrides.entry(arg.name).or_default(), arg.config);
        }
        ModuleConfigs { file, overrides }
    }

    /// The configuration of module `name` as JSON text (`{}` when it has
    /// none), from the config file as it is now; a file that became bad
    /// since the server started is an error naming file, line and key.
    pub fn json_for(&self, name: &str) -> Result<String, ConfigError> {
        let mut config = match &self.file {
            Some(file) => {
                let mut parsed = Config::load(file)?;
                match parsed
                    .modules
                    .remove(&crate::config::file::ModuleName(name.to_string()))
                {
                    Some(table) => object_from_toml(table.0),
                    None => Map::new(),
                }
            }
            None => Map::new(),
        };
        if let Some(over) = self.overrides.get(name) {
            merge(&mut config, over.clone());
        }
        Ok(Value::Object(config).to_string())
    }
}

/// Merges `over` into `base`: objects key by key, recursively; any other
/// value replaces what was there.
fn merge(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Object(inner)), Value::Object(value)) => merge(inner, value),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn object_from_toml(table: toml::Table) -> Map<String, Value> {
    table
        .into_iter()
        .map(|(k, v)| (k, json_from_toml(v)))
        .collect()
}

/// TOML as JSON: datetimes become their TOML text, and floats JSON cannot
/// hold (`nan`, `inf`) become the strings "NaN", "inf", "-inf".
fn json_from_toml(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(f.to_string())),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(json_from_toml).collect()),
        toml::Value::Table(t) => Value::Object(object_from_toml(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn configs(file_text: Option<&str>, args: &[&str]) -> (tempfile::TempDir, ModuleConfigs) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        if let Some(text) = file_text {
            std::fs::write(&file, text).unwrap();
        }
        let args = args
            .iter()
            .map(|a| parse_module_config_arg(a).unwrap())
            .collect();
        (dir, ModuleConfigs::new(Some(file), args))
    }

    fn config_of(c: &ModuleConfigs, name: &str) -> Value {
        serde_json::from_str(&c.json_for(name).unwrap()).unwrap()
    }

    #[test]
    fn none_is_an_empty_object() {
        let (_d, c) = configs(None, &[]);
        assert_eq!(c.json_for("notes").unwrap(), "{}");
        assert_eq!(ModuleConfigs::default().json_for("notes").unwrap(), "{}");
    }

    #[test]
    fn toml_maps_to_json() {
        let (_d, c) = configs(
            Some("[modules.notes]\nroot = \"~/n\"\nn = 3\nf = 1.5\nok = true\nwhen = 1979-05-27T07:32:00Z\nodd = nan\nlist = [1, \"a\"]\n[modules.notes.deep]\nx = 1\n"),
            &[],
        );
        assert_eq!(
            config_of(&c, "notes"),
            json!({"root": "~/n", "n": 3, "f": 1.5, "ok": true, "when": "1979-05-27T07:32:00Z",
                   "odd": "NaN", "list": [1, "a"], "deep": {"x": 1}})
        );
        assert_eq!(config_of(&c, "other"), json!({}));
    }

    #[test]
    fn flags_win_key_by_key() {
        let (_d, c) = configs(
            Some(
                "[modules.notes]\nroot = \"file\"\nkeep = 1\n[modules.notes.deep]\na = 1\nb = 1\n",
            ),
            &[
                r#"notes={"root":"flag","deep":{"b":2}}"#,
                r#"notes={"late":true}"#,
            ],
        );
        assert_eq!(
            config_of(&c, "notes"),
            json!({"root": "flag", "keep": 1, "deep": {"a": 1, "b": 2}, "late": true})
        );
    }

    #[test]
    fn the_file_is_read_at_each_start() {
        let (d, c) = configs(Some("[modules.notes]\nv = 1\n"), &[]);
        assert_eq!(config_of(&c, "notes"), json!({"v": 1}));
        std::fs::write(d.path().join("config.toml"), "[modules.notes]\nv = 2\n").unwrap();
        assert_eq!(config_of(&c, "notes"), json!({"v": 2}));
        std::fs::write(d.path().join("config.toml"), "[modules]\nnotes = 2\n").unwrap();
        let e = c.json_for("notes").unwrap_err().to_string();
        assert!(e.contains("line 2, key `modules.notes`"), "{e}");
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        for (arg, what) in [
            ("notes", "NAME=JSON"),
            ("no/tes={}", "may only contain"),
            ("notes=[1]", "must be a JSON object"),
            ("notes={", "is not JSON"),
        ] {
            let e = parse_module_config_arg(arg).unwrap_err();
            assert!(e.contains(what), "{arg}: {e}");
        }
    }
}
