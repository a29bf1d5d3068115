#!/usr/bin/env bash
# Campaign throughput on the embedded store, release build:
#   benches/scripts/campaigns.sh target/release/waymark [rounds]
# PEOPLE people (default 100,000) identified with an email, all on an uploaded list; a
# campaign of two variants (45/45) and a 10% holdout on the `log` channel (every decision
# made and recorded, nothing handed to a provider) with RATE (default: none) sends per
# second. Reported: targeting (audience read, exclusion, governance, variant assignment, the
# journey steps written) in recipients per second, from launch to the report's `completed`.
set -euo pipefail
bin=$1 rounds=${2:-1}
people=${PEOPLE:-100000}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=18086 url=http://127.0.0.1:18086
field() { grep -o "\"$1\":[^,}]*" | head -1 | cut -d: -f2 | tr -d '"'; }
admin() { curl -sf -H "Authorization: Bearer adm" -H 'content-type: application/json' "$@"; }

for round in $(seq 1 "$rounds"); do
  dir="$work/r$round"
  WAYMARK_WRITE_KEY=wk WAYMARK_ADMIN_TOKEN=adm "$bin" serve --listen 127.0.0.1:$port --data-dir "$dir" >/dev/null 2>"$dir.log" &
  pid=$!
  for _ in $(seq 1 100); do curl -sf $url/healthz >/dev/null && break; sleep 0.1; done
  python3 - "$url" "$people" <<'PY'
import json, sys, urllib.request, base64
url, n = sys.argv[1], int(sys.argv[2])
auth = "Basic " + base64.b64encode(b"wk:").decode()
for start in range(0, n, 1000):
    batch = [{"type": "identify", "userId": f"p{i}", "traits": {"email": f"p{i}@example.com"}}
             for i in range(start, min(n, start + 1000))]
    req = urllib.request.Request(url + "/v1/batch", json.dumps({"batch": batch}).encode(),
                                 {"content-type": "application/json", "authorization": auth})
    urllib.request.urlopen(req).read()
PY
  admin -X PUT --data '{"key": "list", "refresh": "upload"}' $url/v1/audiences/list >/dev/null
  { echo user_id; seq -f 'p%.0f' 0 $((people - 1)); } > "$work/list.csv"
  curl -sf -X POST -H "Authorization: Bearer adm" -H 'content-type: text/csv' \
    --data-binary @"$work/list.csv" "$url/v1/audiences/list/members?mode=add" >/dev/null
  rate=${RATE:+, \"rate\": $RATE}
  admin -X PUT --data "{\"key\": \"sale\", \"audience\": \"list\", \"channel\": \"log\", \"holdout\": 10,
    \"variants\": [{\"key\": \"a\", \"template\": \"sale-a\"}, {\"key\": \"b\", \"template\": \"sale-b\"}]$rate}" \
    $url/v1/campaigns/sale >/dev/null
  start=$(date +%s.%N)
  admin -X POST $url/v1/campaigns/sale/launch >/dev/null
  while :; do
    report=$(admin $url/v1/campaigns/sale/report)
    [ "$(echo "$report" | field status)" = completed ] && break
    sleep 0.05
  done
  end=$(date +%s.%N)
  echo "campaign round $round: $(python3 -c "print(round($people / ($end - $start)))") recipients/s targeted and decided, $people people, $(python3 -c "print(round($end - $start, 2))") s; entered $(echo "$report" | field entered)"
  kill $pid; wait $pid 2>/dev/null || true
done
