//! Whether a test may load eBPF programs, or must skip (or, in CI, fail).

/// Whether this process may load eBPF programs. When it may not, prints why
/// the calling test skips; with `VIGIL_REQUIRE_PRIVILEGED=1` (as in CI) a
/// skip is a failure instead.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let reason = format!("{test}: skipped, needs root to load eBPF programs");
    if std::env::var("VIGIL_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{reason}, and VIGIL_REQUIRE_PRIVILEGED=1 forbids skipping");
    }
    eprintln!("SKIP {reason}");
    false
}
