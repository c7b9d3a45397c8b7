"""`make bench`: completion latency, memory and start-up of the runtime, written into docs/bench.md.

    python -m anycode.model.bench [--model DIR] [--holes 200] [--device cpu|cuda|auto] [--threads 0]
                                  [--torch-holes 30] [--typing-holes 100] [--out docs/bench.md]
                                  [--versus DIR] [--versus-threads N]

Holes: the expressions of the dataset protocol (dataset.extract_file) in the corpus
test split (data/corpus/python/test), else in --files, else in tests/data; each is
cut out of its file and the cursor put where it was, as holebench does.

Measured, with beam 5:
  * per completion, ONNX Runtime (`Completer.complete`, caches on, one uri per file
    as an editor session would): p50/p95 and where the time goes;
  * the same search with the torch model as backend (torch_backend.TorchBackend), eager;
  * typing along: the first characters of each target typed one by one, a request
    after each (the context cache's case);
  * resident memory after loading, and process start to first completion (a fresh
    interpreter: imports, model load, one completion);
  * with --versus / --versus-threads, another model or thread count on the same holes,
    interleaved hole by hole: the one fair comparison on a noisy machine.

The model is --model (default model/shipped).  Without one, a randomly initialised
SLM of the paper's shape is exported first: latency per step is then the real
one, but the number of steps is not (random trees run until the search steers
them closed), so the report also gives ms per step and a projection over the
test targets' own step counts.

GPU: `--device cuda` with onnxruntime-gpu importable (PYTHONPATH); torch eager then
runs on CUDA too when torch sees a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from anycode import grammars

ROOT = Path(__file__).resolve().parent.parent
UNTRAINED_SOFT_STEPS = 8        # random trees are steered closed early: the test targets' median is 11-14 steps
UNTRAINED_MAX_DEPTH = 4         # random trees dive; deep ones take far longer to close


# ---------------------------------------------------------------- holes


def hole_files(args) -> tuple[list[Path], str]:
    if args.files:
        out = []
        for f in args.files:
            p = Path(f)
            out += sorted(p.rglob("*.py")) if p.is_dir() else [p]
        return out, "files given on the command line"
    corpus = Path(args.corpus)
    if corpus.is_dir():
        return sorted(corpus.rglob("*.py")), f"corpus test split {corpus}"
    return sorted((ROOT / "tests" / "data").glob("*.py")), "tests/data (no corpus test split here)"


def collect_holes(files: list[Path], n: int, seed: int = 0, lines: tuple[int, int] | None = None, *, lang):
    """[(path, source with the target cut out, cursor, target text, flat tree, hole)]; `lines`: only
    functions of that many lines (default: the dataset's, at most MAX_FUNCTION_LINES)."""
    from anycode.model import dataset
    found = []
    longest = dataset.MAX_FUNCTION_LINES if lines is None else lines[1]
    files = list(files)
    random.Random(seed).shuffle(files)
    for path in files:
        if len(found) >= 5 * n:         # enough to sample from: spares extracting a whole corpus
            break
        try:
            source = path.read_bytes()
        except OSError:
            continue
        for flat, hs, _ in dataset.extract_file(str(path), name=path.name, max_function_lines=longest, lang=lang).functions:
            if lines is not None and source[flat.start_byte[0]:flat.end_byte[0]].count(b"\n") + 1 < lines[0]:
                continue
            for h in hs:
                a, b = flat.start_byte[h], flat.end_byte[h]
                found.append((path, source[:a] + source[b:], a, source[a:b].decode("utf8", "replace"), flat, h))
    random.Random(seed).shuffle(found)
    return found[:n], len(found)


def quick_dataset(files: list[Path], out: Path, lang) -> Path:
    """vocab.json and grammar.json from the bench files (when no dataset is around)."""
    from anycode.model import dataset
    results = [(f.name, dataset.extract_file(str(f), name=f.name, lang=lang)) for f in files]
    (out / "train").mkdir(parents=True, exist_ok=True)
    dataset.write_shard(out / "train" / "shard-0000-bench.npz", results, lang)
    dataset.build_vocab(out, 1000).save(out / "vocab.json")
    dataset.build_grammar_table(out).save(out / "grammar.json")
    return out


def untrained_model(files: list[Path], tmp: Path, data_dir: Path | None, lang) -> Path:
    from anycode.model.checkpoint import load_model
    from anycode.model.export import export, write_untrained_checkpoint
    data = data_dir if data_dir and (data_dir / "vocab.json").exists() else quick_dataset(files, tmp / "ds", lang)
    ckpt = write_untrained_checkpoint(data, tmp / "ckpt")
    out = tmp / "model"
    export(*load_model(ckpt), out, "fp16", ckpt / "grammar.json")
    return out


# ---------------------------------------------------------------- measurements


def pct(xs, q):
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_COLD_CHILD = r"""
import sys, time, json
t0 = time.perf_counter()
from anycode.model.runtime import Completer
t1 = time.perf_counter()
c = Completer(sys.argv[1], device=sys.argv[2], threads=int(sys.argv[3]))
t2 = time.perf_counter()
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
rss_loaded = rss()
src = open(sys.argv[4], "rb").read()
items = c.complete(src, int(sys.argv[5]), beam_size=5)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_s": t3 - t2, "rss_loaded_mb": rss_loaded,
                  "rss_after_mb": rss(), "torch_imported": "torch" in sys.modules, "device": c.device}))
"""


def cold_start(model_dir: Path, device: str, threads: int, hole) -> dict:
    src, cursor = hole[1], hole[2]
    with tempfile.NamedTemporaryFile("wb", suffix=".py", delete=False) as f:
        f.write(src)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _COLD_CHILD, str(model_dir), device, str(threads), f.name, str(cursor)],
                       capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t
    os.unlink(f.name)
    if r.returncode != 0:
        return {"error": r.stderr[-2000:]}
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["process_start_to_first_s"] = wall
    return out


