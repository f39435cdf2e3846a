//! `module.toml`: what a module folder says about itself.
//!
//! The server (loading), the `norgopolis` command (`module install`,
//! `module list`) and the Neovim library (`:checkhealth`) all read it
//! through this crate, so a manifest is judged the same way everywhere.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Deserializer};

use super::signature::Type;

/// File name of a module folder's manifest.
pub const MANIFEST_FILE: &str = "module.toml";

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

impl Restart {
    /// The policy as written in `module.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::Never => "never",
            Restart::OnFailure => "on-failure",
        }
    }
}

/// How the router talks to a module over its stdio.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// gRPC (`module_communication.Invoker`) over HTTP/2: every module,
    /// including those built on the public `norgopolis-module` crate.
    #[default]
    Grpc,
    /// Length-prefixed frames (`norgopolis_proto::lean_frame`): cheaper, spoken
    /// only by modules built with our SDK.
    Lean,
}

impl Transport {
    /// The transport as written in `module.toml` and told to the module in
    /// `NORGOPOLIS_TRANSPORT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Lean => "lean",
        }
    }
}

/// A declared function with documentation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionDoc {
    /// The function name.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub doc: String,
    /// The shape of its arguments, in the signature notation (`signature.rs`).
    pub args: Option<String>,
    /// The shape of each of its results, in the same notation.
    pub result: Option<String>,
    /// `args`, parsed when the manifest is loaded.
    #[serde(skip)]
    pub args_type: Option<Type>,
}

/// A declared function, for completion and introspection: a name, or a
/// table `{ name, doc }`.
#[derive(Debug, Clone)]
pub enum FunctionDecl {
    /// Just a name.
    Name(String),
    /// A name with documentation.
    Documented(FunctionDoc),
}

impl<'de> Deserialize<'de> for FunctionDecl {
    // Written out instead of `#[serde(untagged)]` so that a typo inside a
    // table is reported as such ("unknown field `dco`"), not as "matches
    // no variant".
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FunctionDecl;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a function name or a table { name = \"…\", doc = \"…\", args = \"…\", result = \"…\" }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(FunctionDecl::Name(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                FunctionDoc::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(FunctionDecl::Documented)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl FunctionDecl {
    /// The function's name.
    pub fn name(&self) -> &str {
        match self {
            FunctionDecl::Name(n) => n,
            FunctionDecl::Documented(d) => &d.name,
        }
    }

    /// The declared shape of the arguments, as written.
    pub fn args(&self) -> Option<&str> {
        match self {
            FunctionDecl::Name(_) => None,
            FunctionDecl::Documented(d) => d.args.as_deref(),
        }
    }

    /// The declared shape of each result, as written.
    pub fn result(&self) -> Option<&str> {
        match self {
            FunctionDecl::Name(_) => None,
            FunctionDecl::Documented(d) => d.result.as_deref(),
        }
    }

    /// The declared shape of the arguments, parsed.
    pub fn args_type(&self) -> Option<&Type> {
        match self {
            FunctionDecl::Name(_) => None,
            FunctionDecl::Documented(d) => d.args_type.as_ref(),
        }
    }

    /// The function's documentation ("" when none was given).
    pub fn doc(&self) -> &str {
        match self {
            FunctionDecl::Name(_) => "",
            FunctionDecl::Documented(d) => &d.doc,
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
    /// Modules that must be loaded before this one.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Load when the server starts.
    #[serde(default)]
    pub autostart: bool,
    /// What to do when the module crashes.
    #[serde(default)]
    pub restart: Restart,
    /// How the router talks to the module (chosen at spawn).
    #[serde(default)]
    pub transport: Transport,
    /// Declared functions.
    #[serde(default)]
    pub functions: Vec<FunctionDecl>,
    /// Stop the module after this long without calls (`None`: as the
    /// server's default says; zero, also written "off": never).
    #[serde(default, deserialize_with = "idle_unload")]
    pub idle_unload: Option<Duration>,
}

/// `idle_unload`: a duration as text ("10m") or seconds; "off" is zero,
/// which means never.
fn idle_unload<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration such as \"10m\", \"30s\" or \"1h\", or \"off\"")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if matches!(v.trim(), "off" | "none") {
                return Ok(Some(Duration::ZERO));
            }
            norgopolis_common::duration::parse_duration(v)
                .map(Some)
                .map_err(E::custom)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.visit_f64(v as f64)
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            norgopolis_common::duration::duration_from_secs(v, &v.to_string())
                .map(Some)
                .map_err(E::custom)
        }
    }
    d.deserialize_any(Visitor)
}

