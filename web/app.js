// The page: choose a card and variant from the release, load them (with progress), then embed or detect on an
// image the user chooses or drops. All the watermark work is in videoseal_tflite.js; this file is the DOM.
import * as vt from './videoseal_tflite.js';

window.videosealTflite = vt; // a test drives the module through the page

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const release = params.get('release') ?? new URL('./release/', location.href).href;

let image = null; // {name, imageData}
let busy = Promise.resolve(); // model work runs one call at a time (load, probe, embed, detect)
let ready = false;

function serial(fn) {
  const run = busy.then(fn, fn);
  busy = run.catch(() => {});
  return run;
}

function showError(message) {
  $('error').textContent = message ? `Error: ${message}` : '';
}

function errorText(err) {
  return err instanceof vt.UserError ? err.message : String(err?.message ?? err).split('\n')[0];
}

function setStatus(text, fraction = null) {
  $('status').textContent = text;
  const bar = $('progress');
  if (fraction === null) bar.removeAttribute('value');
  else bar.value = fraction;
  document.body.dataset.state = ready ? 'ready' : 'loading';
}

const mb = (bytes) => (bytes / 1e6).toFixed(1);

// ----------------------------------------------------------------------------------------------------- release

let releaseInfo = null;
let report = null;

function reportRecord(part, variant) {
  return report?.records?.find((r) => r.part === part && r.variant === variant) ?? null;
}

function fillVariants(card, chosen) {
  const variants = Object.keys(releaseInfo.cards[card] ?? {});
  const order = ['fp32', 'fp16', 'weight_only_int8', 'dynamic_int8', 'int8'];
  variants.sort((a, b) => (order.indexOf(a) + 99 * (order.indexOf(a) < 0)) - (order.indexOf(b) + 99 * (order.indexOf(b) < 0)));
  $('variant').replaceChildren(...variants.map((v) => new Option(v, v, false, v === chosen)));
  const rows = variants.map((v) => {
    const files = releaseInfo.cards[card][v];
    const emb = reportRecord('embedder', v), det = reportRecord('detector', v);
    const size = [files.embedder?.bytes, files.detector?.bytes].map((b) => (b ? mb(b) : '?')).join(' + ');
    const acc = emb?.bit_accuracy ?? det?.bit_accuracy;
    const ms = [emb, det].map((r) => (r?.latency_ms_median ? r.latency_ms_median.toFixed(1) : '?')).join(' / ');
    const tr = document.createElement('tr');
    tr.dataset.variant = v;
    for (const text of [v, size, acc === undefined ? (report ? '?' : 'no report') : acc.toFixed(4),
      emb?.psnr_db ? emb.psnr_db.toFixed(1) : '?', ms, 'not checked yet']) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  });
  $('variants').tBodies[0].replaceChildren(...rows);
  $('report-note').textContent = report ? '' :
    `no ${card}/report.json in this release (videoseal-tflite validate writes it): sizes from the manifest only`;
}

async function readRelease() {
  setStatus('reading the release…');
  releaseInfo = await vt.readRelease(release);
  const cards = Object.keys(releaseInfo.cards);
  if (!cards.length) throw new Error(`no card in ${release}manifest.json`);
  const card = cards.includes(params.get('card')) ? params.get('card') : releaseInfo.defaultCard;
  $('card').replaceChildren(...cards.map((c) => new Option(c, c, false, c === card)));
  await chooseCard(card, params.get('variant'));
}

async function chooseCard(card, variant = null) {
  report = await vt.readReport(release, card);
  const variants = Object.keys(releaseInfo.cards[card]);
  fillVariants(card, variants.includes(variant) ? variant : variants.includes('fp32') ? 'fp32' : variants[0]);
}