def run_ort(completer, holes) -> dict:
    from anycode.model.paths import target_steps
    times, steps, prep, search, verify, hole_ms, ncand, target_steps_n, leaves = [], [], [], [], [], [], [], [], []
    be = completer.backend
    calls0 = dict(be.calls)
    secs0 = dict(be.seconds)
    lc0 = (completer.leaf_cache.hits, completer.leaf_cache.misses)
    fc = completer.decoder.file_cache
    fc0 = (fc.hits, fc.misses)
    ctx0 = (completer.stats["context_hits"], completer.stats["context_misses"])
    for path, src, cursor, target, flat, h in holes:
        t = time.perf_counter()
        items = completer.complete(src, cursor, uri=path.resolve().as_uri(), beam_size=5, max_items=5)
        times.append((time.perf_counter() - t) * 1e3)
        last = completer.last
        steps.append(last.get("steps", 0))
        prep.append(last.get("prepare_ms", 0.0))
        search.append(last.get("search_ms", 0.0))
        verify.append(last.get("verify_ms", 0.0))
        hole_ms.append(last.get("hole_ms", 0.0))
        leaves.append(last.get("leaves", 0))
        ncand.append(len(items))
        target_steps_n.append(len(target_steps(flat, h)))
    calls = {g: be.calls[g] - calls0[g] for g in be.calls}
    secs = {g: be.seconds[g] - secs0[g] for g in be.seconds}
    lc = (completer.leaf_cache.hits - lc0[0], completer.leaf_cache.misses - lc0[1])
    fcs = (fc.hits - fc0[0], fc.misses - fc0[1])
    cx = (completer.stats["context_hits"] - ctx0[0], completer.stats["context_misses"] - ctx0[1])
    total_steps = max(sum(steps), 1)
    return {"times": times, "steps": steps, "prepare": prep, "search": search, "verify": verify, "hole": hole_ms,
            "candidates": ncand, "target_steps": target_steps_n, "leaves": leaves, "calls": calls, "seconds": secs,
            "leaf_cache": lc, "context_cache": cx, "file_cache": fcs,
            "ms_per_step": 1e3 * sum(secs.values()) / total_steps,
            "score_ms_per_step": 1e3 * secs["score"] / total_steps}


def target_rank(cands, target: str) -> tuple[bool, bool]:
    """(the target is the first candidate, the target is among the first five), whitespace aside."""
    truth = "".join(target.split())
    same = ["".join(c.text.split()) == truth for c in cands[:5]]
    return bool(same and same[0]), any(same)


