//! `norgopolis-server --check-config` and `--fallback-modules-dir`: what
//! front ends use to check a config the way the server reads it, and to
//! offer bundled modules after the user's own.

use std::process::Command;

use norgopolis_tests::{bin, Sandbox};

/// Runs `norgopolis-server --check-config` in `sb` with `extra` flags:
/// (success, stdout, stderr).
fn check_config(sb: &Sandbox, extra: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(bin("norgopolis-server"));
    sb.env(&mut cmd);
    let out = cmd
        .arg("--check-config")
        .args(extra)
        .output()
        .expect("run norgopolis-server");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_names_file_line_and_key_of_a_bad_config() {
    let sb = Sandbox::new();
    sb.write_config("linger = \"3s\"\ncolour = \"blue\"\n");
    let (ok, out, err) = check_config(&sb, &[]);
    assert!(!ok, "{out}");
    let want = format!(
        "config file {}, line 2, key `colour`",
        sb.config_path().display()
    );
    assert!(err.contains(&want), "{err}");
    // and it did not start a server
    assert!(!sb.socket.exists());
}

#[test]
fn check_config_prints_the_resolved_settings_of_a_good_config() {
    let sb = Sandbox::new();
    sb.write_config("linger = \"3s\"\n");
    let (ok, out, err) = check_config(&sb, &[]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with(&format!("config ok: {}\n", sb.config_path().display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("modules dir: {}\n", sb.modules.display())),
        "{out}"
    );
    assert!(!sb.socket.exists());
}

#[test]
fn fallback_modules_dirs_come_after_the_chosen_dirs() {
    let sb = Sandbox::new();
    let bundled = sb.dir.path().join("bundled");
    std::fs::create_dir(&bundled).expect("bundled dir");
    let bundled_arg = bundled.display().to_string();
    // after $NORGOPOLIS_MODULES_DIR
    let (ok, out, err) = check_config(&sb, &["--fallback-modules-dir", &bundled_arg]);
    assert!(ok, "{err}");
    let dirs: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("modules dir: "))
        .collect();
    assert_eq!(
        dirs,
        [sb.modules.display().to_string(), bundled_arg.clone()]
    );
    // after --modules-dir too, and not repeated when it is one of them
    let own = sb.modules.display().to_string();
    let (ok, out, err) = check_config(
        &sb,
        &[
            "--modules-dir",
            &own,
            "--fallback-modules-dir",
            &own,
            "--fallback-modules-dir",
            &bundled_arg,
        ],
    );
    assert!(ok, "{err}");
    let dirs: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("modules dir: "))
        .collect();
    assert_eq!(dirs, [own, bundled_arg]);
}
