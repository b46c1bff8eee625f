#!/usr/bin/env bash
# Encodes and decodes 10 s of espeak-ng speech at 8, 16 and 48 kHz with both libopus and
# opus-rs, cross-decodes, and throws 200,000 random packets at the opus-rs decoder.
set -euo pipefail
cd "$(dirname "$0")"
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
espeak-ng -w "$work/s.wav" "Welcome to the conference. Please enter your PIN followed by the pound key. You are the third participant. The meeting will begin shortly."
for r in 8000 16000 48000; do sox "$work/s.wav" -r $r -c 1 -b 16 -e signed -t raw "$work/s$r.raw"; done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tolk-target}/opus-compare"
cargo run --release -q -- "$work"
