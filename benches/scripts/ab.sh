#!/usr/bin/env bash
# Two builds of waymark side by side, alternating: ingest alone and the 5-node journey.
#   benches/scripts/ab.sh OLD_BINARY NEW_BINARY [ROUNDS]
# Prints one line per run: which build, what, and the rate.
# AB_POSTGRES=postgres://postgres@127.0.0.1:5432 runs each server on a fresh database there
# instead of the embedded store. AB_ONLY picks what runs: ingest, journey (both by default),
# sms or push (50,000 sends each to the local sink, from the first ingest request until
# the sink has them all), or timers (1M people waiting 2 minutes: the server is stopped
# after the ingest and started again once every timer is due; the rate at which the
# restarted server completes them, from the 100,000th to the 900,000th).
set -euo pipefail
old=$1 new=$2 rounds=${3:-3}
here=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
"$new" bench sink --listen 127.0.0.1:9900 >/dev/null 2>&1 &
sleep 0.5

publish() { # journey file key
  curl -sf -X PUT -H "Authorization: Bearer adm" -H 'content-type: application/json' \
    --data @"$here/benches/journeys/$1" "http://127.0.0.1:18083/v1/journeys/$2" >/dev/null
  curl -sf -X POST -H "Authorization: Bearer adm" "http://127.0.0.1:18083/v1/journeys/$2/publish" >/dev/null
}
sink_count() { curl -s http://127.0.0.1:9900/count | grep -o '"count":[0-9]*' | cut -d: -f2; }

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

dispatch() { # name binary channel
  local dir="$work/$1-$3-$RANDOM"
  export WAYMARK_SMS__BASE_URL=http://127.0.0.1:9900 WAYMARK_SMS__ACCOUNT_SID=ACbench \
    WAYMARK_SMS__AUTH_TOKEN=t WAYMARK_SMS__FROM=+15550000000 \
    WAYMARK_PUSH__FCM_URL=http://127.0.0.1:9900 WAYMARK_PUSH__FCM_PROJECT_ID=bench \
    WAYMARK_PUSH__FCM_ACCESS_TOKEN=t
  serve "$2" "$dir"; local pid=$!
  unset WAYMARK_SMS__BASE_URL WAYMARK_SMS__ACCOUNT_SID WAYMARK_SMS__AUTH_TOKEN WAYMARK_SMS__FROM \
    WAYMARK_PUSH__FCM_URL WAYMARK_PUSH__FCM_PROJECT_ID WAYMARK_PUSH__FCM_ACCESS_TOKEN
  publish "$3-on-identify.json" "$3-on-identify"
  local before start end now
  before=$(sink_count)
  local tokens=()
  [ "$3" = push ] && tokens=(--device-tokens)
  start=$(date +%s.%N)
  "$new" bench ingest --url http://127.0.0.1:18083 --write-key wk --batch-size 100 --events 50000 \
    --connections 16 --profiles 50000 --identify-every 1 "${tokens[@]}" --run-id "$1$RANDOM" >/dev/null 2>&1
  while now=$(sink_count); [ $((now - before)) -lt 50000 ]; do sleep 0.05; done
  end=$(date +%s.%N)
  echo "$1 $3: $(echo "50000 / ($end - $start)" | bc -l | xargs printf '%.0f') sends/s"
  stop "$pid"
}

completed() { curl -s -H "Authorization: Bearer adm" http://127.0.0.1:18083/v1/journeys/sleepers/stats \
  | grep -o '"completed":[0-9]*' | head -1 | cut -d: -f2; }

timers() { # name binary
  local dir="$work/$1-timers-$RANDOM"
  serve "$2" "$dir"; local pid=$!
  publish sleepers.json sleepers
  local out
  out=$("$new" bench ingest --url http://127.0.0.1:18083 --write-key wk --batch-size 100 \
    --events 1000000 --connections 16 --profiles 1000000 --identify-every 0 --run-id "$1$RANDOM" 2>/dev/null | tr -d '\n ')
  local ingested rss
  ingested=$(date +%s)
  rss=$(ps -o rss= -p "$pid" | tr -d ' ')
  stop "$pid"
  sleep $((ingested + 125 - $(date +%s)))
  serve "$2" "$dir"; pid=$!
  local t1 t9 c=0
  while [ "${c:-0}" -lt 100000 ]; do sleep 0.2; c=$(completed); done; t1=$(date +%s.%N)
  while [ "${c:-0}" -lt 900000 ]; do sleep 0.2; c=$(completed); done; t9=$(date +%s.%N)
  while [ "${c:-0}" -lt 1000000 ]; do sleep 0.5; c=$(completed); done
  echo "$1 timers: entries $(echo "$out" | grep -o '"events_per_second":[0-9.]*' | cut -d: -f2) events/s, RSS waiting $((rss / 1024)) MB, fired $(echo "800000 / ($t9 - $t1)" | bc -l | xargs printf '%.0f') /s"
  stop "$pid"
}

for r in $(seq 1 "$rounds"); do
  case "${AB_ONLY:-}" in
    ingest) ingest old "$old"; ingest new "$new" ;;
    journey) journey old "$old"; journey new "$new" ;;
    sms | push) dispatch old "$old" "$AB_ONLY"; dispatch new "$new" "$AB_ONLY" ;;
    timers) timers old "$old"; timers new "$new" ;;
    *) ingest old "$old"; ingest new "$new"; journey old "$old"; journey new "$new" ;;
  esac
done
