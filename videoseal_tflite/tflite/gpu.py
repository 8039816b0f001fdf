"""The GPU verdict that can be had without a GPU (issue #16): TensorFlow Lite's own model analyzer with
`gpu_compatibility=True`, parsed. It is a static check of ops and attributes against the GPU delegate's
support list, labelled as such everywhere: it is no evidence that the file runs, or runs fast, on a GPU.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

_WARNING = "GPU COMPATIBILITY WARNING"
_OP_LINE = re.compile(r"Op#(\d+)\s+(\w+)")


def parse_analyzer(text: str) -> dict:
    """The analyzer's report -> {verdict, blocking_ops: [{node, op, why}]}."""
    blocking, current = [], None
    for line in text.splitlines():
        match = _OP_LINE.search(line)
        if match:
            current = (int(match.group(1)), match.group(2))
        if _WARNING in line and "compatibility issues at nodes" not in line:  # that one is the summary
            why = line.split(_WARNING, 1)[1].lstrip(": ").strip()
            node, op = current if current else (None, None)
            blocking.append({"node": node, "op": op, "why": why})
    compatible = not blocking and "looks compatible with GPU delegate" in text
    verdict = "compatible" if compatible else ("incompatible" if blocking else "unknown")
    return {"verdict": verdict, "blocking_ops": blocking}


def gpu_static_check(path: Path) -> dict:
    """tf.lite's analyzer on `path` (TensorFlow is imported on first use, a few seconds)."""
    analyzer = importlib.import_module("tensorflow.lite.python.analyzer")
    text = analyzer._analyzer_wrapper.ModelAnalyzer(str(path), True, True)
    return {"check": "static check: tf.lite Analyzer gpu_compatibility", **parse_analyzer(text)}
