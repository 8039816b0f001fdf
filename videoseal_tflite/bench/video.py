"""`videoseal-tflite bench --video`: frames per second of video embed and detect with the .tflite files, per
variant, beside videoseal's own PyTorch video mode on the same clip, each run in its own child process so that
its own peak RSS (VmHWM) comes back with its result (issue #14).

- Clip: a generated pan across a held-out photo (`clips.pan_frames`), written near-losslessly, per size.
- Ours: `video.embed_video` (decode, model on every step-th frame, resize + blend on every frame, libx264 at the
  given preset, CRF 23), its stage clock split apart; `video.detect_video` on the written file.
- PyTorch: decode the same clip with PyAV, `Videoseal.embed(frames, msgs, is_video=True)`, encode with the same
  libx264 settings; `Videoseal.extract_message` on the decoded frames of the written file.
LiteRT runs with 2 threads on the CPU (XNNPACK), PyTorch with 2 threads (`torch.set_num_threads(2)`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from videoseal_tflite.validate.peak_rss import own_peak_rss_mb

THREADS = 2


def _child(args: list[str]) -> dict[str, Any]:
    """Run one measurement in a child Python; its JSON result, with the child's own peak RSS (MB)."""
    command = [sys.executable, "-m", "videoseal_tflite.bench.video", *args]
    proc = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return json.loads(lines[-1])


def _make_clip(path: Path, width: int, height: int, frames: int) -> Path:
    from videoseal_tflite.build.images import fullres_photo
    from videoseal_tflite.runtime.image import to_uint8
    from videoseal_tflite.validate.clips import pan_frames, write_clip

    photo = to_uint8(fullres_photo("stereo_motorcycle").pixels)
    return write_clip(path, pan_frames(photo, width, height, frames), fps=24, crf=10)


def _ours(embedder_path: str, detector_path: str, clip: str, out: str, step: int, preset: str) -> dict:
    from videoseal_tflite.runtime.image import Detector, Embedder
    from videoseal_tflite.runtime.video import detect_video, embed_video

    embedder, detector = Embedder(Path(embedder_path), THREADS), Detector(Path(detector_path), THREADS)
    message = np.random.default_rng(0).integers(0, 2, embedder.nbits).astype(np.float32)
    start = time.perf_counter()
    result = embed_video(Path(clip), Path(out), embedder, message, step, crf=23, preset=preset, progress=False)
    embed_s = time.perf_counter() - start
    start = time.perf_counter()
    detection = detect_video(Path(out), detector)
    detect_s = time.perf_counter() - start
    marking = result.seconds_model + result.seconds_resize_blend
    return {"frames": result.frames, "embed_fps": result.frames / embed_s, "detect_fps": result.frames / detect_s,
            "watermarking_fps": result.frames / marking, "seconds": {"decode": result.seconds_decode,
            "model": result.seconds_model, "resize_blend": result.seconds_resize_blend,
            "encode": result.seconds_encode}, "bit_accuracy": detection.bit_accuracy(message)}  # fmt: skip


def _decode(path: str) -> np.ndarray:
    import av

    with av.open(path) as source:
        return np.stack([f.to_ndarray(format="rgb24") for f in source.decode(video=0)])


