"""Mark and read files with the .tflite models alone (numpy, Pillow, PyAV, ai-edge-litert, bchlib; no torch).

from videoseal_tflite.runtime import Embedder, Detector, decide
"""

from videoseal_tflite.runtime.image import Detection, Detector, Embedder, load_image, parse_message
from videoseal_tflite.runtime.verdict import Verdict, decide, pvalue
from videoseal_tflite.runtime.video import detect_video, embed_video

__all__ = [
    "Detection",
    "Detector",
    "Embedder",
    "Verdict",
    "decide",
    "detect_video",
    "embed_video",
    "load_image",
    "parse_message",
    "pvalue",
]
