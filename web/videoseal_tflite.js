// videoseal-tflite in the browser: the steps of the Python runtime (videoseal_tflite/runtime/image.py), in JS, over
// the same .tflite files, run by LiteRT.js (@litertjs/core, wasm/XNNPACK).
//
// embed(image HxW, message):
//   1-2. x_s = the 8-bit image resized to S x S in [0,1]: Pillow BILINEAR (antialiased) on the levels 0..255,
//        horizontal pass, then / 255, then the vertical pass (bands.downscale, within 4 float32 ulps)  downscaleRgba
//   3. w = embedder.tflite(x_s, message)   tanh output, C = 3 (RGB) or 1 (Y)        runEmbedder
//   then, for cards that add the watermark to the image as is (no JND, scaling_i 1: bands.add_upscaled):
//   4. y = clip(image + round(resize(255 * scaling_w * w, H x W)), 0, 255) in 8-bit levels        addLevels
//   and for the others (the float path):
//   4. w = resize(w, H x W)          bilinear, antialiased                          resizeBilinear
//   5. w = JND(x) * w                when the card has attenuation                  jndHeatmaps
//   6. y = clamp(scaling_i * x + scaling_w * w, 0, 1), rounded to 8 bits          blend, toImageData
// detect(image): x_s = downscaleRgba(image); bit_logits = detector.tflite(x_s); bits = bit_logits > 0, read as
// is (the Python CLI's `detect --no-resync`: this page does not look for the tile of a cropped image).
//
// Every float step is float32 like numpy's: Math.fround after each operation (a float32 op computed in double and
// rounded once is the correctly rounded float32 result), so the planes match the Python runtime's bit for bit
// except where the two LiteRT builds differ (about 1e-6 on the fp32 models).
//
// The numeric part (resize, JND, blend, verdict, metadata) needs no DOM and no LiteRT: Node can import this file.

const f32 = Math.fround;

export const MIN_SIDE = 32; // as the Python runtime
export const MAX_PIXELS = 25_000_000; // about 1.2 GB of float planes at the peak; a larger image gets a message
export const DEFAULT_FPR = 1e-6;
export const WASM_PATH = new URL('./node_modules/@litertjs/core/wasm/', import.meta.url).href;

export class UserError extends Error {} // bad input: the page shows the message as is

// ---------------------------------------------------------------------------------------------- image <-> planes

/** ImageData (RGBA, 8 bit) -> {planes: Float32Array [3,H,W] in [0,1], alpha: Uint8ClampedArray | null}. */
const LEVELS = Float32Array.from({length: 256}, (_, v) => v / 255); // numpy's float32(v) / 255, rounded once

export function fromImageData(imageData) {
  const {width, height, data} = imageData;
  const n = width * height;
  const planes = new Float32Array(3 * n);
  let opaque = true;
  for (let i = 0; i < n; i++) {
    planes[i] = LEVELS[data[4 * i]];
    planes[n + i] = LEVELS[data[4 * i + 1]];
    planes[2 * n + i] = LEVELS[data[4 * i + 2]];
    if (data[4 * i + 3] !== 255) opaque = false;
  }
  let alpha = null;
  if (!opaque) {
    alpha = new Uint8ClampedArray(n);
    for (let i = 0; i < n; i++) alpha[i] = data[4 * i + 3];
  }
  return {planes, alpha};
}

/**
 * [3,H,W] in [0,1] -> RGBA bytes: clip(round(x * 255)) as the Python saver (image_io._color_mode); alpha kept.
 * A Uint8ClampedArray store clamps and rounds half to even, as numpy's np.round does.
 */
export function toRgba(planes, width, height, alpha = null) {
  const n = width * height;
  const out = new Uint8ClampedArray(4 * n);
  for (let c = 0; c < 3; c++) {
    const plane = planes.subarray(c * n, (c + 1) * n);
    for (let i = 0; i < n; i++) out[4 * i + c] = f32(plane[i] * 255);
  }
  if (alpha) for (let i = 0; i < n; i++) out[4 * i + 3] = alpha[i];
  else for (let i = 0; i < n; i++) out[4 * i + 3] = 255;
  return out;
}

// ------------------------------------------------------------------------------------- antialiased bilinear resize

// Pillow's resample (libImaging/Resample.c, precompute_coeffs + ImagingResample{Horizontal,Vertical}_32bpc for
// mode 'F'): triangle filter stretched by the scale when shrinking, weights in double and normalised, each output
// summed in double and stored as float32; horizontal pass first, then vertical. [in0, in1): the source box, which
// Pillow takes as C floats (float32), their difference too.
function coefficients(inSize, outSize, in0 = 0, in1 = inSize) {
  in0 = f32(in0);
  in1 = f32(in1);
  const scale = f32(in1 - in0) / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = 1.0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const kk = new Float64Array(outSize * ksize);
  const bounds = new Int32Array(outSize * 2);
  const ss = 1.0 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      const t = Math.abs((x + xmin - center + 0.5) * ss);
      const w = t < 1.0 ? 1.0 - t : 0.0;
      kk[xx * ksize + x] = w;
      ww += w;
    }
    if (ww !== 0.0) for (let x = 0; x < xmax; x++) kk[xx * ksize + x] /= ww;
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  return {kk, bounds, ksize};
}

