"""videoseal-tflite: VideoSeal watermarking models as LiteRT/TFLite files that load, run and keep their watermark.

The path through the data, one function per arrow (README, "Architecture"):
    cards.load_card -> weights.load_model -> convert.wrappers.export_module -> convert.export.convert_part
    -> quantize.build.quantize_variant (variants.VARIANT_TABLE, quantize.recipes, quantize.repairs)
    -> validate.measure.validate_card -> validate.render.write_report / validate.select.pick
The shipped runtime (`runtime`, `video`) reads the .tflite files through `interpreter` alone.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("videoseal-tflite")  # single source: pyproject.toml
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
