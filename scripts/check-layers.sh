#!/usr/bin/env bash
# The layer rules of docs/ARCHITECTURE.md, checked from the code's own imports. Run by
# scripts/test.sh; fails with the offending lines.
#
# 1. Each top-level module imports only the modules its row below allows (imports point down).
# 2. The sans-IO cores read no clock, sleep, touch no file, socket or process and draw no
#    unseeded randomness (time and seeds are passed in).
# 3. No source file is over 1,000 lines outside its tests, except the listed ones still to be
#    split; a listed file that has come under the limit must leave the list (a ratchet).
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
problem() { printf '%s\n' "$*" >&2; fail=1; }

# Code of a file without its tests: `tests.rs` files are skipped, and each item after a
# `#[cfg(test)]` line is cut (a `mod x;` line, or a block up to its matching brace).
code_of() {
  case "$1" in */tests.rs) return 0 ;; esac
  awk '
    skip == 1 {
      if (depth == 0 && $0 ~ /;[ \t]*$/ && $0 !~ /\{/) { skip = 0; next }
      t = $0; opens = gsub(/\{/, "{", t); closes = gsub(/\}/, "}", t)
      depth += opens - closes; if (opens > 0) seen = 1
      if (seen && depth <= 0) { skip = 0; depth = 0; seen = 0 }
      next
    }
    /^[ \t]*#\[cfg\(test\)\]/ { skip = 1; depth = 0; seen = 0; next }
    { print FILENAME ":" FNR ":" $0 }' "$1"
}

# Helpers at the bottom that any layer may use: they import nothing from the crate.
bottom="clock number file_text privacy private_files keys metrics test_clock"

# module -> the modules it may import (besides the bottom helpers).
declare -A allowed=(
  [clock]="" [number]="" [file_text]="" [privacy]="" [private_files]="" [keys]="" [metrics]="" [test_clock]=""
  [rtp]=""
  [media]="rtp"
  [config]=""
  [sip]="config media"
  [media_files]="config media"
  [flow]="config media media_files"
  [room]="config media media_files rtp"
  [cdr]="config"
  [dialplan]="config flow room"
  [call]="cdr config dialplan flow media media_files room rtp sip"
  [admin]="cdr config room"
  [gateway]="admin call cdr config dialplan flow media media_files room rtp sip"
  [lib]="" [main]="" [cli]=""
)

# Prints "file:line:code" lines with `dep` names the module (or sip submodule) may not import.
# $1: the import prefix (crate:: or crate::sip::), $2: " allowed names ".
check_imports() {
  awk -v prefix="$1" -v ok="$2" -v who="$3" '
    {
      line = $0; sub(/^[^:]*:[0-9]+:/, "", line)
      if (line ~ /^[ \t]*\/\//) next
      sub(/\/\/.*/, "", line)
      if (prefix == "crate::" && index(line, "crate::{")) {
        print "layers: " $0 ": name each import'"'"'s module (use crate::x::...), so the layers can be read"
      }
      rest = line
      pat = prefix "[a-z_]+"
      while (match(rest, pat)) {
        dep = substr(rest, RSTART + length(prefix), RLENGTH - length(prefix))
        if (index(ok, " " dep " ") == 0) print "layers: " $0 ": " who " may not import " dep
        rest = substr(rest, RSTART + RLENGTH)
      }
    }'
}

# check_tree DIR PREFIX TABLE [ALSO]: every module under DIR imports (through PREFIX) only
# what its row in the associative array TABLE allows, plus the names in ALSO.
check_tree() {
  local dir=$1 prefix=$2 also=${4:-} path module out
  local -n table=$3
  for path in "$dir"/*; do
    module=$(basename "$path" .rs)
    case "$module" in lib | main | mod) continue ;; esac
    if [ -z "${table[$module]+set}" ]; then
      problem "layers: $path has no row in scripts/check-layers.sh: say where it sits"
      continue
    fi
    out=$(find "$path" -name '*.rs' | sort | while read -r f; do code_of "$f"; done |
      check_imports "$prefix" " $module $also ${table[$module]} " "${prefix#crate::}$module")
    if [ -n "$out" ]; then problem "$out"; fi
  done
}

check_tree src 'crate::' allowed "$bottom"
# Inside sip: the message layer at the bottom, transport (I/O) at the top.
declare -A sip_allowed=([msg]="" [sdes]="" [sdp]="sdes" [txn]="msg" [auth]="" [flood]="" [trunk]="auth flood msg" [dialog]="msg sdp trunk txn" [transport]="dialog msg sdp txn")
check_tree src/sip 'crate::sip::' sip_allowed

# Sans-IO cores: state in, time in, actions out.
sans_io=(src/sip/txn src/sip/dialog src/sip/sdp.rs src/sip/sdes.rs src/sip/msg src/sip/auth.rs src/sip/flood.rs src/sip/trunk.rs src/rtp src/media)
io_pattern='Instant::now\(|SystemTime::now\(|\.elapsed\(\)|tokio::|std::thread::sleep|std::fs|File::|OpenOptions|UdpSocket|TcpStream|TcpListener|std::process|std::env::var'
# fastrand's global functions and Rng::new() seed themselves: only Rng::with_seed is allowed.
rand_pattern='fastrand::(?!Rng\b(?!::new))'
code=$(find "${sans_io[@]}" -name '*.rs' | sort | while read -r f; do code_of "$f"; done |
  grep -vE '^[^:]+:[0-9]+:[[:space:]]*//' || true)
out=$( { grep -E "$io_pattern" <<<"$code" || true; grep -P "$rand_pattern" <<<"$code" || true; } | sort -u)
if [ -n "$out" ]; then problem "$(sed 's/^/sans-IO: /; s/$/  <- pass time, seeds and I\/O in instead/' <<<"$out")"; fi

# File size, outside tests. A file over the limit may be listed here (path=1) while it waits
# to be split; the list is a ratchet: remove a line when its file is split.
limit=1000
declare -A oversize=()
while IFS= read -r f; do
  n=$(code_of "$f" | wc -l)
  if [ "$n" -gt "$limit" ] && [ -z "${oversize[$f]+set}" ]; then
    problem "size: $f has $n lines outside its tests (limit $limit): split it by concept"
  elif [ "$n" -le "$limit" ] && [ -n "${oversize[$f]+set}" ]; then
    problem "size: $f is down to $n lines: take it off the oversize list in scripts/check-layers.sh"
  fi
done < <(find src -name '*.rs' | sort)

for f in "${!oversize[@]}"; do
  [ -f "$f" ] || problem "size: $f is on the oversize list but does not exist: take it off"
done

if [ "$fail" -ne 0 ]; then
  echo "check-layers: failed (rules in docs/ARCHITECTURE.md)" >&2
  exit 1
fi
echo "check-layers: imports point down, sans-IO cores are clean, files within $limit lines outside tests (${#oversize[@]} listed to split)"
