"""`videoseal-tflite bench --peers`: our card beside invisible-watermark 0.2.0, measured in one run (issue #26).

Every method goes through the same steps, as a user would run it:
  1. the held-out image as an 8-bit RGB file's pixels (`build.images.fullres_evaluation_images`, full size);
  2. embed a random message; save the result as PNG and read it back (PSNR: that file against the 8-bit input);
  3. attack the saved image (`validate.attacks`, the held-out table's set) and read the bits back;
  4. count the matching bits, and decide with `runtime.verdict.decide` at each false-positive rate: a sample is
     "decided" when P(Binomial(n, 1/2) >= k), times the readings it was chosen among, is <= the FPR.
Methods: our card's FP32 files through the runtime (`Embedder.embed_rgb8`, `Detector.detect`, LiteRT CPU), and
invisible-watermark's `dwtDct`, `dwtDctSvd` and `rivaGan` (its ONNX weights ship inside the wheel), each with the
same thread count. Latency: median ms of `embed` and `detect` on one 1920x1080 frame (file I/O excluded).
TrustMark needs a weights download, so it appears only with its published figures (`TRUSTMARK_PUBLISHED`).
Writes `artifacts/bench/peers.json` and `.md`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from videoseal_tflite import console
from videoseal_tflite.bench.models import machine_facts
from videoseal_tflite.build.images import fit_square, fullres_evaluation_image, fullres_evaluation_images
from videoseal_tflite.errors import ArtifactsMissing, ExtraNotInstalled, InvalidModelFile
from videoseal_tflite.runtime.image import Detector, Embedder, load_image, to_uint8
from videoseal_tflite.runtime.verdict import decide, min_matching_bits
from videoseal_tflite.store.artifact import find_model
from videoseal_tflite.store.atomic import write_text_atomic
from videoseal_tflite.validate.attacks import ATTACKS
from videoseal_tflite.validate.robustness import MESSAGE_SEED, TABLE_ATTACKS, psnr_db

PEER_DISTRIBUTION = "invisible-watermark"
PEERS = ("dwtDct", "dwtDctSvd", "rivaGan")
PEER_NBITS = 32  # rivaGan takes 32 bits and no other length; the two DCT methods get the same
PEER_MIN_PIXELS = 256 * 256  # imwatermark refuses to read (or mark) a smaller image: "image too small"
FPRS = (1e-6, 1e-4)  # 1e-6: the table; 1e-4: a rate a 16-bit card can reach (all 16 bits, p = 1.5e-5)
RIVAGAN_REASON = (
    "invisible-watermark 0.2.0 runs rivaGan's ONNX encoder and decoder on the whole frame, about 2 s a call at "
    "512x512 on this 2-core machine (its ms at 1080p is in the table): 16 images x 4 messages x 8 calls would take "
    "about 20 minutes alone, so it gets 1 message per image"
)
TRUSTMARK_PUBLISHED = {
    "method": "TrustMark (adobe/trustmark)",
    "measured_here": False,
    "why_not_measured": "its model weights are a download at first use; nothing outside the package registries "
    "can be fetched here",
    "bits": "100 raw bits, BCH error correction: BCH_5 (default) 61 data + 35 ECC bits, corrects 5 flips; BCH_4 "
    "68 + 28, 4 flips; BCH_3 75 + 21, 3 flips; BCH_SUPER 40 + 56, 8 flips",
    "variants": {
        "Q": {"typical_psnr_db": "43-45", "model_mb_enc_dec": "17/45", "note": "default; ResNet-50 decoder"},
        "B": {"typical_psnr_db": "43-45", "model_mb_enc_dec": "17/45", "note": "as Q; reproduces the paper"},
        "C": {"typical_psnr_db": "38-39", "model_mb_enc_dec": "17/21", "note": "ResNet-18 decoder"},
        "P": {"typical_psnr_db": "48-50", "model_mb_enc_dec": "16/45", "note": "perceptual; highest quality"},
    },
    "resolution": "residual computed at 256x256, scaled and blended into the image at its own size; images "
    "beyond 2:1 are centre-cropped to a square first",
    "tpr_at_fpr_1e-6": "not verified here",
    "bit_accuracy_per_attack": "not verified here",
    "latency": "not verified here",
    "source": "https://github.com/adobe/trustmark/blob/main/python/CONFIG.md (variants, PSNR, sizes, BCH modes); "
    "paper: https://arxiv.org/abs/2311.18297",
}


@dataclasses.dataclass(frozen=True)
class PeersPlan:
    """What one run measures. `image_size`: fit each image to a square of this side (a quick check); None: full
    size. `reduced_messages`: methods that get fewer messages per image, for the reason in `RIVAGAN_REASON`."""

    methods: tuple[str, ...] = ("ours", *PEERS)
    images: int = 16
    messages_per_image: int = 4
    reduced_messages: tuple[tuple[str, int], ...] = (("rivaGan", 1),)
    attacks: tuple[str, ...] = TABLE_ATTACKS
    fprs: tuple[float, ...] = FPRS
    threads: int = 2
    image_size: int | None = None
    timing_size: tuple[int, int] = (1080, 1920)  # (height, width)
    timing_repeats: int = 3

    def messages_for(self, method: str) -> int:
        return min(dict(self.reduced_messages).get(method, self.messages_per_image), self.messages_per_image)


def fpr_key(fpr: float) -> str:
    """The JSON key of a false-positive rate: 1e-06, 0.0001."""
    return f"{fpr:g}"


class OurCard:
    """Our card's FP32 files through the torch-free runtime (what `videoseal-tflite embed/detect` run)."""

    def __init__(self, artifacts: Path, card: str, threads: int) -> None:
        try:
            paths = {part: find_model(artifacts, card, part, "fp32") for part in ("embedder", "detector")}
        except InvalidModelFile as exc:
            raise ArtifactsMissing(f"bench --peers needs the FP32 files of {card}: {exc}") from None
        self.embedder = Embedder(paths["embedder"], threads)
        self.detector = Detector(paths["detector"], threads)
        self.nbits = self.embedder.nbits
        self.label = f"{card} FP32 (this project)"
        self.how = (
            f"videoseal-tflite runtime: LiteRT CPU (XNNPACK), {threads} threads, model at "
            f"{self.embedder.size} px, watermark upsampled and blended at full size; detect re-synchronises crops "
            f"(its p-value is multiplied by the readings searched)"
        )
        self.files = {part: str(path) for part, path in paths.items()}

    def embed(self, rgb8: np.ndarray, message: np.ndarray) -> np.ndarray:
        return self.embedder.embed_rgb8(rgb8, message)

    def detect(self, rgb8: np.ndarray) -> tuple[np.ndarray, int] | None:
        found = self.detector.detect(rgb8)
        return found.bits, found.hypotheses


