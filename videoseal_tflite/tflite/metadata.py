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
    # Buffers stored past the flatbuffer (offset/size) come back as bytearray slices, which the generated
    # Pack() writes one Python call per byte (about 15 s for a 66 MB model); as uint8 arrays they are copied
    # in one go. Same bytes either way: both routes write an alignment-1 uint8 vector.
    for buf in model.buffers:
        if buf.data is not None and not isinstance(buf.data, np.ndarray):
            buf.data = np.frombuffer(buf.data, dtype=np.uint8)
    payload = json.dumps(record, sort_keys=True, separators=(",", ":")).encode("utf-8")
    model.metadata = model.metadata or []
    ours = [m for m in model.metadata if (m.name or b"").decode() == METADATA_NAME]
    if ours:  # replace the record in its own buffer: writing it twice leaves no orphan buffer behind
        model.buffers[ours[0].buffer].data = np.frombuffer(payload, dtype=np.uint8)
        return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    buffer = schema_fb.BufferT()
    buffer.data = np.frombuffer(payload, dtype=np.uint8)
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


def io_quantization(model_bytes: bytes) -> dict[str, dict[str, Any]]:
    """Signature name -> {dtype, scale, zero_point} of every integer input/output of the default signature:
    what a caller of a `--int8-io` model needs (real = (q - zero_point) * scale). Float tensors are left out."""
    schema_fb, _ = _schema()
    dtypes = {v: k for k, v in vars(schema_fb.TensorType).items() if not k.startswith("_")}
    model = schema_fb.Model.GetRootAs(model_bytes, 0)
    graph = model.Subgraphs(0)
    out: dict[str, dict[str, Any]] = {}
    signature = model.SignatureDefs(0) if model.SignatureDefsLength() else None
    pairs = []
    if signature is not None:
        for i in range(signature.InputsLength()):
            pairs.append((signature.Inputs(i).Name().decode(), signature.Inputs(i).TensorIndex()))
        for i in range(signature.OutputsLength()):
            pairs.append((signature.Outputs(i).Name().decode(), signature.Outputs(i).TensorIndex()))
    for name, index in pairs:
        tensor = graph.Tensors(index)
        dtype = dtypes.get(tensor.Type(), str(tensor.Type()))
        quant = tensor.Quantization()
        if dtype in ("FLOAT32", "FLOAT16") or quant is None or quant.ScaleLength() == 0:
            continue
        out[name] = {"dtype": dtype.lower(), "scale": float(quant.Scale(0)), "zero_point": int(quant.ZeroPoint(0))}
    return out
