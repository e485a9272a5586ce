//! The Debian packages as an operator uses them (issue #20): `make
//! package`'s packages (here of the binaries `make test` built) installed
//! into a throwaway root in a mount and network namespace of its own; the
//! control plane and the agent run as their systemd units say (user,
//! environment files, capability bounding set, no new privileges); an
//! agent enrolls with a join token, is seen on the control plane with its
//! eBPF sensors, keeps its spool and identity across an upgrade, and is
//! refused once its certificate is revoked. The steps and their checks are
//! in `integration/scripts/install-in-throwaway-root.sh`. Runs as root.

use std::path::{Path, PathBuf};
use std::process::Command;

use vigil_integration::{bin_dir, privileged};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the integration crate sits in the workspace")
        .to_path_buf()
}

/// Builds the three packages at `version` into `out` from the binaries in
/// `bin_dir()` (no cargo build: `make test` built them).
fn package(version: &str, out: &Path) {
    let bins = bin_dir();
    let profile = if bins.file_name().is_some_and(|n| n == "release") {
        "release"
    } else {
        "dev"
    };
    let target_dir = bins.parent().expect("target/<profile> has a parent");
    let made = Command::new(workspace_root().join("scripts/package.sh"))
        .env("VIGIL_PACKAGE_PROFILE", profile)
        .env("VIGIL_PACKAGE_NO_BUILD", "1")
        .env("VIGIL_PACKAGE_OUT", out)
        .env("VIGIL_DEB_VERSION", version)
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .expect("running scripts/package.sh");
    assert!(
        made.status.success(),
        "scripts/package.sh failed:\n{}{}",
        String::from_utf8_lossy(&made.stdout),
        String::from_utf8_lossy(&made.stderr)
    );
    for name in ["vigil-agent", "vigil-controlplane", "vigilctl"] {
        let deb = format!("{name}_{version}_");
        let found = std::fs::read_dir(out)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&deb));
        assert!(found, "no {deb}*.deb in {}", out.display());
    }
}

#[test]
fn the_packages_install_enroll_upgrade_and_revoke_in_a_throwaway_root() {
    if !privileged("the_packages_install_enroll_upgrade_and_revoke_in_a_throwaway_root") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (dir.path().join("v1"), dir.path().join("v2"));
    package("0.1.0-1", &v1);
    package("0.1.0-2", &v2);
    let run =
        Command::new(workspace_root().join("integration/scripts/install-in-throwaway-root.sh"))
            .arg(&v1)
            .arg(&v2)
            .output()
            .expect("running install-in-throwaway-root.sh");
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "the install test failed:\n{stdout}");
    // Every stage reported, in order.
    let mut rest = stdout.as_ref();
    for stage in [
        "ok: installed vigil-agent 0.1.0-1",
        "ok: modes:",
        "ok: units enabled:",
        "ok: systemd-analyze verify:",
        "ok: control plane up as its unit runs it: user vigil, no capabilities",
        "ok: enrolled; the same token refused a second time",
        "ok: agent ",
        "ok: a model file opened by nobody is an alert",
        "ok: upgraded to 0.1.0-2; identity files unchanged, spool kept",
        "ok: the finding spooled across the upgrade arrived",
        "ok: revoked: the agent's stream refused and audited",
        "ok: all",
    ] {
        let at = rest
            .find(stage)
            .unwrap_or_else(|| panic!("stage {stage:?} missing or out of order in:\n{stdout}"));
        rest = &rest[at + stage.len()..];
    }
}
