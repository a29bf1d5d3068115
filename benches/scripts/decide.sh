#!/usr/bin/env bash
# Offer decisioning measured through the real server:
#   benches/scripts/decide.sh BINARY [ROUNDS]
# PROFILES people (default 1,000,000) are identified with traits, in 20 live audiences
# (trait rules, 5% each); 1,000 offers over 10 placements (100 each: a quarter for an
# audience, a quarter on the page and plan, a quarter on the cart, a quarter for everyone;
# a fifth capped per person at 3 displays a day, so every decision reads the person's
# feedback events), 10 decision policies (4 by priority, 3 by formula, 3 learned), each
# with a fallback. Then `wrk` (keep-alive, CONNECTIONS connections, 2 threads, on the same
# 2 cores) asks POST /v1/decide for a random person, placement, page and cart, for
# DURATION seconds, ROUNDS times. Needs wrk (apt-get install wrk). With
# DECIDE_POSTGRES=postgres://postgres@127.0.0.1:5432 the server runs on PostgreSQL (a fresh
# database).
set -euo pipefail
bin=$1 rounds=${2:-3}
profiles=${PROFILES:-1000000}
connections=${CONNECTIONS:-16}
duration=${DURATION:-20}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=18086 url=http://127.0.0.1:18086
run=d

store=()
if [ -n "${DECIDE_POSTGRES:-}" ]; then
  psql "$DECIDE_POSTGRES/postgres" -qc "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS decide_bench" -c "CREATE DATABASE decide_bench" >/dev/null
  store=(--store "$DECIDE_POSTGRES/decide_bench")
fi
WAYMARK_WRITE_KEY=wk WAYMARK_ADMIN_TOKEN=adm "$bin" serve --listen 127.0.0.1:$port \
  --data-dir "$work/data" "${store[@]}" >/dev/null 2>"$work/server.log" &
pid=$!
for _ in $(seq 1 100); do curl -sf $url/healthz >/dev/null && break; sleep 0.1; done

put() { # path json
  curl -sf -X PUT -H "Authorization: Bearer adm" -H 'content-type: application/json' \
    --data "$2" "$url$1" >/dev/null || { echo "PUT $1 failed: $2" >&2; exit 1; }
}

for i in $(seq 0 19); do
  put /v1/audiences/aud-$i "{\"key\": \"aud-$i\", \"rule\": \"profile.traits.seq % 20 == $i\"}"
done
start=$(date +%s.%N)
"$bin" bench ingest --url $url --write-key wk --batch-size 100 --events "$profiles" \
  --connections 16 --profiles "$profiles" --identify-every 1 --run-id $run >/dev/null 2>&1
echo "setup: $profiles people identified with 20 live audiences in $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s"

start=$(date +%s.%N)
for p in $(seq 0 9); do
  put /v1/placements/p$p "{\"key\": \"p$p\", \"channel\": \"web\", \"surface\": \"web://shop.example/p$p\", \"content\": \"html\"}"
done
for i in $(seq 0 999); do
  p=$((i % 10)) kind=$(((i / 10) % 4))
  case $kind in
    0) rule="in_audience(\\\"aud-$((i % 20))\\\")" ;;
    1) rule="profile.traits.plan == \\\"pro\\\" && context.page == \\\"/p$((i % 5))\\\"" ;;
    2) rule="context.cart.total > $((i % 100))" ;;
    3) rule="" ;;
  esac
  caps=""
  [ $((i % 5)) = 0 ] && caps=', "caps": [{"per": "person", "max": 3, "window": "1d"}]'
  eligibility=""
  [ -n "$rule" ] && eligibility=", \"eligibility\": \"$rule\""
  put /v1/offers/o$i "{\"key\": \"o$i\", \"priority\": $((i % 17)), \"tags\": [\"t$((i % 3))\"]$eligibility$caps,
    \"content\": {\"p$p\": \"<div class=offer>Offer $i for {{profile.traits.plan}}</div>\"}}"
done
put /v1/offers/house "{\"key\": \"house\", \"eligibility\": \"false\", \"content\": {$(for p in $(seq 0 9); do printf '"p%s": "House ad"%s' $p "$([ $p = 9 ] || echo ,)"; done)}}"
for p in $(seq 0 9); do
  case $((p % 10)) in
    0|1|2|3) ranking='{"by": "priority"}' ;;
    4|5|6) ranking='{"by": "formula", "formula": "offer.priority + (context.cart.total > 50 ? 5 : 0)"}' ;;
    *) ranking='{"by": "learned", "exploration": 0.05}' ;;
  esac
  put /v1/decision-policies/p$p "{\"key\": \"p$p\", \"placement\": \"p$p\", \"fallback\": \"house\", \"ranking\": $ranking}"
done
echo "catalogue: 1,001 offers, 10 placements, 10 policies saved in $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s"

cat > "$work/decide.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer adm"
math.randomseed(os.time())
request = function()
  local body = string.format(
    '{"userId": "$run-u%d", "placements": [{"placement": "p%d"}], "context": {"page": "/p%d", "cart": {"total": %d}}}',
    math.random(0, $profiles - 1), math.random(0, 9), math.random(0, 4), math.random(0, 120))
  return wrk.format(nil, nil, nil, body)
end
response = function(status, headers, body)
  if status ~= 200 then
    io.stderr:write("status " .. status .. ": " .. body .. "\n")
  end
end
LUA

# One sample answer, to see it works.
curl -sf -X POST -H "Authorization: Bearer adm" -H 'content-type: application/json' \
  --data "{\"userId\": \"$run-u42\", \"placements\": [{\"placement\": \"p0\"}, {\"placement\": \"p7\"}], \"context\": {\"page\": \"/p1\", \"cart\": {\"total\": 60}}}" \
  $url/v1/decide | head -c 600; echo

for r in $(seq 1 "$rounds"); do
  # PERF_OUT=file: a CPU profile of the server during the first round.
  if [ "$r" = 1 ] && [ -n "${PERF_OUT:-}" ]; then
    (sleep 2; perf record -F 499 --call-graph dwarf,16384 -o "$PERF_OUT" -p $pid -- sleep 5 >/dev/null 2>&1) &
  fi
  out=$(wrk -t2 -c"$connections" -d"${duration}s" --latency -s "$work/decide.lua" $url/v1/decide 2>"$work/wrk.err")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  errors=$(grep -c status "$work/wrk.err" || true)
  echo "round $r: $rps decisions/s, p50 $p50, p99 $p99, non-200: $errors ($connections connections)"
done
echo "server RSS: $(ps -o rss= -p $pid | awk '{print int($1/1024)}') MB"
