"""Card + weight source -> a PyTorch `Videoseal` module, with the provenance of its weights.

Weight sources, in order: `--checkpoint PATH`; weights bundled in this package (card
`checkpoint_path: package:...`); the card's official checkpoint (downloaded into a cache);
`--random-init SEED`, only when asked for. Nothing else is ever used silently.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import torch

from videoseal_tflite.build.cards import ATTENUATION_CONFIGS, Card, load_card
from videoseal_tflite.errors import CheckpointUnavailable, InvalidCheckpoint, NbitsMismatch
from videoseal_tflite.store.atomic import atomic_path
from videoseal_tflite.store.staleness import file_sha256

OFFLINE_ENV = "VIDEOSEAL_TFLITE_OFFLINE"
CACHE_ENV = "VIDEOSEAL_TFLITE_CACHE"


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """What the user asked for. At most one of `checkpoint` / `random_init_seed` is set."""

    checkpoint: Path | None = None
    random_init_seed: int | None = None


@dataclasses.dataclass
class LoadedModel:
    """A ready `videoseal.models.Videoseal` in eval mode plus where its weights came from.

    `weights` is one of `random-init`, `official`, `checkpoint`, `bundled` (inside the package), as in the report.
    `label` goes into file names and log lines: `random-init-seed0` for random weights, else empty.
    """

    card: Card
    model: torch.nn.Module
    weights: str
    weights_path: str | None
    weights_sha256: str | None
    random_init_seed: int | None = None

    @property
    def label(self) -> str:
        return f"random-init-seed{self.random_init_seed}" if self.weights == "random-init" else ""

    def describe(self) -> str:
        if self.weights == "random-init":
            return (
                f"{self.card.name} with RANDOM-INIT weights (seed {self.random_init_seed}); "
                "not a real watermarking model"
            )
        return f"{self.card.name} with {self.weights} weights from {self.weights_path}"


def build_architecture(card: Card) -> torch.nn.Module:
    """The card's Videoseal module with videoseal's own classes, weights as constructed (untrained)."""
    from omegaconf import OmegaConf
    from videoseal.augmentation.augmenter import get_dummy_augmenter
    from videoseal.models import Videoseal, build_embedder, build_extractor
    from videoseal.modules.jnd import JND

    emb_cfg = OmegaConf.create(copy.deepcopy(card.embedder_params))
    ext_cfg = OmegaConf.create(copy.deepcopy(card.extractor_params))
    embedder = build_embedder(card.embedder_model, emb_cfg, card.nbits, card.hidden_size_multiplier)
    extractor = build_extractor(card.extractor_model, ext_cfg, card.img_size, card.nbits)
    attenuation = JND(**ATTENUATION_CONFIGS[card.attenuation]) if card.attenuation else None
    model = Videoseal(
        embedder,
        extractor,
        get_dummy_augmenter(),
        attenuation=attenuation,
        scaling_w=card.scaling_w,
        scaling_i=card.scaling_i,
        img_size=card.img_size,
        blending_method=card.blending_method,
    )
    return model.eval()


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Seeded random weights that exercise every op: BatchNorm stats and rel-pos tables are not left trivial."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if name.endswith(("rel_pos_h", "rel_pos_w")):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
        for _, module in sorted(model.named_modules(), key=lambda kv: kv[0]):
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)


def _checkpoint_nbits(state: dict[str, torch.Tensor]) -> int | None:
    table = state.get("embedder.unet.msg_processor.msg_embeddings.weight")
    if table is not None:
        return int(table.shape[0]) // 2
    linear = state.get("detector.pixel_decoder.linear.weight")
    if linear is not None:
        return int(linear.shape[0]) - 1
    return None


def load_checkpoint_into(model: torch.nn.Module, card: Card, path: Path) -> None:
    """Load an official-layout checkpoint (`{'model': state_dict, 'args': ...}`) into `model`."""
    path = Path(path)
    if not path.is_file():
        raise InvalidCheckpoint(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        raise InvalidCheckpoint(f"{path} is not a PyTorch checkpoint (not a torch.save zip archive)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/garbage files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Weights only load failed" in reason:
            reason = "it holds Python objects other than tensors and plain containers"
        raise InvalidCheckpoint(f"{path} is a corrupt or truncated PyTorch checkpoint ({reason[:160]})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise InvalidCheckpoint(f"{path} is not a VideoSeal checkpoint: expected a dict with a 'model' state dict")
    state = checkpoint["model"]
    ckpt_nbits = _checkpoint_nbits(state)
    args_nbits = checkpoint.get("args", {}).get("nbits") if isinstance(checkpoint.get("args"), dict) else None
    for found in (ckpt_nbits, args_nbits):
        if found is not None and found != card.nbits:
            raise NbitsMismatch(f"card {card.name} has nbits={card.nbits} but checkpoint {path} has nbits={found}")
    wanted = {k for k in model.state_dict() if k.startswith(("embedder.", "detector."))}
    missing = sorted(wanted - set(state))
    if missing:
        raise InvalidCheckpoint(
            f"checkpoint {path} does not fit card {card.name}: {len(missing)} weights missing, e.g. '{missing[0]}'"
        )
    try:
        model.load_state_dict({k: v for k, v in state.items() if k in wanted}, strict=False)
    except RuntimeError as exc:
        first = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        detail = first[0] if first else str(exc).splitlines()[0]
        raise InvalidCheckpoint(f"checkpoint {path} does not fit card {card.name}: {detail[:200]}") from None


def _cache_dir() -> Path:
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "videoseal-tflite"
    )
    return Path(base) / "checkpoints"


def _download_url(card: Card) -> str:
    url = str(card.checkpoint_url)
    # the card names the HF repo file; its direct download lives under resolve/main
    prefix = "https://huggingface.co/facebook/video_seal/"
    if url.startswith(prefix) and "/resolve/" not in url:
        url = prefix + "resolve/main/" + url[len(prefix) :]
    return url


def fetch_official_checkpoint(card: Card, timeout_s: float = 20.0) -> Path:
    """Return the cached official checkpoint, downloading it first if needed. Raises CheckpointUnavailable."""
    hint = "pass --checkpoint PATH, or --random-init SEED for an untrained model of the same architecture"
    if not card.checkpoint_url or not str(card.checkpoint_url).startswith(("http://", "https://")):
        raise CheckpointUnavailable(f"card {card.name} names no official checkpoint URL; {hint}")
    url = _download_url(card)
    target = _cache_dir() / f"{card.name}-{Path(url).name}"
    if target.is_file():
        return target
    if os.environ.get(OFFLINE_ENV):
        raise CheckpointUnavailable(
            f"official checkpoint of {card.name} is not cached and {OFFLINE_ENV} is set; {hint}"
        )
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, atomic_path(target) as tmp:
            with open(tmp, "wb") as handle:
                while block := response.read(1 << 20):
                    handle.write(block)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise CheckpointUnavailable(
            f"official checkpoint of {card.name} could not be downloaded from {url} ({reason}); {hint}"
        ) from None
    return target


def load_model(card: Card, source: WeightSource = WeightSource()) -> LoadedModel:
    """Build the card's model and put weights in it, following the policy in the module docstring."""
    if source.checkpoint is not None and source.random_init_seed is not None:
        raise CheckpointUnavailable("give either --checkpoint or --random-init, not both")
    if source.random_init_seed is not None:
        torch.manual_seed(source.random_init_seed)
        model = build_architecture(card)
        randomize_(model, source.random_init_seed)
        return LoadedModel(card, model.eval(), "random-init", None, None, source.random_init_seed)
    model = build_architecture(card)
    if source.checkpoint is not None:
        path, kind = Path(source.checkpoint), "checkpoint"
    elif card.bundled:
        path, kind = Path(__file__).parent / str(card.checkpoint_url)[len("package:") :], "bundled"
    else:
        path, kind = fetch_official_checkpoint(card), "official"
    load_checkpoint_into(model, card, path)
    return LoadedModel(card, model.eval(), kind, str(path), file_sha256(path))


def load_model_for_metadata(meta: dict, card_name: str) -> LoadedModel:
    """The PyTorch model with the same weights as a .tflite file, from its metadata record (`Provenance`)."""
    card = load_card(meta.get("card_path") or card_name)
    if meta.get("weights") == "random-init":
        source = WeightSource(random_init_seed=int(meta.get("random_init_seed") or 0))
    elif meta.get("weights") in ("checkpoint", "official") and meta.get("weights_path"):
        source = WeightSource(checkpoint=Path(meta["weights_path"]))
    else:
        source = WeightSource()
    loaded = load_model(card, source)
    built_from = meta.get("weights_sha256")
    if built_from and loaded.weights_sha256 and built_from != loaded.weights_sha256:
        raise InvalidCheckpoint(
            f"the {card.name} files were built from weights with sha256 {built_from[:12]}..., but "
            f"{loaded.weights_path} now has {loaded.weights_sha256[:12]}...; rebuild them (make convert)"
        )
    return loaded
