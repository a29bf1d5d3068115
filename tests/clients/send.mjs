// Sends identify/track/page/alias calls to a Waymark server through the official Segment
// (@segment/analytics-node) and RudderStack (@rudderstack/rudder-sdk-node) libraries.
// Usage: node send.mjs <base-url> <write-key> <run-id>
// Exits non-zero if either library reports a delivery error.
import { Analytics } from '@segment/analytics-node';
import RudderAnalytics from '@rudderstack/rudder-sdk-node';

const [baseUrl, writeKey, run] = process.argv.slice(2);
if (!baseUrl || !writeKey || !run) {
  console.error('usage: node send.mjs <base-url> <write-key> <run-id>');
  process.exit(2);
}

let failures = 0;

const segment = new Analytics({ writeKey, host: baseUrl, flushAt: 3, flushInterval: 200, maxRetries: 0 });
segment.on('error', (err) => { failures += 1; console.error('segment error', err?.reason ?? err); });
const seg = (call, msg) => new Promise((resolve) => segment[call](msg, (err) => {
  if (err) { failures += 1; console.error(`segment ${call} failed`, err); }
  resolve();
}));

await seg('track', { anonymousId: `${run}-anon`, event: 'Landing Viewed', properties: { campaign: 'winter' } });
await Promise.all([
  seg('page', { anonymousId: `${run}-anon`, name: 'Pricing', properties: { path: '/pricing' } }),
  seg('identify', { userId: `${run}-segment-user`, anonymousId: `${run}-anon`, traits: { email: `${run}@segment.example`, plan: 'pro' } }),
  seg('track', { userId: `${run}-segment-user`, event: 'Order Completed', properties: { total: 99.5, currency: 'EUR' } }),
]);
await segment.closeAndFlush({ timeout: 10000 });

const rudder = new RudderAnalytics(writeKey, { dataPlaneUrl: baseUrl, flushAt: 2, flushInterval: 200, retryCount: 0, logLevel: 'error' });
const rud = (call, msg) => new Promise((resolve) => rudder[call](msg, (err) => {
  if (err) { failures += 1; console.error(`rudder ${call} failed`, err?.message ?? err); }
  resolve();
}));
await Promise.all([
  rud('identify', { userId: `${run}-rudder-user`, traits: { name: 'Rudy', email: `${run}@rudder.example` } }),
  rud('track', { userId: `${run}-rudder-user`, event: 'Signed Up', properties: { source: 'node' } }),
  rud('alias', { userId: `${run}-rudder-user`, previousId: `${run}-rudder-anon` }),
]);
await new Promise((resolve, reject) => rudder.flush((err) => (err ? reject(err) : resolve()))).catch((err) => {
  failures += 1; console.error('rudder flush failed', err?.message ?? err);
});

if (failures > 0) {
  console.error(`${failures} delivery failure(s)`);
  process.exit(1);
}
console.log('sent');
process.exit(0);
