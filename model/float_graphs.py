"""The shipped int8 graphs as float graphs, for the CUDA execution provider.

`anycode export --precision int8` writes onnxruntime.quantization's dynamic quantization: each
MatMul becomes DynamicQuantizeLinear (the activations, at run time) -> MatMulInteger (with int8
weights) -> Cast -> Mul (the two scales).  ONNX Runtime's CPU provider fuses that into one fast
kernel; the CUDA provider has no kernel for DynamicQuantizeLinear, so those nodes run on the CPU
with copies to and from the device at every MatMul.  `float_graph` turns each such group back into
one MatMul with the weights dequantized ((q - zero point) x scale, fp32), and each QAttention (the
transformer's attention with its int8 input projection) back into an Attention node, so the whole
graph runs on the GPU.  The shipped files stay as they are: this runs at load time and needs the `onnx` package
(`pip install anycode[gpu]`).  It takes about a second, most of it importing onnx, so `cached` keeps
the result in the user's cache directory (`ANYCODE_CACHE_DIR`, else `$XDG_CACHE_HOME/anycode`, else
`~/.cache/anycode`), keyed by the int8 file's sha256 and this module's VERSION: nothing is ever stale.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

VERSION = 1        # of the conversion: a cached graph of another version is not used


def cache_dir() -> Path:
    if os.environ.get("ANYCODE_CACHE_DIR"):
        return Path(os.environ["ANYCODE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "anycode"


def cached(path: Path, sha256: str) -> str | bytes:
    """float_graph(path) as a file path when an earlier load left it in the cache, else as bytes
    (written to the cache on the way, when it can be)."""
    target = cache_dir() / "float-graphs" / f"{sha256}-v{VERSION}.onnx"
    if target.is_file():
        return str(target)
    model = float_graph(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(model)
        tmp.replace(target)                 # whole or not at all, whoever loads next
    except OSError:
        pass                                # a read-only home: convert again next time
    return model


def float_graph(path: Path) -> bytes:
    """The graph at `path` with every dynamically quantized MatMul as a float MatMul, and every
    QAttention as a float Attention, serialized."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def const(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name])

    drop, added = set(), {}

    def dequantized(weights: str, scale: str, zero_point: str) -> str:
        """A new fp32 initializer (weights - zero point) x scale ("" zero point: 0); its name."""
        zero = const(zero_point).astype(np.float32) if zero_point else np.float32(0)
        name = weights + "__float"
        w = (const(weights).astype(np.float32) - zero) * const(scale).astype(np.float32)
        added[name] = numpy_helper.from_array(w.astype(np.float32), name)
        return name

    for n in g.node:
        if n.op_type != "MatMulInteger" or n.input[1] not in inits:
            continue
        quant = producer.get(n.input[0])
        cast = consumers.get(n.output[0], [])
        if quant is None or quant.op_type != "DynamicQuantizeLinear" or len(cast) != 1 or cast[0].op_type != "Cast":
            continue
        mul = consumers.get(cast[0].output[0], [])
        if len(mul) != 1 or mul[0].op_type != "Mul":
            continue
        scale = producer.get(next(i for i in mul[0].input if i != cast[0].output[0]))
        if scale is None or scale.op_type != "Mul":
            continue
        w_scale = next((i for i in scale.input if i in inits), None)
        if w_scale is None:
            continue
        name = dequantized(n.input[1], w_scale, n.input[3] if len(n.input) > 3 else "")
        drop.update({id(n), id(cast[0]), id(mul[0])})
        g.node.append(helper.make_node("MatMul", [quant.input[0], name], [mul[0].output[0]], name=n.name + "__float"))
    for n in g.node:
        # QAttention (the attention with its int8 input projection, export._Attention): the same
        # Attention node over the float input, with the weights dequantized
        if n.op_type != "QAttention" or n.input[1] not in inits or n.input[4] not in inits:
            continue
        quant = producer.get(n.input[0])
        if quant is None or quant.op_type != "DynamicQuantizeLinear":
            continue
        name = dequantized(n.input[1], n.input[4], n.input[7] if len(n.input) > 7 else "")
        drop.add(id(n))
        mask = n.input[5] if len(n.input) > 5 else ""
        g.node.append(helper.make_node("Attention", [quant.input[0], name, n.input[2], mask], list(n.output),
                                       name=n.name + "__float", domain="com.microsoft",
                                       num_heads=helper.get_attribute_value(
                                           next(a for a in n.attribute if a.name == "num_heads"))))
    kept = [n for n in g.node if id(n) not in drop]
    # the quantizers and scale products nobody reads any more, then the initializers
    outputs = {o.name for o in g.output}
    while True:
        used = {i for n in kept for i in n.input} | outputs
        live = [n for n in kept if any(o in used for o in n.output)]
        if len(live) == len(kept):
            break
        kept = live
    used = {i for n in kept for i in n.input}
    inits_kept = [i for i in g.initializer if i.name in used] + [t for k, t in added.items() if k in used]
    del g.node[:]
    g.node.extend(_topological(kept, {i.name for i in g.input} | {t.name for t in inits_kept}))
    del g.initializer[:]
    g.initializer.extend(inits_kept)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _topological(nodes: list, available: set[str]) -> list:
    """The nodes in an order where each one's inputs are produced before it (the new MatMuls were
    appended at the end)."""
    done, out, pending = set(available) | {""}, [], list(nodes)
    while pending:
        rest = []
        for n in pending:
            if all(i in done for i in n.input):
                out.append(n)
                done.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError("the graph has a cycle or a missing input")
        pending = rest
    return out
