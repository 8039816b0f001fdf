#!/usr/bin/env node
// A small static server for the web page: web/ at /, a release folder (manifest.json + <card>/*.tflite) at /release/.
// Bound to 127.0.0.1 only. Sends Cross-Origin-Opener-Policy / Cross-Origin-Embedder-Policy so the page is
// cross-origin isolated (SharedArrayBuffer, hence LiteRT.js's threaded wasm), and the MIME types wasm needs.
//
//   node web/serve.mjs [--release DIR] [--port N]      (env: RELEASE, PORT; default artifacts/, 8765; 0: any free)
// Prints one line, `serving http://127.0.0.1:PORT/ release DIR`, once it listens.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import {fileURLToPath} from 'node:url';

const WEB = path.dirname(fileURLToPath(import.meta.url));

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
  '.wasm': 'application/wasm',
  '.tflite': 'application/octet-stream',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
  '.map': 'application/json; charset=utf-8',
};

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : fallback;
}

/** The file under `root` that `rel` names, or null when it would leave `root`. */
function inside(root, rel) {
  const full = path.resolve(root, '.' + path.posix.normalize('/' + rel));
  return full === root || full.startsWith(root + path.sep) ? full : null;
}

/** URL path -> file on disk: /release/... from the release folder; the page's own files; LiteRT.js's package. */
function resolve(urlPath, release) {
  const rel = decodeURIComponent(urlPath);
  if (rel === '/release' || rel.startsWith('/release/')) return inside(release, rel.slice('/release'.length));
  if (rel.startsWith('/node_modules/') && !rel.startsWith('/node_modules/@litertjs/')) return null;
  if (rel.startsWith('/test/') || rel === '/package-lock.json') return null;
  return inside(WEB, rel === '/' ? '/index.html' : rel);
}

export function startServer({release, port = 8765, host = '127.0.0.1'} = {}) {
  const root = path.resolve(release);
  const server = http.createServer((req, res) => {
    const headers = {
      'Cross-Origin-Opener-Policy': 'same-origin',
      'Cross-Origin-Embedder-Policy': 'require-corp',
      'Cross-Origin-Resource-Policy': 'same-origin',
      'X-Content-Type-Options': 'nosniff',
      'Cache-Control': 'no-cache',
    };
    let file = null;
    try {
      file = resolve(new URL(req.url, 'http://x').pathname, root);
    } catch {
      file = null;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, {...headers, 'Content-Type': 'text/plain'}).end('method not allowed\n');
      return;
    }
    let stat = null;
    try {
      stat = file && fs.statSync(file);
    } catch {
      stat = null;
    }
    if (stat?.isDirectory()) {
      file = path.join(file, 'index.html');
      stat = fs.existsSync(file) ? fs.statSync(file) : null;
    }
    if (!stat?.isFile()) {
      res.writeHead(404, {...headers, 'Content-Type': 'text/plain'}).end('not found\n');
      return;
    }
    const type = MIME[path.extname(file).toLowerCase()] ?? 'application/octet-stream';
    res.writeHead(200, {...headers, 'Content-Type': type, 'Content-Length': stat.size});
    if (req.method === 'HEAD') res.end();
    else fs.createReadStream(file).pipe(res);
  });
  return new Promise((done, fail) => {
    server.once('error', fail);
    server.listen(port, host, () => done({server, url: `http://${host}:${server.address().port}/`, release: root}));
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const release = option('release', process.env.RELEASE || path.join(WEB, '..', 'artifacts'));
  const port = Number(option('port', process.env.PORT || 8765));
  if (!fs.existsSync(path.join(release, 'manifest.json'))) {
    console.error(`serve: no manifest.json in ${path.resolve(release)}; run \`make convert\` (or give --release DIR)`);
    process.exit(2);
  }
  if (!fs.existsSync(path.join(WEB, 'node_modules', '@litertjs', 'core', 'wasm'))) {
    console.error('serve: web/node_modules/@litertjs/core is missing; run `make setup-web` (npm ci in web/)');
    process.exit(2);
  }
  startServer({release, port}).then(({url, release: root}) => {
    console.log(`serving ${url} release ${root}`);
  }, (err) => {
    console.error(`serve: cannot listen on 127.0.0.1:${port}: ${err.message}`);
    process.exit(1);
  });
}
