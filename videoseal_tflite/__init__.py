"""videoseal-tflite: VideoSeal watermarking models as LiteRT/TFLite files that load, run and keep their watermark.

The path through the data, one function per arrow:
    cards.load_card -> weights.build_model -> convert.wrappers -> convert.export.convert_part
    -> quantize.quantize_variant -> validate.inspect_model / validate.report
"""

__version__ = "0.1.0"
