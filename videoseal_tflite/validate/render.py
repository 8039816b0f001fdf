"""Rendering a validation report: report.md (the table a release engineer reads first) and tradeoff.png."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from videoseal_tflite.runtime.verdict import DEFAULT_FPR
from videoseal_tflite.store.atomic import atomic_path, write_text_atomic
from videoseal_tflite.store.variants import order


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report_markdown(report: dict[str, Any]) -> str:
    random_init = report["weights"] == "random-init"
    lines = [
        f"# {report['card']} ({report['nbits']} bits, weights: {report['weights_label'] or report['weights']})",
        "",
    ]
    if random_init:
        lines += [
            "**Random-init weights: bit accuracy is chance level here (about 50 %); agreement with PyTorch is "
            "what counts.**",
            "",
        ]
    ref = report["pytorch_reference"]
    acc = "bit acc (chance level)" if random_init else "bit acc"
    lines += [
        f"Images: {report['images']['count']} from {report['images']['source']}, {report['messages']['per_image']} "
        f"random messages each, at the processing size ({report['images']['size']} px). PyTorch reference: "
        f"bit acc {ref['bit_accuracy']:.4f}, PSNR {ref['psnr_db']:.2f} dB."
    ]
    skipped = report["images"].get("skipped") or []
    if skipped:
        more = f" (and {len(skipped) - 3} more, in report.json)" if len(skipped) > 3 else ""
        lines += [f"Skipped {len(skipped)} file(s) that are not readable images: {'; '.join(skipped[:3])}{more}."]
    if report["images"].get("fullres"):
        lines += [
            f"Full resolution: {report['images']['fullres']}, each file through the runtime, saved as PNG and "
            "read back (an embedder with the FP32 detector, a detector with the FP32 embedder)."
        ]
    lines += [
        "",
        f"| part | variant | status | MB | xFP32 | {acc} | vs PyTorch | PSNR dB | {acc} full res | "
        f"PSNR full res | ms (median, {_runtime_label(report)}) | XNNPACK nodes | GPU (static check) |",
        "|---" * 13 + "|",
    ]
    for r in report["records"]:
        mb = _fmt(r["bytes"] / 1e6 if r["bytes"] else None, ".2f")
        full = r.get("fullres") or {}
        lines.append(
            f"| {r['part']} | {r['variant']} | {r['status']} | {mb} | {_fmt(r['size_ratio_vs_fp32'], '.2f')} | "
            f"{_fmt(r['bit_accuracy'], '.4f')} | {_fmt(r['bit_agreement_vs_pytorch'], '.4f')} | "
            f"{_fmt(r.get('psnr_db'), '.2f')} | {_fmt(full.get('bit_accuracy'), '.4f')} | "
            f"{_fmt(full.get('psnr_db') if r['part'] == 'embedder' else None, '.2f')} | "
            f"{_fmt(r['latency_ms_median'], '.1f')} | {_xnnpack_cell(r.get('xnnpack'))} | {_gpu_cell(r.get('gpu'))} |"
        )
    for part in report.get("missing_parts", []):
        lines += ["", f"**Missing part: no {part} file for {report['card']}** (a shard that never arrived?)"]
    lines += _pairs_table(report) + _attacks_table(report) + _false_positive_table(report) + _video_table(report)
    lines += _npu_table(report) + _notes(report)
    return "\n".join(lines) + "\n"


def _runtime_label(report: dict[str, Any]) -> str:
    threads = next((r["threads"] for r in report["records"]), 2)
    return f"LiteRT CPU, XNNPACK delegate, {threads} threads"


def _gpu_cell(gpu: dict | None) -> str:
    if not gpu:
        return "-"
    ops = ", ".join(sorted({b["op"] or "?" for b in gpu["blocking_ops"]}))
    return gpu["verdict"] + (f": {ops}" if ops else "")


def _xnnpack_cell(cov: dict | None) -> str:
    return "-" if not cov else f"{cov['xnnpack_nodes']}/{cov['nodes']}"


def _pairs_table(report: dict[str, Any]) -> list[str]:
    if not report["pairs"]:
        return []
    dets = sorted({p["detector"] for p in report["pairs"]}, key=order)
    lines = [
        "",
        "Embedder x detector (bit accuracy, both .tflite):",
        "",
        "| embedder \\ detector | " + " | ".join(dets) + " |",
        "|---" * (len(dets) + 1) + "|",
    ]
    for emb in sorted({p["embedder"] for p in report["pairs"]}, key=order):
        row = {p["detector"]: p["bit_accuracy"] for p in report["pairs"] if p["embedder"] == emb}
        lines.append(f"| {emb} | " + " | ".join(_fmt(row.get(d), ".4f") for d in dets) + " |")
    return lines


def attack_losses(report: dict[str, Any], max_loss: float = 0.01) -> list[str]:
    """Each quantized file that loses more than `max_loss` (1 point) of bit accuracy against the FP32 file of
    its part under an attack, one line each, naming the variant, the attack and the loss."""
    fp32 = {r["part"]: r.get("attacks") or {} for r in report["records"] if r["variant"] == "fp32"}
    lines = []
    for r in report["records"]:
        for attack, value in (r.get("attacks") or {}).items() if r["variant"] != "fp32" else ():
            base = fp32.get(r["part"], {}).get(attack)
            if base is not None and base - value > max_loss:
                lines.append(
                    f"{report['card']} {r['part']} {r['variant']}: {attack} {value:.3f} vs FP32 {base:.3f} "
                    f"({(value - base) * 100:+.1f} points)"
                )
    return lines


def _attacks_table(report: dict[str, Any]) -> list[str]:
    names = report.get("attacks") or []
    if not names:
        return []
    lines = [
        "",
        "Bit accuracy under attacks at full resolution (saved PNG, attacked, read back; embedder rows with the "
        "FP32 detector, detector rows with the FP32 embedder):",
        "",
        "| part | variant | " + " | ".join(names) + " |",
        "|---|---" + "|---" * len(names) + "|",
    ]
    for r in report["records"]:
        if r.get("attacks"):
            lines.append(
                f"| {r['part']} | {r['variant']} | "
                + " | ".join(_fmt(r["attacks"].get(n), ".3f") for n in names)
                + " |"
            )
    losses = attack_losses(report)
    lines += ["", "Within 1 point of FP32 under every attack: " + ("yes, every file." if not losses else "no:")]
    lines += [f"- {line}" for line in losses]
    decided = [r for r in report["records"] if r.get("attacks_decided")]
    if decided:
        lines += _share_table(
            f"Share of marked samples decided at FPR {DEFAULT_FPR:g} (the verdict `detect` gives: matching bits, "
            "re-synchronisation readings counted), same samples:",
            decided,
            "decided",
            names,
        )
        payload = [r for r in decided if r.get("attacks_payload")]
        if payload:
            lines += _share_table(
                "Share of marked samples whose payload `detect` decodes (no message given) to the data embedded, "
                "same samples:",
                payload,
                "payload",
                names,
            )
        nbits = report.get("nbits")
        if nbits and 2.0**-nbits > DEFAULT_FPR:
            lines += ["", f"A {nbits}-bit message can never reach FPR {DEFAULT_FPR:g} (its best is {2.0**-nbits:.1e})."]
    return lines


def _per_file_table(title: str, columns: list[str], rows: list[tuple[dict[str, Any], list[str]]]) -> list[str]:
    """A titled table with a row per file: its part and variant, then its cells under `columns`."""
    lines = [
        "",
        title,
        "",
        "| part | variant | " + " | ".join(columns) + " |",
        "|---|---" + "|---" * len(columns) + "|",
    ]
    return lines + [f"| {r['part']} | {r['variant']} | " + " | ".join(cells) + " |" for r, cells in rows]


def _share_table(title: str, records: list[dict[str, Any]], metric: str, names: list[str]) -> list[str]:
    """A per-file table of one share: clean (`fullres[metric]`), then each attack (`attacks_<metric>`)."""
    rows = [(r, [_fmt(r["fullres"].get(metric), ".3f")] + [_fmt(r[f"attacks_{metric}"].get(n), ".3f") for n in names])
            for r in records]  # fmt: skip
    return _per_file_table(title, ["clean", *names], rows)


def _false_positive_table(report: dict[str, Any]) -> list[str]:
    """`validate.false_positives.FalsePositives.to_json()` (with the file it read) as a table, when measured."""
    record = report.get("false_positives")
    if not record:
        return []
    n, keys = record["images"], list(record["random_message"])
    rows = [("its own random message", record["random_message"]),
            ("one fixed message (the readings' majority)", record["fixed_message"])]  # fmt: skip
    if record.get("payload") is not None:
        rows.append(("payload decoded (no message)", record["payload"]))
    lines = [
        "",
        f"False positives: {n} unmarked images (procedural scenes and crops of the held-out photos, 64-1024 px, "
        f"never marked) read as `detect` reads them with `{record['detector']}` ({record['searched']} "
        f"re-synchronised; {record['mean_hypotheses']:.0f} readings on average, counted in each p-value). Unmarked "
        "images decided as watermarked:",
        "",
        "| decided against | " + " | ".join(f"at FPR {k}" for k in keys) + " |",
        "|---" + "|---" * len(keys) + "|",
    ]
    lines += [f"| {label} | " + " | ".join(f"{counts[k]} of {n}" for k in keys) + " |" for label, counts in rows]
    verdict = "passed" if record["ks_passed"] else "FAILED"
    lines += [
        "",
        f"Their p-values against uniform, one-sided KS (are they ever smaller than uniform?): D+ = "
        f"{record['ks_statistic']:.3f}, p = {record['ks_pvalue']:.2g}, {verdict} at {record['ks_alpha']:g}.",
    ]
    return lines


def _video_table(report: dict[str, Any]) -> list[str]:
    rows = [r for r in report["records"] if r.get("video")]
    if not rows:
        return []
    names = list(rows[0]["video"])
    cells = [(r, [f"{r['video'][n]['bit_accuracy']:.3f} ({r['video'][n]['pvalue']:.1e})" for n in names]) for r in rows]
    return _per_file_table(
        "Video: a generated 1 s 640x360 clip marked with `embed` (CRF 23), attacked, read with `detect` (soft bits "
        "averaged over frames); bit accuracy (p-value of the matching bits):",
        names,
        cells,
    )


def _npu_table(report: dict[str, Any]) -> list[str]:
    block = report.get("npu")
    if not block:
        return []
    lines = ["", f"NPU ahead-of-time compile ({block.get('check', 'LiteRT AOT')}):", "",
             "| file | target | compiled | ops offloaded / total | compiled bytes | compiler says |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in block["records"]:
        ops = f"{r.get('offloaded_ops')}/{r.get('total_ops')}" if r.get("total_ops") else "-"
        error = (r.get("error") or "").replace("|", "/")[:160]
        lines.append(f"| {Path(r['file']).name} | {r['target']} | {'yes' if r['compiled'] else 'no'} | {ops} | "
                     f"{_fmt(r.get('compiled_bytes'), ',')} | {error or '-'} |")  # fmt: skip
    return lines


def _notes(report: dict[str, Any]) -> list[str]:
    notes = []
    for r in report["records"]:
        for rep in r["repairs_applied"]:
            verb = "Tried against" if r["status"] == "failed" else "Removed"
            notes.append(
                f"- {r['part']} {r['variant']}: repair `{rep['name']}`: {rep['what']}. {verb}: "
                f"`{rep['removed_error'][:200]}`"
            )
        if r["load_error"]:
            notes.append(f"- {r['part']} {r['variant']}: **failed**: `{r['load_error'][:300]}`")
        if r.get("below_bar"):
            notes.append(
                f"- {r['part']} {r['variant']}: **below its quality bar** after every repair ({r['below_bar']}): the "
                "best build is kept; its bit accuracy in the table is measured like any file's"
            )
        errors = [
            f for f in r["flags"] if f["kind"] in ("batch_matmul_dtypes", "broadcast_to_shape", "custom_op", "flex_op")
        ]
        if errors:
            notes.append(
                f"- {r['part']} {r['variant']}: {len(errors)} flag(s) {errors[0]['kind']}: {errors[0]['detail'][:160]}"
            )
    return ["", "## Repairs, failures and flags", ""] + notes if notes else []


@dataclasses.dataclass(frozen=True)
class PlottedMetric:
    """What `tradeoff.png` plots against size: `value(record)` as a share (None: not measured), and its label."""

    key: str  # the record key it comes from ("attacks_decided", "attacks", "bit_accuracy", ...)
    attack: str | None  # the attack it is read after, when it is one
    label: str

    def value(self, record: dict[str, Any]) -> float | None:
        got = record.get(self.key)
        if self.attack is None or got is None:
            return got
        return got.get(self.attack)


def _hardest_attack(report: dict[str, Any], key: str) -> str | None:
    """The attack the FP32 files do worst under (`key`: per-attack shares), so every variant is compared there."""
    fp32 = [r[key] for r in report["records"] if r["variant"] == "fp32" and r.get(key)]
    if not fp32:
        return None
    return min(fp32[0], key=lambda attack: min(values.get(attack, 1.0) for values in fp32))


def plotted_metric(report: dict[str, Any]) -> PlottedMetric:
    """What differs between the variants, so it is what the plot shows. Random-init weights read chance-level
    bits (about 50 % for every file): agreement with PyTorch. With the attack tables: the share of marked samples
    decided at the default FPR after the attack the FP32 files find hardest, or, for a card whose bits can never
    reach that FPR (16 bits: nothing is ever decided), the bit accuracy after it. Otherwise clean bit accuracy."""
    if report["weights"] == "random-init":
        return PlottedMetric("bit_agreement_vs_pytorch", None, "bit agreement with PyTorch FP32 (%)")
    nbits = report.get("nbits") or 0
    if 2.0**-nbits <= DEFAULT_FPR:
        attack = _hardest_attack(report, "attacks_decided")
        if attack:
            return PlottedMetric("attacks_decided", attack, f"decided at FPR {DEFAULT_FPR:g} after {attack} (%)")
    attack = _hardest_attack(report, "attacks")
    if attack:
        return PlottedMetric("attacks", attack, f"bit accuracy after {attack} (%)")
    return PlottedMetric("bit_accuracy", None, "bit accuracy (%)")


def _value_limits(values: list[float]) -> tuple[float, float]:
    """y limits (in %) around the values with a margin, never past 0 or 100 by more than the margin."""
    low, high = min(values), max(values)
    margin = max(0.5, 0.15 * (high - low))
    return max(0.0, low - margin), min(100.0 + margin / 2, high + margin)


def tradeoff_plot(report: dict[str, Any], target: Path) -> None:
    """Size vs the plotted metric (`plotted_metric`) per part, one colour per variant, marker area ~ latency. The
    legend sits below each axis, outside the data, so it never covers a marker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = plotted_metric(report)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.6), constrained_layout=True)
    for ax, part in zip(axes, ("embedder", "detector")):
        rows = sorted(
            (r for r in report["records"] if r["part"] == part and metric.value(r) is not None),
            key=lambda r: order(r["variant"]),
        )
        for r in rows:
            mb, value, ms = r["bytes"] / 1e6, metric.value(r) * 100, r["latency_ms_median"] or 1.0
            ax.scatter(
                mb,
                value,
                s=50 + 10 * math.sqrt(ms),
                color=f"C{order(r['variant'])}",
                alpha=0.75,
                edgecolors="k",
                linewidths=0.5,
                label=f"{r['variant']}: {mb:.2f} MB, {value:.1f} %, {ms:.1f} ms",
            )
        failed = [r["variant"] for r in report["records"] if r["part"] == part and metric.value(r) is None]
        title = f"{report['card']} {part}" + (f"  (not built / not loading: {', '.join(failed)})" if failed else "")
        ax.set_title(title, fontsize=10)
        if rows:
            ax.set_ylim(*_value_limits([metric.value(r) * 100 for r in rows]))
            ax.set_xlim(0, max(r["bytes"] for r in rows) / 1e6 * 1.15)
            ax.legend(
                fontsize=8,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.14),
                ncol=2,
                title="variant: size, value, median latency",
                title_fontsize=8,
            )
        ax.set_xlabel("file size (MB)")
        ax.set_ylabel(metric.label)
        ax.grid(alpha=0.3)
    chance = (
        (
            "; random-init weights: bit accuracy is chance level "
            f"({report['pytorch_reference']['bit_accuracy'] * 100:.1f} % for PyTorch itself)"
        )
        if metric.key == "bit_agreement_vs_pytorch"
        else ""
    )
    fig.suptitle(
        f"Which file to ship: size vs {metric.label.rsplit(' (', 1)[0]} (marker area grows with latency){chance}",
        fontsize=10,
    )
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_report(report: dict[str, Any], card_dir: Path) -> list[Path]:
    card_dir = Path(card_dir)
    json_path, md_path, png_path = card_dir / "report.json", card_dir / "report.md", card_dir / "tradeoff.png"
    write_text_atomic(json_path, json.dumps(report, indent=2) + "\n")
    write_text_atomic(md_path, report_markdown(report))
    tradeoff_plot(report, png_path)
    return [json_path, md_path, png_path]
