#!/usr/bin/env bash
# Audiences measured through the real server:
#   benches/scripts/audiences.sh BINARY [ROUNDS]
# backfill: PROFILES people with 20 events each are ingested, then an audience mixing a
#   trait and a 30-day count is created; the rate is people decided per second from the PUT
#   until the audience says "current". With AUD_POSTGRES=postgres://postgres@127.0.0.1:5432
#   the server runs on PostgreSQL, and the same rule is then run as one SQL query over the
#   same tables (with the index a DBA would add), side by side.
# streaming: ingest of 300,000 events over 100,000 people without audiences and with 20
#   live audiences of mixed rules (quiet and busy, below), alternating.
# flip, latency, many and memory (AUD_ONLY=flip|latency|many|memory): below.
set -euo pipefail
bin=$1 rounds=${2:-3}
profiles=${PROFILES:-50000}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=18084 url=http://127.0.0.1:18084

serve() { # dir
  local store=()
  if [ -n "${AUD_POSTGRES:-}" ]; then
    db="aud_$(basename "$1" | tr -c 'a-z0-9_\n' '_')"
    psql "$AUD_POSTGRES/postgres" -qc "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
    store=(--store "$AUD_POSTGRES/$db")
  fi
  WAYMARK_WRITE_KEY=wk WAYMARK_ADMIN_TOKEN=adm "$bin" serve --listen 127.0.0.1:$port --data-dir "$1" \
    "${store[@]}" >/dev/null 2>"$1.log" &
  pid=$!
  for _ in $(seq 1 100); do curl -sf $url/healthz >/dev/null && return; sleep 0.1; done
  echo "server did not start" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; }
put_audience() { # key rule
  curl -sf -X PUT -H "Authorization: Bearer adm" -H 'content-type: application/json' \
    --data "{\"key\": \"$1\", \"rule\": $(printf '%s' "$2" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}" \
    $url/v1/audiences/$1 >/dev/null
}
field() { grep -o "\"$1\":[^,}]*" | head -1 | cut -d: -f2 | tr -d '"'; }
ingest() { # events profiles [more bench ingest arguments]
  "$bin" bench ingest --url $url --write-key wk --batch-size 100 --events "$1" --connections 16 \
    --profiles "$2" "${@:3}" 2>/dev/null | tr -d "\n "
}

RULE='profile.traits.plan == "pro" && events.count("Product Viewed", "30d") >= 10'
backfill() {
  local dir="$work/backfill-$RANDOM"
  serve "$dir"
  ingest $((profiles * 20)) "$profiles" --identify-every 7 >/dev/null
  local start end body
  start=$(date +%s.%N)
  put_audience pro-viewers "$RULE"
  while :; do
    body=$(curl -s -H "Authorization: Bearer adm" $url/v1/audiences/pro-viewers)
    [ "$(echo "$body" | field state)" = current ] && break
    sleep 0.05
  done
  end=$(date +%s.%N)
  echo "backfill waymark: $(python3 -c "print(round($profiles / ($end - $start)))") people/s, $profiles people, size $(echo "$body" | field size), $(python3 -c "print(round($end - $start, 2))") s"
  # Batch evaluation alone (nothing written): the same rule previewed over everyone.
  local doc
  doc=$(python3 -c 'import json,sys; print(json.dumps({"key": "pro-viewers", "rule": sys.argv[1]}))' "$RULE")
  for _ in 1 2 3; do
    body=$(curl -sf -X POST -H "Authorization: Bearer adm" -H 'content-type: application/json' \
      --data "$doc" "$url/v1/audiences/pro-viewers/preview?sample=0")
    echo "preview waymark: $(echo "$body" | field per_second) people/s, size $(echo "$body" | field size), $(echo "$body" | field seconds) s"
  done
  if [ -n "${AUD_POSTGRES:-}" ]; then
    local dsn="$AUD_POSTGRES/$db"
    psql "$dsn" -qc "CREATE INDEX IF NOT EXISTS events_by_name ON events (profile_id, name, timestamp)" -c "VACUUM ANALYZE" >/dev/null
    local sql="SELECT count(*) FROM profiles p WHERE p.state::jsonb->'traits'->>'plan' = 'pro'
      AND (SELECT count(*) FROM events e WHERE e.profile_id = p.id AND e.kind = 'track'
           AND e.name = 'Product Viewed'
           AND e.timestamp > (extract(epoch from now()) * 1000)::bigint - 30::bigint * 86400000) >= 10"
    psql "$dsn" -qAtc "$sql" >/dev/null # warm
    local size
    for _ in 1 2 3; do
      start=$(date +%s.%N)
      size=$(psql "$dsn" -qAtc "$sql")
      end=$(date +%s.%N)
      echo "postgres-sql: $(python3 -c "print(round($profiles / ($end - $start)))") people/s, size $size, $(python3 -c "print(round($end - $start, 2))") s"
    done
  fi
  stop
}