def run_typing(completer, holes, chars: int = 3) -> dict:
    """Type each target's first characters one at a time, a request after each; how often the
    target is the first candidate, or among the five, after 0, 1, ... typed characters."""
    times, hits, reqs = [], 0, 0
    right = {j: [0, 0, 0] for j in range(chars + 1)}      # typed characters -> [holes, at 1, in 5]
    memo = completer.score_memo
    memo0 = (memo.hits, memo.misses)
    for k, (path, src, cursor, target, flat, h) in enumerate(holes):
        uri = f"file:///typing/{k}.py"
        completer.close_document(uri)
        for j in range(0, min(chars, len(target)) + 1):
            typed = target[:j].encode()
            buf = src[:cursor] + typed + src[cursor:]
            t = time.perf_counter()
            cands = completer.complete(buf, cursor + len(typed), uri=uri, version=j + 1)
            times.append((time.perf_counter() - t) * 1e3)
            reqs += 1
            hits += bool(completer.last.get("context_hit"))
            first, in_five = target_rank(cands, target)
            right[j][0] += 1
            right[j][1] += first
            right[j][2] += in_five
    return {"times": times, "requests": reqs, "context_hits": hits, "right": right,
            "memo": (memo.hits - memo0[0], memo.misses - memo0[1])}


def run_versus(a, b, holes) -> dict:
    """Two completers on the same holes, interleaved (A then B on one hole, B then A on the next), so
    that both see the same machine load: latency, and the target ranked first / among the five."""
    out = {k: {"times": [], "steps": [], "top1": 0, "top5": 0} for k in ("a", "b")}
    for k, (path, src, cursor, target, flat, h) in enumerate(holes):
        for name, c in ((("a", a), ("b", b)) if k % 2 == 0 else (("b", b), ("a", a))):
            t = time.perf_counter()
            cands = c.complete(src, cursor, uri=path.resolve().as_uri(), beam_size=5, max_items=5)
            o = out[name]
            o["times"].append((time.perf_counter() - t) * 1e3)
            o["steps"].append(c.last.get("steps", 0))
            first, in_five = target_rank(cands, target)
            o["top1"] += first
            o["top5"] += in_five
    return out


def torch_decoder(model_dir: Path, checkpoint: Path | None, threads: int, device: str):
    """The beam search with the torch model as backend (torch_backend.TorchBackend): the eager reference."""
    try:
        import torch
    except ImportError:
        return None, None
    if checkpoint is None:
        return None, None
    from anycode.model.beam import Decoder
    from anycode.model.checkpoint import load_model
    from anycode.model.torch_backend import TorchBackend
    from anycode.model.grammar_table import GrammarTable
    model, vocab, conf = load_model(checkpoint)
    dev = "cuda" if device in ("cuda", "auto") and torch.cuda.is_available() else "cpu"
    if threads:
        torch.set_num_threads(threads)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    backend = TorchBackend(model.to(dev), manifest["n_symbols"])
    table = GrammarTable.load(model_dir / "grammar.json") if (model_dir / "grammar.json").exists() else None
    dec = Decoder(backend, vocab, table, lang=grammars.of_model(model_dir), max_paths=manifest["max_paths"], max_length=manifest["max_length"],
                  context_once=model.cfg.context_once, file_tokens=model.cfg.file_tokens)
    return dec, f"{dev}, {torch.get_num_threads()} threads"


def run_pair(completer, tdec, holes, search: dict) -> dict:
    """Hole, context and search with no caches and no verification, ONNX Runtime then torch on each
    hole in turn, so that both see the same machine load."""
    from anycode.model import holes as holes_mod
    out = {"ort": [], "torch": [], "steps_ort": [], "steps_torch": []}
    for path, src, cursor, target, flat, h in holes:
        for name, dec in (("ort", completer.decoder), ("torch", tdec)):
            t = time.perf_counter()
            hole = holes_mod.find_hole(src, cursor, lang=completer.lang, parser=completer.parser, table=completer.table)
            ctx = dec.prepare(hole.tree, hole.h) if hole is not None else None
            if ctx is not None:
                dec.search(ctx, 5, hole.typed, **search)
                out["steps_" + name].append(ctx.stats["steps"])
            out[name].append((time.perf_counter() - t) * 1e3)
    return out


