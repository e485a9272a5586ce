//! `vigilctl ca`: the fleet CA on disk, certificates per identity, and
//! what a careless or hostile invocation cannot do (overwrite a key, leave
//! a key readable, get a certificate from a CA it does not hold).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn vigilctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigilctl"))
        .env_remove("VIGIL_ENDPOINT")
        .args(args)
        .output()
        .expect("vigilctl runs")
}

fn ok(args: &[&str]) -> String {
    let out = vigilctl(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_ca_issues_one_identity_per_certificate_with_private_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let out = tmp.path().join("tls");
    let (ca_s, out_s) = (ca.to_str().unwrap(), out.to_str().unwrap());
    ok(&["ca", "init", "--dir", ca_s]);
    assert_eq!(mode(&ca), 0o700);
    assert_eq!(mode(&ca.join("ca.key")), 0o600);

    let node: serde_json::Value = serde_json::from_str(&ok(&[
        "ca",
        "issue",
        "--ca-dir",
        ca_s,
        "--node",
        "cp1",
        "--dns",
        "cp1.example",
        "--ip",
        "127.0.0.1",
        "--out",
        out_s,
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(node["identity_uri"], "spiffe://vigil/node/cp1");
    assert_eq!(mode(&out.join("node-cp1.key")), 0o600);

    ok(&[
        "ca",
        "issue",
        "--ca-dir",
        ca_s,
        "--operator",
        "alice",
        "--role",
        "analyst",
        "--out",
        out_s,
    ]);
    let shown: serde_json::Value = serde_json::from_str(&ok(&[
        "ca",
        "show",
        out.join("operator-alice.pem").to_str().unwrap(),
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(shown["identity"]["kind"], "operator");
    assert_eq!(shown["identity"]["role"], "analyst");
    assert_eq!(shown["is_ca"], false);
    let ca_shown: serde_json::Value = serde_json::from_str(&ok(&[
        "ca",
        "show",
        ca.join("ca.pem").to_str().unwrap(),
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(ca_shown["is_ca"], true);
    assert_eq!(shown["issuer"], ca_shown["subject"]);
}

#[test]
fn nothing_is_overwritten_and_bad_requests_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let out = tmp.path().join("tls");
    let (ca_s, out_s) = (ca.to_str().unwrap(), out.to_str().unwrap());
    ok(&["ca", "init", "--dir", ca_s]);
    let key_before = std::fs::read(ca.join("ca.key")).unwrap();

    // A second init in the same directory keeps the first CA.
    let again = vigilctl(&["ca", "init", "--dir", ca_s]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwritten"));
    assert_eq!(std::fs::read(ca.join("ca.key")).unwrap(), key_before);

    ok(&[
        "ca", "issue", "--ca-dir", ca_s, "--agent", "h1", "--out", out_s,
    ]);
    let twice = vigilctl(&[
        "ca", "issue", "--ca-dir", ca_s, "--agent", "h1", "--out", out_s,
    ]);
    assert_eq!(twice.status.code(), Some(1));

    // Names that would escape the output directory or a URI path segment.
    for bad in ["../x", "a/b", "", "-x", "a\u{1b}[31m"] {
        let out = vigilctl(&[
            "ca", "issue", "--ca-dir", ca_s, "--agent", bad, "--out", out_s,
        ]);
        assert!(!out.status.success(), "{bad:?}");
    }
    assert!(!tmp.path().join("agent-x.pem").exists());

    // An operator needs a known role; agents take no --dns.
    let out = vigilctl(&[
        "ca",
        "issue",
        "--ca-dir",
        ca_s,
        "--operator",
        "bob",
        "--role",
        "root",
        "--out",
        out_s,
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown operator role"));
    let out = vigilctl(&[
        "ca", "issue", "--ca-dir", ca_s, "--agent", "h2", "--dns", "x", "--out", out_s,
    ]);
    assert_eq!(out.status.code(), Some(2));

    // A CA directory whose key is another CA's is refused.
    let other = tmp.path().join("other");
    ok(&["ca", "init", "--dir", other.to_str().unwrap()]);
    std::fs::copy(other.join("ca.key"), tmp.path().join("k")).unwrap();
    let mixed = tmp.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    std::fs::copy(ca.join("ca.pem"), mixed.join("ca.pem")).unwrap();
    std::fs::copy(other.join("ca.key"), mixed.join("ca.key")).unwrap();
    let out = vigilctl(&[
        "ca",
        "issue",
        "--ca-dir",
        mixed.to_str().unwrap(),
        "--agent",
        "h3",
        "--out",
        out_s,
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("do not belong together"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Not a certificate: a clear error, exit 5.
    let out = vigilctl(&["ca", "show", ca.join("ca.key").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5));
}
