#!/usr/bin/env bash
# The whole test suite: unit tests, the golden SQL cases (tests/sql/) and the
# end-to-end process tests (tests/it/). Everything it needs is started by the
# tests themselves; today that is only the `velo` binary (no external service
# is used by these features yet).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install the Rust toolchain (https://rustup.rs) and run this again" >&2
  exit 1
fi

# CI builds in a fresh clone: keep the build cache outside it when asked to.
if [ "${CI:-}" = "true" ] && [ -z "${CARGO_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR="${HOME}/.cache/velostream/target"
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

cargo fmt --all -- --check
# doc-tests are left out: the crates have no runnable examples in their docs
cargo test --workspace --locked --lib --bins --tests
