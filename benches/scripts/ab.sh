#!/usr/bin/env bash
# Two builds of waymark side by side, alternating: ingest alone and the 5-node journey.
#   benches/scripts/ab.sh OLD_BINARY NEW_BINARY [ROUNDS]
# Prints one line per run: which build, what, and the rate.
# AB_POSTGRES=postgres://postgres@127.0.0.1:5432 runs each server on a fresh database there
# instead of the embedded store; AB_ONLY=ingest or AB_ONLY=journey runs one of the two.
set -euo pipefail
old=$1 new=$2 rounds=${3:-3}
here=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
"$new" bench sink --listen 127.0.0.1:9900 >/dev/null 2>&1 &
sleep 0.5

serve() { # binary dir
  local store=()
  if [ -n "${AB_POSTGRES:-}" ]; then
    local db="ab_$(basename "$2" | tr -c 'a-z0-9_\n' '_')"
    psql "$AB_POSTGRES/postgres" -qc "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
    store=(--store "$AB_POSTGRES/$db")
  fi
  WAYMARK_WRITE_KEY=wk WAYMARK_ADMIN_TOKEN=adm "$1" serve --listen 127.0.0.1:18083 --data-dir "$2" \
    "${store[@]}" >/dev/null 2>"$2.log" &
  for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18083/healthz >/dev/null && return; sleep 0.1; done
  echo "server did not start" >&2; exit 1
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

ingest() { # name binary
  local dir="$work/$1-ingest-$RANDOM"
  serve "$2" "$dir"; local pid=$!
  local out
  out=$("$new" bench ingest --url http://127.0.0.1:18083 --write-key wk --batch-size 100 \
    --events 300000 --connections 16 --profiles 100000 2>/dev/null | tr -d '\n ')
  echo "$1 ingest: $(echo "$out" | grep -o '"events_per_second":[0-9.]*' | cut -d: -f2) events/s, errors $(echo "$out" | grep -o '"errors":[0-9]*' | cut -d: -f2), p99 $(echo "$out" | grep -o '"p99":[0-9.]*' | cut -d: -f2) ms"
  stop "$pid"
}

journey() { # name binary
  local dir="$work/$1-five-$RANDOM"
  serve "$2" "$dir"; local pid=$!
  curl -sf -X PUT -H "Authorization: Bearer adm" -H 'content-type: application/json' \
    --data @"$here/benches/journeys/five.json" http://127.0.0.1:18083/v1/journeys/five >/dev/null
  curl -sf -X POST -H "Authorization: Bearer adm" http://127.0.0.1:18083/v1/journeys/five/publish >/dev/null
  local before
  before=$(curl -s http://127.0.0.1:9900/count | grep -o '"count":[0-9]*' | cut -d: -f2)
  local start
  start=$(date +%s.%N)
  "$new" bench ingest --url http://127.0.0.1:18083 --write-key wk --batch-size 100 --events 50000 \
    --connections 16 --profiles 50000 --identify-every 0 --run-id "$1$RANDOM" >/dev/null 2>&1
  while :; do
    now=$(curl -s http://127.0.0.1:9900/count | grep -o '"count":[0-9]*' | cut -d: -f2)
    [ $((now - before)) -ge 50000 ] && break
    sleep 0.05
  done
  local end
  end=$(date +%s.%N)
  echo "$1 five: $(echo "50000 / ($end - $start)" | bc -l | xargs printf '%.0f') journeys/s"
  stop "$pid"
}

for r in $(seq 1 "$rounds"); do
  if [ "${AB_ONLY:-}" != journey ]; then ingest old "$old"; ingest new "$new"; fi
  if [ "${AB_ONLY:-}" != ingest ]; then journey old "$old"; journey new "$new"; fi
done