function resamplePlaneHorizontal(src, inW, rows, outW, co, dst) {
  const {kk, bounds, ksize} = co;
  for (let y = 0; y < rows; y++) {
    const row = y * inW;
    for (let xx = 0; xx < outW; xx++) {
      const xmin = bounds[2 * xx], xmax = bounds[2 * xx + 1], k = xx * ksize;
      let s = 0.0;
      for (let x = 0; x < xmax; x++) s += src[row + xmin + x] * kk[k + x];
      dst[y * outW + xx] = s; // Float32Array: rounded to float32 as Pillow's store
    }
  }
}

function resamplePlaneVertical(src, width, outH, co, dst) {
  const {kk, bounds, ksize} = co;
  const acc = new Float64Array(width); // a row of double sums, taken in Pillow's order (tap by tap)
  for (let yy = 0; yy < outH; yy++) {
    const ymin = bounds[2 * yy], ymax = bounds[2 * yy + 1], k = yy * ksize;
    acc.fill(0);
    for (let y = 0; y < ymax; y++) {
      const w = kk[k + y], row = (ymin + y) * width;
      for (let x = 0; x < width; x++) acc[x] += src[row + x] * w;
    }
    dst.set(acc, yy * width); // rounded to float32 as Pillow's store
  }
}

/** [C,H,W] Float32Array -> [C,outH,outW]: Pillow BILINEAR on float planes (the Python runtime's resize_bilinear). */
export function resizeBilinear(planes, channels, height, width, outH, outW) {
  if (height === outH && width === outW) return Float32Array.from(planes);
  const needH = width !== outW, needV = height !== outH;
  const coH = needH ? coefficients(width, outW) : null;
  const coV = needV ? coefficients(height, outH) : null;
  const out = new Float32Array(channels * outH * outW);
  const tmp = needH && needV ? new Float32Array(height * outW) : null;
  for (let c = 0; c < channels; c++) {
    const src = planes.subarray(c * height * width, (c + 1) * height * width);
    const dst = out.subarray(c * outH * outW, (c + 1) * outH * outW);
    if (needH && needV) {
      resamplePlaneHorizontal(src, width, height, outW, coH, tmp);
      resamplePlaneVertical(tmp, outW, outH, coV, dst);
    } else if (needH) {
      resamplePlaneHorizontal(src, width, height, outW, coH, dst);
    } else {
      resamplePlaneVertical(src, width, outH, coV, dst);
    }
  }
  return out;
}

const INV255 = f32(1 / 255); // numpy's np.float32(1 / 255)

/**
 * Steps 1-2 from 8-bit pixels, Pillow's passes (bands.downscale multiplies the same coefficients in float32: within
 * four float32 ulps of this): RGBA bytes [H,W,4] ->
 * [3,outH,outW] Float32Array in [0,1]. The horizontal pass runs on the levels 0..255 and is scaled by 1/255 after
 * it; with no horizontal pass, the levels are scaled first (v / 255). Either way, then the vertical pass.
 */
export function downscaleRgba(data, height, width, outH, outW) {
  const n = height * width;
  let narrow;
  if (width === outW) {
    narrow = new Float32Array(3 * n);
    for (let c = 0; c < 3; c++) for (let i = 0; i < n; i++) narrow[c * n + i] = LEVELS[data[4 * i + c]];
  } else {
    const levels = new Float32Array(3 * n);
    for (let c = 0; c < 3; c++) for (let i = 0; i < n; i++) levels[c * n + i] = data[4 * i + c];
    narrow = resizeBilinear(levels, 3, height, width, height, outW);
    for (let i = 0; i < narrow.length; i++) narrow[i] = f32(narrow[i] * INV255);
  }
  return height === outH ? narrow : resizeBilinear(narrow, 3, height, outW, outH, outW);
}

const BAND_ROWS = 256; // bands.BAND_ROWS: add_upscaled resizes each band of rows from its own box
const OFFSET = 128; // the delta is held offset by it in an 8-bit plane (Pillow's float-to-8-bit conversion)
export const MAX_DELTA = OFFSET - 1; // bands.MAX_DELTA: the largest |delta| in levels that form holds

/** Does this card add its watermark to the image as is (no JND, scaling_i 1), i.e. in 8-bit levels? */
export function addsLevels(scalingI, attenuation) {
  return !attenuation && scalingI === 1;
}

/**
 * Step 4 of the cards that add in 8-bit levels (bands.add_upscaled): RGBA bytes + the small [C,S,S] watermark ->
 * new RGBA bytes, clip(pixel + round(resize(255 * scaling_w * w, H x W)), 0, 255) with Pillow's arithmetic: the
 * delta + 128.5 resized in float32, truncated to 8 bits (so rounded half up), added with offset -128 and clipped.
 * Alpha is kept. Returns null when |delta| exceeds MAX_DELTA (the float path then applies, as in Python).
 */
