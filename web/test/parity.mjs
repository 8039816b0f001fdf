#!/usr/bin/env node
// Browser parity: the web page's embed and detect (LiteRT.js in headless Chromium) against the Python runtime's
// (the `videoseal-tflite` CLI: embed, and detect --no-resync, as the page reads as is), on a folder of images.
//
//   node web/test/parity.mjs --release DIR --images DIR --out parity.json [--card C] [--variants fp32,int8]
//        [--cli .venv/bin/videoseal-tflite] [--threads 2] [--fpr 1e-4] [--ui]
//
// Per image and variant it writes the browser's and Python's watermarked PNGs beside --out (parity_files/) and
// records: bits_equal (the browser reads the same bits as Python from the same file, both marked files, and each
// pipeline reads its own mark the same), psnr_vs_python between the two watermarked PNGs, the share of values
// within one level, embed_ms and detect_ms (in the browser, after one warm-up). --ui also drives the page itself:
// bad input (not an image, a huge image, a message of the wrong length: a visible message, no download), an
// embed that downloads a PNG and a detect of that PNG with the network off, and a screenshot of the verdict.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import {fileURLToPath} from 'node:url';
import {args, openBrowser, openApp, installHelpers, run, pool, median} from './browser.mjs';
import {releaseDefaultCard} from '../videoseal_tflite.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const opt = args();
const release = path.resolve(opt.release ?? path.join(HERE, '..', '..', 'artifacts'));
const out = path.resolve(opt.out ?? path.join(HERE, '..', '..', 'artifacts', 'web', 'parity.json'));
const imagesDir = opt.images && path.resolve(opt.images);
const cli = path.resolve(opt.cli ?? path.join(HERE, '..', '..', '.venv', 'bin', 'videoseal-tflite'));
const threads = Number(opt.threads ?? 2);
const fpr = Number(opt.fpr ?? 1e-4);
const files = path.join(path.dirname(out), 'parity_files');
const IMAGE_EXT = /\.(png|jpe?g|webp|bmp|gif)$/i;

function fail(message) {
  console.error(`parity: ${message}`);
  process.exit(2);
}

if (!imagesDir || !fs.existsSync(imagesDir)) fail('give --images DIR (a folder of images)');
if (!fs.existsSync(path.join(release, 'manifest.json'))) fail(`no manifest.json in ${release}`);
if (!fs.existsSync(cli)) fail(`no Python CLI at ${cli} (make setup)`);

const manifest = JSON.parse(fs.readFileSync(path.join(release, 'manifest.json'), 'utf8'));
const entries = Object.entries(manifest.files).filter(([p]) => /^[^/]+\/(embedder|detector)_\d+_[a-z0-9_]+\.tflite$/.test(p));
const cards = [...new Set(entries.map(([p]) => p.split('/')[0]))];
const card = opt.card ?? releaseDefaultCard(manifest, cards);
const cardEntries = entries.filter(([p]) => p.startsWith(`${card}/`));
const nbits = Number(cardEntries[0]?.[1].nbits);
if (!nbits) fail(`no files of card ${card} in ${release}/manifest.json`);
const present = [...new Set(cardEntries.map(([p]) => /_(\d+)_([a-z0-9_]+)\.tflite$/.exec(p)[2]))];
const variants = opt.variants ? String(opt.variants).split(',') : present;
for (const v of variants) if (!present.includes(v)) fail(`variant ${v} is not in the release (present: ${present.join(', ')})`);
const images = fs.readdirSync(imagesDir).filter((f) => IMAGE_EXT.test(f)).sort();
if (!images.length) fail(`no images in ${imagesDir}`);

/** A fixed message per image (a small LCG), so runs compare. */
function messageFor(index) {
  let x = 0x9e3779b9 ^ (index * 0x85ebca6b);
  return Array.from({length: nbits}, () => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    return (x >>> 16) & 1;
  }).join('');
}

const stem = (name) => name.replace(/\.[^.]*$/, '');

async function python(argv) {
  const result = await run(cli, argv, {env: {...process.env, TF_CPP_MIN_LOG_LEVEL: '3'}});
  if (result.code !== 0) throw new Error(`${path.basename(cli)} ${argv.join(' ')}: exit ${result.code}: ${result.stderr.trim().split('\n').pop()}`);
  return JSON.parse(result.stdout);
}