def score_micro(completer, tdec, sizes=((5, 20), (5, 60), (5, 200)), reps: int = 15) -> list:
    """The score graph alone (one beam step's transformer and heads), ONNX Runtime vs torch, interleaved."""
    rng = np.random.default_rng(0)
    d = completer.manifest["model"]["d_lstm"]
    nsym = completer.manifest["n_symbols"]
    rows = []
    for B, P in sizes:
        x = (rng.standard_normal((B, P, d)).astype(np.float32) * 0.3, np.ones((B, P), bool),
             rng.standard_normal((B, d)).astype(np.float32) * 0.3, rng.integers(0, 4, B).astype(np.int64),
             rng.integers(-1, nsym, (B, P, 9)).astype(np.int64))
        if completer.decoder.context_once:      # the score graph then reads the contextualized paths
            x = x + (x[0].copy(),)
        files = {}
        F = completer.decoder.file_tokens       # as many file tokens as the model reads
        if F:
            files = {"files": rng.standard_normal((F, d)).astype(np.float32) * 0.3,
                     "file_symbols": rng.integers(0, nsym, F).astype(np.int64)}
        ts = {"ort": [], "torch": []}
        for _ in range(reps):
            for name, be in (("ort", completer.backend), ("torch", tdec.backend if tdec else None)):
                if be is None:
                    continue
                t = time.perf_counter()
                be.score(*x, **files)
                ts[name].append((time.perf_counter() - t) * 1e3)
        rows.append((B, P, pct(ts["ort"], 50), pct(ts["torch"], 50) if ts["torch"] else float("nan")))
    return rows


# ---------------------------------------------------------------- report


def stat_row(name, xs) -> str:
    if not xs:
        return f"| {name} | - | - | - | - |"
    return f"| {name} | {len(xs)} | {pct(xs, 50):.0f} | {pct(xs, 95):.0f} | {statistics.fmean(xs):.0f} |"


def _report_setup(r: dict) -> list[str]:
    """The report's head: when and how it was measured, on what machine, model, holes and search bounds."""
    env, ort_r = r["env"], r["ort"]
    L = []
    L.append(f"Measured {r['date']} by `{r['command']}`.")
    L.append("")
    L.append(f"- machine: {env['cpu']}, {env['cores']} cores; load average before/after: "
             f"{env['load_before']} / {env['load_after']}")
    L.append(f"- onnxruntime {env['ort']} ({r['device']}, {r['provider']}, threads={r['threads']}"
             f"{', int8 graphs run as float graphs' if r.get('float_graphs') else ''}"
             f"{', as CUDA graphs with IO binding' if r.get('cuda_graphs') else ''}); "
             f"torch {env.get('torch', '-')}; Python {env['python']}")
    L.append(f"- model: {r['model']} ({r['precision']}, {r['params']:.1f}M parameters"
             f"{', UNTRAINED random weights' if r['untrained'] else ''}); files {r['model_mb']:.1f} MB")
    L.append(f"- holes: {len(ort_r['times'])} drawn from {r['holes_found']} (files sampled at random) in "
             f"{r['holes_source']}; beam 5, 5 items")
    sb = r["search"]
    L.append(f"- search bounds: {sb['max_steps']} steps at most, steered closed after {sb['soft_steps']}"
             + (" (lowered for random weights, whose trees never end by themselves)" if r["untrained"] else "")
             + f", depth {sb['max_depth']}")
    return L


def _report_latency(r: dict) -> list[str]:
    """The latency table: a whole completion and its parts, then torch eager and typing along when run."""
    ort_r = r["ort"]
    L = []
    L.append("| per completion (ms) | n | p50 | p95 | mean |")
    L.append("| --- | --- | --- | --- | --- |")
    L.append(stat_row(f"ONNX Runtime {r['device']}, whole `complete()`", ort_r["times"]))
    L.append(stat_row("  of which: hole + parse", ort_r["hole"]))
    L.append(stat_row("  of which: context encoding (prepare)", ort_r["prepare"]))
    L.append(stat_row("  of which: beam search", ort_r["search"]))
    L.append(stat_row("  of which: verify candidates (re-parse)", ort_r["verify"]))
    if r.get("torch"):
        t = r["torch"]
        n = len(t["torch"])
        L.append(stat_row(f"hole + context + search, no caches, ONNX Runtime ({n} holes)", t["ort"]))
        L.append(stat_row(f"the same, torch eager ({t['desc']}), interleaved", t["torch"]))
    if r.get("typing"):
        ty = r["typing"]
        L.append(stat_row("typing along (a request per typed character)", ty["times"]))
    return L


