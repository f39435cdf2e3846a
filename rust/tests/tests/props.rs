//! Property tests of module-name validation (`make fuzz` runs many more
//! cases): exactly the plain identifiers pass, and a name that passes can
//! never become a path outside the modules dir.

use std::path::{Component, Path};

use norgopolis_common::{names::MAX_NAME_LEN, validate_module_name};
use proptest::prelude::*;

fn is_plain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Names near the rules: plain ones, ones with path characters, long ones,
/// and arbitrary text.
fn candidate() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{1,64}",
        "[A-Za-z0-9_./\\\\-]{0,12}",
        "[a-z]{60,70}",
        "\\PC{0,20}",
        any::<Vec<u8>>().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        Just("..".to_string()),
        Just(".".to_string()),
        Just("a\0b".to_string()),
    ]
}

proptest! {
    #[test]
    fn exactly_plain_identifiers_pass(name in candidate()) {
        prop_assert_eq!(validate_module_name(&name).is_ok(), is_plain(&name), "{:?}", name);
    }

    #[test]
    fn accepted_names_stay_inside_the_modules_dir(name in candidate()) {
        if validate_module_name(&name).is_ok() {
            let dir = Path::new("/modules");
            let joined = dir.join(&name);
            prop_assert_eq!(joined.parent(), Some(dir));
            let last: Vec<Component> = joined.components().skip(2).collect();
            prop_assert_eq!(last.len(), 1);
            prop_assert!(matches!(last[0], Component::Normal(_)));
        }
    }

    #[test]
    fn refusals_explain_themselves(name in candidate()) {
        if let Err(e) = validate_module_name(&name) {
            prop_assert!(e.to_string().contains("module name"), "{}", e);
        }
    }
}
