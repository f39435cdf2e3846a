//! The optional config file (`config.toml`). Unknown keys are errors: a
//! typo must not silently change nothing. Every error names the file, the
//! line and the key, so the message a spawning client shows is enough to
//! fix it.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{de::Error as _, Deserialize, Deserializer};

use norgopolis_common::duration::{duration_from_secs, parse_duration, positive};

use crate::config::{limits::ranges, listen_addr::parse_loopback};

/// Smallest accepted `log_max_size`: below this a rotated log holds too
/// little to be useful.
pub const MIN_LOG_SIZE: u64 = 4096;

/// Contents of `config.toml`; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Socket path (relative: from the config's dir).
    pub socket: Option<PathBuf>,
    /// Module dirs, searched in order (relative: from the config's dir).
    pub modules_dirs: Option<Vec<PathBuf>>,
    /// Exit delay after the last session ("3s").
    #[serde(default, deserialize_with = "duration")]
    pub linger: Option<Duration>,
    /// Exit delay for a server that never had a session ("300s").
    #[serde(default, deserialize_with = "duration")]
    pub idle_timeout: Option<Duration>,
    /// Largest message accepted from or sent to anyone, in bytes.
    #[serde(default, deserialize_with = "positive_usize")]
    pub max_message_size: Option<usize>,
    /// Compatibility TCP listener for public-protocol clients (loopback only).
    #[serde(default, deserialize_with = "loopback")]
    pub listen_tcp: Option<SocketAddr>,
    /// Deadline for calls whose caller sets none ("30s", or "off", the default).
    #[serde(default, deserialize_with = "duration_or_off")]
    pub call_timeout: Option<Option<Duration>>,
    /// Idle unload of modules whose manifest does not say ("10m", or
    /// "off", the default).
    #[serde(default, deserialize_with = "duration_or_off")]
    pub idle_unload: Option<Option<Duration>>,
    /// Most sessions attached at once.
    #[serde(default, deserialize_with = "positive_u32")]
    pub max_sessions: Option<u32>,
    /// Most calls in flight on one session (one client connection).
    #[serde(default, deserialize_with = "positive_u32")]
    pub max_calls_per_session: Option<u32>,
    /// Most calls one module runs at once; more wait in line.
    #[serde(default, deserialize_with = "positive_u32")]
    pub max_calls_per_module: Option<u32>,
    /// How long a module gets after stdin closes, and again after SIGTERM.
    #[serde(default, deserialize_with = "duration")]
    pub module_grace: Option<Duration>,
    /// How often an idle module connection is pinged.
    #[serde(default, deserialize_with = "positive_duration")]
    pub module_ping_interval: Option<Duration>,
    /// A module that leaves a ping unanswered this long is failed and killed.
    #[serde(default, deserialize_with = "positive_duration")]
    pub module_ping_timeout: Option<Duration>,
    /// The log is rotated to `<log>.1` when it grows past this many bytes.
    #[serde(default, deserialize_with = "log_size")]
    pub log_max_size: Option<u64>,
    /// Stderr lines a module may log per second (0: no limit).
    #[serde(default)]
    pub stderr_lines_per_second: Option<u32>,
    /// Modules to load when the server starts (besides those whose
    /// manifest says `autostart = true`).
    #[serde(default, deserialize_with = "module_names")]
    pub autostart: Option<Vec<String>>,
    /// Most connections open at once on the Unix socket.
    #[serde(default, deserialize_with = "unix_connections")]
    pub max_connections: Option<u32>,
    /// Most connections open at once on the TCP listener.
    #[serde(default, deserialize_with = "tcp_connections")]
    pub max_tcp_connections: Option<u32>,
    /// A connection that starts no call or session this long after it
    /// opened is closed.
    #[serde(default, deserialize_with = "first_call_timeout")]
    pub first_call_timeout: Option<Duration>,
    /// A paused call that could not give its module slot back is cancelled
    /// when its caller reads nothing for this long.
    #[serde(default, deserialize_with = "positive_duration")]
    pub stall_timeout: Option<Duration>,
    /// `[modules.NAME]` tables, handed to each module at its start
    /// (`NORGOPOLIS_MODULE_CONFIG`); opaque to the server.
    #[serde(default)]
    pub modules: BTreeMap<ModuleName, ModuleTable>,
}