def _report_versus(v: dict) -> list[str]:
    """The A/B table of --versus / --versus-threads and the B / A latency ratios."""
    L = []
    n = len(v["a"]["times"])
    L.append("")
    L.append(f"A/B on the same {n} holes, interleaved (each hole: A then B, or B then A):")
    L.append("")
    L.append("| completer | p50 ms | p95 ms | mean ms | steps p50 | target first | target in five |")
    L.append("| --- | --- | --- | --- | --- | --- | --- |")
    for k in ("a", "b"):
        o = v[k]
        L.append(f"| {k.upper()}: {v['desc'][k]} | {pct(o['times'], 50):.0f} | {pct(o['times'], 95):.0f} | "
                 f"{statistics.fmean(o['times']):.0f} | {pct(o['steps'], 50):.0f} | {o['top1']} | {o['top5']} |")
    ratios = [x / y for x, y in zip(v["b"]["times"], v["a"]["times"]) if y > 0]
    L.append("")
    L.append(f"- B / A: p50 {pct(v['b']['times'], 50) / pct(v['a']['times'], 50):.2f}x, "
             f"p95 {pct(v['b']['times'], 95) / pct(v['a']['times'], 95):.2f}x, "
             f"median of the per-hole ratios {pct(ratios, 50):.2f}x")
    return L


def _report_steps(r: dict) -> list[str]:
    """Where a completion's time goes: beam steps, time per step, graph calls, ONNX Runtime's share."""
    ort_r = r["ort"]
    L = []
    steps = ort_r["steps"]
    L.append(f"- beam steps per completion: p50 {pct(steps, 50):.0f}, mean {statistics.fmean(steps):.1f}; "
             f"the test targets themselves take p50 {pct(ort_r['target_steps'], 50):.0f}, "
             f"mean {statistics.fmean(ort_r['target_steps']):.1f} steps "
             f"(nodes + value parts + EOS); context leaves p50 {pct(ort_r['leaves'], 50):.0f}")
    L.append(f"- time per beam step (all ONNX Runtime calls / steps): {ort_r['ms_per_step']:.1f} ms, of which "
             f"the score graph (transformer + heads, 5 beams) {ort_r['score_ms_per_step']:.1f} ms")
    calls = ", ".join(f"{g} {n} calls {1e3 * ort_r['seconds'][g] / max(n, 1):.2f} ms each"
                      for g, n in ort_r["calls"].items())
    L.append(f"- graph calls: {calls}")
    in_ort, total = 1e3 * sum(ort_r["seconds"].values()), sum(ort_r["times"])
    L.append(f"- ONNX Runtime's share of a completion: {in_ort / len(ort_r['times']):.1f} of "
             f"{total / len(ort_r['times']):.1f} ms on average ({in_ort / max(total, 1e-9):.0%}); the rest is "
             f"Python and tree-sitter (hole, context features, search bookkeeping, verification)")
    proj = [p + s * ort_r["ms_per_step"] for p, s in zip(ort_r["prepare"], ort_r["target_steps"])]
    L.append(f"- projection for a model whose search takes the targets' own step counts: "
             f"p50 {pct(proj, 50):.0f} ms, p95 {pct(proj, 95):.0f} ms (prepare + steps x ms/step)")
    if r.get("score_micro"):
        L.append("- one beam step's score graph alone (median ms, 5 beams, P paths), ONNX Runtime vs torch eager: "
                 + "; ".join(f"P={P}: {o:.1f} vs {t:.1f}" for B, P, o, t in r["score_micro"]))
    return L


