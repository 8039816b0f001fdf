#!/usr/bin/env node
// Browser bench: ms per embed and detect in headless Chromium (LiteRT.js wasm, 1 thread = the single-thread
// build, 2 threads = the threaded build), at 512 px and 1080p, beside the Python runtime on the same pictures
// (web/test/bench_python.py), and whether WebGPU was available. Writes bench.json and bench.md.
//
//   node web/test/bench.mjs --release DIR --out artifacts/web/bench.json [--card C] [--variants fp32,int8]
//        [--python .venv/bin/python] [--repeats 5]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import {args, openBrowser, openApp, installHelpers, run, median} from './browser.mjs';
import {releaseDefaultCard} from '../videoseal_tflite.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const opt = args();
const release = path.resolve(opt.release ?? path.join(HERE, '..', '..', 'artifacts'));
const out = path.resolve(opt.out ?? path.join(HERE, '..', '..', 'artifacts', 'web', 'bench.json'));
const manifest = JSON.parse(fs.readFileSync(path.join(release, 'manifest.json'), 'utf8'));
const cards = [...new Set(Object.keys(manifest.files ?? {}).map((p) => p.split('/')[0]))];
const card = opt.card ?? releaseDefaultCard(manifest, cards);
const variants = String(opt.variants ?? 'fp32,int8').split(',');
const python = path.resolve(opt.python ?? path.join(HERE, '..', '..', '.venv', 'bin', 'python'));
const repeats = Number(opt.repeats ?? 5);
const SIZES = [[512, 512], [1920, 1080]];
const THREADS = [1, 2];

const rows = [];
const session = await openBrowser({release});
let webgpu;
try {
  for (const threads of THREADS) {
    for (const variant of variants) {
      const {page} = await openApp(session, {threads, variant, card});
      await installHelpers(page);
      webgpu ??= await page.evaluate(async () => ({
        navigator_gpu: Boolean(navigator.gpu),
        adapter: await window.videosealTflite.webgpuAvailable(),
        cross_origin_isolated: crossOriginIsolated,
      }));
      for (const [width, height] of SIZES) {
        const times = await page.evaluate(async ({width, height, repeats}) => {
          const vt = window.videosealTflite;
          const image = window.__t.synthetic(width, height);
          const message = Array.from({length: vt.info().nbits}, (_, i) => Number(i % 3 === 0));
          const marked = await vt.embed(image, message); // warm-up
          await vt.detect(marked, message);
          const embed = [], detect = [], steps = {embed: {}, detect: {}};
          const add = (into, from) => { for (const [k, v] of Object.entries(from)) (into[k] ??= []).push(v); };
          for (let i = 0; i < repeats; i++) {
            let t0 = performance.now();
            await vt.embed(image, message);
            embed.push(performance.now() - t0);
            add(steps.embed, vt.lastTimings.embed);
            t0 = performance.now();
            await vt.detect(marked, message);
            detect.push(performance.now() - t0);
            add(steps.detect, vt.lastTimings.detect);
          }
          return {embed, detect, steps};
        }, {width, height, repeats});
        const steps = (part) => Object.fromEntries(Object.entries(times.steps[part]).map(([k, v]) => [k, Number(median(v).toFixed(2))]));
        rows.push({runtime: 'browser', variant, threads, width, height,
          embed_ms: Number(median(times.embed).toFixed(2)), detect_ms: Number(median(times.detect).toFixed(2)),
          embed_steps_ms: steps('embed'), detect_steps_ms: steps('detect')});
        console.log(JSON.stringify(rows.at(-1)));
      }
      await page.close();
    }
  }
} finally {
  await session.close();
}

const py = await run(python, [path.join(HERE, 'bench_python.py'), '--release', release, '--card', card,
  '--variants', variants.join(','), '--sizes', SIZES.map(([w, h]) => `${w}x${h}`).join(','),
  '--threads', THREADS.join(','), '--repeats', String(repeats)], {env: {...process.env, TF_CPP_MIN_LOG_LEVEL: '3'}});
if (py.code !== 0) throw new Error(`bench_python.py: exit ${py.code}: ${py.stderr.trim().split('\n').pop()}`);
rows.push(...JSON.parse(py.stdout));

const record = {card, release, chromium: session.version,
  litertjs: JSON.parse(fs.readFileSync(path.join(HERE, '..', 'node_modules', '@litertjs', 'core', 'package.json'))).version,
  cpus: os.cpus().length, cpu: os.cpus()[0]?.model, load_average_1m: Number(os.loadavg()[0].toFixed(2)), repeats,
  webgpu, rows,
  command: 'make bench (node web/test/bench.mjs)', date: new Date().toISOString()};
fs.mkdirSync(path.dirname(out), {recursive: true});
fs.writeFileSync(out, JSON.stringify(record, null, 2) + '\n');

const cell = (runtime, variant, threads, w, h) => {
  const r = rows.find((x) => x.runtime === runtime && x.variant === variant && x.threads === threads && x.width === w && x.height === h);
  return r ? `${r.embed_ms.toFixed(0)} / ${r.detect_ms.toFixed(0)}` : '-';
};
const lines = [
  `Browser vs Python runtime, ms per embed / detect (median of ${repeats}; card ${card}; ${record.cpus} CPUs, ` +
    `load average ${record.load_average_1m} at the end, ` +
    `${record.chromium}, LiteRT.js ${record.litertjs} wasm; WebGPU ${webgpu?.adapter ? 'available' : 'not available'} ` +
    `in this headless browser)`,
  '',
  '| variant | runtime | threads | 512x512 | 1920x1080 |',
  '|---|---|---|---|---|',
];
for (const variant of variants) {
  for (const runtime of ['browser', 'python']) {
    for (const threads of THREADS) {
      lines.push(`| ${variant} | ${runtime} | ${threads} | ${cell(runtime, variant, threads, 512, 512)} | ` +
        `${cell(runtime, variant, threads, 1920, 1080)} |`);
    }
  }
}
const markdown = lines.join('\n') + '\n';
fs.writeFileSync(out.replace(/\.json$/, '.md'), markdown);
console.log(markdown);
console.log(`wrote ${out}`);