function markProbe(results) {
  for (const tr of $('variants').tBodies[0].rows) {
    const result = results[tr.dataset.variant];
    const cell = tr.cells[5];
    if (!result) continue;
    cell.textContent = result.loads ? 'loads' : `does not load: ${result.error}`;
    cell.className = result.loads ? 'ok' : 'bad';
  }
  const failed = Object.entries(results).filter(([, r]) => !r.loads);
  $('variants-details').open ||= failed.length > 0;
  document.body.dataset.probe = JSON.stringify(results);
}

// ------------------------------------------------------------------------------------------------------ models

async function loadModels() {
  ready = false;
  $('embed').disabled = $('detect').disabled = true;
  const card = $('card').value, variant = $('variant').value, threads = Number($('threads').value);
  const info = await serial(() => vt.load({release, card, variant, threads, onProgress: ({stage, part, received, total}) => {
    if (stage === 'download') {
      setStatus(`downloading the ${part}: ${mb(received)} / ${total ? mb(total) : '?'} MB`, total ? received / total : null);
    } else if (stage === 'compile') setStatus(`compiling the ${part}…`, null);
  }}));
  ready = true;
  setStatus(`ready: ${info.card} ${info.variant}, ${info.threads} thread(s)`, 1);
  $('model-info').textContent = `${info.nbits} bits, ${info.size} px processing size, scaling_w ${info.scalingW}, ` +
    `attenuation ${info.meta.attenuation ?? 'none'}`;
  $('payload-note').textContent = info.payload
    ? `This card declares a payload code (BCH, m = ${info.payload.m}, t = ${info.payload.t}); this page does not ` +
      `encode or decode it: type the ${info.nbits} raw bits (data and parity), as videoseal-tflite embed --message.`
    : `This card carries ${info.nbits} raw bits (it defines no payload): type ${info.nbits} digits 0/1.`;
  $('embed-message').placeholder = $('detect-message').placeholder = `${info.nbits} bits, e.g. ${'01'.repeat(info.nbits / 2)}`;
  $('embed').disabled = $('detect').disabled = false;
  document.body.dataset.state = 'ready';
  serial(() => vt.probeVariants({release, card})).then(markProbe, (err) => showError(errorText(err)));
}

// ------------------------------------------------------------------------------------------------------- image

async function decode(file) {
  const head = new Uint8Array(await file.slice(0, 256 * 1024).arrayBuffer());
  const sniffed = vt.imageSize(head);
  if (!sniffed && !/^image\//.test(file.type)) {
    throw new vt.UserError(`${file.name} is not an image (PNG, JPEG, WebP, GIF or BMP)`);
  }
  if (sniffed?.width && sniffed?.height) vt.checkSize(sniffed.width, sniffed.height); // before decoding it
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, {colorSpaceConversion: 'none', premultiplyAlpha: 'none', imageOrientation: 'from-image'});
  } catch {
    throw new vt.UserError(`${file.name} is not an image this browser can decode`);
  }
  try {
    vt.checkSize(bitmap.width, bitmap.height);
    const canvas = $('preview');
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    const ctx = canvas.getContext('2d', {willReadFrequently: true});
    ctx.drawImage(bitmap, 0, 0);
    return ctx.getImageData(0, 0, bitmap.width, bitmap.height);
  } finally {
    bitmap.close();
  }
}

async function chooseFile(file) {
  showError('');
  $('embed-result').textContent = '';
  $('detect-result').hidden = true;
  $('download').hidden = true;
  image = null;
  $('preview').hidden = true;
  $('image-info').textContent = `reading ${file.name}…`;
  try {
    const imageData = await decode(file);
    image = {name: file.name, imageData};
    $('preview').hidden = false;
    $('image-info').textContent = `${file.name}: ${imageData.width}x${imageData.height}`;
  } catch (err) {
    $('image-info').textContent = '';
    showError(errorText(err));
  }
}

// ------------------------------------------------------------------------------------------------ embed, detect

