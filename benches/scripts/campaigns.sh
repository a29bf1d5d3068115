#!/usr/bin/env bash
# Campaign throughput on the embedded store, release build:
#   benches/scripts/campaigns.sh target/release/waymark [rounds]
# PEOPLE people (default 100,000) identified with an email, all on an uploaded list; a
# campaign of two variants (45/45) and a 10% holdout on the `log` channel (every decision
# made and recorded, nothing handed to a provider) with RATE (default: none) sends per
# second. Reported: targeting (audience read, exclusion, governance, variant assignment, the
# journey steps written) in recipients per second, from launch to the report's `completed`.
# With CHANNEL=sms, the variants are SMS templates sent through the Twilio-style API to
# `waymark bench sink` (a local HTTP stand-in answering 200), and delivery is reported too:
# messages per second from launch until the sink has received every one sent.
# With KILL_AFTER=N (sms), the server is killed with SIGKILL once the stand-in has N
# messages, started again on the same data, and the run goes on: reported are the distinct
# recipients at the stand-in (everyone sent to, once: nobody skipped) and the repeats (calls
# in flight at the kill, sent again with the same message id), and the peak memory (VmHWM)
# of each server process.
set -euo pipefail
bin=$1 rounds=${2:-1}
people=${PEOPLE:-100000}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=18086 url=http://127.0.0.1:18086
channel=${CHANNEL:-log} sink=http://127.0.0.1:18087
field() { grep -o "\"$1\":[^,}]*" | head -1 | cut -d: -f2 | tr -d '"'; }
admin() { curl -sf -H "Authorization: Bearer adm" -H 'content-type: application/json' "$@"; }

for round in $(seq 1 "$rounds"); do
  dir="$work/r$round"
  if [ "$channel" = sms ]; then
    "$bin" bench sink --listen 127.0.0.1:18087 >/dev/null 2>&1 &
    sink_pid=$!
    export WAYMARK_SMS__BASE_URL=$sink WAYMARK_SMS__ACCOUNT_SID=ACbench WAYMARK_SMS__AUTH_TOKEN=t \
      WAYMARK_SMS__FROM=+15550000000
  fi
  serve() {
    WAYMARK_WRITE_KEY=wk WAYMARK_ADMIN_TOKEN=adm "$bin" serve --listen 127.0.0.1:$port --data-dir "$dir" >/dev/null 2>>"$dir.log" &
    pid=$!
    for _ in $(seq 1 300); do curl -sf $url/healthz >/dev/null && break; sleep 0.1; done
  }
  peak() { grep VmHWM /proc/$pid/status | awk '{print int($2/1024) " MB"}'; }
  serve
  python3 - "$url" "$people" <<'PY'
import json, sys, urllib.request, base64
url, n = sys.argv[1], int(sys.argv[2])
auth = "Basic " + base64.b64encode(b"wk:").decode()
for start in range(0, n, 1000):
    batch = [{"type": "identify", "userId": f"p{i}",
              "traits": {"email": f"p{i}@example.com", "phone": f"+1555{i:07d}"}}
             for i in range(start, min(n, start + 1000))]
    req = urllib.request.Request(url + "/v1/batch", json.dumps({"batch": batch}).encode(),
                                 {"content-type": "application/json", "authorization": auth})
    urllib.request.urlopen(req).read()
PY
  admin -X PUT --data '{"key": "list", "refresh": "upload"}' $url/v1/audiences/list >/dev/null
  { echo user_id; seq -f 'p%.0f' 0 $((people - 1)); } > "$work/list.csv"
  curl -sf -X POST -H "Authorization: Bearer adm" -H 'content-type: text/csv' \
    --data-binary @"$work/list.csv" "$url/v1/audiences/list/members?mode=add" >/dev/null
  for v in a b; do
    admin -X PUT --data "{\"channel\": \"sms\", \"text\": \"Sale $v: up to 50% off\"}" $url/v1/templates/sale-$v >/dev/null
  done
  rate=${RATE:+, \"rate\": $RATE}
  admin -X PUT --data "{\"key\": \"sale\", \"audience\": \"list\", \"channel\": \"$channel\", \"holdout\": 10,
    \"variants\": [{\"key\": \"a\", \"template\": \"sale-a\"}, {\"key\": \"b\", \"template\": \"sale-b\"}]$rate}" \
    $url/v1/campaigns/sale >/dev/null
  start=$(date +%s.%N)
  admin -X POST $url/v1/campaigns/sale/launch >/dev/null
  if [ -n "${KILL_AFTER:-}" ]; then
    while [ "$(curl -sf $sink/count | field count)" -lt "$KILL_AFTER" ]; do sleep 0.02; done
    echo "  killed (SIGKILL) with $(curl -sf $sink/count | field count) at the stand-in; peak memory $(peak)"
    kill -9 $pid; wait $pid 2>/dev/null || true
    serve
  fi
  while :; do
    report=$(admin $url/v1/campaigns/sale/report)
    [ "$(echo "$report" | field status)" = completed ] && break
    sleep 0.05
  done
  end=$(date +%s.%N)
  if [ "$channel" = sms ]; then
    sent=$(echo "$report" | python3 -c "import json,sys; print(sum(v['sent'] for v in json.load(sys.stdin)['variants']))")
    while [ "$(curl -sf $sink/count | field recipients)" -lt "$sent" ]; do sleep 0.05; done
    delivered=$(date +%s.%N)
    sleep 1 # a repeat still on its way
    calls=$(curl -sf $sink/count | field count) recipients=$(curl -sf $sink/count | field recipients)
    echo "  at the stand-in: $calls calls, $recipients distinct recipients of $sent sent ($((calls - recipients)) repeats); peak memory $(peak)"
    echo "campaign round $round: $sent SMS delivered to the stand-in in $(python3 -c "print(round($delivered - $start, 2))") s from launch: $(python3 -c "print(round($sent / ($delivered - $start)))") messages/s"
    if [ -n "${RATE:-}" ]; then
      # Every whole second at the stand-in between the first and the last (both partial).
      curl -sf $sink/count | python3 -c "
import json, sys
rate = $RATE
seconds = [n for _, n in json.load(sys.stdin)['per_second']][1:-1]
worst = max(abs(n - rate) / rate for n in seconds) if seconds else 0
print(f'  rate {rate}/s: {len(seconds)} whole seconds at the stand-in, min {min(seconds, default=0)}, max {max(seconds, default=0)}, worst {worst:.1%} off')
print('  per second:', ' '.join(map(str, seconds)))"
    fi
    kill $sink_pid
  fi
  echo "campaign round $round: $(python3 -c "print(round($people / ($end - $start)))") recipients/s targeted and decided, $people people, $(python3 -c "print(round($end - $start, 2))") s; entered $(echo "$report" | field entered); server peak memory $(peak)"
  kill $pid; wait $pid 2>/dev/null || true
done