def _report_caches(r: dict) -> list[str]:
    """The caches' hits over the session and, when typing along ran, its cache hits and target ranks."""
    ort_r = r["ort"]
    L = []
    lc, cx = ort_r["leaf_cache"], ort_r["context_cache"]
    L.append(f"- caches over the session: leaf upward states {lc[0]} hits / {lc[1]} misses "
             f"({100 * lc[0] / max(sum(lc), 1):.0f}%), whole contexts {cx[0]} hits / {cx[1]} misses"
             + (f", file tokens {ort_r['file_cache'][0]} hits / {ort_r['file_cache'][1]} misses"
                if sum(ort_r.get("file_cache", (0, 0))) else ""))
    if r.get("typing"):
        ty = r["typing"]
        hit, miss = ty.get("memo", (0, 0))
        L.append(f"- typing along: {ty['requests']} requests, context cache hit on {ty['context_hits']} "
                 f"({100 * ty['context_hits'] / max(ty['requests'], 1):.0f}%); network outputs reused from "
                 f"the score memo for {hit} of {hit + miss} beam rows ({100 * hit / max(hit + miss, 1):.0f}%)")
        if ty.get("right"):
            L.append("- the target ranked first / among the five, by characters of it typed: " + "; ".join(
                f"{j} typed: {100 * a / n:.0f}% / {100 * b / n:.0f}% (n={n})"
                for j, (n, a, b) in sorted((int(j), v) for j, v in ty["right"].items()) if n))
    return L


def _report_start(r: dict) -> list[str]:
    """Start-up and memory from the fresh process, and the latency against the targets."""
    ort_r = r["ort"]
    L = []
    c = r.get("cold", {})
    if "error" in c:
        L.append(f"- cold start failed: {c['error'][:300]}")
    elif c:
        L.append(f"- process start to first completion: {c['process_start_to_first_s']:.2f} s (imports "
                 f"{c['import_s']:.2f} s, model load {c['load_s']:.2f} s, first completion {c['first_s']:.2f} s); "
                 f"torch imported: {c['torch_imported']}")
        L.append(f"- resident memory after loading: {c['rss_loaded_mb']:.0f} MB "
                 f"({c['rss_after_mb']:.0f} MB after the first completion)")
    p50, p95 = pct(ort_r['times'], 50), pct(ort_r['times'], 95)
    if r["device"] == "cuda":
        L.append(f"- target: GPU p50 <= 10 ms: measured p50 {p50:.0f} ms ({p50 / 10:.1f}x the target)")
    else:
        L.append(f"- targets: CPU p50 <= 50 ms, p95 <= 100 ms: measured p50 {p50:.0f} ms "
                 f"({p50 / 50:.1f}x the target), p95 {p95:.0f} ms ({p95 / 100:.1f}x)")
    return L


def report(r: dict) -> str:
    L = _report_setup(r)
    L.append("")
    L += _report_latency(r)
    if r.get("versus"):
        L += _report_versus(r["versus"])
    L.append("")
    L += _report_steps(r)
    L += _report_caches(r)
    L += _report_start(r)
    return "\n".join(L)


def write_report(path: Path, body: str, section: str = "bench") -> None:
    """Replace what lies between `<!-- SECTION:begin -->` and `<!-- SECTION:end -->` (appended if absent)."""
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    text = path.read_text() if path.exists() else f"# Benchmark\n\n{begin}\n{end}\n"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    a, b = text.index(begin) + len(begin), text.index(end)
    path.write_text(text[:a] + "\n" + body + "\n" + text[b:])


# ---------------------------------------------------------------- main


def _arg_parser() -> argparse.ArgumentParser:
    """The command line (the module docstring is its help)."""
    ap = argparse.ArgumentParser(prog="python -m anycode.model.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="exported model (default: model/shipped)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="torch weights for the eager reference")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "dataset" / "python")
    ap.add_argument("--corpus", type=Path, default=ROOT / "data" / "corpus" / "python" / "test")
    ap.add_argument("--files", nargs="*", help="source files or directories to take holes from")
    ap.add_argument("--holes", type=int, default=200)
    ap.add_argument("--torch-holes", type=int, default=20)
    ap.add_argument("--typing-holes", type=int, default=100)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="markdown file to write the results into")
    ap.add_argument("--section", default=None,
                    help="marker name of the --out section to rewrite (default: bench, bench-gpu when run on CUDA)")
    ap.add_argument("--function-lines", metavar="A-B", default=None,
                    help="holes in functions of A to B lines (default: the dataset's, at most 20)")
    ap.add_argument("--max-paths", type=int, default=None,
                    help="context paths kept per request (default: the model's training cap)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-cuda-graphs", action="store_true", help="on the GPU, run the graphs without CUDA graphs")
    ap.add_argument("--float-graphs", choices=["auto", "on", "off"], default="auto",
                    help="run int8 graphs as float graphs (auto: on the CUDA provider; model/float_graphs.py)")
    ap.add_argument("--versus", type=Path, default=None, metavar="DIR",
                    help="also run this exported model, interleaved with --model on the same holes (A/B)")
    ap.add_argument("--versus-threads", type=int, default=None, metavar="N",
                    help="A/B against the same model with N threads (with --versus: that model with N threads)")
    return ap