# 20 audiences of mixed rules (counts and sums over windows, traits, in_audience). "quiet":
# thresholds few people reach, so membership rarely changes (the cost of deciding); "busy":
# thresholds the generated data crosses, so most events move people in and out of several
# audiences (each change also writes a member row and an event in the person's history).
mixed_audiences() { # quiet|busy
  local k=$([ "$1" = quiet ] && echo 10 || echo 0) m=$([ "$1" = quiet ] && echo 20 || echo 1)
  for i in $(seq 0 4); do
    put_audience "viewers-$i" "events.count(\"Product Viewed\", \"$((i + 1))h\") >= $((i + 2 + k))"
    put_audience "spend-$i" "events.sum(\"Product Viewed\", \"price\", \"$((i + 1))d\") > $(((i * 50 + 50) * m)).0"
    put_audience "plan-$i" "profile.traits.plan == \"pro\" && profile.event_count > $((i + 1 + k))"
    put_audience "both-$i" "in_audience(\"viewers-$i\") && in_audience(\"spend-$i\")"
  done
}
streaming() { # without|quiet|busy
  local dir="$work/stream-$1-$RANDOM"
  serve "$dir"
  [ "$1" != without ] && mixed_audiences "$1"
  local out
  out=$(ingest 300000 100000)
  echo "streaming, audiences $1: $(echo "$out" | field events_per_second) events/s, errors $(echo "$out" | field errors), p99 $(echo "$out" | field p99) ms"
  stop
}

# flip: FLIP people (default 1,000,000) each send one `Tick`, all with the same event time,
#   while the audience `events.any("Tick", W)` is live; W is chosen so the window ends 60 s
#   after the ingest starts. Reported: how long after that instant the audience is empty
#   (every exit decided, written and recorded), and whether ingest stalled meanwhile.
flip() {
  local dir="$work/flip-$RANDOM" n=${FLIP:-1000000}
  serve "$dir"
  local start_ms at window_s flip_ms
  start_ms=$(date +%s%3N)
  at=$((start_ms - 600000))        # the events happened 10 minutes ago...
  window_s=$((600 + 60 + n / 20000)) # ...and leave the window after the ingest is done
  flip_ms=$((at + window_s * 1000))
  put_audience ticked "events.any(\"Tick\", \"${window_s}s\")"
  python3 "$(dirname "$0")/flip_ingest.py" $url wk "$n" "$at" >/dev/null
  local ingested size
  ingested=$(date +%s%3N)
  size=$(curl -s -H "Authorization: Bearer adm" $url/v1/audiences/ticked | field size)
  echo "flip: $n people ingested in $(( (ingested - start_ms) / 1000 )) s ($(( n * 1000 / (ingested - start_ms) )) events/s, audience decided in the same transactions), size $size; all flip at +$(( (flip_ms - start_ms) / 1000 )) s"
  while [ "$(date +%s%3N)" -lt "$flip_ms" ]; do sleep 0.2; done
  # Ingest goes on while they flip: one request every 100 ms, its latency kept.
  local worst=0 t0 t1 body
  while :; do
    t0=$(date +%s%3N)
    curl -sf -u wk: -H 'content-type: application/json' $url/v1/track \
      -d '{"userId": "probe", "event": "Probe"}' >/dev/null
    t1=$(date +%s%3N)
    [ $((t1 - t0)) -gt "$worst" ] && worst=$((t1 - t0))
    body=$(curl -s -H "Authorization: Bearer adm" $url/v1/audiences/ticked)
    [ "$(echo "$body" | field size)" = 0 ] && break
    sleep 0.1
  done
  local done_ms
  done_ms=$(date +%s%3N)
  echo "flip: audience empty $(( (done_ms - flip_ms) / 1000 )).$(( (done_ms - flip_ms) % 1000 / 100 )) s after the instant ($(( n * 1000 / (done_ms - flip_ms + 1) )) exits/s); slowest ingest request meanwhile $worst ms"
  stop
}

