#!/usr/bin/env bash
# A flood against a trunk's calls (run by `scripts/bench.sh flood`): a carrier trunk
# (127.0.0.2) places calls with SIPp at TRUNK_RATE per second while strangers flood the SIP
# port: one source (127.0.0.3) and SOURCES loopback addresses from 127.0.1.1, each half of
# FLOOD_RATE requests per second (examples/sip_flood.rs: INVITEs, one in fifty a scanner's
# OPTIONS), for SECS seconds. Prints tolk's resident memory every 10 s, the trunk's answered
# ratio, and the bans and drops from /metrics. Loopback only; stops by itself.
#   scripts/bench.sh flood                       # 600 s, 20 calls/s, 2000 requests/s, 200 sources
#   SECS=60 FLOOD_RATE=4000 scripts/bench.sh flood
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tolk-target}"
SECS="${SECS:-600}"
TRUNK_RATE="${TRUNK_RATE:-20}"
FLOOD_RATE="${FLOOD_RATE:-2000}"
SOURCES="${SOURCES:-200}"
SIP_PORT="${SIP_PORT:-5098}"
ADMIN_PORT="${ADMIN_PORT:-8098}"
command -v sipp >/dev/null || { echo "sipp missing: apt-get install sip-tester" >&2; exit 1; }
cargo build --release --quiet --bin tolk --example sip_flood
BIN="${BENCH_BIN:-$CARGO_TARGET_DIR/release/tolk}"
FLOOD="$CARGO_TARGET_DIR/release/examples/sip_flood"
WORK=$(mktemp -d)
chmod 755 "$WORK"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/dialplan/flows"
cp dialplans/numbers.toml dialplans/rooms.toml "$WORK/dialplan/"
cp dialplans/flows/*.rhai "$WORK/dialplan/flows/"
echo 'answer(); echo(3600);' > "$WORK/dialplan/flows/echo.rhai"
cat > "$WORK/tolk.toml" <<EOF
[sip]
listen = ["127.0.0.1:$SIP_PORT"]
allow_unknown = []
tls = { listen = [] }

[rtp]
bind = "127.0.0.1"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[dialplan]
dir = "$WORK/dialplan"

[log]
level = "warn"

[[trunks]]
name = "carrier"
sources = ["127.0.0.2"]
EOF
(cd "$WORK" && "$BIN" serve > "$WORK/tolk.log" 2>&1) &
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$ADMIN_PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
PID=$(pgrep -n -f "$BIN serve")
PIDS+=("$PID")
rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }
metric() { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -v m="$1" 'index($0, m) == 1 {s += $NF} END {print s + 0}'; }
echo "tolk $PID: trunk $TRUNK_RATE calls/s, flood $FLOOD_RATE requests/s (1 + $SOURCES sources), $SECS s"
echo "rss at start: $(rss) kB"
sipp -sf sipp-scenarios/basic_call.xml -s +15550100300 -i 127.0.0.2 -p 5097 -mp 31000 \
  -r "$TRUNK_RATE" -m $((TRUNK_RATE * SECS)) -timeout $((SECS + 60)) -timeout_error -nostdin \
  "127.0.0.1:$SIP_PORT" > "$WORK/sipp.out" 2>&1 &
SIPP=$!
PIDS+=("$SIPP")
"$FLOOD" "127.0.0.1:$SIP_PORT" 127.0.0.3 1 $((FLOOD_RATE / 2)) "$SECS" > "$WORK/flood1.out" &
PIDS+=("$!")
"$FLOOD" "127.0.0.1:$SIP_PORT" 127.0.1.1 "$SOURCES" $((FLOOD_RATE / 2)) "$SECS" > "$WORK/flood2.out" &
PIDS+=("$!")
for t in $(seq 10 10 "$SECS"); do
  sleep 10
  echo "t=${t}s rss=$(rss) kB answered=$(metric 'calls_total{outcome="answered"}') banned=$(metric sip_bans_total) dropped=$(metric sip_dropped_total)"
done
wait "$SIPP" || true
sleep 2
ok=$(awk -F'|' '/Successful call/ {v=$3} END {gsub(/ /, "", v); print v + 0}' "$WORK/sipp.out")
failed=$(awk -F'|' '/Failed call/ {v=$3} END {gsub(/ /, "", v); print v + 0}' "$WORK/sipp.out")
echo "flood, one source: $(cat "$WORK/flood1.out")"
echo "flood, $SOURCES sources: $(cat "$WORK/flood2.out")"
echo "trunk calls: $ok successful, $failed failed of $((TRUNK_RATE * SECS)) ($(awk -v a="$ok" -v b=$((TRUNK_RATE * SECS)) 'BEGIN {printf "%.2f", 100 * a / b}')%)"
echo "bans: $(metric sip_bans_total) (security log lines: $(grep -c 'source banned' "$WORK/tolk.log" || true)), dropped: $(metric sip_dropped_total), refused: $(metric sip_security_events_total)"
echo "rss at end: $(rss) kB"
