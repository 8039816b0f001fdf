"""Choosing from a validation report: the floors a CI job fails on, and `pick` (the file to ship)."""

from __future__ import annotations

from typing import Any

from videoseal_tflite.validate.render import _fmt


def below_floor(report: dict[str, Any], min_bit_acc: float | None, max_psnr_drop: float | None) -> list[str]:
    """Every record under a floor, one line each. A file that does not load is below any floor; a variant
    whose build failed (no file was written, nothing can be shipped) is in the report but not a floor breach."""
    problems = []
    fp32_psnr = next(
        (r.get("psnr_db") for r in report["records"] if r["part"] == "embedder" and r["variant"] == "fp32"), None
    )
    for r in report["records"]:
        if r["path"] is None:
            continue
        name = f"{report['card']} {r['part']} {r['variant']}"
        if (min_bit_acc is not None or max_psnr_drop is not None) and not r["loads"]:
            problems.append(f"{name}: does not load ({(r['load_error'] or '')[:120]})")
            continue
        if min_bit_acc is not None and r["bit_accuracy"] is not None and r["bit_accuracy"] < min_bit_acc:
            problems.append(f"{name}: bit accuracy {r['bit_accuracy']:.4f} < {min_bit_acc}")
        if max_psnr_drop is not None and r.get("psnr_db") is not None and fp32_psnr is not None:
            drop = fp32_psnr - r["psnr_db"]
            if drop > max_psnr_drop:
                problems.append(f"{name}: PSNR {r['psnr_db']:.2f} dB is {drop:.2f} dB below FP32 (> {max_psnr_drop})")
    return problems


def pick(
    report: dict[str, Any],
    part: str,
    max_mb: float | None,
    min_bit_acc: float | None,
    max_ms: float | None,
    allow_below_bar: bool = False,
) -> tuple[dict | None, str]:
    """The fastest loading record of `part` meeting every constraint (ties: smaller, then more accurate). A variant
    the repair search left below its quality bar against FP32 (the report's `below_bar`) is not picked unless
    `allow_below_bar`: its bits may still read, but the file is not what the variant promises."""
    rows = [r for r in report["records"] if r["part"] == part and r["loads"]]
    checks = {"loads": lambda r: True}
    bar = "its quality bar vs FP32"
    if not allow_below_bar:
        checks[bar] = lambda r: not r.get("below_bar")
    if max_mb is not None:
        checks[f"size <= {max_mb} MB"] = lambda r: r["bytes"] / 1e6 <= max_mb
    if min_bit_acc is not None:
        checks[f"bit accuracy >= {min_bit_acc}"] = lambda r: (r["bit_accuracy"] or 0) >= min_bit_acc
    if max_ms is not None:
        checks[f"latency <= {max_ms} ms"] = lambda r: (
            r["latency_ms_median"] is not None and r["latency_ms_median"] <= max_ms
        )
    ok = [r for r in rows if all(check(r) for check in checks.values())]
    if not ok:
        unmet = [name for name, check in checks.items() if not any(check(r) for r in rows)] or [
            name for name, check in checks.items() if not all(check(r) for r in rows)
        ]
        return None, f"no {part} meets all constraints; unmet by every file: {', '.join(unmet) or 'the combination'}"
    best = min(ok, key=lambda r: (r["latency_ms_median"] or float("inf"), r["bytes"], -(r["bit_accuracy"] or 0)))
    why = (
        f"{best['variant']}: {best['bytes'] / 1e6:.2f} MB, bit accuracy {best['bit_accuracy']:.4f}, "
        f"{_fmt(best['latency_ms_median'], '.1f')} ms median; fastest of {len(ok)} {part} file(s) meeting "
        + (", ".join(name for name in checks if name != "loads") or "no constraint (all files)")
    )
    skipped = [r["variant"] for r in rows if bar in checks and not checks[bar](r)]
    if skipped:
        why += f"; not picked, below their quality bar: {', '.join(skipped)} (--allow-below-bar to consider them)"
    if best.get("below_bar"):
        why += f"; below its quality bar ({best['below_bar']})"
    return best, why
