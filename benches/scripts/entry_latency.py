"""Audience Entered -> first action of a journey that starts on it, under steady ingest.

    python3 entry_latency.py URL WRITE_KEY ADMIN_TOKEN [RATE] [SECONDS] [HOT_SHARE]

Creates the audience `qualified` (`events.any("Qualify")`) and a journey that starts when
someone enters it, whose first step is a webhook to a recorder on loopback carrying the
entry's time (`journey.entry.timestamp`: the `Audience Entered` event's). Then sends RATE
events/s for SECONDS (batches every 10 ms over keep-alive connections): HOT_SHARE of them
`Qualify` from new people (each an entry), the rest `Signal` from 20,000 others. Reports
the time from each entry to its webhook's arrival (the recorder's clock is the server's).
"""
import base64, http.client, http.server, json, random, sys, threading, time

url, key, admin = sys.argv[1], sys.argv[2], sys.argv[3]
rate = int(sys.argv[4]) if len(sys.argv) > 4 else 2000
seconds = int(sys.argv[5]) if len(sys.argv) > 5 else 30
hot_share = float(sys.argv[6]) if len(sys.argv) > 6 else 0.1
host, port = url.split("//")[1].split(":")
write_auth = "Basic " + base64.b64encode((key + ":").encode()).decode()
latencies, lock = [], threading.Lock()


class Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        arrived = time.time() * 1000
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with lock:
            latencies.append(arrived - float(body["entered_at"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


recorder = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
threading.Thread(target=recorder.serve_forever, daemon=True).start()
hook = "http://127.0.0.1:%d/hook" % recorder.server_address[1]


def admin_call(method, path, doc=None):
    conn = http.client.HTTPConnection(host, int(port))
    body = json.dumps(doc) if doc is not None else ""
    conn.request(method, path, body, {"Authorization": "Bearer " + admin, "Content-Type": "application/json"})
    resp = conn.getresponse()
    text = resp.read()
    if resp.status >= 300:
        sys.exit("%s %s: %d %s" % (method, path, resp.status, text))


admin_call("PUT", "/v1/audiences/qualified", {"key": "qualified", "rule": 'events.any("Qualify")'})
admin_call("PUT", "/v1/journeys/on-qualified", {
    "key": "on-qualified", "entry": {"audience": "qualified"},
    "nodes": [
        {"id": "tell", "type": "webhook", "url": hook,
         "body": {"entered_at": "{{journey.entry.timestamp}}"}, "next": "done"},
        {"id": "done", "type": "end"}]})
admin_call("POST", "/v1/journeys/on-qualified/publish")

per_tick = max(1, rate // 100)
ticks = seconds * 100
sent, hot, errors, slow_ticks = [0], [0], [0], [0]
queue, queue_lock = [], threading.Condition()


def sender():
    conn = http.client.HTTPConnection(host, int(port))
    while True:
        with queue_lock:
            while not queue:
                queue_lock.wait()
            batch = queue.pop(0)
        if batch is None:
            return
        conn.request("POST", "/v1/batch", json.dumps({"batch": batch}),
                     {"Authorization": write_auth, "Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            errors[0] += 1


threads = [threading.Thread(target=sender) for _ in range(4)]
for t in threads:
    t.start()
start = time.time()
for tick in range(ticks):
    batch = []
    for _ in range(per_tick):
        if random.random() < hot_share:
            batch.append({"type": "track", "userId": "q%d" % hot[0], "event": "Qualify"})
            hot[0] += 1
        else:
            batch.append({"type": "track", "userId": "s%d" % random.randrange(20000), "event": "Signal"})
    sent[0] += len(batch)
    with queue_lock:
        queue.append(batch)
        queue_lock.notify()
    wait = start + (tick + 1) / 100 - time.time()
    if wait > 0:
        time.sleep(wait)
    else:
        slow_ticks[0] += 1
with queue_lock:
    queue.extend([None] * len(threads))
    queue_lock.notify_all()
for t in threads:
    t.join()
elapsed = time.time() - start
deadline = time.time() + 30
while len(latencies) < hot[0] and time.time() < deadline:
    time.sleep(0.1)
got = sorted(latencies)


def pct(p):
    return round(got[min(len(got) - 1, int(len(got) * p))]) if got else None


print(json.dumps({
    "events_per_second": round(sent[0] / elapsed), "events": sent[0], "entries": hot[0],
    "webhooks": len(got), "errors": errors[0], "late_ticks": slow_ticks[0],
    "entry_to_webhook_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": pct(1.0)}}))