/// "an integer", "a string".
fn with_article(noun: &str) -> String {
    let article = if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {noun}")
}

/// A key of `[modules]`: a valid module name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ModuleName(pub String);

impl<'de> Deserialize<'de> for ModuleName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        norgopolis_common::validate_module_name(&name).map_err(D::Error::custom)?;
        Ok(ModuleName(name))
    }
}

/// A module's configuration table; anything but a table is an error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModuleTable(pub toml::Table);

impl<'de> Deserialize<'de> for ModuleTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::Table(t) => Ok(ModuleTable(t)),
            other => Err(D::Error::custom(format!(
                "a module's configuration must be a table (`[modules.NAME]`), got {}",
                with_article(other.type_str())
            ))),
        }
    }
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("config file {}{}{}: {message}", path.display(), line.map(|l| format!(", line {l}")).unwrap_or_default(), key.as_ref().map(|k| format!(", key `{k}`")).unwrap_or_default())]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line of the problem, when known.
    pub line: Option<usize>,
    /// The offending key, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Config {
    /// Reads `path`; a missing file is an empty config, a bad one an error
    /// naming the file, line and key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(ConfigError {
                    path: path.to_path_buf(),
                    line: None,
                    key: None,
                    message: format!("cannot read it: {e}"),
                })
            }
        };
        let mut config = Self::parse(path, &text)?;
        if let Some(dir) = path.parent() {
            config.anchor_paths(dir);
        }
        Ok(config)
    }

    /// Takes relative paths from `dir` (the config's own dir): the server
    /// runs from "/" once detached, and a config must mean the same thing
    /// whoever starts the server from wherever.
    fn anchor_paths(&mut self, dir: &Path) {
        if let Some(socket) = &mut self.socket {
            *socket = dir.join(&*socket);
        }
        for d in self.modules_dirs.iter_mut().flatten() {
            *d = dir.join(&*d);
        }
    }

    /// Parses `text`, the contents of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let span = e.span();
            let message = e.message().trim().replace('\n', " ");
            let key = span
                .as_ref()
                .and_then(|s| unknown_field(&message).or_else(|| key_at(text, s.start)));
            ConfigError {
                path: path.to_path_buf(),
                line: span.map(|s| line_of(text, s.start)),
                key,
                message,
            }
        })
    }
}

fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// serde names an unknown key in its message ("unknown field `nme`, …").
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

/// The key whose value covers `pos`: the `key = …` on that line, or on the
/// nearest line above it (values such as arrays may span lines), prefixed
/// with the `[table]` it is in ("modules.notes"); a header itself when the
/// problem is there.
fn key_at(text: &str, pos: usize) -> Option<String> {
    let pos = pos.min(text.len());
    let end = text[pos..].find('\n').map_or(text.len(), |i| pos + i);
    let mut key: Option<String> = None;
    for line in text[..end].lines().rev() {
        let line = line.trim();
        if let Some(header) = table_header(line) {
            return Some(match key {
                Some(k) => format!("{header}.{k}"),
                None => header,
            });
        }
        if key.is_none() {
            key = line.split_once('=').and_then(|(k, _)| plain_key(k));
        }
    }
    key
}

/// `[a.b]` → "a.b" (array-of-tables headers are not ours, so none).
fn table_header(line: &str) -> Option<String> {
    let inner = line.strip_prefix('[')?.split_once(']')?.0;
    if inner.starts_with('[') {
        return None;
    }
    let parts: Option<Vec<String>> = inner.split('.').map(plain_key).collect();
    parts.map(|p| p.join("."))
}

