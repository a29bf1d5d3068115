// handlebars.js rendering benches/templates/order.html with order.json, the template and
// data Waymark's `cargo bench -p waymark-core --bench render` uses. One thread, compiled
// once, rendered N times after a warm-up. Usage: node render.mjs [N]
import { readFileSync } from 'node:fs';
import Handlebars from 'handlebars';

const N = parseInt(process.argv[2] ?? '200000', 10);
const dir = new URL('../../templates/', import.meta.url);
const source = readFileSync(new URL('order.html', dir), 'utf8');
const data = JSON.parse(readFileSync(new URL('order.json', dir), 'utf8'));
const template = Handlebars.compile(source);
let bytes = 0;
for (let i = 0; i < 20000; i += 1) bytes += template(data).length;
const started = process.hrtime.bigint();
for (let i = 0; i < N; i += 1) bytes += template(data).length;
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
console.log(JSON.stringify({ peer: 'handlebars.js 4.7.8', node: process.version, renders: N, seconds,
  renders_per_second: Math.round(N / seconds), us_per_render: (seconds / N) * 1e6, output_bytes: template(data).length, checksum: bytes % 1000 }));
