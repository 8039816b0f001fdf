// Shared by the browser checks (parity.mjs, bench.mjs): the static server, headless Chromium (Debian's
// /usr/bin/chromium driven by puppeteer-core: no browser download), and helpers that run in the page.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {spawn} from 'node:child_process';
import puppeteer from 'puppeteer-core';
import {startServer} from '../serve.mjs';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

// the machine's network is closed: nothing in the browser may reach out (component updates, sync, QUIC probes)
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'];

/** Command-line options: --name value (repeatable names collect into arrays via `many`). */
export function args(argv = process.argv.slice(2)) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    if (!argv[i].startsWith('--')) continue;
    const key = argv[i].slice(2);
    const value = argv[i + 1] !== undefined && !argv[i + 1].startsWith('--') ? argv[++i] : true;
    out[key] = value;
  }
  return out;
}

/** The server on a free port and a fresh headless Chromium; close() ends both and removes the profile. */
export async function openBrowser({release}) {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: install Debian's package (apt-get install -y chromium; make setup-web)`);
  }
  const {server, url} = await startServer({release, port: 0});
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'vst-chromium-'));
  const browser = await puppeteer.launch({executablePath: CHROMIUM, headless: true, userDataDir: profile,
    args: FLAGS, protocolTimeout: 300_000});
  return {
    url, browser, version: await browser.version(),
    async close() {
      await browser.close().catch(() => {});
      server.close();
      fs.rmSync(profile, {recursive: true, force: true});
    },
  };
}

/** A page of the app, loaded (models compiled, variants probed): `query` goes into the page's URL. */
export async function openApp(session, query = {}, {downloads = null} = {}) {
  const page = await session.browser.newPage();
  page.setDefaultTimeout(240_000);
  const errors = [];
  page.on('pageerror', (err) => errors.push(err.message));
  if (downloads) {
    const cdp = await page.createCDPSession();
    await cdp.send('Browser.setDownloadBehavior', {behavior: 'allow', downloadPath: downloads});
  }
  await page.evaluateOnNewDocument(() => { // every text the status line shows while the page loads
    window.__statusLog = [];
    new MutationObserver(() => {
      const text = document.getElementById('status')?.textContent;
      if (text && window.__statusLog.at(-1) !== text) window.__statusLog.push(text);
    }).observe(document, {childList: true, characterData: true, subtree: true});
  });
  const t0 = Date.now();
  await page.goto(`${session.url}?${new URLSearchParams(query)}`);
  await page.evaluate(() => window.videosealReady);
  return {page, errors, loadMs: Date.now() - t0};
}

/** In-page helpers: base64 PNG/JPEG <-> ImageData (no colour conversion), pixel comparison. */
export async function installHelpers(page) {
  await page.evaluate(() => {
    const fromB64 = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const toB64 = (bytes) => {
      let s = '';
      for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
      return btoa(s);
    };
    window.__t = {
      async decode(b64) {
        const bitmap = await createImageBitmap(new Blob([fromB64(b64)]),
          {colorSpaceConversion: 'none', premultiplyAlpha: 'none', imageOrientation: 'from-image'});
        const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
        const ctx = canvas.getContext('2d', {willReadFrequently: true});
        ctx.drawImage(bitmap, 0, 0);
        bitmap.close();
        return ctx.getImageData(0, 0, canvas.width, canvas.height);
      },
      async encode(imageData) {
        const canvas = new OffscreenCanvas(imageData.width, imageData.height);
        canvas.getContext('2d').putImageData(imageData, 0, 0);
        const blob = await canvas.convertToBlob({type: 'image/png'});
        return toB64(new Uint8Array(await blob.arrayBuffer()));
      },
      /** RGB of two ImageData: PSNR (8-bit peak), share of values within one level, largest difference. */
      compare(a, b) {
        if (a.width !== b.width || a.height !== b.height) return {error: 'sizes differ'};
        let se = 0, within = 0, exact = 0, max = 0, count = 0;
        for (let i = 0; i < a.data.length; i++) {
          if (i % 4 === 3) continue;
          const d = Math.abs(a.data[i] - b.data[i]);
          se += d * d;
          within += d <= 1;
          exact += d === 0;
          max = Math.max(max, d);
          count++;
        }
        const mse = se / count;
        return {psnr: mse === 0 ? Infinity : 10 * Math.log10(255 * 255 / mse), within_one_level: within / count,
          exact: exact / count, max_level_diff: max};
      },
      /** A deterministic test picture of any size (smooth gradients and edges), for timings. */
      synthetic(width, height) {
        const data = new Uint8ClampedArray(width * height * 4);
        for (let y = 0; y < height; y++) {
          for (let x = 0; x < width; x++) {
            const i = 4 * (y * width + x);
            data[i] = (x * 255) / width;
            data[i + 1] = (y * 255) / height;
            data[i + 2] = ((x >> 5) + (y >> 5)) % 2 ? 200 : 60;
            data[i + 3] = 255;
          }
        }
        return new ImageData(data, width, height);
      },
    };
  });
}

/** Run a command; resolves {code, stdout, stderr}. */
export function run(cmd, argv, {env = process.env} = {}) {
  return new Promise((done, fail) => {
    const child = spawn(cmd, argv, {env, stdio: ['ignore', 'pipe', 'pipe']});
    let stdout = '', stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('error', fail);
    child.on('close', (code) => done({code, stdout, stderr}));
  });
}

/** Run `fn` over `items` with at most `limit` at a time, keeping order. */
export async function pool(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({length: Math.min(limit, items.length)}, worker));
  return results;
}

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
