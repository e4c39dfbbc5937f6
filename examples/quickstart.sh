#!/bin/sh
# Quick start: a built-in collector on loopback, a log file, and `flume-ship tail --once` shipping it.
# Everything lives under one temporary directory, which is printed at the end.
set -eu
dir=$(mktemp -d "${TMPDIR:-/tmp}/flume-ship-quickstart.XXXXXX")
mkdir -p "$dir/logs"

flume-ship collect --listen 127.0.0.1:0 --out "$dir/collected" 2>"$dir/collector.log" &
collector=$!
trap 'kill $collector 2>/dev/null || true' EXIT
# The collector prints its real port once it listens.
for _ in $(seq 1 100); do
  addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$dir/collector.log" | head -n 1)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { cat "$dir/collector.log"; echo "the collector did not start" >&2; exit 1; }

python3 - "$dir/logs/app.log" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(100_000):
        f.write(f"2026-01-01T00:00:00Z INFO request {i} served in {i % 97} ms\n")
PY
echo "collector listening on $addr; shipping 100000 lines from $dir/logs/app.log"
flume-ship tail "$dir/logs/app.log" --to "$addr" --state-dir "$dir/state" --once --deadline 60
echo "lines received by the collector: $(cat "$dir"/collected/* | wc -l)  (files in $dir/collected)"
