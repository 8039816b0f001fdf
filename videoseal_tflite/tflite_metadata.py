"""Read and write the `videoseal_tflite` metadata entry inside a .tflite flatbuffer.

Every model this toolkit writes carries a small JSON record (card, part, nbits, image size, weights,
variant) so that runtime and validation need no side channel.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

METADATA_NAME = "videoseal_tflite"


def _schema():
    from ai_edge_litert import schema_py_generated as schema_fb
    from ai_edge_litert.tools import flatbuffer_utils

    return schema_fb, flatbuffer_utils


def with_metadata(model_bytes: bytes, record: dict[str, Any]) -> bytes:
    """Return `model_bytes` with our metadata entry set to `record` (replacing an older one)."""
    schema_fb, flatbuffer_utils = _schema()
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    payload = json.dumps(record, sort_keys=True, separators=(",", ":")).encode("utf-8")
    buffer = schema_fb.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8)
    model.metadata = [m for m in (model.metadata or []) if (m.name or b"").decode() != METADATA_NAME] if model.metadata else []
    model.buffers.append(buffer)
    entry = schema_fb.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_metadata(model_bytes: bytes) -> dict[str, Any] | None:
    """Our metadata record, or None when the file has none. Reads the flatbuffer lazily (no full unpack)."""
    schema_fb, _ = _schema()
    model = schema_fb.Model.GetRootAs(model_bytes, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() and entry.Name().decode() == METADATA_NAME:
            data = model.Buffers(entry.Buffer()).DataAsNumpy()
            return json.loads(bytes(data).decode("utf-8"))
    return None
