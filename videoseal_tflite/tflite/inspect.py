"""Static inspection of a .tflite: op histogram, operand dtypes, constants, and known-bad patterns.

Flags (each `{op, node, kind, severity, detail}`):
- `batch_matmul_dtypes` (error): operand dtype pair the LiteRT BATCH_MATMUL kernel rejects at prepare.
- `batch_matmul_const_lhs` (warning): a constant left operand; dynamic-range int8 turns it into int8 x float32.
- `broadcast_to_shape` (error): BROADCAST_TO whose constant target shape the input cannot broadcast to.
- `custom_op` / `flex_op` (error): ops the stock runtime may not have.
- `int64_tensor` (warning): int64 tensors (slow or unsupported on many delegates).
- `slow_int8_batch_matmul` (warning): attention BATCH_MATMUL with two int8 activations: correct, but off
  XNNPACK's fast path (scripts/int8_mixes.py measures it); the `attention_float` repair removes it.
- `quantized_div` (error): a DIV whose divisor is a quantized activation (RMSNorm / LayerNorm / GRN under
  full int8). Every int8 activation range contains 0, so some inputs round the divisor to zero: tf.lite
  stops with `div.cc ... Node N (DIV) failed to invoke` on them (LiteRT runs on with a wrong value).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from videoseal_tflite.errors import InvalidModelFile
from videoseal_tflite.tflite.load_check import LoadResult, load_check
from videoseal_tflite.tflite.metadata import read_metadata

# (lhs, rhs) dtype pairs the LiteRT BATCH_MATMUL kernel prepares (batch_matmul.cc)
BATCH_MATMUL_OK = {("FLOAT32", "FLOAT32"), ("INT8", "INT8"), ("INT16", "INT16"), ("FLOAT32", "INT8"), ("INT16", "INT8")}


@dataclasses.dataclass(frozen=True)
class Operand:
    tensor: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    const: bool


@dataclasses.dataclass(frozen=True)
class OpRecord:
    node: int
    op: str
    inputs: tuple[Operand, ...]
    outputs: tuple[Operand, ...]

    @property
    def source(self) -> str:
        """Source module as litert-torch records it in the output tensor name (best effort)."""
        return self.outputs[0].name if self.outputs else ""


@dataclasses.dataclass(frozen=True)
class Flag:
    op: str
    node: int | None
    kind: str
    severity: str
    detail: str


@dataclasses.dataclass
class Inspection:
    path: str
    bytes: int
    sha256: str
    metadata: dict[str, Any] | None
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    op_histogram: dict[str, int]
    ops: list[OpRecord]
    flags: list[Flag]
    load: LoadResult | None = None
    coverage: dict[str, Any] | None = None  # coverage.Coverage.to_json(): XNNPACK N of M, reference ops, Q/DQ

    @property
    def errors(self) -> list[Flag]:
        return [f for f in self.flags if f.severity == "error"]

    def ops_of(self, name: str) -> list[OpRecord]:
        return [op for op in self.ops if op.op == name]

    def to_json(self, with_ops: bool = True) -> dict[str, Any]:
        out = {
            "path": self.path,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "metadata": self.metadata,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "op_histogram": self.op_histogram,
            "flags": [dataclasses.asdict(f) for f in self.flags],
            "load": self.load.to_json() if self.load else None,
            "xnnpack": self.coverage,
        }
        if with_ops:
            out["ops"] = [
                {
                    "node": op.node,
                    "op": op.op,
                    "source": op.source,
                    "inputs": [{"dtype": i.dtype, "shape": list(i.shape), "const": i.const} for i in op.inputs],
                    "outputs": [{"dtype": o.dtype, "shape": list(o.shape)} for o in op.outputs],
                }
                for op in self.ops
            ]
        return out


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _tensors(model, subgraph, n_buffers: int, file_size: int) -> list[Operand]:
    """Every tensor of the subgraph; `const` where its buffer holds data. Buffers running past the file raise."""
    from ai_edge_litert import schema_py_generated as fb

    type_names = _enum_names(fb.TensorType)
    buffer_has_data = []
    for b in range(n_buffers):
        buf = model.Buffers(b)
        if buf.DataLength() > 0:
            try:
                buf.DataAsNumpy()  # a view; raises when the data vector runs past the end of the file
            except ValueError:
                raise ValueError(f"buffer {b} claims {buf.DataLength()} bytes, past the end of the file") from None
        elif buf.Offset() > 1 and buf.Offset() + buf.Size() > file_size:
            raise ValueError(
                f"buffer {b} lies beyond the end of the file ({buf.Offset() + buf.Size()} > {file_size} bytes)"
            )
        buffer_has_data.append(buf.DataLength() > 0 or buf.Offset() > 1)
    tensors = []
    for t in range(subgraph.TensorsLength()):
        tensor = subgraph.Tensors(t)
        shape = tuple(int(x) for x in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        buf = tensor.Buffer()
        tensors.append(
            Operand(
                tensor=t,
                name=(tensor.Name() or b"").decode("utf-8", "replace"),
                dtype=type_names.get(tensor.Type(), f"TYPE_{tensor.Type()}"),
                shape=shape,
                const=0 < buf < n_buffers and buffer_has_data[buf],
            )
        )
    return tensors


def _interface(model, subgraph, tensors: list[Operand]) -> tuple[list[dict], list[dict]]:
    """Inputs and outputs with their signature names (what users see: image, message, bit_logits, watermark)."""

    def io(indices):
        return [{"name": tensors[j].name, "dtype": tensors[j].dtype, "shape": list(tensors[j].shape)} for j in indices]

    inputs = io(subgraph.InputsAsNumpy().tolist() if subgraph.InputsLength() else [])
    outputs = io(subgraph.OutputsAsNumpy().tolist() if subgraph.OutputsLength() else [])
    if model.SignatureDefsLength():
        sig = model.SignatureDefs(0)
        for side, count, getter in (
            (inputs, sig.InputsLength(), sig.Inputs),
            (outputs, sig.OutputsLength(), sig.Outputs),
        ):
            names = {getter(k).TensorIndex(): getter(k).Name().decode() for k in range(count)}
            by_tensor_name = {tensors[idx].name: nm for idx, nm in names.items() if 0 <= idx < len(tensors)}
            for entry in side:
                entry["signature_name"] = by_tensor_name.get(entry["name"], entry["name"])
    return inputs, outputs


def _parse(data: bytes, path: Path):
    from ai_edge_litert import schema_py_generated as fb

    if len(data) < 16 or data[4:8] != b"TFL3":
        raise InvalidModelFile(f"{path} is not a TFLite model (no TFL3 file identifier)")
    try:
        model = fb.Model.GetRootAs(data, 0)
        if model.SubgraphsLength() < 1 or model.SubgraphsLength() > len(data) // 4:
            raise ValueError("no subgraph")
        subgraph = model.Subgraphs(0)
        n_tensors, n_ops, n_buffers = subgraph.TensorsLength(), subgraph.OperatorsLength(), model.BuffersLength()
        if max(n_tensors, n_ops, n_buffers) > len(data) // 4:
            raise ValueError("table sizes exceed the file size")
        op_names = _enum_names(fb.BuiltinOperator)
        tensors = _tensors(model, subgraph, n_buffers, len(data))
        opcodes = []
        for c in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(c)
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = op_names.get(builtin, f"OP_{builtin}")
            if name == "CUSTOM":
                name = (code.CustomCode() or b"CUSTOM").decode("utf-8", "replace")
                name = name if name.startswith("Flex") else f"CUSTOM:{name}"
            opcodes.append(name)
        ops = []
        for i in range(n_ops):
            op = subgraph.Operators(i)
            ins = tuple(tensors[j] for j in op.InputsAsNumpy().tolist() if j >= 0) if op.InputsLength() else ()
            outs = tuple(tensors[j] for j in op.OutputsAsNumpy().tolist() if j >= 0) if op.OutputsLength() else ()
            ops.append(OpRecord(i, opcodes[op.OpcodeIndex()], ins, outs))

        inputs, outputs = _interface(model, subgraph, tensors)
        return model, tensors, ops, inputs, outputs
    except InvalidModelFile:
        raise
    except Exception as exc:  # a truncated or corrupt flatbuffer surfaces as any of struct/Index/Value errors
        raise InvalidModelFile(
            f"{path} is not a readable TFLite model ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None


def _const_shape(model, tensor: Operand, data: bytes) -> tuple[int, ...] | None:
    from ai_edge_litert import schema_py_generated as fb  # noqa: F401

    sub = model.Subgraphs(0)
    buf = model.Buffers(sub.Tensors(tensor.tensor).Buffer())
    if buf.DataLength() > 0:
        raw = buf.DataAsNumpy().tobytes()
    elif buf.Offset() > 1:
        raw = data[buf.Offset() : buf.Offset() + buf.Size()]
    else:
        return None
    dtype = {"INT32": np.int32, "INT64": np.int64}.get(tensor.dtype)
    return tuple(int(x) for x in np.frombuffer(raw, dtype=dtype)) if dtype else None


SLOW_INT8_BATCH_MATMUL = "slow_int8_batch_matmul"


def _batch_matmul_flag(op: OpRecord) -> Flag | None:
    lhs, rhs = op.inputs[0], op.inputs[1]
    operands = f"{lhs.dtype}{' const' if lhs.const else ''} x {rhs.dtype}{' const' if rhs.const else ''}"
    if (lhs.dtype, rhs.dtype) not in BATCH_MATMUL_OK:
        return Flag(op.op, op.node, "batch_matmul_dtypes", "error",
                    f"operands {operands}: the kernel accepts f32xf32, int8xint8, int16xint16, f32xint8, int16xint8; "
                    f"source {op.source}")  # fmt: skip
    if lhs.dtype == rhs.dtype == "INT8" and not lhs.const and not rhs.const:
        return Flag(op.op, op.node, SLOW_INT8_BATCH_MATMUL, "warning",
                    "int8 x int8 activation BATCH_MATMUL: XNNPACK has no int8 kernel for it, so it runs on the "
                    f"reference kernel (full int8 ViT detector 2.4x slower than FP32); source {op.source}")  # fmt: skip
    if lhs.const and lhs.dtype == "FLOAT32":
        return Flag(op.op, op.node, "batch_matmul_const_lhs", "warning",
                    f"constant left operand {list(lhs.shape)}: dynamic-range int8 would make it int8 x float32; "
                    f"source {op.source}")  # fmt: skip
    return None


def _broadcast_flag(model, op: OpRecord, data: bytes) -> Flag | None:
    target = _const_shape(model, op.inputs[1], data)
    if target is None:
        return None
    try:
        ok = tuple(np.broadcast_shapes(op.inputs[0].shape, target)) == tuple(target)
    except ValueError:
        ok = False
    return None if ok else Flag(op.op, op.node, "broadcast_to_shape", "error",
                                f"input shape {list(op.inputs[0].shape)} cannot broadcast to {list(target)}; "
                                f"source {op.source}")  # fmt: skip


def _op_flag(model, op: OpRecord, data: bytes) -> Flag | None:
    """What is known to fail (error) or to be slow (warning) about one op, from its type and operand dtypes."""
    if op.op == "BATCH_MATMUL" and len(op.inputs) >= 2:
        return _batch_matmul_flag(op)
    if op.op == "BROADCAST_TO" and len(op.inputs) >= 2:
        return _broadcast_flag(model, op, data)
    if op.op.startswith("Flex"):
        return Flag(op.op, op.node, "flex_op", "error", "TensorFlow (Flex) op: needs the Flex delegate")
    if op.op.startswith("CUSTOM"):
        return Flag(op.op, op.node, "custom_op", "error", "custom op: needs a registered custom kernel")
    divisor = op.inputs[1] if op.op == "DIV" and len(op.inputs) >= 2 else None
    if divisor is not None and divisor.dtype in ("INT8", "INT16") and not divisor.const:
        return Flag(op.op, op.node, "quantized_div", "error",
                    f"DIV by a quantized activation ({divisor.dtype}): the divisor rounds to zero on some "
                    f"inputs, where tf.lite stops with '(DIV) failed to invoke'; source {op.source}")  # fmt: skip
    return None


def _flags(model, tensors: list[Operand], ops: list[OpRecord], data: bytes) -> list[Flag]:
    flags = [flag for op in ops if (flag := _op_flag(model, op, data)) is not None]
    int64 = [t for t in tensors if t.dtype == "INT64"]
    if int64:
        detail = f"{len(int64)} int64 tensors, e.g. '{int64[0].name}' {list(int64[0].shape)}"
        flags.append(Flag("-", None, "int64_tensor", "warning", detail))
    return flags


def inspect_model(path: Path, load: bool = True, runtime: str = "litert") -> Inspection:
    """Inspect `path`; with `load`, also allocate + invoke it in a child process. Raises InvalidModelFile."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidModelFile(f"cannot read {path}: {exc.strerror}") from None
    model, tensors, ops, inputs, outputs = _parse(data, path)
    try:
        metadata = read_metadata(data)
    except Exception:  # metadata is ours and optional; corrupt metadata is not a reason to refuse inspection
        metadata = None
    histogram = dict(sorted(collections.Counter(op.op for op in ops).items(), key=lambda kv: (-kv[1], kv[0])))
    result = Inspection(
        path=str(path),
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        metadata=metadata,
        inputs=inputs,
        outputs=outputs,
        op_histogram=histogram,
        ops=ops,
        flags=_flags(model, tensors, ops, data),
    )
    if load:
        result.load = load_check(path, runtime)
    return result