def _peer_modules() -> tuple[Any, Any, Any]:
    """imwatermark, cv2, onnxruntime: optional, the [peers] extra (part of [bench]); imported only here."""
    try:
        import cv2
        import imwatermark
        import onnxruntime
    except ImportError as exc:
        raise ExtraNotInstalled(
            f"bench --peers needs the [peers] extra ({exc.name} is not installed): "
            f"pip install 'videoseal-tflite[peers]', or `make setup`"
        ) from None
    return imwatermark, cv2, onnxruntime


class InvisibleWatermark:
    """One method of invisible-watermark 0.2.0, fed RGB and returning RGB (it works in OpenCV's BGR order)."""

    def __init__(self, method: str, threads: int) -> None:
        imwatermark, cv2, onnxruntime = _peer_modules()
        from imwatermark.rivaGan import RivaWatermark

        cv2.setNumThreads(threads)
        self.module, self.method, self.nbits = imwatermark, method, PEER_NBITS
        self.label = f"{method} (invisible-watermark 0.2.0)"
        if method == "rivaGan":
            # its loadModel() opens the sessions with ONNX Runtime's default (every core): the same ONNX files
            # here, with the thread count every method gets
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            folder = Path(imwatermark.__file__).parent
            for role in ("encoder", "decoder"):
                session = onnxruntime.InferenceSession(
                    str(folder / f"rivagan_{role}.onnx"), options, providers=["CPUExecutionProvider"]
                )
                setattr(RivaWatermark, role, session)
            self.how = (
                f"ONNX Runtime {onnxruntime.__version__} CPU, {threads} intra-op threads, the whole frame through "
                f"the encoder and decoder (0.2.0 does not resize to 256); torch only moves its arrays"
            )
        else:
            self.how = (
                f"NumPy + PyWavelets + OpenCV {cv2.__version__} (cv2.setNumThreads({threads})), on the whole "
                f"frame: Haar DWT of YUV, {'DCT of 4x4 blocks' if method == 'dwtDct' else 'DCT + SVD of 4x4 blocks'}"
            )

    def embed(self, rgb8: np.ndarray, message: np.ndarray) -> np.ndarray:
        encoder = self.module.WatermarkEncoder()
        encoder.set_by_bits([int(b) for b in message])
        bgr = np.ascontiguousarray(rgb8[..., ::-1])
        return np.ascontiguousarray(encoder.encode(bgr, self.method)[..., ::-1])

    def detect(self, rgb8: np.ndarray) -> tuple[np.ndarray, int] | None:
        if rgb8.shape[0] * rgb8.shape[1] < PEER_MIN_PIXELS:
            return None  # the decoder raises "image too small": counted as not decided
        decoder = self.module.WatermarkDecoder("bits", self.nbits)
        bits = decoder.decode(np.ascontiguousarray(rgb8[..., ::-1]), self.method)
        return np.asarray(bits).astype(bool), 1