const common = (variant) => ['--artifacts', release, '--card', card, '--variant', variant, '--threads', '1'];
const pyEmbed = (input, output, variant, message) =>
  python(['embed', input, output, ...common(variant), '--detector-variant', variant, '--message', message, '--json']);
const pyDetect = (input, variant, message) =>
  python(['detect', input, ...common(variant), '--message', message, '--fpr', String(fpr), '--json', '--no-resync']);

// ------------------------------------------------------------------------------------------- Python: embed first

fs.mkdirSync(files, {recursive: true});
const jobs = variants.flatMap((variant) => images.map((image, i) => ({variant, image, message: messageFor(i)})));
for (const job of jobs) {
  fs.mkdirSync(path.join(files, job.variant), {recursive: true});
  job.input = path.join(imagesDir, job.image);
  job.pythonPng = path.join(files, job.variant, `${stem(job.image)}.python.png`);
  job.browserPng = path.join(files, job.variant, `${stem(job.image)}.browser.png`);
}
const started = Date.now();
const pythonEmbeds = pool(jobs, 2, (job) => pyEmbed(job.input, job.pythonPng, job.variant, job.message));

// -------------------------------------------------------------------------------------- the browser: the module

const session = await openBrowser({release});
const report = {release, card, nbits, threads, fpr, chromium: session.version,
  litertjs: JSON.parse(fs.readFileSync(path.join(HERE, '..', 'node_modules', '@litertjs', 'core', 'package.json'))).version,
  reading: 'as is (browser detect; Python detect --no-resync)', results: []};
try {
  const {page, errors, loadMs} = await openApp(session, {threads, variant: variants[0]});
  report.page_load_ms = loadMs;
  report.probe = JSON.parse(await page.evaluate(() => document.body.dataset.probe ?? '{}'));
  await installHelpers(page);
  await pythonEmbeds;
  for (const variant of variants) {
    await page.evaluate((o) => window.videosealTflite.load(o), {release: `${session.url}release/`, card, variant, threads});
    let warm = false;
    for (const job of jobs.filter((j) => j.variant === variant)) {
      const b64 = fs.readFileSync(job.input).toString('base64');
      const pyB64 = fs.readFileSync(job.pythonPng).toString('base64');
      const r = await page.evaluate(async ({b64, pyB64, message, fpr, warm}) => {
        const vt = window.videosealTflite, t = window.__t;
        const image = await t.decode(b64);
        if (!warm) await vt.detect(await vt.embed(image, message), message, {fpr}); // first run: XNNPACK set-up
        let t0 = performance.now();
        const marked = await vt.embed(image, message);
        const embedMs = performance.now() - t0;
        const png = await t.encode(marked);
        const reread = await t.decode(png); // what the user downloads, read back as a file
        t0 = performance.now();
        const own = await vt.detect(reread, message, {fpr});
        const detectMs = performance.now() - t0;
        const pyMarked = await t.decode(pyB64);
        const onPython = await vt.detect(pyMarked, message, {fpr});
        const onOriginal = await vt.detect(image, message, {fpr});
        const strip = ({bits, matching, pValue, watermarked, bitLogits}) => ({bits, matching, pValue, watermarked,
          minAbsLogit: Math.min(...bitLogits.map(Math.abs))});
        return {png, width: image.width, height: image.height, embedMs, detectMs,
          compare: t.compare(reread, pyMarked), own: strip(own), onPython: strip(onPython), onOriginal: strip(onOriginal)};
      }, {b64, pyB64, message: job.message, fpr, warm});
      warm = true;
      fs.writeFileSync(job.browserPng, Buffer.from(r.png, 'base64'));
      Object.assign(job, {browser: r});
    }
  }
  report.page_errors = errors;

  // ------------------------------------------------------------------------------------------------- the page
  if (opt.ui) report.ui = await uiChecks(session, jobs[0]);
} finally {
  await session.close();
}

// ------------------------------------------------------------------------------- Python: read the same files

const embeds = await pythonEmbeds;
await pool(jobs, 2, async (job, i) => {
  job.python = {
    embed: embeds[i],
    own: await pyDetect(job.pythonPng, job.variant, job.message),
    onBrowser: await pyDetect(job.browserPng, job.variant, job.message),
    onOriginal: await pyDetect(job.input, job.variant, job.message),
  };
});

