"""The decoding graphs on the GPU as CUDA graphs, with their inputs and outputs bound to the device.

On the CUDA provider a decoding call is short and made of many small kernels: launching them costs
more than running them (docs/bench.md, "Measured on the GPU machine").  ONNX Runtime can capture a
run as a CUDA graph and replay it with one launch, but only at fixed shapes and with its inputs and
outputs at fixed device addresses (IO binding).  `GraphRunner` therefore pads every call up to a
few sizes per dynamic axis (powers of two, "buckets"); each combination is captured once, under
its own graph id, with device buffers of its own: the usual ones at load (`warm`), others on their
first call.  A call's inputs are copied into
those buffers (the padding filled with neutral values: zeros, False, -1 for symbols), its outputs
come back cut to the real sizes.  Inputs that stay the same over a request (the file tokens) are
copied only when they change.  A call larger than the largest bucket runs as usual.

Padding changes nothing in the real rows: padded paths are masked (an additive -inf before the
softmax), padded beams and LSTM rows are separate batch rows, cut off afterwards.
"""
from __future__ import annotations

import itertools

import numpy as np

# the dynamic axes of each graph's inputs, by name: {input: {axis: dimension}}; and where each
# output carries the dimensions to cut back to
AXES = {
    "lstm_value": ({"values": {0: "n"}}, {"h": {1: "n"}, "c": {1: "n"}}),
    "lstm_node": ({"types": {0: "n"}, "index": {0: "n"}, "h": {1: "n"}, "c": {1: "n"}},
                  {"h_out": {1: "n"}, "c_out": {1: "n"}}),
    "score": ({"paths": {0: "b", 1: "p"}, "mask": {0: "b", 1: "p"}, "root": {0: "b"}, "child_index": {0: "b"},
               "copy_symbols": {0: "b", 1: "p"}, "z": {0: "b", 1: "p"}, "files": {0: "f"}, "file_symbols": {0: "f"}},
              {"node_logp": {0: "b"}, "value_logp": {0: "b"}}),
    "contextualize": ({"paths": {0: "b", 1: "p"}, "mask": {0: "b", 1: "p"}}, {"z": {0: "b", 1: "p"}}),
}
PAD = {"copy_symbols": -1, "file_symbols": -1}          # no symbol; everything else pads with 0 / False
SMALLEST = {"n": 16, "b": 1, "p": 32, "f": 256}
LARGEST = {"n": 2048, "b": 16, "p": 512, "f": 512}
PER_REQUEST = ("files", "file_symbols")               # the same array for every step of a request
WARM = {"n": 1024, "b": 8, "p": 256, "f": 256}        # captured at load up to these sizes (the usual ones)
_DTYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_}


def bucket(dim: str, size: int) -> int | None:
    b = SMALLEST[dim]
    while b < size:
        b *= 2
    return b if b <= LARGEST[dim] else None


def pad(graph: str, feed: dict) -> tuple[dict, dict, dict] | None:
    """(the feed padded to its buckets, the real size of each dimension, the bucket of each), or None
    when a size is beyond the largest bucket."""
    axes = AXES[graph][0]
    sizes: dict[str, int] = {}
    for name, arr in feed.items():
        for axis, dim in axes.get(name, {}).items():
            sizes[dim] = max(sizes.get(dim, 0), arr.shape[axis])
    buckets = {dim: bucket(dim, n) for dim, n in sizes.items()}
    if any(b is None for b in buckets.values()):
        return None
    padded = {}
    for name, arr in feed.items():
        shape = list(arr.shape)
        for axis, dim in axes.get(name, {}).items():
            shape[axis] = buckets[dim]
        if shape == list(arr.shape):
            padded[name] = np.ascontiguousarray(arr)
            continue
        out = np.full(shape, PAD.get(name, 0), arr.dtype)
        out[tuple(slice(0, n) for n in arr.shape)] = arr
        if name == "mask" and arr.shape[0] < shape[0]:
            out[arr.shape[0]:, 0] = True          # padded beams see one (zero) path: no 0/0 in their softmax
        padded[name] = out
    return padded, sizes, buckets


def cut(graph: str, names: list[str], outputs: list[np.ndarray], sizes: dict) -> list[np.ndarray]:
    """The outputs of a padded run cut back to the real sizes."""
    out = []
    for name, arr in zip(names, outputs):
        index = [slice(None)] * arr.ndim
        for axis, dim in AXES[graph][1][name].items():
            index[axis] = slice(0, sizes[dim])
        out.append(arr[tuple(index)])
    return out