/// A manifest that could not be used; names the file, the key and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ManifestError {
    /// The manifest file.
    pub path: PathBuf,
    /// What is wrong (with line and key where they are known).
    pub message: String,
}

impl Manifest {
    /// The parsed argument signature of `function`, when it declares one.
    pub fn args_type(&self, function: &str) -> Option<&Type> {
        self.functions
            .iter()
            .find(|f| f.name() == function)?
            .args_type()
    }

    /// Reads and checks `path`, the manifest of module `folder_name`.
    pub fn load(path: &Path, folder_name: &str) -> Result<Self, ManifestError> {
        let err = |message: String| ManifestError {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| err(describe(&text, &e)))?;
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
            if dep == folder_name {
                return Err(err(format!(
                    "key `dependencies`: module {folder_name:?} cannot depend on itself"
                )));
            }
        }
        if let Some(exec) = &manifest.exec {
            if exec.as_os_str().is_empty()
                || exec.is_absolute()
                || exec.components().any(|c| c.as_os_str() == "..")
            {
                return Err(err(format!(
                    "key `exec`: {:?} must be a path inside the module folder",
                    exec.display().to_string()
                )));
            }
        }
        let mut manifest = manifest;
        parse_signatures(&mut manifest.functions).map_err(err)?;
        let mut seen = std::collections::BTreeSet::new();
        for f in &manifest.functions {
            if f.name().is_empty() {
                return Err(err("key `functions`: a function name is empty".into()));
            }
            if !seen.insert(f.name()) {
                return Err(err(format!(
                    "key `functions`: {:?} is declared twice",
                    f.name()
                )));
            }
        }
        Ok(manifest)
    }
}

/// Parses the signatures of `functions` (a syntax error names the function,
/// which of its keys, and the column).
fn parse_signatures(functions: &mut [FunctionDecl]) -> Result<(), String> {
    for f in functions {
        let FunctionDecl::Documented(d) = f else {
            continue;
        };
        let name = d.name.clone();
        let problem = |key: &str, e: super::signature::SyntaxError| {
            format!("key `functions`: function {name:?}, `{key}`: {e}")
        };
        if let Some(text) = &d.args {
            let parsed = Type::parse(text).map_err(|e| problem("args", e))?;
            d.args_type = Some(parsed);
        }
        if let Some(text) = &d.result {
            Type::parse(text).map_err(|e| problem("result", e))?;
        }
    }
    Ok(())
}

/// A TOML error as one line: "line N, key `k`: what is wrong".
fn describe(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    match key_at(text, start) {
        Some(key) => format!("line {line_no}, key `{key}`: {message}"),
        None => format!("line {line_no}: {message}"),
    }
}

