// A bulk SMS send on BullMQ, the way a team without a campaign tool would build it: the
// recipients (N people with a phone number, already in memory: no audience read, no
// per-person state, no governance) split 45/45/10 into two variants and a holdout by a
// hash of the person, enqueued 1,000 at a time, and sent by two worker processes (one per
// core, concurrency 64 each by default, CONCURRENCY=n to change; keep-alive HTTP) as Twilio-style form posts to the same local
// stand-in as Waymark's run. Timed from the first enqueue until the stand-in has them all.
// Usage: node campaign.mjs N SINK_URL    (Redis at 127.0.0.1:6379)
import { fork } from 'node:child_process';
import { createHash } from 'node:crypto';
import { Queue, Worker } from 'bullmq';

const connection = { host: '127.0.0.1', port: 6379 };
const NAME = 'waymark-peer-campaign';

if (process.argv[2] === 'worker') {
  const sink = process.argv[3];
  const worker = new Worker(NAME, async (job) => {
    const body = new URLSearchParams({ To: job.data.to, From: '+15550000000', Body: job.data.text });
    const response = await fetch(`${sink}/2010-04-01/Accounts/ACbench/Messages.json`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: 'Basic QUNiZW5jaDp0' },
      body,
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    await response.arrayBuffer();
  }, { connection, concurrency: parseInt(process.env.CONCURRENCY ?? '64', 10) });
  process.on('message', async () => { await worker.close(); process.exit(0); });
} else {
  const N = parseInt(process.argv[2] ?? '100000', 10);
  const SINK = process.argv[3] ?? 'http://127.0.0.1:18087';
  const queue = new Queue(NAME, { connection });
  await queue.obliterate({ force: true }).catch(() => {});
  const countAtSink = async () => (await (await fetch(`${SINK}/count`)).json()).count;
  const before = await countAtSink();
  const workers = [0, 1].map(() => fork(new URL(import.meta.url).pathname, ['worker', SINK]));
  await new Promise((r) => setTimeout(r, 500)); // workers connected
  const started = Date.now();
  let sent = 0;
  for (let i = 0; i < N; i += 1000) {
    const jobs = [];
    for (let k = i; k < Math.min(i + 1000, N); k += 1) {
      const bucket = createHash('sha1').update(`sale:p${k}`).digest().readUInt32BE(0) % 100;
      if (bucket >= 90) continue; // holdout
      const variant = bucket < 45 ? 'a' : 'b';
      jobs.push({ name: 'send', data: { to: `+1555${String(k).padStart(7, '0')}`, text: `Sale ${variant}: up to 50% off` },
        opts: { removeOnComplete: true, attempts: 4, backoff: { type: 'exponential', delay: 500 } } });
    }
    sent += jobs.length;
    await queue.addBulk(jobs);
  }
  while ((await countAtSink()) - before < sent) await new Promise((r) => setTimeout(r, 50));
  const seconds = (Date.now() - started) / 1000;
  console.log(JSON.stringify({ peer: 'bullmq', people: N, sent, seconds, messages_per_second: Math.round(sent / seconds) }));
  await Promise.all(workers.map((w) => new Promise((r) => { w.on('exit', r); w.send('stop'); })));
  await queue.obliterate({ force: true }).catch(() => {});
  await queue.close();
  process.exit(0);
}