/// A key as written, unquoted; `None` when it is not one (so a `=` inside
/// a value on a continuation line is not taken for a key).
fn plain_key(key: &str) -> Option<String> {
    let key = key.trim();
    let quoted = key.len() >= 2
        && ((key.starts_with('"') && key.ends_with('"'))
            || (key.starts_with('\'') && key.ends_with('\'')));
    if quoted {
        return Some(key[1..key.len() - 1].to_string());
    }
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    plain.then(|| key.to_string())
}

/// A duration as text ("250ms", "3s", "2m") or a number of seconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum DurationValue {
    Text(String),
    Seconds(f64),
}

impl DurationValue {
    /// The duration, range-checked like every other duration setting.
    fn to_duration(&self) -> Result<Duration, String> {
        match self {
            DurationValue::Text(t) => parse_duration(t),
            DurationValue::Seconds(s) => duration_from_secs(*s, &s.to_string()),
        }
    }

    fn text(&self) -> String {
        match self {
            DurationValue::Text(t) => t.clone(),
            DurationValue::Seconds(s) => s.to_string(),
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let value = DurationValue::deserialize(d)
        .map_err(|_| D::Error::custom("expected a duration such as \"250ms\", \"3s\" or \"2m\""))?;
    value.to_duration().map(Some).map_err(D::Error::custom)
}

fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let value = DurationValue::deserialize(d)
        .map_err(|_| D::Error::custom("expected a duration such as \"250ms\", \"3s\" or \"2m\""))?;
    value
        .to_duration()
        .and_then(|v| positive(v, &value.text()))
        .map(Some)
        .map_err(D::Error::custom)
}

fn duration_or_off<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Duration>>, D::Error> {
    let value = DurationValue::deserialize(d)
        .map_err(|_| D::Error::custom("expected a duration such as \"30s\", or \"off\""))?;
    if let DurationValue::Text(t) = &value {
        if matches!(t.trim(), "off" | "none" | "0") {
            return Ok(Some(None));
        }
    }
    let value = value.to_duration().map_err(D::Error::custom)?;
    Ok(Some((!value.is_zero()).then_some(value)))
}

fn positive_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(D::Error::custom("must be at least 1")),
        n => Ok(Some(n)),
    }
}

fn positive_usize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(D::Error::custom("must be at least 1")),
        n => Ok(Some(n)),
    }
}

fn log_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match u64::deserialize(d)? {
        n if n < MIN_LOG_SIZE => Err(D::Error::custom(format!(
            "{n} bytes is too small; use at least {MIN_LOG_SIZE}"
        ))),
        n => Ok(Some(n)),
    }
}

fn module_names<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    for name in &names {
        norgopolis_common::validate_module_name(name).map_err(D::Error::custom)?;
    }
    Ok(Some(names))
}

/// Connection caps: `u32` within `range`.
fn count_in<'de, D: Deserializer<'de>>(
    d: D,
    range: std::ops::RangeInclusive<u32>,
) -> Result<Option<u32>, D::Error> {
    let n = u32::deserialize(d)?;
    if !range.contains(&n) {
        return Err(D::Error::custom(format!(
            "{n} is out of range: use {} to {}",
            range.start(),
            range.end()
        )));
    }
    Ok(Some(n))
}

fn unix_connections<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    count_in(d, ranges::MAX_CONNECTIONS)
}

fn tcp_connections<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    count_in(d, ranges::MAX_TCP_CONNECTIONS)
}

fn first_call_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let range = ranges::FIRST_CALL_TIMEOUT;
    match duration(d)? {
        Some(t) if !range.contains(&t) => Err(D::Error::custom(format!(
            "{} ms is out of range: use {} ms to {} s",
            t.as_millis(),
            range.start().as_millis(),
            range.end().as_secs()
        ))),
        t => Ok(t),
    }
}