for (const job of jobs) {
  const b = job.browser, p = job.python;
  const same = {
    python_marked: b.onPython.bits === p.own.bits,
    browser_marked: b.own.bits === p.onBrowser.bits,
    each_own_mark: b.own.bits === p.own.bits,
  };
  report.results.push({
    image: job.image, variant: job.variant, width: b.width, height: b.height, message: job.message,
    bits_equal: Object.values(same).every(Boolean),
    bits_equal_detail: same,
    bits_equal_unmarked: b.onOriginal.bits === p.onOriginal.bits,
    psnr_vs_python: b.compare.psnr === null ? null : b.compare.psnr,
    within_one_level: b.compare.within_one_level,
    exact: b.compare.exact,
    max_level_diff: b.compare.max_level_diff,
    embed_ms: Number(b.embedMs.toFixed(2)),
    detect_ms: Number(b.detectMs.toFixed(2)),
    browser: {own: b.own, on_python_marked: b.onPython, on_original: b.onOriginal},
    python: {own: p.own.bits, own_pvalue: p.own.pvalue, own_matching: p.own.matching_bits,
      on_browser_marked: p.onBrowser.bits, on_original: p.onOriginal.bits},
    pvalue_equal: Math.abs(b.onPython.pValue - p.own.pvalue) <= 1e-12 * Math.max(1, p.own.pvalue),
    files: {browser: path.relative(path.dirname(out), job.browserPng), python: path.relative(path.dirname(out), job.pythonPng)},
  });
}
report.summary = Object.fromEntries(variants.map((v) => {
  const rs = report.results.filter((r) => r.variant === v);
  return [v, {images: rs.length, bits_equal: rs.filter((r) => r.bits_equal).length,
    min_psnr_vs_python: Math.min(...rs.map((r) => r.psnr_vs_python ?? Infinity)),
    min_within_one_level: Math.min(...rs.map((r) => r.within_one_level)),
    median_embed_ms: median(rs.map((r) => r.embed_ms)), median_detect_ms: median(rs.map((r) => r.detect_ms))}];
}));
report.wall_s = (Date.now() - started) / 1000;
fs.mkdirSync(path.dirname(out), {recursive: true});
// JSON has no Infinity: identical PNGs (no difference at all) have psnr_vs_python null and exact 1
fs.writeFileSync(out, JSON.stringify(report, (k, v) => (v === Infinity ? null : v), 2) + '\n');
for (const [v, s] of Object.entries(report.summary)) {
  const psnr = s.min_psnr_vs_python === Infinity ? 'identical' : `${s.min_psnr_vs_python.toFixed(1)} dB`;
  console.log(`${v}: bits equal ${s.bits_equal}/${s.images}, PSNR vs Python >= ${psnr}, within one level ` +
    `>= ${(100 * s.min_within_one_level).toFixed(3)} %, embed ${s.median_embed_ms.toFixed(0)} ms, detect ${s.median_detect_ms.toFixed(0)} ms`);
}
console.log(`wrote ${out} (${report.wall_s.toFixed(1)} s)`);

// ------------------------------------------------------------------------------------------------ the page's UI

/** A valid PNG of width x height, one gray level (compresses to a few hundred KB). */
function flatPng(width, height) {
  const crc = (buf) => {
    let c = ~0;
    for (const byte of buf) {
      c ^= byte;
      for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
    }
    return ~c >>> 0;
  };
  const chunk = (type, data) => {
    const body = Buffer.concat([Buffer.from(type), data]);
    const len = Buffer.alloc(4), sum = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    sum.writeUInt32BE(crc(body));
    return Buffer.concat([len, body, sum]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 0; // grayscale
  const raw = Buffer.alloc((width + 1) * height, 128);
  for (let y = 0; y < height; y++) raw[y * (width + 1)] = 0; // filter byte
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw, {level: 9})), chunk('IEND', Buffer.alloc(0))]);
}

