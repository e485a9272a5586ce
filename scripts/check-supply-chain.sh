#!/usr/bin/env bash
# make deny: cargo-deny over the dependency tree (deny.toml).
# Licenses, bans (duplicate versions, wildcards) and sources always run, and
# offline: cargo-deny only reads Cargo.lock and the crates' manifests, which
# `cargo fetch` brings from crates.io first. Advisories need the RustSec
# database, which lives on GitHub; this project's machines cannot reach it,
# so that check runs only when a copy is already in $CARGO_HOME/advisory-dbs
# (cargo-deny's default path) and is otherwise reported as not run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every platform's crates: `cargo metadata` reads them all, even those
# that deny.toml's [graph] targets leave out of the checks.
cargo fetch --locked --quiet

cargo deny --offline --locked check licenses bans sources

db_root="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
if compgen -G "$db_root/advisory-db-*/crates" >/dev/null; then
  cargo deny --offline --locked check advisories
else
  echo "deny: advisories NOT checked: no RustSec advisory database under $db_root, and this machine cannot fetch it; a clone of the RustSec advisory-db repository at $db_root/advisory-db-3157b0e258782691 (the directory cargo-deny 0.20 uses for the default database) turns the check on"
fi
