//! What an unprivileged local user (`nobody`) does in the attack tests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `/usr/bin/python3 -c code` as nobody (uid and gid 65534, no
/// supplementary groups); append the script's arguments. The PATH python3
/// may be a shim nobody cannot run, hence the absolute path.
pub fn python_as_nobody(code: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "/usr/bin/python3",
        "-c",
        code,
    ]);
    c
}

/// `parent/name`, a directory anyone may write, under `parent` made one
/// anyone may enter.
pub fn shared_dir(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}