def _threads_of_torch(threads: int) -> Callable[[], None]:
    """rivaGan moves its arrays through torch: the same thread count there; returns the undo."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    return lambda: torch.set_num_threads(previous)


def _read_one(marker, attacked: np.ndarray, message: np.ndarray, fprs: tuple[float, ...]) -> dict[str, Any]:
    read = marker.detect(to_uint8(attacked))
    if read is None:
        return {"matching_bits": None, "hypotheses": None, "pvalue": 1.0, "decided": {fpr_key(f): False for f in fprs}}
    bits, hypotheses = read
    verdicts = {fpr_key(f): decide(bits, message, f, hypotheses) for f in fprs}
    first = next(iter(verdicts.values()))
    return {
        "matching_bits": first.matching_bits,
        "hypotheses": hypotheses,
        "pvalue": first.pvalue,
        "decided": {key: v.watermarked for key, v in verdicts.items()},
    }


def _samples(marker, images: list[np.ndarray], messages: np.ndarray, plan: PeersPlan, bar) -> dict[str, Any]:
    """Steps 2-4 for every (image, message): per attack the readings, and the PSNR of each saved PNG."""
    per_image = len(messages) // len(images)
    funcs = {name: (lambda x: x) if name == "clean" else ATTACKS[name] for name in plan.attacks}
    readings: dict[str, list] = {name: [] for name in plan.attacks}
    psnrs = []
    with tempfile.TemporaryDirectory(prefix="vst-peers-") as tmp:
        path = Path(tmp) / "marked.png"
        for k, message in enumerate(messages):
            rgb8 = images[k // per_image]
            Image.fromarray(marker.embed(rgb8, message)).save(path)
            saved = load_image(path)
            psnrs.append(psnr_db(saved, rgb8.transpose(2, 0, 1) / 255.0))
            for name, attack in funcs.items():
                readings[name].append(_read_one(marker, attack(saved), message, plan.fprs))
            bar.update(1)
    return {"readings": readings, "psnrs": psnrs}


def attack_summary(readings: list[dict], nbits: int, fprs: tuple[float, ...]) -> dict[str, Any]:
    """Bit accuracy over the readable samples, and per FPR the share of all samples decided (TPR); None where n
    bits cannot reach that FPR even with every bit right."""
    readable = [r for r in readings if r["matching_bits"] is not None]
    matches = sum(r["matching_bits"] for r in readable)
    out: dict[str, Any] = {
        "bit_accuracy": round(matches / (len(readable) * nbits), 4) if readable else None,
        "samples": len(readings),
        "unreadable": len(readings) - len(readable),
        "tpr": {},
        "threshold_bits": {},
    }
    for fpr in fprs:
        key = fpr_key(fpr)
        threshold = min_matching_bits(nbits, fpr)
        out["threshold_bits"][key] = threshold
        decided = sum(r["decided"][key] for r in readings)
        out["tpr"][key] = None if threshold is None else round(decided / len(readings), 4)
    out["matching_bits"] = [r["matching_bits"] for r in readings]
    out["hypotheses"] = [r["hypotheses"] for r in readings]
    out["pvalues"] = [r["pvalue"] for r in readings]
    return out


def _median_ms(fn: Callable[[], Any], repeats: int) -> dict[str, Any]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return {"median": round(statistics.median(times), 1), "n": repeats}


def _timing(marker, plan: PeersPlan, message: np.ndarray) -> dict[str, Any]:
    """ms per embed and per detect of one frame at `plan.timing_size` (a held-out photo resized to it), after one
    untimed call of each; and whether that frame's own mark reads back."""
    height, width = plan.timing_size
    photo = fullres_evaluation_image(0).pixels
    frame = np.asarray(Image.fromarray(to_uint8(photo)).resize((width, height), Image.Resampling.BILINEAR))
    marked = marker.embed(frame, message)
    read = marker.detect(marked)
    return {
        "height": height,
        "width": width,
        "embed_ms": _median_ms(lambda: marker.embed(frame, message), plan.timing_repeats),
        "detect_ms": _median_ms(lambda: marker.detect(marked), plan.timing_repeats),
        "own_mark_bit_accuracy": None if read is None else float((read[0] == message.astype(bool)).mean()),
    }