def format_inspection(result: Inspection) -> str:
    """The human-readable report `videoseal-tflite inspect` prints."""
    lines = [f"{result.path}  ({result.bytes / 1e6:.2f} MB, sha256 {result.sha256[:12]})"]
    if result.metadata:
        meta = result.metadata
        lines.append(
            f"  model: {meta.get('card')} {meta.get('part')} {meta.get('variant')}, nbits {meta.get('nbits')}, "
            f"weights {meta.get('weights_label') or meta.get('weights')}"
        )
    for title, side in (("inputs", result.inputs), ("outputs", result.outputs)):
        lines.append(
            f"  {title}: " + ", ".join(f"{e.get('signature_name', e['name'])} {e['dtype']}{e['shape']}" for e in side)
        )
    lines.append("  ops: " + ", ".join(f"{name} {count}" for name, count in result.op_histogram.items()))
    bmm = result.ops_of("BATCH_MATMUL")
    if bmm:
        pairs = collections.Counter(
            f"[{op.inputs[0].dtype}{' const' if op.inputs[0].const else ''}, "
            f"{op.inputs[1].dtype}{' const' if op.inputs[1].const else ''}]"
            for op in bmm
        )
        lines.append("  BATCH_MATMUL operands: " + ", ".join(f"{k} x{v}" for k, v in pairs.items()))
    if result.flags:
        lines.append(f"  flags ({len(result.flags)}):")
        by_kind = collections.defaultdict(list)
        for flag in result.flags:
            by_kind[(flag.kind, flag.severity)].append(flag)
        for (kind, severity), group in by_kind.items():
            nodes = ", ".join(str(f.node) for f in group[:8]) + (" ..." if len(group) > 8 else "")
            lines.append(f"    {severity} {kind} x{len(group)} (nodes {nodes}): {group[0].detail}")
    else:
        lines.append("  flags: none")
    if result.load is not None:
        load = result.load
        status = "loads and invokes" if load.loads else f"FAILS at {load.stage}: {load.error}"
        lines.append(f"  load ({load.runtime}): {status}")
    if result.coverage is not None:
        cov = result.coverage
        left = ", ".join(f"{r['op']} (node {r['node']})" for r in cov["reference_ops"][:12]) or "none"
        more = f" and {len(cov['reference_ops']) - 12} more" if len(cov["reference_ops"]) > 12 else ""
        lines.append(f"  XNNPACK: {cov['xnnpack_nodes']} of {cov['nodes']} nodes ({cov['partitions']} partitions); "
                     f"reference kernels: {left}{more}")  # fmt: skip
        lines.append(f"  int8/float crossings: {cov['int8_float_crossings']} (QUANTIZE {cov['quantize']}, "
                     f"DEQUANTIZE {cov['dequantize']} on activations)")  # fmt: skip
    return "\n".join(lines)
