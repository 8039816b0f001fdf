"""videoseal-tflite: VideoSeal watermarking models as LiteRT/TFLite files that load, run and keep their watermark.

One folder per role, lowest layer first (the layering test holds the allowed imports as a table):
    errors, console < store < tflite < runtime < build < validate, training < bench < cli
The path through the data, one function per arrow (docs: architecture):
    build.cards.load_card -> build.weights.load_model -> build.convert.export.convert_part
    -> build.quantize.variant.quantize_variant (store.variants.VARIANT_TABLE, build.quantize.recipes, repairs)
    -> validate.measure.validate_card -> validate.render.write_report / validate.select.pick
For users: file -> runtime (Embedder, Detector, embed_video, detect_video) -> decide -> verdict.

The public API is importable from here, each name loaded on first use: `convert_card` needs the `[convert]` extra
(torch), and a training job on a machine without the runtime's libraries imports the training layer without
loading the interpreter.
"""

import importlib
from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("videoseal-tflite")  # single source: pyproject.toml
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["Detector", "Embedder", "convert_card", "decide", "detect_video", "embed_video"]


_PUBLIC = {  # name -> the module that defines it
    "Detector": "videoseal_tflite.runtime.image",
    "Embedder": "videoseal_tflite.runtime.image",
    "decide": "videoseal_tflite.runtime.verdict",
    "detect_video": "videoseal_tflite.runtime.video",
    "embed_video": "videoseal_tflite.runtime.video",
    "convert_card": "videoseal_tflite.build.pipeline",  # optional heavy dependency: the [convert] extra (torch)
}


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'videoseal_tflite' has no attribute {name!r}")