function pngBlob(imageData) {
  const canvas = document.createElement('canvas');
  canvas.width = imageData.width;
  canvas.height = imageData.height;
  canvas.getContext('2d').putImageData(imageData, 0, 0);
  return new Promise((done, fail) => canvas.toBlob((b) => (b ? done(b) : fail(new Error('PNG encoding failed'))), 'image/png'));
}

function download(blob, name) {
  const link = $('download');
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.hidden = false;
  link.click();
}

async function onEmbed() {
  showError('');
  $('embed-result').textContent = '';
  try {
    if (!image) throw new vt.UserError('choose an image first');
    const info = vt.info();
    const message = vt.parseMessage($('embed-message').value, info.nbits);
    $('embed-result').textContent = 'embedding…';
    const t0 = performance.now();
    const marked = await serial(() => vt.embed(image.imageData, message));
    const ms = performance.now() - t0;
    const back = await serial(() => vt.detect(marked, message, {fpr: Number($('fpr').value)}));
    const blob = await pngBlob(marked);
    download(blob, image.name.replace(/\.[^.]*$/, '') + '_watermarked.png');
    $('embed-result').textContent = `watermarked in ${ms.toFixed(0)} ms; read back as is: ${back.matching}/${info.nbits} ` +
      `bits match (PNG, ${mb(blob.size)} MB, downloaded)`;
  } catch (err) {
    $('embed-result').textContent = '';
    showError(errorText(err));
  }
}

async function onDetect() {
  showError('');
  $('detect-result').hidden = true;
  try {
    if (!image) throw new vt.UserError('choose an image first');
    const text = $('detect-message').value.trim();
    const message = text ? vt.parseMessage(text, vt.info().nbits) : null;
    const t0 = performance.now();
    const result = await serial(() => vt.detect(image.imageData, message, {fpr: Number($('fpr').value)}));
    $('bits').textContent = result.bits;
    $('matching').textContent = result.matching === null ? '(give the expected message)' : `${result.matching}/${result.bits.length}`;
    $('pvalue').textContent = result.pValue === null ? '-' : vt.formatG(result.pValue);
    $('verdict').textContent = result.verdict ? result.verdict.sentence : 'no verdict without an expected message';
    $('verdict').className = !result.verdict ? '' : result.watermarked === null ? 'undecided'
      : result.watermarked ? 'watermarked' : 'not-watermarked';
    $('payload').textContent = vt.info().payload ? 'not decoded in the browser (read the raw bits above)'
      : 'none (this card carries raw bits)';
    $('detect-ms').textContent = `${(performance.now() - t0).toFixed(0)} ms`;
    $('detect-result').hidden = false;
  } catch (err) {
    showError(errorText(err));
  }
}

function randomMessage() {
  const nbits = vt.info()?.nbits ?? 16;
  const bytes = crypto.getRandomValues(new Uint8Array(nbits));
  $('embed-message').value = Array.from(bytes, (b) => b & 1).join('');
  $('detect-message').value = $('embed-message').value;
}

// -------------------------------------------------------------------------------------------------------- wire

$('file').addEventListener('change', (e) => e.target.files[0] && chooseFile(e.target.files[0]));
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  const file = e.dataTransfer.files[0];
  if (file) chooseFile(file);
});
$('embed').addEventListener('click', onEmbed);
$('detect').addEventListener('click', onDetect);
$('random').addEventListener('click', randomMessage);
$('reload').addEventListener('click', () => loadModels().catch((err) => { setStatus('not loaded', 0); showError(errorText(err)); }));
$('card').addEventListener('change', () => chooseCard($('card').value).catch((err) => showError(errorText(err))));

if (!crossOriginIsolated) {
  $('threads').options[1].disabled = true; // no SharedArrayBuffer without COOP/COEP: the single-thread wasm only
}
$('threads').value = params.get('threads') ?? (crossOriginIsolated ? '2' : '1');

window.videosealReady = readRelease()
  .then(loadModels)
  .then(() => busy)
  .catch((err) => {
    setStatus('not loaded', 0);
    showError(errorText(err));
    throw err;
  });
