// The issue #3 benchmark journey on BullMQ (the queue Novu and Laudspeaker build on):
// entry (condition on the event) -> durable wait of 0 -> webhook to the same local sink as
// Waymark's run -> end. Entries are enqueued 100 at a time, like Waymark's /v1/batch.
// Usage: node journey.mjs N SINK_URL    (Redis at 127.0.0.1:6379)
import { Queue, Worker } from 'bullmq';

const N = parseInt(process.argv[2] ?? '20000', 10);
const SINK = process.argv[3] ?? 'http://127.0.0.1:9900/hook';
const connection = { host: '127.0.0.1', port: 6379 };
const queue = new Queue('waymark-peer-journey', { connection });
await queue.obliterate({ force: true }).catch(() => {});

let done = 0;
let finish;
const finished = new Promise((resolve) => { finish = resolve; });
const worker = new Worker('waymark-peer-journey', async (job) => {
  if (job.name === 'entry') {
    if (job.data.currency === 'EUR') {
      // The durable wait: a delayed job (BullMQ's timer), 0 ms.
      await queue.add('call', { user: job.data.user }, { delay: 0, attempts: 4, backoff: { type: 'exponential', delay: 500 } });
    }
    return;
  }
  const response = await fetch(SINK, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': `${job.id}` },
    body: JSON.stringify({ n: 1 }),
  });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  done += 1;
  if (done === N) finish();
}, { connection, concurrency: 64 });

const started = Date.now();
for (let i = 0; i < N; i += 100) {
  const jobs = [];
  for (let k = i; k < Math.min(i + 100, N); k += 1) {
    jobs.push({ name: 'entry', data: { user: `u${k}`, currency: 'EUR' }, opts: { removeOnComplete: true } });
  }
  await queue.addBulk(jobs);
}
const enqueued = (Date.now() - started) / 1000;
await finished;
const seconds = (Date.now() - started) / 1000;
console.log(JSON.stringify({ peer: 'bullmq', journeys: N, enqueue_seconds: enqueued, seconds, journeys_per_second: Math.round(N / seconds) }));
await worker.close();
await queue.obliterate({ force: true }).catch(() => {});
await queue.close();
process.exit(0);
