"""Sends COUNT `Tick` events, one per person, all with the same event time (AT, ms since the
epoch), to a Waymark server, in batches over keep-alive connections. Used by audiences.sh to
make a million memberships flip at the same instant."""
import base64, http.client, json, sys, threading, time

url, key, count, at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
host, port = url.split("//")[1].split(":")
stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at / 1000)) + ".%03dZ" % (at % 1000)
auth = "Basic " + base64.b64encode((key + ":").encode()).decode()
BATCH, THREADS = 500, 4
lock, next_start, errors = threading.Lock(), [0], [0]

def work():
    conn = http.client.HTTPConnection(host, int(port))
    while True:
        with lock:
            start = next_start[0]
            next_start[0] += BATCH
        if start >= count:
            return
        batch = [{"type": "track", "userId": "f%d" % n, "event": "Tick", "timestamp": stamp,
                  "messageId": "flip-%d" % n} for n in range(start, min(start + BATCH, count))]
        body = json.dumps({"batch": batch})
        conn.request("POST", "/v1/batch", body, {"Authorization": auth, "Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            errors[0] += 1

threads = [threading.Thread(target=work) for _ in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"sent": count, "errors": errors[0]}))