def warm_feeds(graph: str, inputs) -> list[dict]:
    """A feed for every combination of buckets up to WARM, from the graph's input metadata
    (`session.get_inputs()`): zeros, no symbols, one path per beam."""
    axes = {i.name: AXES[graph][0].get(i.name, {}) for i in inputs}
    dims = sorted({d for a in axes.values() for d in a.values()})
    sizes = []
    for d in dims:
        b, row = SMALLEST[d], []
        while b <= min(WARM[d], LARGEST[d]):
            row.append(b)
            b *= 2
        sizes.append(row)
    feeds = []
    for combo in itertools.product(*sizes):
        at = dict(zip(dims, combo))
        feed = {}
        for i in inputs:
            shape = [at[axes[i.name][k]] if k in axes[i.name] else n for k, n in enumerate(i.shape)]
            arr = np.full(shape, PAD.get(i.name, 0), _DTYPES[i.type])
            if i.name == "mask":
                arr[:, 0] = True
            feed[i.name] = arr
        feeds.append(feed)
    return feeds


class _Bound:
    """One captured shape: device buffers for the inputs and outputs, their binding, its graph id."""

    def __init__(self, ort, session, plain, padded: dict, graph_id: int, device: str):
        self.inputs = {k: ort.OrtValue.ortvalue_from_numpy(v, device, 0) for k, v in padded.items()}
        shapes = plain.run(None, padded)                   # the outputs' shapes and types at this size
        self.outputs = [ort.OrtValue.ortvalue_from_shape_and_type(o.shape, o.dtype, device, 0) for o in shapes]
        self.binding = session.io_binding()
        for k, v in self.inputs.items():
            self.binding.bind_ortvalue_input(k, v)
        for meta, v in zip(session.get_outputs(), self.outputs):
            self.binding.bind_ortvalue_output(meta.name, v)
        self.options = ort.RunOptions()
        if device == "cuda":
            self.options.add_run_config_entry("gpu_graph_id", str(graph_id))
        self.last: dict = {}                               # per-request inputs as last copied in


class GraphRunner:
    """`run(feed)` like InferenceSession.run, through CUDA graphs (see the module's docstring)."""

    def __init__(self, ort, graph: str, model, options, plain_session, device: str = "cuda"):
        """`device` "cpu": the same padding and binding without CUDA graphs (the tests' way in)."""
        self.ort = ort
        self.graph = graph
        self.plain = plain_session
        self.device = device
        providers = [("CUDAExecutionProvider", {"enable_cuda_graph": "1"}), "CPUExecutionProvider"] \
            if device == "cuda" else ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(model, options, providers=providers)
        self.names = [o.name for o in self.session.get_outputs()]
        self.bound: dict[tuple, _Bound] = {}
        self.replays = self.fallbacks = 0
        self.failed = ""           # why capturing failed, after which every call runs as usual

    def warm(self) -> int:
        """Capture the graphs of the usual sizes now, at load, rather than in the first requests
        (on the H200 those first requests took over 300 ms); the number captured."""
        for feed in warm_feeds(self.graph, self.session.get_inputs()):
            self.run(feed)
        self.replays = 0
        return len(self.bound)

    def run(self, feed: dict) -> list[np.ndarray]:
        fitted = None if self.failed else pad(self.graph, feed)
        if fitted is None:
            self.fallbacks += 1
            return self.plain.run(None, feed)
        padded, sizes, buckets = fitted
        key = tuple(sorted(buckets.items())) + tuple(sorted(feed))
        slot = self.bound.get(key)
        if slot is None:
            try:
                slot = _Bound(self.ort, self.session, self.plain, padded, len(self.bound) + 1, self.device)
                self.session.run_with_iobinding(slot.binding, slot.options)      # captures the graph
            except Exception as e:  # noqa: BLE001 - e.g. a node ONNX Runtime placed on the CPU
                self.failed = f"{self.graph}: no CUDA graph ({e})"
                self.fallbacks += 1
                return self.plain.run(None, feed)
            self.bound[key] = slot
        for name, arr in padded.items():
            if name in PER_REQUEST and slot.last.get(name) is feed[name]:
                continue
            slot.inputs[name].update_inplace(arr)
            if name in PER_REQUEST:
                slot.last[name] = feed[name]
        self.session.run_with_iobinding(slot.binding, slot.options)
        self.replays += 1
        return cut(self.graph, self.names, [v.numpy() for v in slot.outputs], sizes)
