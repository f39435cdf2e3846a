//! Property tests of `module.toml` parsing (`make fuzz` runs many more
//! cases): any text is refused or accepted without panicking, errors name
//! the file, and an accepted manifest never points outside its folder or
//! at an invalid dependency.

use std::path::{Component, Path};

use proptest::prelude::*;

use super::manifest::Manifest;

fn load(text: &str) -> Result<Manifest, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("module.toml");
    std::fs::write(&path, text).unwrap();
    Manifest::load(&path, "db").map_err(|e| {
        let msg = e.to_string();
        assert!(msg.contains("module.toml"), "error without the file: {msg}");
        msg
    })
}

fn toml_string(s: &str) -> String {
    format!("{:?}", s) // Rust debug quoting is valid TOML basic-string quoting for these inputs
}

/// Module names: valid ones, and near misses.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{1,12}",
        "[a-z./ ]{0,6}",
        Just("..".to_string()),
        Just("db".to_string()),
        "[a-z]{60,70}",
    ]
}

/// `exec` values: plain relative paths, escapes, absolute paths, empty.
fn exec() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}",
        "[a-z]{1,4}/[a-z]{1,4}",
        "(\\.\\./)+[a-z]{1,4}",
        "[a-z]{1,4}/\\.\\./\\.\\./[a-z]{1,4}",
        "/[a-z]{1,8}",
        Just(String::new()),
        Just("./db".to_string()),
    ]
}

proptest! {
    #[test]
    fn any_text_is_handled(text in "\\PC{0,200}") {
        let _ = load(&text);
    }

    #[test]
    fn toml_shaped_text_is_handled(
        lines in proptest::collection::vec(
            ("[a-z_]{1,14}", prop_oneof![
                "\"[^\"\\\\]{0,10}\"".boxed(),
                "-?[0-9]{1,12}".boxed(),
                Just("true".to_string()).boxed(),
                "\\[(\"[a-z]{0,5}\", ){0,3}\\]".boxed(),
                "\\{ name = \"[a-z]{0,5}\" \\}".boxed(),
            ]),
            0..8,
        )
    ) {
        let text: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        let _ = load(&text);
    }

    #[test]
    fn accepted_manifests_stay_inside_their_folder(
        exec in exec(),
        deps in proptest::collection::vec(name(), 0..4),
        own in proptest::option::of(name()),
    ) {
        let mut text = format!("exec = {}\n", toml_string(&exec));
        text += &format!(
            "dependencies = [{}]\n",
            deps.iter().map(|d| toml_string(d)).collect::<Vec<_>>().join(", ")
        );
        if let Some(own) = &own {
            text += &format!("name = {}\n", toml_string(own));
        }
        let escapes = exec.is_empty()
            || Path::new(&exec).is_absolute()
            || Path::new(&exec).components().any(|c| c == Component::ParentDir);
        let bad_dep = deps
            .iter()
            .any(|d| norgopolis_common::validate_module_name(d).is_err() || d == "db");
        let bad_name = own.as_deref().is_some_and(|n| n != "db");
        match load(&text) {
            Ok(m) => {
                prop_assert!(!escapes && !bad_dep && !bad_name, "accepted {text:?}");
                let exec = m.exec.unwrap();
                prop_assert!(exec.is_relative());
                prop_assert!(exec.components().all(|c| c != Component::ParentDir));
            }
            Err(msg) => {
                prop_assert!(escapes || bad_dep || bad_name, "refused {text:?}: {msg}");
            }
        }
    }
}
