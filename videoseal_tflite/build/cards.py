"""Model cards: everything that differs between VideoSeal models, declared in one place.

A card is videoseal's own yaml layout (`checkpoint_path`, `args`, `embedder`, `extractor`).
Official cards are read from the installed `videoseal` package, ours from `videoseal_tflite/cards/`.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from pathlib import Path
from typing import Any

import yaml

from videoseal_tflite.errors import InvalidCard, UnknownCard
from videoseal_tflite.runtime.payload import PayloadCode

# videoseal's configs/attenuation.yaml is not shipped in the wheel; these are its entries.
ATTENUATION_CONFIGS: dict[str, dict[str, int]] = {
    "jnd_1_1": {"in_channels": 1, "out_channels": 1},
    "jnd_3_3": {"in_channels": 3, "out_channels": 3},
    "jnd_1_3": {"in_channels": 1, "out_channels": 3},
    "jnd_3_1": {"in_channels": 3, "out_channels": 1},
}

_TOP_LEVEL_FIELDS = {"checkpoint_path", "args", "embedder", "extractor", "description", "heldout_images", "training"}
_SUPPORTED_EMBEDDERS = ("unet",)
_SUPPORTED_EXTRACTORS = ("sam", "convnext")


@dataclasses.dataclass(frozen=True)
class Card:
    """A parsed model card. `img_size` is the processing size of both nets (pixels, square)."""

    name: str
    path: Path
    nbits: int
    img_size: int
    embedder_model: str
    embedder_params: dict[str, Any]
    extractor_model: str
    extractor_params: dict[str, Any]
    hidden_size_multiplier: float
    attenuation: str | None
    scaling_w: float
    scaling_i: float
    blending_method: str
    checkpoint_url: str | None
    heldout_images: tuple[str, ...] = ()
    # video: the embedder runs on every step_size-th frame, its watermark reused in between (videoseal's
    # `args.videoseal_step_size`; `Videoseal(step_size=4)` is videoseal's default)
    step_size: int = 4
    # False where the weights never trained the detector's column 0 (the detection logit): tools then say so
    # instead of printing it as a score (`args.detection_logit_trained`)
    detection_logit_trained: bool = True
    # the embedder's watermark repeats with this period (px at the processing size); `detect` then re-finds the tile
    # in a crop read as is (`resync.py`; `args.watermark_tile_period`, None: not periodic, no re-synchronisation)
    tile_period: int | None = None
    # the error-correcting code of the payload (`args.payload_code: {m, t}`, runtime/payload.py); None: raw bits only
    payload_code: dict | None = None

    @property
    def yuv(self) -> bool:
        """True when the embedder works on the Y channel only (videoseal's `*_yuv*` embedders)."""
        return "yuv" in self.embedder_model

    @property
    def bundled(self) -> bool:
        """True for cards whose weights ship inside this package (checkpoint_path is package-relative)."""
        return bool(self.checkpoint_url) and self.checkpoint_url.startswith("package:")


def _official_cards_dir() -> Path:
    return Path(str(importlib.resources.files("videoseal") / "cards"))


def _own_cards_dir() -> Path:
    return Path(__file__).parent / "cards"


def available_cards() -> list[str]:
    names = {p.stem for d in (_official_cards_dir(), _own_cards_dir()) if d.is_dir() for p in d.glob("*.yaml")}
    return sorted(names)


def resolve_card_path(name_or_path: str | Path) -> Path:
    """A card name (`videoseal_0.0`, `compact`) or a path to a yaml file -> the yaml path."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise UnknownCard(f"card file not found: {path}")
        return path
    for folder in (_own_cards_dir(), _official_cards_dir()):
        candidate = folder / f"{text}.yaml"
        if candidate.is_file():
            return candidate
    raise UnknownCard(f"unknown card '{text}'; known cards: {', '.join(available_cards())}")


def _require(mapping: Any, key: str, where: str, path: Path) -> Any:
    if not isinstance(mapping, dict) or key not in mapping or mapping[key] is None:
        raise InvalidCard(f"card {path} is missing required field '{where}{key}'")
    return mapping[key]


def _positive_int(value: Any) -> bool:
    """An int above 0 that is not a bool (yaml's `true` is an int in Python)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _checked_args(args: dict, path: Path) -> tuple[int, int, str | None, str, int]:
    """nbits, processing size, attenuation, blending method and video step size from `args`, each checked."""
    nbits = _require(args, "nbits", "args.", path)
    if not _positive_int(nbits):
        raise InvalidCard(f"card {path} has args.nbits={nbits!r}; it must be a positive integer")
    img_size = args.get("img_size_proc") or args.get("img_size_extractor") or args.get("img_size")
    if not isinstance(img_size, int) or img_size < 32 or img_size % 16:
        raise InvalidCard(
            f"card {path} needs args.img_size_proc (or img_size_extractor), a multiple of 16, got {img_size!r}"
        )
    attenuation = args.get("attenuation")
    if attenuation in (None, "None", "none", False):
        attenuation = None
    elif attenuation not in ATTENUATION_CONFIGS:
        raise InvalidCard(f"card {path}: attenuation '{attenuation}' is not one of {', '.join(ATTENUATION_CONFIGS)}")
    blending = args.get("blending_method", "additive")
    if blending != "additive":
        raise InvalidCard(f"card {path}: blending_method '{blending}' is not supported (only additive)")
    for key in ("scaling_w", "scaling_i"):
        if not isinstance(args.get(key, 1.0), (int, float)):
            raise InvalidCard(f"card {path}: args.{key} must be a number")
    step_size = args.get("videoseal_step_size", 4)
    if not _positive_int(step_size):
        raise InvalidCard(f"card {path}: args.videoseal_step_size must be a positive integer, got {step_size!r}")
    return nbits, int(img_size), attenuation, blending, step_size


def _tile_period(args: dict, img_size: int, path: Path) -> int | None:
    period = args.get("watermark_tile_period")
    if period is None:
        return None
    if not _positive_int(period) or img_size % period:
        raise InvalidCard(
            f"card {path}: args.watermark_tile_period must be a positive integer dividing {img_size}, got {period!r}"
        )
    return period


def _payload_code(args: dict, nbits: int, path: Path) -> dict | None:
    code = args.get("payload_code")
    if code is None:
        return None
    try:
        checked = PayloadCode(nbits, int(code["m"]), int(code["t"]))
    except (TypeError, KeyError, ValueError) as exc:
        raise InvalidCard(f"card {path}: args.payload_code must be {{m, t}} of a BCH code that fits {nbits} bits "
                          f"({exc})") from None  # fmt: skip
    return {"m": checked.m, "t": checked.t}


def load_card(name_or_path: str | Path) -> Card:
    """Parse and check a card. Raises UnknownCard / InvalidCard with one sentence."""
    path = resolve_card_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidCard(f"card {path} is not valid yaml: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise InvalidCard(f"card {path} is not a yaml mapping")
    unknown = sorted(set(raw) - _TOP_LEVEL_FIELDS)
    if unknown:
        raise InvalidCard(f"card {path} has unknown field(s): {', '.join(unknown)}")
    args = _require(raw, "args", "", path)
    embedder = _require(raw, "embedder", "", path)
    extractor = _require(raw, "extractor", "", path)
    nbits, img_size, attenuation, blending, step_size = _checked_args(args, path)
    emb_model = _require(embedder, "model", "embedder.", path)
    ext_model = _require(extractor, "model", "extractor.", path)
    emb_params = _require(embedder, "params", "embedder.", path)
    ext_params = _require(extractor, "params", "extractor.", path)
    if not str(emb_model).startswith(_SUPPORTED_EMBEDDERS):
        raise InvalidCard(f"card {path}: embedder model '{emb_model}' is not supported (supported: unet*)")
    if not str(ext_model).startswith(_SUPPORTED_EXTRACTORS):
        raise InvalidCard(f"card {path}: extractor model '{ext_model}' is not supported (supported: sam*, convnext*)")
    return Card(
        name=path.stem,
        path=path,
        nbits=nbits,
        img_size=img_size,
        embedder_model=str(emb_model),
        embedder_params=emb_params,
        extractor_model=str(ext_model),
        extractor_params=ext_params,
        hidden_size_multiplier=float(args.get("hidden_size_multiplier", 2)),
        attenuation=attenuation,
        scaling_w=float(args.get("scaling_w", 1.0)),
        scaling_i=float(args.get("scaling_i", 1.0)),
        blending_method=blending,
        checkpoint_url=raw.get("checkpoint_path"),
        heldout_images=tuple(raw.get("heldout_images") or ()),
        step_size=step_size,
        detection_logit_trained=args.get("detection_logit_trained", True) is not False,
        tile_period=_tile_period(args, img_size, path),
        payload_code=_payload_code(args, nbits, path),
    )
