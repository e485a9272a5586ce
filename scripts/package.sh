#!/usr/bin/env bash
# Debian packages for the agent, the control plane and vigilctl (cargo-deb),
# into target/debian/ unless VIGIL_PACKAGE_OUT says where.
#   VIGIL_PACKAGE_PROFILE=dev  package the debug binaries `make test` built
#                              (the install test does, to skip a release build)
#   VIGIL_PACKAGE_NO_BUILD=1   package what is built, build nothing
#   VIGIL_DEB_VERSION=V        the packages' version (an upgrade test builds two)
# Install on a host: apt install ./vigil-agent_*.deb, then
#   vigil-agent enroll --token-file FILE --control-plane https://CP:7700 --tls-ca ca.pem
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${VIGIL_PACKAGE_PROFILE:-release}
out=${VIGIL_PACKAGE_OUT:-target/debian}
packages=(vigil-agent vigil-controlplane vigilctl)
if ! cargo deb --version >/dev/null 2>&1; then
  ./scripts/install-deps.sh --with-cargo-deb
fi
if [ "${VIGIL_PACKAGE_NO_BUILD:-0}" != 1 ]; then
  cargo build --locked --profile "$profile" $(printf -- '-p %s ' "${packages[@]}")
fi
mkdir -p "$out"
version=()
[ -n "${VIGIL_DEB_VERSION:-}" ] && version=(--deb-version "$VIGIL_DEB_VERSION")
for package in "${packages[@]}"; do
  # Debug binaries are large; their packages are for tests, so compress fast.
  fast=()
  [ "$profile" = release ] || fast=(--fast)
  cargo deb --quiet --no-build --locked --profile "$profile" -p "$package" \
    --output "$out" "${version[@]}" "${fast[@]}"
done
ls -1 "$out"/*.deb
