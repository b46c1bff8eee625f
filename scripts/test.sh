#!/usr/bin/env bash
# The README's test command. On a fresh Debian machine it installs what the tests need
# (SIPp, baresip, espeak-ng; PostgreSQL must be reachable or is started), then runs the
# formatting and lint gates and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

need_pkgs=()
command -v sipp >/dev/null 2>&1 || need_pkgs+=(sip-tester)
command -v baresip >/dev/null 2>&1 || need_pkgs+=(baresip)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
command -v espeak-ng >/dev/null 2>&1 || need_pkgs+=(espeak-ng)
# libfuzzer-sys (the fuzz targets, checked below) builds libFuzzer's C++.
command -v g++ >/dev/null 2>&1 || need_pkgs+=(g++)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing Debian packages: ${need_pkgs[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q || true
  $SUDO apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
fi

# PostgreSQL: the CDR tests (to come) use a real server. Start the local cluster if it is
# installed but stopped; tests that need it will say so if it is missing.
if command -v pg_ctlcluster >/dev/null 2>&1 && ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  log "starting the local PostgreSQL cluster"
  ver=$(ls /etc/postgresql 2>/dev/null | head -1)
  [ -n "$ver" ] && pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
fi

# Builds go to a target directory outside the clone, reused between runs on this machine.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tolk-target}"
export CARGO_TERM_COLOR=never

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

log "fuzz targets: a short run (debug build with overflow checks, no coverage; hours: scripts/fuzz.sh)"
cargo build --manifest-path fuzz/Cargo.toml --bins
fuzz_bin=$CARGO_TARGET_DIR/debug
for t in $(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^tolk-fuzz$'); do
  # Every seed (and, for the SIP targets, every RFC 4475 message) through the target once,
  # then 20,000 random inputs (without coverage instrumentation: a smoke run, not a campaign).
  seeds=()
  [ -d "fuzz/seeds/$t" ] && seeds+=(fuzz/seeds/"$t"/*)
  case $t in sip_message | sip_stream) seeds+=(tests/fixtures/rfc4475/*) ;; esac
  if [ ${#seeds[@]} -gt 0 ]; then
    "$fuzz_bin/$t" "${seeds[@]}" > /tmp/tolk-fuzz-$t.log 2>&1 || { tail -30 /tmp/tolk-fuzz-$t.log; exit 1; }
  fi
  "$fuzz_bin/$t" -runs=20000 -max_len=4096 > /tmp/tolk-fuzz-$t.log 2>&1 || { tail -30 /tmp/tolk-fuzz-$t.log; exit 1; }
done

log "layers: imports point down, sans-IO cores clean, files by concept"
scripts/check-layers.sh

log "cargo test"
cargo test --all-targets

log "all tests passed"