fn loopback<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    parse_loopback(&text).map(Some).map_err(D::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/home/u/.config/norgopolis/config.toml"), text)
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    /// Each `(text, line, key, what)`: parsing `text` fails naming `line`
    /// and `key`, saying `what`.
    fn assert_errors(cases: &[(&str, usize, &str, &str)]) {
        for (text, line, key, what) in cases {
            let e = err(text);
            assert!(
                e.contains(&format!("line {line}, key `{key}`")),
                "{text:?}: {e}"
            );
            assert!(e.contains(what), "{text:?}: {e}");
        }
    }

    #[test]
    fn full_config() {
        let c = parse(
            r#"
linger = "2s"
idle_timeout = 60
max_message_size = 1048576
listen_tcp = "127.0.0.1:62020"
call_timeout = "30s"
max_sessions = 10
max_calls_per_session = 20
max_calls_per_module = 3
module_grace = "250ms"
module_ping_interval = "5s"
module_ping_timeout = "10s"
log_max_size = 65536
stderr_lines_per_second = 0
max_connections = 512
max_tcp_connections = 8
first_call_timeout = "5s"
"#,
        )
        .unwrap();
        assert_eq!(c.linger, Some(Duration::from_secs(2)));
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(c.call_timeout, Some(Some(Duration::from_secs(30))));
        assert_eq!(c.listen_tcp, Some("127.0.0.1:62020".parse().unwrap()));
        assert_eq!(c.max_calls_per_module, Some(3));
        assert_eq!(c.max_connections, Some(512));
        assert_eq!(c.max_tcp_connections, Some(8));
        assert_eq!(c.first_call_timeout, Some(Duration::from_secs(5)));
        assert_eq!(
            parse("call_timeout = \"off\"").unwrap().call_timeout,
            Some(None)
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = err("linger = \"1s\"\n\nlingre = \"2s\"\n");
        assert!(e.starts_with("config file /home/u/.config/norgopolis/config.toml, line 3, key `lingre`: unknown field `lingre`"), "{e}");
    }

    #[test]
    fn bad_values_name_line_and_key() {
        let cases = [
            (
                "max_sessions = \"many\"\n",
                1,
                "max_sessions",
                "invalid type",
            ),
            ("\nlinger = \"soon\"\n", 2, "linger", "not a duration"),
            (
                "max_calls_per_module = 0\n",
                1,
                "max_calls_per_module",
                "at least 1",
            ),
            ("log_max_size = 10\n", 1, "log_max_size", "too small"),
            (
                "max_connections = 2\n",
                1,
                "max_connections",
                "out of range",
            ),
            (
                "max_tcp_connections = 0\n",
                1,
                "max_tcp_connections",
                "out of range",
            ),
            (
                "first_call_timeout = \"10ms\"\n",
                1,
                "first_call_timeout",
                "out of range",
            ),
            (
                "\n\nlisten_tcp = \"0.0.0.0:62020\"\n",
                3,
                "listen_tcp",
                "loopback",
            ),
            (
                "modules_dirs = [\n  \"/a\",\n  3,\n]\n",
                3,
                "modules_dirs",
                "invalid type",
            ),
        ];
        assert_errors(&cases);
    }

    #[test]
    fn absurd_durations_name_line_and_key() {
        let cases = [
            ("linger = 1e20\n", "linger", "too long"),
            ("\nidle_timeout = \"1e300\"\n", "idle_timeout", "too long"),
            ("call_timeout = \"1e15s\"\n", "call_timeout", "too long"),
            ("module_grace = -1\n", "module_grace", "non-negative"),
            (
                "module_ping_interval = 0\n",
                "module_ping_interval",
                "too short",
            ),
            (
                "module_ping_timeout = \"0s\"\n",
                "module_ping_timeout",
                "too short",
            ),
            ("linger = nan\n", "linger", "non-negative"),
            ("linger = inf\n", "linger", "too long"),
        ];
        for (text, key, what) in cases {
            let e = err(text);
            assert!(e.contains(&format!("key `{key}`")), "{text:?}: {e}");
            assert!(e.contains(what), "{text:?}: {e}");
        }
    }

    #[test]
    fn relative_paths_are_taken_from_the_config_dir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "socket = \"rel.sock\"\nmodules_dirs = [\"mods\", \"/abs\"]\n",
        )
        .unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.socket, Some(dir.path().join("rel.sock")));
        assert_eq!(
            c.modules_dirs,
            Some(vec![dir.path().join("mods"), PathBuf::from("/abs")])
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = err("linger = \"1s\"\nidle_timeout = \"5s\nsocket = 1\n");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn module_tables_are_kept_whole() {
        let c = parse(
            "[modules.notes]\nroots = [\"~/notes\"]\n[modules.notes.index]\ndepth = 2\n[modules.other]\n",
        )
        .unwrap();
        let notes = &c.modules[&ModuleName("notes".into())].0;
        assert_eq!(notes["roots"].as_array().map(Vec::len), Some(1));
        assert_eq!(notes["index"]["depth"].as_integer(), Some(2));
        assert!(c.modules[&ModuleName("other".into())].0.is_empty());
    }

    #[test]
    fn bad_module_tables_name_line_and_key() {
        let cases = [
            (
                "[modules]\nnotes = 3\n",
                2,
                "modules.notes",
                "must be a table",
            ),
            (
                "\nmodules.notes = \"x\"\n",
                2,
                "modules.notes",
                "got a string",
            ),
            (
                "[modules]\n\"bad name\" = {}\n",
                2,
                "modules.bad name",
                "may only contain",
            ),
            ("modules = 3\n", 1, "modules", "invalid type"),
        ];
        assert_errors(&cases);
    }

    #[test]
    fn missing_file_is_empty() {
        let c = Config::load(Path::new("/nonexistent/norgopolis/config.toml")).unwrap();
        assert!(c.linger.is_none());
    }
}

