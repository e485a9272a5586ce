//! The built vigilctl binary: exit codes, help and completions, without a
//! control plane (an unreachable one is the point of some checks).

use std::process::{Command, Output};

fn vigilctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigilctl"))
        .env_remove("VIGIL_ENDPOINT")
        .args(args)
        .output()
        .expect("vigilctl runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_unreachable_control_plane_exits_3() {
    for args in [
        &["--control-plane", "http://127.0.0.1:1", "alerts"][..],
        &["--endpoint", "http://127.0.0.1:1", "status", "--json"],
        &["--endpoint", "http://127.0.0.1:1", "policy", "list"],
    ] {
        let out = vigilctl(args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("cannot reach the control plane at http://127.0.0.1:1"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn policy_check_on_a_bad_directory_exits_5_with_file_line_col() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        "id: r\ndescription: d\nseverity: extreme\nwhen: [model_file]\n",
    )
    .unwrap();
    let out = vigilctl(&["policy", "check", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("rules.yaml:"), "{}", stderr(&out));
    assert!(stderr(&out).contains("problem(s)"), "{}", stderr(&out));

    let empty = tempfile::tempdir().unwrap();
    let out = vigilctl(&["policy", "check", empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
}

#[test]
fn the_default_policy_pack_checks() {
    let pack = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/default");
    let out = vigilctl(&["policy", "check", pack]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok ("));
}

#[test]
fn bad_command_lines_exit_2() {
    for args in [
        &["alerts", "--severity", "urgent"][..],
        &["alerts", "--signal", "gpu"],
        &["alerts", "--since", "a while"],
        &["alerts", "-o", "yaml"],
        &["status", "--json", "-o", "table"],
        &["completions", "tcsh"],
        &["no-such-noun"],
    ] {
        let out = vigilctl(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    // Caught after parsing, same code.
    let out = vigilctl(&[
        "--endpoint",
        "http://127.0.0.1:1",
        "alerts",
        "--follow",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn help_lists_the_exit_codes() {
    let out = vigilctl(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for line in [
        "Exit codes:",
        "3  the control plane could not be reached",
        "4  not found",
        "5  verification failed",
    ] {
        assert!(help.contains(line), "{line} not in\n{help}");
    }
}

#[test]
fn completions_cover_every_noun() {
    for shell in ["bash", "zsh", "fish"] {
        let out = vigilctl(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        for noun in [
            "alerts", "agents", "policy", "workload", "audit", "cluster", "status",
        ] {
            assert!(script.contains(noun), "{shell} completion lacks {noun}");
        }
    }
}
