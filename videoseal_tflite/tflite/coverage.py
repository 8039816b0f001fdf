"""Where each file runs on a CPU (issue #16): how many nodes LiteRT's default XNNPACK delegate took (N of M),
which ops stay on the reference (built-in) kernels, and where the graph crosses between int8 and float.

Read from the interpreter itself, not guessed from op names: after the default delegate is applied, the
interpreter's node list holds the M nodes of the model plus one DELEGATE node per partition XNNPACK took.
A partition is the set of model nodes that produce the DELEGATE node's outputs, walked back to its inputs
(TFLite partitions are convex, so that walk finds exactly the replaced nodes); every other node runs on the
built-in kernels.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Sequence

from videoseal_tflite.tflite.inspect import Inspection, OpRecord, inspect_model
from videoseal_tflite.tflite.interpreter import SignatureModel

DELEGATE_OP = "DELEGATE"


@dataclasses.dataclass(frozen=True)
class Coverage:
    nodes: int  # M: the model's nodes
    delegated: int  # N: nodes the XNNPACK delegate took
    partitions: int  # DELEGATE nodes (each a subgraph XNNPACK runs)
    reference_ops: tuple[tuple[int, str], ...]  # (node id, op) left on the built-in kernels
    quantize: int  # QUANTIZE nodes on activations (float -> int8)
    dequantize: int  # DEQUANTIZE nodes on activations (int8 -> float)
    crossings: int  # tensors that cross between int8 and float

    @property
    def reference_histogram(self) -> dict[str, int]:
        return dict(Counter(op for _, op in self.reference_ops).most_common())

    def to_json(self) -> dict:
        return {"xnnpack_nodes": self.delegated, "nodes": self.nodes, "partitions": self.partitions,
                "reference_ops": [{"node": n, "op": op} for n, op in self.reference_ops],
                "reference_histogram": self.reference_histogram, "quantize": self.quantize,
                "dequantize": self.dequantize, "int8_float_crossings": self.crossings}  # fmt: skip

    def line(self) -> str:
        left = ", ".join(f"{op} x{n}" for op, n in self.reference_histogram.items()) or "none"
        return (f"XNNPACK {self.delegated} of {self.nodes} nodes in {self.partitions} partition(s); "
                f"reference kernels: {left}; QUANTIZE {self.quantize}, DEQUANTIZE {self.dequantize}")  # fmt: skip


def _partition(delegate: dict, producer: dict[int, int], inputs_of: dict[int, list[int]]) -> set[int]:
    """Model nodes replaced by one DELEGATE node: producers of its outputs, walked back to its inputs."""
    boundary = {int(t) for t in delegate["inputs"]}
    todo, seen = [int(t) for t in delegate["outputs"]], set()
    while todo:
        tensor = todo.pop()
        node = producer.get(tensor)
        if node is None or node in seen or tensor in boundary:
            continue
        seen.add(node)
        todo.extend(inputs_of[node])
    return seen


def inspect_with_coverage(path: Path, load: bool = True, runtime: str = "litert") -> Inspection:
    """`inspect_model`, plus XNNPACK's coverage when the file loaded in LiteRT's isolated check (it is then safe to
    load in this process)."""
    result = inspect_model(path, load=load, runtime=runtime)
    if result.load is not None and result.load.loads and runtime == "litert":
        result.coverage = xnnpack_coverage(path, ops=result.ops).to_json()
    return result


def xnnpack_coverage(path: Path, threads: int = 2, ops: Sequence[OpRecord] | None = None) -> Coverage:
    """Load `path` with LiteRT's default delegates and read which nodes XNNPACK took (`ops`: the file's operators,
    when the caller has inspected it already)."""
    details = SignatureModel(path, threads=threads).interpreter._get_ops_details()
    model_nodes = [d for d in details if d["op_name"] != DELEGATE_OP]
    producer = {int(t): d["index"] for d in model_nodes for t in d["outputs"]}
    inputs_of = {d["index"]: [int(t) for t in d["inputs"] if t >= 0] for d in model_nodes}
    delegated: set[int] = set()
    delegates = [d for d in details if d["op_name"] == DELEGATE_OP]
    for delegate in delegates:
        delegated |= _partition(delegate, producer, inputs_of)
    reference = tuple((d["index"], d["op_name"]) for d in model_nodes if d["index"] not in delegated)
    # on activations only: a DEQUANTIZE of a constant (fp16 / weight-only weights) is a load-time unpacking
    ops = inspect_model(path, load=False).ops if ops is None else ops
    qdq = Counter(op.op for op in ops
                  if op.op in ("QUANTIZE", "DEQUANTIZE") and op.inputs and not op.inputs[0].const)  # fmt: skip
    return Coverage(len(model_nodes), len(delegated), len(delegates), reference, qdq["QUANTIZE"], qdq["DEQUANTIZE"],
                    qdq["QUANTIZE"] + qdq["DEQUANTIZE"])  # fmt: skip