export function addLevels(data, height, width, watermark, channels, size, scalingW) {
  const k = f32(255 * scalingW);
  const shifted = new Float32Array(watermark.length);
  for (let i = 0; i < watermark.length; i++) {
    const d = f32(k * watermark[i]);
    if (Math.abs(d) > MAX_DELTA) return null;
    shifted[i] = f32(d + (OFFSET + 0.5));
  }
  // the horizontal pass once, then each band of BAND_ROWS rows resized from its box of the source, as Python does
  // (Pillow's resize with `box`: its coefficients start at the box, so they can differ from the whole resize's in
  // the last bit)
  const wide = resizeBilinear(shifted, channels, size, size, size, width);
  const out = new Uint8ClampedArray(data); // alpha as is
  for (let start = 0; start < height; start += BAND_ROWS) {
    const stop = Math.min(start + BAND_ROWS, height), rows = stop - start;
    const co = coefficients(size, rows, (start * size) / height, (stop * size) / height);
    const band = new Float32Array(rows * width);
    for (let c = 0; c < channels; c++) {
      resamplePlaneVertical(wide.subarray(c * size * width, (c + 1) * size * width), width, rows, co, band);
      for (let cc = c; cc < 3; cc += channels) {
        for (let i = 0; i < rows * width; i++) {
          const v = band[i], p = 4 * (start * width + i) + cc;
          const level = v <= 0 ? 0 : v >= 255 ? 255 : Math.trunc(v);
          out[p] = data[p] + level - OFFSET; // a Uint8ClampedArray store clips to 0..255
        }
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------- JND attenuation

const KX = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]];
const KY = [[1, 2, 1], [0, 0, 0], [-1, -2, -1]];
const KLUM = [[1, 1, 1, 1, 1], [1, 2, 2, 2, 1], [1, 2, 0, 2, 1], [1, 2, 2, 2, 1], [1, 1, 1, 1, 1]];
export const ATTENUATION = {jnd_1_1: [1, 1], jnd_3_3: [3, 3], jnd_1_3: [1, 3], jnd_3_1: [3, 1]};

/** 2-D cross-correlation with zero padding, accumulated in float32 in the Python runtime's order (_conv_same). */
function convSame(plane, height, width, kernel) {
  const k = kernel.length, pad = k >> 1;
  const out = new Float32Array(height * width);
  for (let dy = 0; dy < k; dy++) {
    for (let dx = 0; dx < k; dx++) {
      const w = kernel[dy][dx];
      if (!w) continue;
      for (let y = 0; y < height; y++) {
        const sy = y + dy - pad;
        if (sy < 0 || sy >= height) continue; // zero padding: += w * 0 leaves the float32 sum as it is
        for (let x = 0; x < width; x++) {
          const sx = x + dx - pad;
          if (sx < 0 || sx >= width) continue;
          out[y * width + x] = f32(out[y * width + x] + f32(w * plane[sy * width + sx]));
        }
      }
    }
  }
  return out;
}

const C0299 = f32(0.299), C0587 = f32(0.587), C0114 = f32(0.114), EPS = f32(1e-5);
const C0117 = f32(0.117), C03 = f32(0.3), P24 = f32(2.4);

/** videoseal's JND.heatmaps (the Python runtime's jnd_heatmaps): [3,H,W] in [0,1] -> [outC,H,W] Float32Array. */
export function jndHeatmaps(planes, height, width, inChannels = 1, outChannels = 1) {
  const n = height * width;
  const x = new Float32Array(3 * n);
  for (let i = 0; i < 3 * n; i++) x[i] = f32(255 * planes[i]);
  let inputs;
  if (inChannels === 1) {
    const y = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      y[i] = f32(f32(f32(C0299 * x[i]) + f32(C0587 * x[n + i])) + f32(C0114 * x[2 * n + i]));
    }
    inputs = [y];
  } else {
    inputs = [x.subarray(0, n), x.subarray(n, 2 * n), x.subarray(2 * n)];
  }
  const maps = inputs.map((plane) => {
    const lum = convSame(plane, height, width, KLUM);
    const gx = convSame(plane, height, width, KX);
    const gy = convSame(plane, height, width, KY);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const la0 = f32(lum[i] / 32);
      const la = la0 <= 127
        ? f32(17 * f32(1 - f32(Math.sqrt(f32(f32(Math.max(la0, 0) / 127) + EPS)))))
        : f32(f32(f32(3 / 128) * f32(la0 - 127)) + 3);
      let cm = f32(Math.sqrt(f32(f32(gx[i] * gx[i]) + f32(gy[i] * gy[i]))));
      cm = f32(C0117 * f32(f32(16 * f32(Math.pow(cm, P24))) / f32(f32(cm * cm) + 676)));
      out[i] = Math.max(f32(f32(la + cm) - f32(C03 * Math.min(la, cm))), 0);
    }
    return out;
  });
  let hmaps;
  if (outChannels === 3 && inChannels === 1) hmaps = [maps[0], maps[0], maps[0]];
  else if (outChannels === 1 && inChannels === 3) {
    const sum = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      sum[i] = f32(f32(f32(maps[0][i] / 3) + f32(maps[1][i] / 3)) + f32(maps[2][i] / 3));
    }
    hmaps = [sum];
  } else hmaps = maps;
  const result = new Float32Array(hmaps.length * n);
  hmaps.forEach((m, c) => {
    for (let i = 0; i < n; i++) result[c * n + i] = f32(m[i] / 255);
  });
  return result;
}

