#!/usr/bin/env bash
# End-to-end load: SIPp against a release build of `tolk serve` on loopback.
# Prints, per offered rate, the calls completed, failed, and tolk's CPU per call.
# Signalling load: SIPp sends no RTP and the echo route's beep is off, so each call costs SIP,
# an RTP port pair and a media leg that stays idle.
#   scripts/bench.sh                 # default rates
#   RATES="500 1000" DURATION=10 scripts/bench.sh
#   BENCH_BIN=/tmp/tolk-old scripts/bench.sh   # a binary built elsewhere (before/after runs)
#   scripts/bench.sh cdr             # CDR writer rows/s and write lag into local PostgreSQL
#                                    # (benches/cdr_writer.rs; RATES, DURATION, REPLAY apply)
#   scripts/bench.sh flood           # a trunk's calls while strangers flood (scripts/flood.sh)
#   scripts/bench.sh conference      # conference legs one mixer thread sustains: tick lateness,
#                                    # loss, CPU (benches/conference.rs; LEGS="250 500",
#                                    # CODEC=pcmu|opus, ROOM=10, TALKERS=1, SECS=10,
#                                    # SKIP_QUIET=false apply)
#   scripts/bench.sh event           # one interpretation event over real legs: a speaker, BOOTHS
#                                    # interpreters, LISTENERS listeners on G.711/G.722/Opus:
#                                    # tick lateness, encodes per tick, CPU, loss
#                                    # (benches/interpretation_event.rs; LISTENERS=1000,
#                                    # BOOTHS=4, WARMUP=10, SECS=10 apply)
# Results go in docs/PERFORMANCE.md with the machine and the date. The load generator runs on
# the same cores, so figures are a floor, and the machine is shared: compare medians.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tolk-target}"
if [ "${1:-}" = "cdr" ]; then
  exec cargo bench --quiet --bench cdr_writer
fi
if [ "${1:-}" = "flood" ]; then
  # A trunk's calls while strangers flood (scripts/flood.sh; SECS, TRUNK_RATE, FLOOD_RATE, SOURCES).
  exec scripts/flood.sh
fi
if [ "${1:-}" = "conference" ]; then
  # Conference legs on one mixer thread (benches/conference.rs; LEGS, CODEC, ROOM, TALKERS, SECS).
  exec cargo bench --quiet --bench conference
fi
if [ "${1:-}" = "event" ]; then
  # One interpretation event on one mixer thread (benches/interpretation_event.rs).
  exec cargo bench --quiet --bench interpretation_event
fi
RATES="${RATES:-250 500 1000 2000 3000}"
DURATION="${DURATION:-10}"
SIP_PORT="${SIP_PORT:-5099}"
ADMIN_PORT="${ADMIN_PORT:-8099}"
command -v sipp >/dev/null || { echo "sipp missing: apt-get install sip-tester" >&2; exit 1; }

# BENCH_BIN: run a binary built elsewhere (an earlier commit's, for before/after comparisons).
if [ -n "${BENCH_BIN:-}" ]; then
  BIN="$BENCH_BIN"
else
  cargo build --release --quiet
  BIN="$CARGO_TARGET_DIR/release/tolk"
fi
WORK=$(mktemp -d)
# The private PostgreSQL runs as the postgres user when we are root: it must reach data_dir.
chmod 755 "$WORK"
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
# The shipped dialplan with an echo flow that skips the beep (signalling load only).
mkdir -p "$WORK/dialplan/flows"
cp dialplans/numbers.toml "$WORK/dialplan/"
cp dialplans/flows/*.rhai "$WORK/dialplan/flows/"
echo 'answer(); echo(3600);' > "$WORK/dialplan/flows/echo.rhai"
(cd "$WORK" && TOLK_SIP_TLS='{ listen = [] }' TOLK_DIALPLAN_DIR="$WORK/dialplan" TOLK_SIP_LISTEN="[\"127.0.0.1:$SIP_PORT\"]" TOLK_ADMIN_LISTEN="127.0.0.1:$ADMIN_PORT" \
  TOLK_RTP_BIND=127.0.0.1 TOLK_LOG_LEVEL=warn TOLK_CDR_ENABLED="${CDR_ENABLED:-true}" "$BIN" serve > "$WORK/tolk.log" 2>&1) &
# Without database.url the gateway starts its private PostgreSQL first (initdb on the first
# run): wait until it answers.
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$ADMIN_PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
PID=$(pgrep -n -f "$BIN serve")
HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }

echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  machine: $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB  $(uname -r)"
printf '%-14s %6s %9s %7s %7s %9s %12s %9s\n' scenario rate calls ok failed achieved "cpu_us/call" "tolk_cpu%"
run() {
  local scenario=$1 number=$2 rate=$3
  local calls=$((rate * DURATION))
  local before after
  before=$(cpu_ticks)
  local t0 t1
  t0=$(date +%s.%N)
  out=$(cd "$WORK" && sipp -sf "$OLDPWD/sipp-scenarios/$scenario.xml" -s "$number" "127.0.0.1:$SIP_PORT" \
    -i 127.0.0.1 -p $((SIP_PORT + 1)) -r "$rate" -m "$calls" -l $((rate * 4)) -timeout $((DURATION * 4))s \
    -nostdin -max_socket 60000 2>&1 || true)
  after=$(cpu_ticks)
  t1=$(date +%s.%N)
  ok=$(echo "$out" | awk -F'|' '/Successful call/{gsub(/ /,"",$3); v=$3} END{print v+0}')
  failed=$(echo "$out" | awk -F'|' '/Failed call/{gsub(/ /,"",$3); v=$3} END{print v+0}')
  cpu=$(( (after - before) * 1000000 / HZ ))
  per=$(( ok > 0 ? cpu / ok : 0 ))
  local wall achieved busy
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b - a}')
  achieved=$(awk -v n="$ok" -v w="$wall" 'BEGIN{printf "%d", n / w}')
  busy=$(awk -v c="$((after - before))" -v hz="$HZ" -v w="$wall" 'BEGIN{printf "%d", c * 100 / hz / w}')
  printf '%-14s %6s %9s %7s %7s %9s %12s %9s\n' "$scenario" "$rate" "$calls" "$ok" "$failed" "$achieved/s" "$per" "$busy"
}
for rate in $RATES; do run bench_call +15550100300 "$rate"; done
for rate in $RATES; do run bench_reject +19995550000 "$rate"; done