def _bench_holes(args, lines: tuple[int, int] | None):
    """The holes to complete, in the model's language: (files, where they come from, language, holes, found)."""
    files, source_desc = hole_files(args)
    if lines is not None:
        source_desc += f", functions of {lines[0]}-{lines[1]} lines"
    if args.max_paths:
        source_desc += f"; context paths capped at {args.max_paths} per request"
    # the holes are in the model's language (the shipped model's when none is given)
    lang = grammars.of_model(args.model) if args.model else grammars.get(grammars.DEFAULT)
    holes, found = collect_holes(files, args.holes, lines=lines, lang=lang)
    return files, source_desc, lang, holes, found


def _model_to_bench(args, files: list[Path], lang) -> tuple[Path, Path | None]:
    """The exported model (an untrained one exported when there is none) and the torch weights beside it."""
    from anycode.model.runtime import SHIPPED
    tmp = Path(tempfile.mkdtemp(prefix="anycode-bench-"))
    model_dir = args.model or (SHIPPED if (SHIPPED / "manifest.json").exists() else None)
    checkpoint = args.checkpoint
    if model_dir is None:
        print("no exported model: exporting an untrained SLM of the paper's shape", file=sys.stderr)
        model_dir = untrained_model(files, tmp, args.data, lang)
        checkpoint = checkpoint or (tmp / "ckpt")
    elif checkpoint is None and (model_dir / "slm.pt").exists():
        checkpoint = model_dir
    return model_dir, checkpoint


def _environment() -> dict:
    """The machine, Python and onnxruntime the report names (torch and the load after are added later)."""
    env = {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
           "load_before": loadavg()}
    import onnxruntime
    env["ort"] = onnxruntime.__version__
    return env


def _open_completer(args, model_dir: Path):
    """The ONNX Runtime completer under test; None, the error printed, when the model does not load."""
    from anycode.model.runtime import Completer, ModelError
    try:
        completer = Completer(model_dir, device=args.device, threads=args.threads,
                              float_graphs={"auto": None, "on": True, "off": False}[args.float_graphs],
                              cuda_graphs=not args.no_cuda_graphs)
        if args.max_paths:
            completer.decoder.max_paths = args.max_paths
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return None
    return completer


def _describe_setup(r: dict, completer, model_dir: Path, manifest: dict) -> None:
    """Record the runtime's set-up and the model in `r`, and the search bounds (lowered for random weights)."""
    from anycode.model.runtime import SHIPPED
    r.update(device=completer.device, provider=completer.provider, threads=completer.backend.threads,
             float_graphs=completer.backend.float_graphs, cuda_graphs=bool(completer.backend.runners),
             model=str(model_dir if model_dir != SHIPPED else "model/shipped"),
             precision=manifest["precision"], untrained=bool(manifest.get("untrained")),
             model_mb=sum(f["bytes"] for f in manifest["files"].values()) / 1e6,
             params=_params(manifest["model"]))
    if r["untrained"]:
        # random trees do not end by themselves: steer them closed after about a real target's length
        completer.soft_steps, completer.max_depth = UNTRAINED_SOFT_STEPS, UNTRAINED_MAX_DEPTH
    r["search"] = {"max_steps": completer.max_steps, "soft_steps": completer.soft_steps,
                   "max_depth": completer.max_depth}


def _bench_versus(args, r: dict, completer, model_dir: Path, holes) -> None:
    """--versus / --versus-threads: another completer, interleaved with this one on the same holes (A/B)."""
    from anycode.model.runtime import SHIPPED, Completer
    vdir = args.versus or model_dir
    vthreads = args.threads if args.versus_threads is None else args.versus_threads
    other = Completer(vdir, device=args.device, threads=vthreads)
    other.complete(holes[0][1], holes[0][2])
    print(f"A/B against {vdir}, threads {other.backend.threads}, interleaved ...", file=sys.stderr)
    r["versus"] = run_versus(completer, other, holes)
    r["versus"]["desc"] = {"a": f"{r['model']}, threads {completer.backend.threads}",
                           "b": f"{vdir if vdir != SHIPPED else 'model/shipped'}, threads {other.backend.threads}"}


