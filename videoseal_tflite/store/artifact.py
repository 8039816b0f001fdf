"""One artifact type: what a .tflite file is (card, part, size, variant, weights label), its file name both
ways, finding files in a folder, and the one provenance record written to both the file's metadata and the
manifest (issue #17).

    artifacts/<card>/<part>_<size>_<variant>[.<weights label>].tflite
    e.g. artifacts/videoseal_0.0/detector_256_int8.random-init-seed0.tflite
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from videoseal_tflite.errors import InvalidModelFile
from videoseal_tflite.store.variants import spec

PARTS = ("embedder", "detector")
SUFFIX = ".tflite"


@dataclasses.dataclass(frozen=True)
class Artifact:
    card: str
    part: str
    size: int
    variant: str
    weights_label: str = ""  # `random-init-seed0` for random weights, else empty

    @property
    def filename(self) -> str:
        return (
            f"{self.part}_{self.size}_{self.variant}"
            + (f".{self.weights_label}" if self.weights_label else "")
            + SUFFIX
        )

    def path(self, root: Path) -> Path:
        """Where it lives under an artifact root: `root/<card>/<filename>`."""
        return Path(root) / self.card / self.filename

    def with_variant(self, variant: str) -> Artifact:
        return dataclasses.replace(self, variant=variant)

    @classmethod
    def parse(cls, path: Path) -> Artifact | None:
        """`<root>/videoseal_0.0/detector_256_int8.random-init-seed0.tflite` -> Artifact; None for other files."""
        path = Path(path)
        if not path.name.endswith(SUFFIX):
            return None
        stem, _, label = path.name[: -len(SUFFIX)].partition(".")
        fields = stem.split("_", 2)
        if len(fields) != 3 or fields[0] not in PARTS or not fields[1].isdigit() or not fields[2]:
            return None
        return cls(path.parent.name, fields[0], int(fields[1]), fields[2], label)

    @classmethod
    def find(cls, card_dir: Path, part: str | None = None, variant: str | None = None) -> list[tuple[Artifact, Path]]:
        """The artifacts in one card folder, filtered; real weights (no label) before labelled ones, then by name."""
        found = []
        for path in sorted(Path(card_dir).glob(f"*{SUFFIX}")) if Path(card_dir).is_dir() else []:
            art = cls.parse(path)
            if art and (part is None or art.part == part) and (variant is None or art.variant == variant):
                found.append((art, path))
        return sorted(found, key=lambda item: (bool(item[0].weights_label), item[1].name))


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Everything a file was built from and checked against. The same record is the file's metadata entry
    (`tflite_metadata.METADATA_NAME`) and, with `sha256` and `bytes` added, its manifest entry."""

    card: str
    part: str
    size: int
    nbits: int
    variant: str
    weights: str  # random-init | official | checkpoint | compact
    weights_label: str | None = None
    weights_sha256: str | None = None
    weights_path: str | None = None
    random_init_seed: int | None = None
    card_path: str | None = None
    # what the torch-free runtime needs to blend at full resolution
    yuv: bool = False
    scaling_w: float = 1.0
    scaling_i: float = 1.0
    attenuation: str | None = None
    step_size: int | None = None  # videoseal's video step (embed every k-th frame), from the card
    detection_logit_trained: bool = True  # False: the detector's column 0 is no score (card args)
    tile_period: int | None = None  # the watermark's period at the processing size: `detect` may re-synchronise
    payload_code: dict | None = None  # {"m", "t"}: the BCH code of the card's payload (runtime/payload.py)
    # how it was built
    rewrites: tuple[dict, ...] = ()
    recipe: list | None = None
    repairs_applied: tuple[dict, ...] = ()
    int8_io: bool = False
    io_quantization: dict = dataclasses.field(default_factory=dict)
    calibration_range: str | None = None
    calibration_set: list | None = None
    input_hash: str | None = None
    # how it was checked
    status: str = "ok"
    parity_vs_pytorch: dict | None = None
    agreement_vs_fp32: dict | None = None

    @property
    def artifact(self) -> Artifact:
        return Artifact(self.card, self.part, self.size, self.variant, self.weights_label or "")

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["rewrites"], out["repairs_applied"] = list(self.rewrites), list(self.repairs_applied)
        return out

    def manifest_entry(self, sha256: str, size_bytes: int) -> dict[str, Any]:
        return {**self.to_json(), "sha256": sha256, "bytes": size_bytes}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Provenance:
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k in known}
        for key in ("rewrites", "repairs_applied"):  # older files stored names only
            fields[key] = tuple(x if isinstance(x, dict) else {"name": x} for x in fields.get(key) or ())
        return cls(**fields)


# what `make convert` builds (the Makefile's CARD reads it): `compact64`, 64 bits with a BCH payload code, the first
# card whose verdict can decide at FPR 1e-6 (issue #26; its held-out table and false positives: docs/validation.md).
# `compact_robust` (16 bits, the previous default) reads crops better but can never decide at 1e-6
DEFAULT_CARD = "compact64"


def cards_present(artifacts: Path) -> list[str]:
    """Card folders under the artifact root that hold at least one artifact."""
    root = Path(artifacts)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and Artifact.find(p)) if root.is_dir() else []


def default_card(artifacts: Path) -> str:
    """The one card present in the artifacts folder, else `make convert`'s default."""
    present = cards_present(artifacts)
    return present[0] if len(present) == 1 else DEFAULT_CARD


def find_model(artifacts: Path, card: str | None, part: str, variant: str) -> Path:
    """artifacts/<card>/<part>_<size>_<variant>[.label].tflite; real weights are preferred over random-init."""
    spec(variant)  # UnknownVariant names the known ones
    card = card or default_card(artifacts)
    found = Artifact.find(Path(artifacts) / card, part, variant)
    if not found:
        present = cards_present(artifacts)
        where = f"cards present in {artifacts}: {', '.join(present)}" if present else f"no card in {artifacts}"
        raise InvalidModelFile(
            f"no {variant} {part} for card {card} ({where}); run `make convert` "
            f"(or videoseal-tflite convert --card {card})"
        )
    return found[0][1]
