#!/usr/bin/env bash
# A coverage-guided fuzz campaign: each TARGET runs SECS seconds (libFuzzer via cargo-fuzz,
# RUSTC_BOOTSTRAP=1 on the stable toolchain), on its kept corpus (fuzz/corpus/TARGET) plus
# the seeds in the repository (fuzz/seeds/TARGET, the RFC 4475 messages for the SIP
# targets). One summary line per target goes to stdout and to fuzz/campaign.log: runs,
# corpus size, crashes. Installs cargo-fuzz when missing. Bounded: SECS per target.
#
#   scripts/fuzz.sh SECS [TARGET...]      (no TARGET: every target in fuzz/Cargo.toml)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:?usage: scripts/fuzz.sh SECS [TARGET...]}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^tolk-fuzz$')
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
target_dir=${FUZZ_TARGET_DIR:-$HOME/.cache/tolk-fuzz-target}
for t in "${targets[@]}"; do
  corpus=corpus/$t
  mkdir -p "$corpus" "artifacts/$t"
  seeds=()
  [ -d "seeds/$t" ] && seeds+=("seeds/$t")
  case $t in sip_message | sip_stream) seeds+=(../tests/fixtures/rfc4475) ;; esac
  log=$(mktemp)
  started=$(date -u +%FT%TZ)
  status=0
  cargo fuzz run -O --target-dir "$target_dir" "$t" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$secs" -max_len=8192 -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  crashes=$(find "artifacts/$t" -type f | wc -l)
  line="$started $t secs=$secs runs=${runs:-?} corpus=$(find "$corpus" -type f | wc -l) artifacts=$crashes exit=$status"
  echo "$line" | tee -a campaign.log
  if [ "$status" -ne 0 ]; then tail -40 "$log" >&2; fi
  rm -f "$log"
done