/** Steps 5-6 at the image's size: JND attenuation (when given), additive blend, clamp; [3,H,W] Float32Array. */
export function blend(image, height, width, watermark, wChannels, scalingW, scalingI, attenuation = null) {
  const n = height * width;
  let w = watermark, wc = wChannels;
  if (attenuation) {
    const [inC, outC] = attenuation;
    const jnd = jndHeatmaps(image, height, width, inC, outC);
    wc = Math.max(outC, wChannels);
    w = new Float32Array(wc * n);
    for (let c = 0; c < wc; c++) {
      const jc = (c % outC) * n, ww = (c % wChannels) * n;
      for (let i = 0; i < n; i++) w[c * n + i] = f32(jnd[jc + i] * watermark[ww + i]);
    }
  }
  const sw = f32(scalingW), si = f32(scalingI);
  const out = new Float32Array(3 * n);
  for (let c = 0; c < 3; c++) {
    const wOff = (c % wc) * n;
    for (let i = 0; i < n; i++) {
      const v = f32(f32(si * image[c * n + i]) + f32(sw * w[wOff + i]));
      out[c * n + i] = v < 0 ? 0 : v > 1 ? 1 : v;
    }
  }
  return out;
}

// ------------------------------------------------------------------------------------------------------ verdict

function comb(n, k) {
  let r = 1n;
  for (let i = 1n; i <= BigInt(k); i++) r = (r * (BigInt(n) - i + 1n)) / i;
  return r;
}

function ratio(num, den) {
  // num / den for big integers, as a double (both scaled down together so neither overflows)
  const shift = BigInt(Math.max(0, den.toString(2).length - 1000));
  return Number(num >> shift) / Number(den >> shift);
}

/** P(Binomial(n, 1/2) >= k), exact sum (verdict.pvalue). */
export function pvalue(k, n) {
  if (k <= 0) return 1.0;
  if (k > n) return 0.0;
  let tail = 0n;
  for (let i = k; i <= n; i++) tail += comb(n, i);
  return ratio(tail, 1n << BigInt(n));
}

/** The smallest k with pvalue(k, n) <= fpr, or null when even k = n is not enough (verdict.min_matching_bits). */
export function minMatchingBits(n, fpr) {
  if (!(fpr > 0 && fpr <= 1)) throw new UserError(`false-positive rate must be in (0, 1], got ${fpr}`);
  const total = 1n << BigInt(n);
  let tail = 0n;
  for (let k = n; k >= 0; k--) {
    tail += comb(n, k);
    if (ratio(tail, total) > fpr) return k < n ? k + 1 : null;
  }
  return 0;
}

/** Python's '%.{digits}g' (1.53e-05, 0.0312). */
export function formatG(x, digits = 3) {
  if (x === 0 || !Number.isFinite(x)) return String(x);
  const exp = Math.floor(Math.log10(Math.abs(Number(x.toPrecision(digits)))));
  if (exp < -4 || exp >= digits) return formatE(x, digits - 1).replace(/\.?0+e/, 'e');
  return String(Number(x.toPrecision(digits)));
}

/** Python's '%.{digits}e' (1e-06, 1.5e-05). */
export function formatE(x, digits = 0) {
  return x.toExponential(digits).replace(/e([+-])(\d)$/, 'e$10$2');
}

/** Recovered bits vs the expected message -> the verdict at `fpr` (verdict.decide, one reading). */
export function decide(bits, message, fpr = DEFAULT_FPR) {
  const n = bits.length;
  let matching = 0;
  for (let i = 0; i < n; i++) matching += Number(Boolean(bits[i]) === Boolean(message[i]));
  const threshold = minMatchingBits(n, fpr);
  const p = pvalue(matching, n);
  // undecidable is not "no" (verdict.to_json): null when n bits can never reach this FPR
  const watermarked = threshold === null ? null : p <= fpr;
  const best = 2 ** -n;
  let sentence;
  if (threshold === null) {
    sentence = `undecided at FPR ${formatE(fpr)}: a ${n}-bit message reaches at best FPR ` +
      `${formatG(best, 2)} (all bits matching); choose an FPR of ${formatG(best, 2)} or higher`;
  } else {
    const why = `${matching}/${n} bits match, ${threshold} needed`;
    sentence = watermarked
      ? `watermarked (p-value ${formatG(p)} <= FPR ${formatE(fpr)}: ${why})`
      : `not shown to be watermarked (p-value ${formatG(p)} > FPR ${formatE(fpr)}: ${why})`;
  }
  const reason = threshold === null ? `${n} bits cannot reach FPR ${formatE(fpr)}` : null;
  return {matching, nbits: n, pValue: p, fpr, thresholdBits: threshold, watermarked, sentence, reason};
}

