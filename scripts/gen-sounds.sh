#!/usr/bin/env bash
# Regenerates the shipped prompt set in sounds/ from sounds/catalog.toml with espeak-ng.
# The WAVs are committed, so neither the gateway nor the tests need espeak-ng at run time;
# run this only after changing the catalog. Output: mono PCM16 WAV at 16 kHz (wideband; the
# prompt loader resamples to each leg's or room's rate). Needs espeak-ng and sox.
# An entry's `voice` (an espeak-ng voice: "es", "fr") speaks it in its own language.
#
#   scripts/gen-sounds.sh [NAME...]     (no NAME: every prompt in the catalog)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v espeak-ng >/dev/null || { echo "espeak-ng missing: apt-get install espeak-ng" >&2; exit 1; }
command -v sox >/dev/null || { echo "sox missing: apt-get install sox" >&2; exit 1; }
tmp=$(mktemp --suffix .wav)
trap 'rm -f "$tmp"' EXIT
default_voice="${VOICE:-en-us}"
only=" $* "
# catalog lines look like:  name = { file = "en/name.wav", text = "..." }
grep -E '^[a-z0-9-]+ *= *\{' sounds/catalog.toml | while IFS= read -r line; do
  name=$(echo "$line" | sed -E 's/^([a-z0-9-]+).*/\1/')
  file=$(echo "$line" | sed -E 's/.*file *= *"([^"]+)".*/\1/')
  text=$(echo "$line" | sed -E 's/.*text *= *"([^"]+)".*/\1/')
  voice=$(echo "$line" | sed -nE 's/.*voice *= *"([^"]+)".*/\1/p')
  voice=${voice:-$default_voice}
  if [ $# -gt 0 ] && [[ "$only" != *" $name "* ]]; then continue; fi
  espeak-ng -v "$voice" -s 160 -w "$tmp" "$text"
  # 16 kHz, peak-normalised to -3 dBFS, leading/trailing silence trimmed to 100 ms.
  sox "$tmp" -r 16000 -b 16 -c 1 "sounds/$file" silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse pad 0.1 0.1 norm -3
  echo "$name -> sounds/$file"
done