# many: 500 live audiences, each on an event name of its own (none of which the ingest
#   sends) plus one on `Product Viewed`; ingest cost should follow the one an event can
#   affect, not the 500.
many() {
  local dir="$work/many-$RANDOM"
  serve "$dir"
  for i in $(seq 0 499); do
    put_audience "other-$i" "events.count(\"Event $i\", \"1h\") >= 2"
  done
  put_audience viewers "events.count(\"Product Viewed\", \"1h\") >= 5"
  local out
  out=$(ingest 300000 100000)
  echo "streaming, 501 audiences (one affected): $(echo "$out" | field events_per_second) events/s, errors $(echo "$out" | field errors), p99 $(echo "$out" | field p99) ms"
  stop
}

# memory: PROFILES people (default 50,000) with 20 events each in the 20 busy audiences:
#   what membership costs on disk per member (rows and indexes, SQLite's dbstat) and the
#   server's peak resident memory, which does not grow with people (state is in the store).
memory() {
  local dir="$work/memory-$RANDOM"
  serve "$dir"
  mixed_audiences busy
  ingest $((profiles * 20)) "$profiles" >/dev/null
  local rss
  rss=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  stop
  sqlite3 "$dir/waymark.db" "SELECT 'memberships: ' || (SELECT count(*) FROM audience_members)
      || ', checks: ' || (SELECT count(*) FROM audience_checks)
      || ', bytes per membership (row + index): '
      || ((SELECT sum(pgsize) FROM dbstat WHERE name IN ('audience_members', 'audience_members_by_profile'))
         / max(1, (SELECT count(*) FROM audience_members)))
      || ', bytes per person checked (row + index): '
      || ((SELECT sum(pgsize) FROM dbstat WHERE name IN ('audience_checks', 'audience_checks_due'))
         / max(1, (SELECT count(*) FROM audience_checks)))"
  echo "memory: server peak RSS $((rss / 1024)) MB with $profiles people in 20 audiences"
}

# latency: `Audience Entered` -> the first action of a journey that starts on it (a webhook
#   to a recorder on loopback), while RATE events/s (default 2,000) arrive for DURATION s
#   (default 30), a tenth of them making someone enter (entry_latency.py).
latency() {
  local dir="$work/latency-$RANDOM"
  serve "$dir"
  echo "entry latency: $(python3 "$(dirname "$0")/entry_latency.py" $url wk adm "${RATE:-2000}" "${DURATION:-30}")"
  stop
}

for r in $(seq 1 "$rounds"); do
  case "${AUD_ONLY:-all}" in
    backfill) backfill ;;
    flip) flip ;;
    latency) latency ;;
    many) streaming without; many ;;
    memory) memory ;;
    streaming) streaming without; streaming quiet; streaming busy ;;
    *) backfill; streaming without; streaming quiet; streaming busy ;;
  esac
done