/// Property tests (`make fuzz` runs many more cases).
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    const PATH: &str = "/x/config.toml";

    /// The config's keys, plus near misses.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("linger"),
            Just("idle_timeout"),
            Just("max_message_size"),
            Just("listen_tcp"),
            Just("call_timeout"),
            Just("max_sessions"),
            Just("max_calls_per_session"),
            Just("max_calls_per_module"),
            Just("module_grace"),
            Just("log_max_size"),
            Just("stderr_lines_per_second"),
            Just("modules_dirs"),
            Just("lingre"),
            Just("socket"),
        ]
        .prop_map(str::to_string)
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "\"[0-9]{1,4}(ms|s|m)?\"",
            "\"[a-z.:0-9\\[\\]]{0,16}\"",
            "-?[0-9]{1,10}",
            "[0-9]{1,3}\\.[0-9]{1,2}",
            Just("true".to_string()),
            Just("[\"/a\", \"/b\"]".to_string()),
            Just("\"127.0.0.1:0\"".to_string()),
            Just("\"off\"".to_string()),
        ]
    }

    proptest! {
        #[test]
        fn any_text_is_handled(text in "\\PC{0,200}") {
            if let Err(e) = Config::parse(Path::new(PATH), &text) {
                let msg = e.to_string();
                prop_assert!(msg.starts_with("config file /x/config.toml"), "{msg}");
                if let Some(line) = e.line {
                    prop_assert!(line >= 1 && line <= text.lines().count() + 1, "{msg}");
                }
            }
        }

        #[test]
        fn errors_name_the_offending_key_and_line(
            lines in proptest::collection::vec((key(), value()), 1..6)
        ) {
            // Distinct keys only: a duplicate is a different error.
            let mut seen = std::collections::HashSet::new();
            let lines: Vec<_> = lines.into_iter().filter(|(k, _)| seen.insert(k.clone())).collect();
            let text: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
            if let Err(e) = Config::parse(Path::new(PATH), &text) {
                let line = e.line.expect("a line");
                let key = e.key.clone().expect("a key");
                prop_assert_eq!(&lines[line - 1].0, &key, "{}", e);
            }
        }
    }
}
