"""The whole job for one card: load weights -> FP32 .tflite per part -> manifest entries.

`convert_card` is what `videoseal-tflite convert` and `make convert` call.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from .atomic import ensure_writable_dir
from .cards import load_card
from .convert.export import ConvertedModel, convert_part
from .convert.wrappers import PARTS
from .manifest import update_manifest
from .weights import LoadedModel, WeightSource, load_model

log = logging.getLogger(__name__)

OFFICIAL_CARDS = ("videoseal_0.0", "videoseal_1.0")


def manifest_entry(result: ConvertedModel, loaded: LoadedModel) -> dict:
    return {
        "sha256": result.sha256,
        "bytes": result.bytes,
        "card": result.card,
        "part": result.part,
        "size": result.size,
        "variant": result.variant,
        "weights": loaded.weights,
        "weights_label": loaded.label or None,
        "weights_path": loaded.weights_path,
        "weights_sha256": loaded.weights_sha256,
        "rewrites": [dataclasses.asdict(r) for r in result.rewrites],
        "recipe": None,
        "repairs_applied": [],
        "parity_vs_pytorch": dataclasses.asdict(result.parity),
    }


def convert_card(
    card_name: str,
    source: WeightSource,
    out_root: Path,
    parts: tuple[str, ...] = PARTS,
    rewrites: bool = True,
) -> list[ConvertedModel]:
    """Convert `parts` of a card to FLOAT32 .tflite under `out_root/<card>/` and record them in the manifest."""
    card = load_card(card_name)
    out_dir = ensure_writable_dir(Path(out_root) / card.name)
    loaded = load_model(card, source)
    log.info("converting %s", loaded.describe())
    results = []
    for part in parts:
        result = convert_part(loaded, part, out_dir, rewrites=rewrites)
        results.append(result)
        update_manifest(out_root, {str(result.path.relative_to(out_root)): manifest_entry(result, loaded)})
    return results