/** '0101...' (spaces ignored) -> Float32Array of 0/1; UserError naming the problem (runtime.parse_message). */
export function parseMessage(text, nbits) {
  const clean = String(text ?? '').replace(/\s+/g, '');
  if (!clean) throw new UserError(`give a message of ${nbits} bits (0/1)`);
  const bad = [...new Set(clean.replace(/[01]/g, ''))].sort().join('');
  if (bad) throw new UserError(`message must be binary (0/1), found '${bad.slice(0, 10)}'`);
  if (nbits !== undefined && clean.length !== nbits) {
    throw new UserError(`message has ${clean.length} bits but the model takes ${nbits}`);
  }
  return Float32Array.from(clean, (c) => (c === '1' ? 1 : 0));
}

export const bitsToText = (bits) => Array.from(bits, (b) => (b ? '1' : '0')).join('');

// ------------------------------------------------------------------------------------------- image file headers

/**
 * {type, width, height} from the first bytes of a PNG, JPEG, GIF, BMP or WebP file (width/height null when the
 * header does not say within these bytes), or null when the bytes are none of these. Lets the page refuse a huge
 * image before the browser decodes it.
 */
export function imageSize(bytes) {
  const b = bytes, n = b.length;
  const be16 = (o) => (b[o] << 8) | b[o + 1];
  const be32 = (o) => ((b[o] << 24) >>> 0) + (b[o + 1] << 16) + (b[o + 2] << 8) + b[o + 3];
  const le16 = (o) => b[o] | (b[o + 1] << 8);
  const le32 = (o) => (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16)) + ((b[o + 3] << 24) >>> 0);
  if (n >= 24 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) {
    return {type: 'png', width: be32(16), height: be32(20)};
  }
  if (n >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) {
    let o = 2;
    while (o + 9 < n) {
      if (b[o] !== 0xff) return {type: 'jpeg', width: null, height: null};
      const marker = b[o + 1];
      if (marker === 0xff) { o += 1; continue; }
      if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
        return {type: 'jpeg', width: be16(o + 7), height: be16(o + 5)};
      }
      o += 2 + ((marker >= 0xd0 && marker <= 0xd9) || marker === 0x01 ? 0 : be16(o + 2));
    }
    return {type: 'jpeg', width: null, height: null};
  }
  if (n >= 10 && b[0] === 0x47 && b[1] === 0x49 && b[2] === 0x46) return {type: 'gif', width: le16(6), height: le16(8)};
  if (n >= 26 && b[0] === 0x42 && b[1] === 0x4d) {
    return {type: 'bmp', width: Math.abs(le32(18) | 0), height: Math.abs(le32(22) | 0)};
  }
  if (n >= 30 && String.fromCharCode(...b.subarray(0, 4)) === 'RIFF' &&
      String.fromCharCode(...b.subarray(8, 12)) === 'WEBP') {
    const chunk = String.fromCharCode(...b.subarray(12, 16));
    if (chunk === 'VP8X') return {type: 'webp', width: 1 + (le32(24) & 0xffffff), height: 1 + (le32(27) & 0xffffff)};
    if (chunk === 'VP8L') {
      const bits = le32(21);
      return {type: 'webp', width: 1 + (bits & 0x3fff), height: 1 + ((bits >> 14) & 0x3fff)};
    }
    if (chunk === 'VP8 ') return {type: 'webp', width: le16(26) & 0x3fff, height: le16(28) & 0x3fff};
    return {type: 'webp', width: null, height: null};
  }
  return null;
}

/** UserError when width x height is too small or too large for this page (the same checks as embed/detect). */
export function checkSize(width, height) {
  if (Math.min(width, height) < MIN_SIDE) {
    throw new UserError(`the image is ${width}x${height} pixels; at least ${MIN_SIDE}x${MIN_SIDE} is needed`);
  }
  if (width * height > MAX_PIXELS) {
    throw new UserError(`the image is ${width}x${height} (${(width * height / 1e6).toFixed(1)} MP); ` +
      `this page takes up to ${MAX_PIXELS / 1e6} MP`);
  }
}

// ------------------------------------------------------------------------------------ metadata inside the .tflite