/// The top-level key whose `key = value` line holds (or precedes) `offset`:
/// values spanning lines (arrays) belong to the key that opened them.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    text[..line_end].lines().rev().find_map(|line| {
        if line.starts_with(char::is_whitespace) {
            return None;
        }
        let (key, _) = line.split_once('=')?;
        let key = key.trim().trim_matches('"');
        let is_key = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        is_key.then(|| key.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Manifest, ManifestError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(MANIFEST_FILE);
        std::fs::write(&p, text).unwrap();
        Manifest::load(&p, "db")
    }

    fn error(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    #[test]
    fn full_manifest() {
        let m = load(
            r#"name = "db"
version = "1.0"
description = "a database"
exec = "bin/db"
args = ["--fast"]
dependencies = ["parser"]
autostart = true
restart = "on-failure"
transport = "lean"
functions = ["query", { name = "index", doc = "reindex" }]
"#,
        )
        .unwrap();
        assert_eq!(m.restart, Restart::OnFailure);
        assert_eq!(m.transport, Transport::Lean);
        assert_eq!(m.functions[0].name(), "query");
        assert_eq!(m.functions[0].doc(), "");
        assert_eq!(m.functions[1].name(), "index");
        assert_eq!(m.functions[1].doc(), "reindex");
        assert_eq!(m.dependencies, vec!["parser"]);
        assert!(m.autostart);
    }

    #[test]
    fn empty_manifest_is_all_defaults() {
        let m = load("").unwrap();
        assert_eq!(m.restart, Restart::Never);
        assert_eq!(m.transport, Transport::Grpc);
        assert!(!m.autostart && m.exec.is_none() && m.functions.is_empty());
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = error("version = \"1\"\nnme = \"db\"\n");
        assert!(e.contains(MANIFEST_FILE), "{e}");
        assert!(e.contains("line 2, key `nme`"), "{e}");
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = error("restart = \"sometimes\"\n");
        assert!(
            e.contains("key `restart`") && e.contains("on-failure"),
            "{e}"
        );
        let e = error("transport = \"http\"\n");
        assert!(
            e.contains(MANIFEST_FILE)
                && e.contains("key `transport`")
                && e.contains("grpc")
                && e.contains("lean"),
            "{e}"
        );
        assert_eq!(
            load("transport = \"grpc\"\n").unwrap().transport,
            Transport::Grpc
        );
        let e = error("autostart = \"yes\"\n");
        assert!(e.contains("key `autostart`"), "{e}");
        let e = error("functions = [\n  \"a\",\n  42,\n]\n");
        assert!(
            e.contains("key `functions`") && e.contains("function name or a table"),
            "{e}"
        );
        let e = error("functions = [{ name = \"a\", dco = \"typo\" }]\n");
        assert!(e.contains("key `functions`") && e.contains("dco"), "{e}");
    }

    #[test]
    fn semantic_errors_name_their_key() {
        assert!(error("name = \"other\"\n").contains("key `name`"));
        assert!(error("dependencies = [\"../x\"]\n").contains("key `dependencies`"));
        assert!(error("dependencies = [\"db\"]\n").contains("itself"));
        assert!(error("functions = [\"a\", \"a\"]\n").contains("declared twice"));
        assert!(error("functions = [\"\"]\n").contains("empty"));
    }

    #[test]
    fn signatures_are_parsed_when_loaded() {
        let m = load(
            r#"functions = [
  { name = "query", args = "{ path: string, limit?: integer }", result = "[string]" },
  { name = "plain" },
]
"#,
        )
        .unwrap();
        assert_eq!(
            m.functions[0].args(),
            Some("{ path: string, limit?: integer }")
        );
        assert_eq!(m.functions[0].result(), Some("[string]"));
        assert_eq!(
            m.args_type("query").map(|t| t.to_string()).as_deref(),
            Some("{path: string, limit?: integer}")
        );
        assert!(m.args_type("plain").is_none() && m.args_type("nothing").is_none());
    }

    #[test]
    fn signature_syntax_errors_name_file_function_and_column() {
        let e = error("functions = [{ name = \"query\", args = \"{ path: strng }\" }]\n");
        assert!(
            e.contains(MANIFEST_FILE)
                && e.contains("key `functions`")
                && e.contains("function \"query\", `args`: column 9: unknown type \"strng\""),
            "{e}"
        );
        let e = error("functions = [{ name = \"q\", result = \"[string\" }]\n");
        assert!(e.contains("function \"q\", `result`: column 8"), "{e}");
        let e = error("functions = [{ name = \"q\", args = 3 }]\n");
        assert!(e.contains("key `functions`"), "{e}");
    }

    #[test]
    fn idle_unload_is_a_checked_duration() {
        assert_eq!(
            load("idle_unload = \"10m\"\n").unwrap().idle_unload,
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            load("idle_unload = 2\n").unwrap().idle_unload,
            Some(Duration::from_secs(2))
        );
        assert_eq!(load("").unwrap().idle_unload, None);
        // Off (also over the server's default) is kept as zero.
        assert_eq!(
            load("idle_unload = \"off\"\n").unwrap().idle_unload,
            Some(Duration::ZERO)
        );
        assert_eq!(
            load("idle_unload = 0\n").unwrap().idle_unload,
            Some(Duration::ZERO)
        );
        for (bad, why) in [
            ("\"10x\"", "not a duration"),
            ("\"-1\"", "not a non-negative duration"),
            ("-1", "not a non-negative duration"),
            ("\"400d\"", "too long"),
            ("true", "a duration such as"),
        ] {
            let e = error(&format!("version = \"1\"\nidle_unload = {bad}\n"));
            assert!(
                e.contains(MANIFEST_FILE)
                    && e.contains("line 2, key `idle_unload`")
                    && e.contains(why),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_bundled_echo_manifest_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../modules/echo/module.toml");
        let m = Manifest::load(&path, "echo").unwrap();
        let count = m.args_type("count").unwrap();
        assert!(count.check_msgpack(&[0x03]).is_ok());
        assert!(m.args_type("pid").is_none(), "pid ignores its arguments");
    }

    #[test]
    fn escaping_exec_is_refused() {
        for exec in ["../evil.sh", "/bin/sh", ""] {
            let e = error(&format!("exec = {exec:?}\n"));
            assert!(e.contains("key `exec`"), "{e}");
        }
    }
}
