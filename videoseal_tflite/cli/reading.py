"""The message a command is given, and what embed and detect report about a reading: bits, verdict, payload,
re-synchronisation and tile tracking (the lines a user reads and the `--json` fields)."""

from __future__ import annotations

import argparse

from videoseal_tflite.errors import InvalidMessage


def message_of(args: argparse.Namespace, meta: dict):
    """The message bits from --message / --message-hex, or --payload encoded with the card's code; None if none."""
    from videoseal_tflite.runtime.image import parse_message
    from videoseal_tflite.runtime.payload import PayloadCode, payload_bits

    if args.payload is not None:
        code = PayloadCode.from_meta(meta)
        if code is None:
            raise InvalidMessage(
                f"card {meta.get('card')} declares no payload code: give its {meta.get('nbits')} bits with --message"
            )
        return code.encode(payload_bits(args.payload, code.data_bits))
    if args.message is None and args.message_hex is None:
        return None
    return parse_message(args.message, args.message_hex, int(meta["nbits"]))


def payload_report(bits, meta: dict, fpr: float, hypotheses: int = 1) -> dict | None:
    """Without a message: the payload decoded with the card's code, and its verdict at `fpr` (None: no code)."""
    from videoseal_tflite.runtime.payload import PayloadCode, payload_text

    code = PayloadCode.from_meta(meta)
    if code is None:
        return None
    decoded = code.decode(bits)
    pvalue = decoded.pvalue_among(hypotheses)
    out = {"code": code.to_json(), "check_passed": decoded.ok, "corrected_bits": decoded.corrected, "pvalue": pvalue}
    if decoded.ok:
        out |= payload_text(decoded.data)
    best = min(1.0, code.pvalue(0) * hypotheses)
    if best > fpr:  # the code cannot decide at this rate even from a perfect reading
        return out | {
            "watermarked": None,
            "reason": f"a clean payload reaches at best p-value {best:.2g} > FPR {fpr:.0e}",
        }
    return out | {"watermarked": decoded.ok and pvalue <= fpr}


def payload_lines(payload: dict, fpr: float) -> list[str]:
    nbits = payload["code"]["data_bits"] + payload["code"]["ecc_bits"]
    # a payload read from the image is chosen by the image: its p-value counts every codeword near the reading, so it
    # decides only with few corrections. One known before looking is tested on all its bits (binomial): say so
    stronger = (
        f"note: a payload known in advance is the stronger test: `detect --payload TEXT` compares all {nbits} bits "
        "with it (the binomial p-value)"
    )
    if not payload["check_passed"]:
        return ["payload: the code's check failed (more flipped bits than it corrects): no payload read",
                f"verdict: not shown to be watermarked at FPR {fpr:.0e}", stronger]  # fmt: skip
    shown = payload["text"] if payload["text"] is not None else payload["hex"]
    decided = {True: "watermarked", False: "not shown to be watermarked", None: "undecided"}[payload["watermarked"]]
    return [
        f"payload: {shown!r} ({payload['hex']}; check passed, {payload['corrected_bits']} bits corrected)",
        f"verdict: {decided} (p-value {payload['pvalue']:.3g}, FPR {fpr:.0e})",
    ] + ([stronger] if payload["watermarked"] is not True else [])


def detection_json(detection, message, meta: dict) -> dict:
    """Bits, and the detection logit only where the card trained it (else null, with the reason): embed's and
    detect's JSON say the same."""
    from videoseal_tflite.runtime.image import bits_to_text

    note = detection_logit_note(meta)
    out = {"bits": bits_to_text(detection.bits), "detection_logit": None if note else detection.detection_logit}
    if note:
        out["detection_logit_note"] = note
    if message is not None:
        out["bit_accuracy"] = detection.bit_accuracy(message)
    return out


def synced_json(detection) -> dict:
    """The re-synchronisation's record; `kept` says whether its reading replaced the as-is one."""
    synced = detection.searched
    return {
        "kept": detection.synced is not None,
        "tile_found": synced.found,
        "extent": list(synced.extent),
        "phase": list(synced.phase),
        "agreement": synced.agreement,
        "hypotheses": synced.hypotheses,
        "extents_read": synced.extents_read,
    }


def synced_line(detection) -> str:
    """What the re-synchronisation did. "Tile found" only above resync.FOUND_ABOVE, the agreement that unmarked
    images were not measured to reach."""
    synced = detection.searched
    count = f"{synced.hypotheses} readings counted, p-values x {synced.hypotheses}; --no-resync reads as is only"
    if detection.synced is None:
        return (
            f"re-synchronisation: the reading as is was unsure and no re-found reading was surer; kept as is ({count})"
        )
    cx, cy = synced.extent
    if not synced.found:
        return (
            f"re-synchronisation: the reading as is was unsure; no tile found (best agreement {synced.agreement:.2f}, "
            f"as unmarked images read); the surer reading is kept ({count})"
        )
    return (
        f"re-synchronised: the reading as is was unsure; the mark's tile was found at {cx:.3f} x {cy:.3f} of the "
        f"marked image's width x height (a crop?) ({count})"
    )


def frame_accuracy_json(detection, message) -> dict:
    per_frame = detection.frame_bit_accuracies(message)
    return {
        "mean": float(per_frame.mean()),
        "std": float(per_frame.std()),
        "min": float(per_frame.min()),
        "max": float(per_frame.max()),
        "per_frame": [float(v) for v in per_frame],
        "frame_indices": [int(i) for i in detection.frame_indices],
    }


def tracking_json(detection) -> dict:
    import numpy as np

    from videoseal_tflite.runtime.video import DRIFT_REACH, DRIFT_STEP

    shifts = detection.frame_shifts
    return {
        "frames_moved": int((np.abs(shifts).max(axis=1) > 0).sum()),
        "largest_shift": float(np.abs(shifts).max()),
        "step": DRIFT_STEP,
        "reach": DRIFT_REACH,
        "per_frame_shift": [[float(dx), float(dy)] for dx, dy in shifts],
    }


def tracking_line(tracking: dict) -> str:
    return (
        f"tile tracked: {tracking['frames_moved']} of {len(tracking['per_frame_shift'])} frames read with the grid "
        f"moved (up to {tracking['largest_shift']:g} px at the processing size: the codec drags the mark with the "
        "picture; --no-resync reads as is)"
    )


def detection_logit_note(meta: dict) -> str | None:
    """Why the detector's column 0 (detection logit) says nothing, or None when it was trained with the weights."""
    if "random-init" in str(meta.get("weights_label", "")):
        return "random-init weights: not a trained detection score"
    if meta.get("detection_logit_trained") is False:
        return "not trained with these weights (the card says so): not a detection score"
    return None


def verdict_lines(verdict) -> list[str]:
    return [
        f"matching bits: {verdict.matching_bits}/{verdict.nbits}",
        f"p-value: {verdict.pvalue:.3g}",
        f"verdict: {verdict.sentence()}",
    ]