def _images(plan: PeersPlan) -> tuple[list[str], list[np.ndarray]]:
    chosen = fullres_evaluation_images()[: plan.images]
    if plan.image_size:
        chosen = [dataclasses.replace(i, pixels=fit_square(i.pixels, plan.image_size)) for i in chosen]
    return [i.name for i in chosen], [to_uint8(i.pixels) for i in chosen]


def _marker(method: str, artifacts: Path, card: str, threads: int):
    return OurCard(artifacts, card, threads) if method == "ours" else InvisibleWatermark(method, threads)


def _method_row(marker, method: str, images: list[np.ndarray], plan: PeersPlan, bar) -> dict[str, Any]:
    per_image = plan.messages_for(method)
    # the same seeded messages for every method, cut to its length
    messages = np.random.default_rng(MESSAGE_SEED).integers(0, 2, (len(images) * per_image, 64))[:, : marker.nbits]
    bar.set_postfix_str(method)
    done = _samples(marker, images, messages.astype(np.float32), plan, bar)
    timing = _timing(marker, plan, messages[0].astype(np.float32))
    return {
        "method": method,
        "label": marker.label,
        "how": marker.how,
        "bits": marker.nbits,
        "threads": plan.threads,
        "images": len(images),
        "messages_per_image": per_image,
        "samples": len(messages),
        "psnr_db": round(float(np.mean(done["psnrs"])), 2),
        "psnr_db_min": round(float(np.min(done["psnrs"])), 2),
        "attacks": {name: attack_summary(r, marker.nbits, plan.fprs) for name, r in done["readings"].items()},
        "ms_per_embed": timing["embed_ms"]["median"],
        "ms_per_detect": timing["detect_ms"]["median"],
        "timing": timing,
    } | ({"files": marker.files} if method == "ours" else {})