def _encode(path: str, frames: np.ndarray, preset: str) -> float:
    import av

    start = time.perf_counter()
    with av.open(path, "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=24, options={"crf": "23", "preset": preset})
        video.height, video.width, video.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        for pixels in frames:
            out.mux(video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")))
        out.mux(video.encode(None))
    return time.perf_counter() - start


def _pytorch(card: str, weights_args: list[str], clip: str, out: str, preset: str) -> dict:
    import torch

    from videoseal_tflite.build.cards import load_card
    from videoseal_tflite.build.weights import WeightSource, load_model

    torch.set_num_threads(THREADS)
    seed = int(weights_args[1]) if weights_args[:1] == ["--random-init"] else None
    model = load_model(load_card(card), WeightSource(random_init_seed=seed)).model
    start = time.perf_counter()
    frames = torch.from_numpy(_decode(clip)).permute(0, 3, 1, 2).float() / 255
    msgs = torch.from_numpy(np.random.default_rng(0).integers(0, 2, (1, model.embedder.msg_processor.nbits)))
    with torch.no_grad():
        marked = model.embed(frames, msgs.float(), is_video=True)["imgs_w"]
    pixels = (marked.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    _encode(out, pixels, preset)
    embed_s = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        read = torch.from_numpy(_decode(out)).permute(0, 3, 1, 2).float() / 255
        bits = model.extract_message(read, aggregation="avg")
    detect_s = time.perf_counter() - start
    accuracy = float((bits.float().cpu() == msgs.float()).float().mean())
    return {"frames": len(frames), "embed_fps": len(frames) / embed_s, "detect_fps": len(frames) / detect_s,
            "bit_accuracy": accuracy}  # fmt: skip


def bench_video(
    card_dir: Path,
    sizes: tuple[tuple[int, int], ...] = ((1280, 720), (1920, 1080)),
    frames: int = 48,
    variants: tuple[str, ...] | None = None,
    preset: str = "veryfast",
    pytorch: bool = True,
) -> dict:
    """The video record of one card's artifacts: per size, per variant (embedder and detector of the same
    variant), our fps and stage split, and videoseal's PyTorch video mode on the same clip."""
    from videoseal_tflite.store.artifact import Artifact
    from videoseal_tflite.store.variants import order
    from videoseal_tflite.tflite.metadata import read_metadata

    files = {(a.part, a.variant): p for a, p in Artifact.find(card_dir)}
    wanted = variants or sorted({v for _, v in files}, key=order)
    meta = read_metadata(files[("embedder", "fp32")].read_bytes())
    weights = ["--random-init", str(meta["random_init_seed"])] if meta.get("weights") == "random-init" else []
    record: dict[str, Any] = {"card": meta["card"], "weights": meta.get("weights_label") or meta["weights"],
                              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "threads": THREADS,
                              "preset": preset, "crf": 23, "frames": frames, "step_size": meta.get("step_size") or 4,
                              "sizes": {}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="vst-bench-video-") as tmp:
        for width, height in sizes:
            clip = str(_make_clip(Path(tmp) / f"clip{height}.mp4", width, height, frames))
            row: dict[str, Any] = {}
            for v in wanted:
                if ("embedder", v) in files and ("detector", v) in files:
                    row[v] = _child(["ours", str(files[("embedder", v)]), str(files[("detector", v)]), clip,
                                     str(Path(tmp) / "out.mp4"), str(record["step_size"]), preset])  # fmt: skip
            if pytorch:
                row["pytorch"] = _child(["pytorch", meta["card_path"] or meta["card"], clip, str(Path(tmp) / "pt.mp4"),
                                         preset, *weights])  # fmt: skip
            record["sizes"][f"{height}p"] = row
    return record


def bench_video_markdown(record: dict) -> str:
    lines = [f"### video: {record['card']} ({record['weights']})", "",
             f"{record['date']}; {record['frames']} frames per clip, step size {record['step_size']}, libx264 CRF "
             f"{record['crf']} preset {record['preset']}, {record['threads']} threads (LiteRT CPU with XNNPACK; "
             "PyTorch eager CPU). fps over the whole clip; the watermarking stages are model + resize/blend. "
             "Ours encodes on a second thread while the next frame is watermarked, so encode s is the time spent "
             "waiting for it; PyTorch embeds the whole clip, then encodes.", "",
             "| size | runtime | variant | embed fps | watermarking fps | detect fps | decode s | model s | "
             "resize+blend s | encode s | bits read | peak RSS MB |", "|---" * 12 + "|"]  # fmt: skip
    for size, row in record["sizes"].items():
        for name, r in row.items():
            if "error" in r:
                lines.append(f"| {size} | - | {name} | failed: {r['error']} |" + " |" * 8)
                continue
            sec = r.get("seconds", {})
            runtime = "PyTorch (videoseal)" if name == "pytorch" else "LiteRT"
            lines.append(f"| {size} | {runtime} | {'-' if name == 'pytorch' else name} | {r['embed_fps']:.1f} | "
                         f"{_f(r.get('watermarking_fps'))} | {r['detect_fps']:.1f} | {_f(sec.get('decode'))} | "
                         f"{_f(sec.get('model'))} | {_f(sec.get('resize_blend'))} | {_f(sec.get('encode'))} | "
                         f"{r['bit_accuracy']:.3f} | {r['peak_rss_mb']:.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _f(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    """Child entry point: `ours EMB DET CLIP OUT STEP PRESET` or `pytorch CARD CLIP OUT PRESET [--random-init S]`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("ours", "pytorch"))
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.mode == "ours":
        emb, det, clip, out, step, preset = args.rest
        result = _ours(emb, det, clip, out, int(step), preset)
    else:
        card, clip, out, preset, *weights = args.rest
        result = _pytorch(card, weights, clip, out, preset)
    print(json.dumps({**result, "peak_rss_mb": own_peak_rss_mb()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