/** The `videoseal_tflite` JSON record in a .tflite flatbuffer's metadata (tflite/metadata.py), or null. */
export function readTfliteMetadata(bytes) {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.byteLength < 8 || String.fromCharCode(...bytes.subarray(4, 8)) !== 'TFL3') {
    throw new Error('not a .tflite file (no TFL3 identifier)');
  }
  const u32 = (o) => dv.getUint32(o, true);
  const field = (table, id) => {
    const vtable = table - dv.getInt32(table, true);
    const slot = 4 + 2 * id;
    if (slot >= dv.getUint16(vtable, true)) return 0;
    const off = dv.getUint16(vtable + slot, true);
    return off ? table + off : 0;
  };
  const ref = (pos) => pos + u32(pos); // a uoffset field -> the table / vector / string it points to
  const vectorTable = (vec, i) => ref(vec + 4 + 4 * i);
  const text = (pos) => new TextDecoder().decode(bytes.subarray(pos + 4, pos + 4 + u32(pos)));
  const model = ref(0);
  const metaField = field(model, 6), buffersField = field(model, 4);
  if (!metaField || !buffersField) return null;
  const metadata = ref(metaField), buffers = ref(buffersField);
  for (let i = 0; i < u32(metadata); i++) {
    const entry = vectorTable(metadata, i);
    const nameField = field(entry, 0);
    if (!nameField || text(ref(nameField)) !== 'videoseal_tflite') continue;
    const bufferField = field(entry, 1);
    const buffer = vectorTable(buffers, bufferField ? u32(bufferField) : 0);
    const dataField = field(buffer, 0);
    let data;
    if (dataField) {
      const vec = ref(dataField);
      data = bytes.subarray(vec + 4, vec + 4 + u32(vec));
    } else { // stored past the flatbuffer (offset, size: uint64)
      const offField = field(buffer, 1), sizeField = field(buffer, 2);
      const offset = Number(dv.getBigUint64(offField, true)), size = Number(dv.getBigUint64(sizeField, true));
      data = bytes.subarray(offset, offset + size);
    }
    return JSON.parse(new TextDecoder().decode(data));
  }
  return null;
}

// -------------------------------------------------------------------------------------------- LiteRT.js models

let litert = null; // the imported @litertjs/core module
let wasmMode = null; // 'threads' | 'single': which wasm build is loaded (one per page at a time)
let state = null; // what load() set up: models, metadata, options

async function liteRt(threads) {
  litert ??= await import('@litertjs/core');
  const mode = threads > 1 ? 'threads' : 'single';
  if (wasmMode !== mode) {
    if (wasmMode) {
      state?.embedder?.delete();
      state?.detector?.delete();
      state = null;
      litert.unloadLiteRt();
    }
    if (mode === 'threads' && !globalThis.crossOriginIsolated) {
      throw new Error('threads need a cross-origin isolated page (COOP/COEP headers); serve with web/serve.mjs');
    }
    await litert.loadLiteRt(WASM_PATH, {threads: mode === 'threads'});
    wasmMode = mode;
  }
  return litert;
}

/** GET a URL as bytes, reporting progress (received, total) as it streams. */
export async function fetchBytes(url, onProgress = () => {}) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  const total = Number(response.headers.get('content-length')) || 0;
  if (!response.body) return new Uint8Array(await response.arrayBuffer());
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.byteLength;
    onProgress(received, total);
  }
  const bytes = new Uint8Array(received);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.byteLength;
  }
  return bytes;
}

/** The release folder's manifest: {cards: {card: {variant: {embedder, detector}}}, raw}. */
/** The card a reader shows first: the manifest's `default_card` (make convert's default, written by the Python
 * store) when `cards` holds it, else the first of `cards`, else null. */
export function releaseDefaultCard(manifest, cards) {
  return cards.includes(manifest.default_card) ? manifest.default_card : (cards[0] ?? null);
}

export async function readRelease(release) {
  const base = release.endsWith('/') ? release : `${release}/`;
  const manifest = JSON.parse(new TextDecoder().decode(await fetchBytes(`${base}manifest.json`)));
  const cards = {};
  for (const [path, entry] of Object.entries(manifest.files ?? {})) {
    const match = /^([^/]+)\/(embedder|detector)_(\d+)_([a-z0-9_]+?)(\.[^/]*)?\.tflite$/.exec(path);
    if (!match) continue;
    const [, card, part, , variant, label] = match;
    if (label) continue; // labelled files (random-init beside real weights) are not offered
    cards[card] ??= {};
    cards[card][variant] ??= {};
    cards[card][variant][part] = {path, url: base + path, bytes: entry.bytes ?? entry.size ?? null};
  }
  return {base, cards, manifest, defaultCard: releaseDefaultCard(manifest, Object.keys(cards))};
}

/** <release>/<card>/report.json, or null when the release has none. */
export async function readReport(release, card) {
  const base = release.endsWith('/') ? release : `${release}/`;
  try {
    return JSON.parse(new TextDecoder().decode(await fetchBytes(`${base}${card}/report.json`)));
  } catch {
    return null;
  }
}

/**
 * At most what the page's worker pool can give both models: the threaded build starts
 * navigator.hardwareConcurrency workers, each model with N threads holds N - 1 of them, and a compile that finds
 * none left waits forever.
 */
export function usableThreads(threads) {
  const pool = globalThis.navigator?.hardwareConcurrency || 1;
  return Math.max(1, Math.min(Math.floor(threads) || 1, Math.floor(pool / 2) + 1));
}

/** Compile with the wasm build already loaded (the single-thread one if none is); numThreads for XNNPACK. */
async function compile(bytes, numThreads) {
  const lib = wasmMode ? litert : await liteRt(1);
  return lib.loadAndCompile(bytes, {accelerator: 'wasm', cpuOptions: {numThreads: Math.max(1, numThreads)}});
}