def _peer_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version(PEER_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None


def bench_peers(artifacts: Path, card: str, plan: PeersPlan = PeersPlan(), progress: bool = True) -> dict[str, Any]:
    """The record: one row per method of `plan.methods` (see the module docstring), machine facts, the plan."""
    from tqdm import tqdm

    if any(m != "ours" for m in plan.methods):
        _peer_modules()  # before any work: a missing extra is one line, not a traceback minutes in
    names, images = _images(plan)
    record: dict[str, Any] = {
        "card": card,
        "machine": machine_facts(),
        "plan": dataclasses.asdict(plan) | {"fprs": [fpr_key(f) for f in plan.fprs]},
        "images": names,
        "image_source": "build.images.fullres_evaluation_images: held-out photos at their own size, then procedural "
        "512-px images" + (f"; fitted to {plan.image_size} px squares" if plan.image_size else ""),
        "peer_package": f"{PEER_DISTRIBUTION} {_peer_version()}",
        "reduced_messages_reason": {
            m: RIVAGAN_REASON for m, n in plan.reduced_messages if m in plan.methods and n < plan.messages_per_image
        },
        "methods": [],
        "trustmark_published": TRUSTMARK_PUBLISHED,
    }
    total = sum(len(images) * plan.messages_for(m) for m in plan.methods)
    undo = _threads_of_torch(plan.threads) if "rivaGan" in plan.methods else (lambda: None)
    try:
        with tqdm(total=total, desc="peers", unit="sample", disable=not progress, file=console.stream()) as bar:
            for method in plan.methods:
                marker = _marker(method, Path(artifacts), card, plan.threads)
                record["methods"].append(_method_row(marker, method, images, plan, bar))
    finally:
        undo()
    record["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return record


def _cell_tpr(summary: dict[str, Any], key: str, nbits: int) -> str:
    tpr = summary["tpr"][key]
    if tpr is None:
        return f"n/a ({nbits} bits: best FPR {2.0**-nbits:.1e})"
    return f"{tpr:.2f}" + (f" ({summary['unreadable']} unreadable)" if summary["unreadable"] else "")


def _cell_accuracy(summary: dict[str, Any]) -> str:
    if summary["bit_accuracy"] is None:
        return "unreadable"
    unreadable = f" ({summary['unreadable']} unreadable)" if summary["unreadable"] else ""
    return f"{summary['bit_accuracy']:.3f}{unreadable}"


def _table(record: dict[str, Any], cell: Callable[[dict, dict], str], with_costs: bool) -> list[str]:
    attacks = record["plan"]["attacks"]
    height, width = record["plan"]["timing_size"]
    costs = ["PSNR dB", f"ms/embed {width}x{height}", f"ms/detect {width}x{height}", "threads"] if with_costs else []
    header = ["method", "bits", "samples", *attacks, *costs]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for row in record["methods"]:
        cells = [row["label"], row["bits"], f"{row['images']} x {row['messages_per_image']}"]
        cells += [cell(row, row["attacks"][a]) for a in attacks]
        if with_costs:
            cells += [f"{row['psnr_db']:.2f}", f"{row['ms_per_embed']:.0f}", f"{row['ms_per_detect']:.0f}"]
            cells += [row["threads"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def _trustmark_lines(tm: dict[str, Any]) -> list[str]:
    lines = ["", "#### TrustMark: published figures, not measured here", "", f"Not run: {tm['why_not_measured']}.", ""]
    lines += ["| variant | typical PSNR dB | model MB enc/dec | note |", "|---|---|---|---|"]
    for variant, d in tm["variants"].items():
        lines.append(f"| {variant} | {d['typical_psnr_db']} | {d['model_mb_enc_dec']} | {d['note']} |")
    return lines + [
        "",
        f"Bits: {tm['bits']}. Resolution: {tm['resolution']}. TPR at FPR 1e-6, bit accuracy per attack and latency: "
        f"{tm['tpr_at_fpr_1e-6']}. Source: {tm['source']}.",
    ]


def peers_markdown(record: dict[str, Any]) -> str:
    """The record as the tables a reader compares: TPR at each FPR (the first with PSNR, latency, threads) and bit
    accuracy, how each method ran, and TrustMark's published figures."""
    machine, plan = record["machine"], record["plan"]
    height, width = plan["timing_size"]
    lines = [
        f"### peers: {record['card']} beside {record['peer_package']}, in the same run",
        "",
        f"Measured {machine['date']} on {machine['cpu']} ({machine['cores']} cores, load "
        f"{machine['load_average_before']} before, {machine['load_average_after']} after). "
        f"`videoseal-tflite bench --card {record['card']} --peers`; the record is `peers.json` beside this file.",
        "",
        f"Images: {len(record['images'])} held-out images ({record['image_source']}); attacks from "
        "`validate/attacks.py` on the saved PNG; every method with the same messages (cut to its length), attacks, "
        f"metric and {plan['threads']} threads. ms: median of {plan['timing_repeats']} calls on one {width}x{height} "
        "frame, file I/O excluded.",
    ]
    for fpr in plan["fprs"]:
        lines += ["", f"#### TPR at FPR {fpr}: share of marked samples whose matching bits have p-value <= {fpr}", ""]
        first = fpr == plan["fprs"][0]
        lines += _table(record, lambda row, s, key=fpr: _cell_tpr(s, key, row["bits"]), with_costs=first)
    lines += ["", "#### Bit accuracy (over the samples the method could read)", ""]
    lines += _table(record, lambda row, s: _cell_accuracy(s), with_costs=False)
    lines += ["", "#### How each ran", ""]
    lines += [f"- {row['label']}: {row['how']}." for row in record["methods"]]
    lines += [f"- Fewer messages for {m}: {why}." for m, why in record["reduced_messages_reason"].items()]
    lines += [
        f"- Unreadable: invisible-watermark refuses images under {PEER_MIN_PIXELS} pixels (e.g. a 400x600 photo "
        "halved); such a sample counts as not decided, and is left out of bit accuracy.",
    ]
    return "\n".join(lines + _trustmark_lines(record["trustmark_published"])) + "\n"


def write_peers(record: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """`out_dir/peers.json` and `peers.md`, each written atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = (out_dir / "peers.json", out_dir / "peers.md")
    write_text_atomic(paths[0], json.dumps(record, indent=2) + "\n")
    write_text_atomic(paths[1], peers_markdown(record))
    return paths