async function uiChecks(session, job) {
  const downloads = path.join(files, 'downloads');
  fs.rmSync(downloads, {recursive: true, force: true});
  fs.mkdirSync(downloads, {recursive: true});
  const {page, errors} = await openApp(session, {threads, variant: 'fp32'}, {downloads});
  const ui = {status_log: await page.evaluate(() => window.__statusLog)};
  const input = await page.$('#file');
  const downloaded = () => fs.readdirSync(downloads).filter((f) => !f.endsWith('.crdownload'));
  const text = (sel) => page.$eval(sel, (el) => el.textContent.trim());
  const visible = (sel) => page.$eval(sel, (el) => !el.hidden && el.getClientRects().length > 0 && getComputedStyle(el).display !== 'none');

  async function choose(file) {
    await page.evaluate(() => { document.getElementById('error').textContent = ''; document.getElementById('image-info').textContent = ''; });
    await input.uploadFile(file);
    await page.waitForFunction(() => document.getElementById('error').textContent ||
      /\d+x\d+/.test(document.getElementById('image-info').textContent));
  }
  async function badCase(name, act) {
    const before = downloaded().length;
    await page.evaluate(() => { document.getElementById('error').textContent = ''; });
    await act();
    await page.waitForFunction(() => document.getElementById('error').textContent);
    await new Promise((r) => setTimeout(r, 500)); // a download, if one had started, would show by now
    ui[name] = {error: await text('#error'), error_visible: await visible('#error'),
      downloads: downloaded().length - before};
  }
  const setMessage = (sel, value) => page.$eval(sel, (el, v) => { el.value = v; }, value);

  // 1. a file that is not an image
  const notImage = path.join(files, 'notes.png');
  fs.writeFileSync(notImage, 'these are notes, not pixels\n'.repeat(20));
  await badCase('not_an_image', () => choose(notImage));
  // 2. a huge image (a valid PNG, 8000 x 4000 = 32 MP)
  const huge = path.join(files, 'huge.png');
  fs.writeFileSync(huge, flatPng(8000, 4000));
  await badCase('huge_image', () => choose(huge));
  // 3. a real image dropped on the page, then chosen; then a message of the wrong length (embed and detect)
  await page.evaluate(() => { document.getElementById('image-info').textContent = ''; });
  await page.evaluate(async (b64, name) => {
    const file = new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], name, {type: 'image/png'});
    const dataTransfer = new DataTransfer();
    dataTransfer.items.add(file);
    document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer, bubbles: true, cancelable: true}));
  }, fs.readFileSync(job.input).toString('base64'), path.basename(job.input));
  await page.waitForFunction(() => /\d+x\d+/.test(document.getElementById('image-info').textContent) ||
    document.getElementById('error').textContent);
  ui.dropped_image_info = await text('#image-info');
  await choose(job.input);
  ui.image_info = await text('#image-info');
  await badCase('wrong_length_message', async () => {
    await setMessage('#embed-message', '0101');
    await page.click('#embed');
  });
  await badCase('wrong_length_detect_message', async () => {
    await setMessage('#detect-message', '0'.repeat(nbits + 3));
    await page.click('#detect');
  });

  // 4. offline: embed through the page (a PNG is downloaded), then detect that PNG, and show the verdict
  await page.setOfflineMode(true);
  ui.offline_fetch_fails = await page.evaluate(() => fetch('./release/manifest.json', {cache: 'no-store'}).then(() => false, () => true));
  await page.evaluate(() => { document.getElementById('error').textContent = ''; });
  await setMessage('#embed-message', job.message);
  const before = downloaded().length;
  await page.click('#embed');
  await page.waitForFunction(() => /read back/.test(document.getElementById('embed-result').textContent) ||
    document.getElementById('error').textContent);
  ui.embed_result = await text('#embed-result');
  ui.embed_error = await text('#error');
  const t0 = Date.now();
  while (downloaded().length === before && Date.now() - t0 < 20_000) await new Promise((r) => setTimeout(r, 100));
  const got = downloaded();
  ui.downloaded = got.length - before;
  if (got.length) {
    const file = path.join(downloads, got[0]);
    ui.downloaded_file = path.relative(path.dirname(out), file);
    await choose(file);
    await setMessage('#detect-message', job.message);
    await page.select('#fpr', '1e-4');
    await page.click('#detect');
    await page.waitForFunction(() => !document.getElementById('detect-result').hidden || document.getElementById('error').textContent);
    const shot = path.join(path.dirname(out), 'verdict.png');
    await page.screenshot({path: shot, fullPage: true});
    ui.screenshot = path.relative(path.dirname(out), shot);
    ui.detect = {bits: await text('#bits'), matching: await text('#matching'), pvalue: await text('#pvalue'),
      verdict: await text('#verdict'), verdict_class: await page.$eval('#verdict', (el) => el.className),
      payload: await text('#payload'), error: await text('#error'), visible: await visible('#detect-result')};
  }
  await page.setOfflineMode(false);
  ui.status = await text('#status');
  ui.variants_table = await page.$$eval('#variants tbody tr', (rows) => rows.map((r) => Array.from(r.cells, (c) => c.textContent)));
  ui.page_errors = errors;
  await page.close();
  return ui;
}