def _bench_torch(args, r: dict, env: dict, completer, model_dir: Path, checkpoint: Path | None, holes) -> None:
    """Torch eager against ONNX Runtime: the score graph alone, and the search when torch weights are there."""
    print(f"torch eager, {args.torch_holes} holes, interleaved with ONNX Runtime ...", file=sys.stderr)
    tdec, tdesc = torch_decoder(model_dir, checkpoint, args.threads, args.device)
    r["score_micro"] = score_micro(completer, tdec)
    if tdec is not None:
        import torch
        env["torch"] = torch.__version__
        r["torch"] = run_pair(completer, tdec, holes[: args.torch_holes], r["search"])
        r["torch"]["desc"] = tdesc


def _write_results(args, r: dict) -> None:
    """Print the report, and write it into --out's section and the figures into --json when asked."""
    body = report(r)
    print(body)
    if args.out:
        write_report(args.out, body, args.section or ("bench-gpu" if r["device"] == "cuda" else "bench"))
    if args.json:
        args.json.write_text(json.dumps(r, indent=1, default=str))


def main(argv=None) -> int:
    args = _arg_parser().parse_args(argv)
    lines = None
    if args.function_lines:
        a, _, b = args.function_lines.partition("-")
        lines = (int(a), int(b or a))

    files, source_desc, lang, holes, found = _bench_holes(args, lines)
    if not holes:
        print("no holes found", file=sys.stderr)
        return 2
    model_dir, checkpoint = _model_to_bench(args, files, lang)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    env = _environment()
    r = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": "python -m anycode.model.bench " + " ".join(
        argv if argv is not None else sys.argv[1:]), "holes_source": source_desc, "holes_found": found}

    completer = _open_completer(args, model_dir)
    if completer is None:
        return 2
    print(f"cold start ({model_dir}) ...", file=sys.stderr)
    r["cold"] = cold_start(model_dir, args.device, args.threads, holes[0])
    _describe_setup(r, completer, model_dir, manifest)
    completer.complete(holes[0][1], holes[0][2])       # warm-up
    print(f"{len(holes)} holes, ONNX Runtime {completer.device} ...", file=sys.stderr)
    r["ort"] = run_ort(completer, holes)
    if args.versus or args.versus_threads is not None:
        _bench_versus(args, r, completer, model_dir, holes)
    if args.typing_holes:
        print(f"typing along, {args.typing_holes} holes ...", file=sys.stderr)
        r["typing"] = run_typing(completer, holes[: args.typing_holes])
    if args.torch_holes:
        _bench_torch(args, r, env, completer, model_dir, checkpoint, holes)
    env["load_after"] = loadavg()
    r["env"] = env
    _write_results(args, r)
    return 0


# int8 MatMuls are fast only with VNNI (or AMX); the same model's latency differs by that more than by clock
_ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def _cpu_name() -> str:
    """The CPU's model name and the vector extensions that decide int8 and fp32 speed."""
    name, flags = platform.processor() or "?", None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and flags is None:
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in _ISA_FLAGS if f in have]
    except OSError:
        pass
    return name if flags is None else f"{name} ({', '.join(flags) or 'no AVX2'})"


def _params(cfg: dict) -> float:
    d, dl, L = cfg["d_subtoken"], cfg["d_lstm"], cfg["lstm_layers"]
    n = cfg["n_types"] * cfg["d_type"] + 32 * cfg["d_index"] + cfg["n_subtokens"] * d
    n += 4 * dl * (d + dl + 2) + (L - 1) * 4 * dl * (2 * dl + 2)
    n += cfg["n_layers"] * (4 * dl * dl + 2 * dl * cfg["d_ff"] + 9 * dl + cfg["d_ff"])
    n += 32 * dl * dl + dl * dl + dl + 2 * dl * d + d + (1 + cfg["max_copy_positions"]) * dl * d + d * cfg["d_type"]
    return n / 1e6


if __name__ == "__main__":
    sys.exit(main())