/** The model's metadata, checked: part, nbits, size. */
function checkedMeta(bytes, part, url) {
  let meta;
  try {
    meta = readTfliteMetadata(bytes);
  } catch (err) {
    throw new Error(`${url.split('/').pop()} is not a readable .tflite (${err.message}; truncated or damaged?)`);
  }
  if (!meta) throw new Error(`${url} carries no videoseal_tflite metadata`);
  if (meta.part !== part) throw new Error(`${url} is a ${meta.part}, not an ${part}`);
  return meta;
}

/**
 * Load a card's embedder and detector of one variant from a release folder (URL of the folder holding
 * manifest.json). options: threads (1: the single-thread wasm; 2+: the threaded build, which needs COOP/COEP),
 * onProgress({stage, part, received, total}). Returns info().
 */
export async function load({release, card, variant = 'fp32', threads = 1, onProgress = () => {}} = {}) {
  if (!release) throw new Error('load() needs {release: URL of the release folder}');
  const found = await readRelease(release);
  const cardName = card ?? found.defaultCard;
  const files = found.cards[cardName]?.[variant];
  if (!files?.embedder || !files?.detector) {
    throw new Error(`no ${variant} embedder and detector for card ${cardName} in ${found.base}manifest.json`);
  }
  state?.embedder?.delete();
  state?.detector?.delete();
  state = null;
  threads = usableThreads(threads);
  await liteRt(threads); // the threaded wasm build for threads > 1, else the single-thread one
  const next = {release: found.base, card: cardName, variant, threads};
  for (const part of ['embedder', 'detector']) {
    const url = files[part].url;
    const bytes = await fetchBytes(url, (received, total) => onProgress({stage: 'download', part, received, total}));
    next[`${part}Meta`] = checkedMeta(bytes, part, url);
    onProgress({stage: 'compile', part});
    next[part] = await compile(bytes, threads);
  }
  const meta = next.embedderMeta;
  next.nbits = Number(meta.nbits);
  next.size = Number(meta.size);
  next.scalingW = Number(meta.scaling_w ?? 1.0);
  next.scalingI = Number(meta.scaling_i ?? 1.0);
  next.attenuation = ATTENUATION[meta.attenuation ?? ''] ?? null;
  state = next;
  onProgress({stage: 'ready'});
  return info();
}

/**
 * What is loaded: card, variant, nbits, processing size, scaling, attenuation, and payload: the card's payload code
 * from the metadata (`payload_code`, a BCH code {m, t}; runtime/payload.py), null for a card of raw bits. This
 * page embeds and reads the raw bits; it does not encode or decode a payload.
 */
export function info() {
  if (!state) return null;
  const {release, card, variant, threads, nbits, size, scalingW, scalingI, attenuation, embedderMeta} = state;
  return {release, card, variant, threads, nbits, size, scalingW, scalingI, attenuation,
    payload: embedderMeta.payload_code ?? null, meta: embedderMeta, detectorMeta: state.detectorMeta};
}

function loaded() {
  if (!state) throw new UserError('the models are not loaded yet');
  return state;
}

/** Run a compiled model on named float32 inputs; every tensor is deleted before returning Float32Arrays. */
async function runModel(model, inputs) {
  const {Tensor} = litert;
  const tensors = Object.fromEntries(
    Object.entries(inputs).map(([name, [data, shape]]) => [name, new Tensor(data, shape)]),
  );
  try {
    const outputs = await model.run(tensors);
    const result = {};
    for (const [name, tensor] of Object.entries(outputs)) {
      const local = tensor.accelerator === 'wasm' || !tensor.moveTo ? tensor : await tensor.moveTo('wasm');
      result[name] = Float32Array.from(local.toTypedArray());
      if (local !== tensor) local.delete();
      tensor.delete();
    }
    return result;
  } finally {
    for (const tensor of Object.values(tensors)) tensor.delete();
  }
}

function checkImage(imageData) {
  const {width, height} = imageData ?? {};
  if (!width || !height || !imageData.data) throw new UserError('not an image');
  checkSize(width, height);
}

/** Milliseconds of each step of the last embed / detect (what the bench reports beside the totals). */
export const lastTimings = {embed: {}, detect: {}};

function stopwatch(into) {
  for (const key of Object.keys(into)) delete into[key];
  let t = performance.now();
  return (step) => {
    const now = performance.now();
    into[step] = (into[step] ?? 0) + (now - t);
    t = now;
  };
}

/** Steps 1-3: the embedder's watermark at the processing size, {w: [C,S,S], channels} (before JND and scaling_w). */
export async function watermarkSmall(imageData, message, lap = () => {}) {
  const {embedder, size} = loaded();
  const {data, width, height} = imageData;
  const small = downscaleRgba(data, height, width, size, size);
  lap('downscale');
  const out = await runModel(embedder, {image: [small, [1, 3, size, size]], message: [message, [1, message.length]]});
  lap('model');
  const w = out.watermark;
  return {w, channels: w.length / (size * size)};
}

/** Watermark an ImageData with `message` ('0101...' or an array of 0/1); returns a new ImageData (alpha kept). */
export async function embed(imageData, message) {
  const s = loaded();
  checkImage(imageData);
  const bits = typeof message === 'string' ? parseMessage(message, s.nbits) : Float32Array.from(message ?? []);
  if (bits.length !== s.nbits) throw new UserError(`message has ${bits.length} bits but the model takes ${s.nbits}`);
  const {width, height} = imageData;
  const lap = stopwatch(lastTimings.embed);
  const {w, channels} = await watermarkSmall(imageData, bits, lap);
  let rgba = null;
  if (addsLevels(s.scalingI, s.attenuation)) {
    rgba = addLevels(imageData.data, height, width, w, channels, s.size, s.scalingW);
    lap('add_levels');
  }
  if (rgba === null) {
    const {planes, alpha} = fromImageData(imageData);
    lap('to_float');
    const full = resizeBilinear(w, channels, s.size, s.size, height, width);
    lap('upscale');
    const marked = blend(planes, height, width, full, channels, s.scalingW, s.scalingI, s.attenuation);
    lap('blend');
    rgba = toRgba(marked, width, height, alpha);
    lap('to_8bit');
  }
  return typeof ImageData === 'function' ? new ImageData(rgba, width, height) : {data: rgba, width, height};
}

/**
 * Read the bits of an ImageData as is (no re-synchronisation: the Python CLI's `detect --no-resync`). With a
 * message, also the matching bits, the p-value and the verdict at `fpr` (default 1e-6).
 * Returns {bits, bitLogits, matching, pValue, watermarked, verdict, payload}: watermarked is true or false at
 * `fpr`, null without a message or when nbits can never reach `fpr` (a 16-bit card at 1e-6); payload is null (this
 * page does not decode a card's payload code).
 */
export async function detect(imageData, message = null, {fpr = DEFAULT_FPR} = {}) {
  const s = loaded();
  checkImage(imageData);
  const {width, height} = imageData;
  const lap = stopwatch(lastTimings.detect);
  const small = downscaleRgba(imageData.data, height, width, s.size, s.size);
  lap('downscale');
  const out = await runModel(s.detector, {image: [small, [1, 3, s.size, s.size]]});
  lap('model');
  const bitLogits = out.bit_logits;
  const bits = bitsToText(Array.from(bitLogits, (v) => v > 0));
  const result = {bits, bitLogits: Array.from(bitLogits), matching: null, pValue: null, watermarked: null,
    verdict: null, payload: null};
  if (message !== null && message !== undefined && message !== '') {
    const expected = typeof message === 'string' ? parseMessage(message, s.nbits) : Array.from(message);
    if (expected.length !== s.nbits) {
      throw new UserError(`message has ${expected.length} bits but the model takes ${s.nbits}`);
    }
    const verdict = decide(Array.from(bits, (b) => b === '1'), expected, fpr);
    Object.assign(result, {matching: verdict.matching, pValue: verdict.pValue, watermarked: verdict.watermarked,
      verdict});
  }
  return result;
}

/**
 * Try every variant of a card in this browser: {variant: {loads, error?, parts}}. A variant that loads here can
 * still be slow (fp16 is about 4x slower than fp32 in wasm); one that fails names the reason LiteRT.js gave.
 */
export async function probeVariants({release, card} = {}) {
  const found = await readRelease(release);
  const result = {};
  for (const [variant, files] of Object.entries(found.cards[card] ?? {})) {
    const parts = {};
    for (const part of ['embedder', 'detector']) {
      if (!files[part]) {
        parts[part] = {loads: false, error: 'missing from the release'};
        continue;
      }
      try {
        const bytes = await fetchBytes(files[part].url);
        checkedMeta(bytes, part, files[part].url);
        const model = await compile(bytes, 1); // one thread: no worker of the pool (usableThreads)
        try {
          const inputs = model.getInputDetails();
          const notFloat = inputs.filter((d) => d.dtype !== 'float32').map((d) => `${d.name}: ${d.dtype}`);
          if (notFloat.length) throw new Error(`inputs are not float32 (${notFloat.join(', ')}); this page feeds float32`);
          // one run on zeros: a kernel that refuses its operands fails here, not in the user's first embed
          const zeros = Object.fromEntries(inputs.map((d) => {
            const shape = Array.from(d.shape);
            return [d.name, [new Float32Array(shape.reduce((a, b) => a * b, 1)), shape]];
          }));
          await runModel(model, zeros);
        } finally {
          model.delete();
        }
        parts[part] = {loads: true};
      } catch (err) {
        parts[part] = {loads: false, error: String(err?.message ?? err).split('\n')[0].slice(0, 300)};
      }
    }
    const failed = Object.entries(parts).filter(([, p]) => !p.loads);
    result[variant] = {loads: failed.length === 0, parts,
      error: failed.map(([part, p]) => `${part}: ${p.error}`).join('; ') || null};
  }
  return result;
}

/** Whether this browser offers WebGPU (the page itself runs on wasm; see docs/web.md). */
export async function webgpuAvailable() {
  try {
    return Boolean(globalThis.navigator?.gpu && (await navigator.gpu.requestAdapter()));
  } catch {
    return false;
  }
}
