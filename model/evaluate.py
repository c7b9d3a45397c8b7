"""`anycode eval`: beam search over trees, metrics, baselines, docs/model.md.

    anycode eval --model RUN_DIR_OR_SHIPPED_DIR --data DIR --split test [--limit N] [--beam 5]
                 [--out docs/model.md]

Decoding is the search the server runs: `beam.Decoder` (paper sections 2-3, 4.3: node
by node in depth-first order, each step over the same S_t and R_t as training) on the
torch model through `torch_backend.TorchBackend`, with the runtime's bounds (steps,
depth, the soft close) and no typed start.  When the data directory has grammar.json
(model/grammar_table.py), the search takes its masks from it: children seen for
(parent type, child index), EOS-node at the child counts seen, values of their type's
shape, the hole's root one of the dataset's target types (holes.target_root_type).

Finished hypotheses are taken as the runtime takes them (`candidates`): best first,
each printed text once, none that only closed because the search steered it closed.
Candidates whose text does not re-parse as one expression are dropped.  Metrics
compare printed code (whitespace-insensitive), tree shapes (tree@k: `Node.shape` of
the re-parsed candidate against the truth's) and allow one subtoken of difference.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np
import torch

from anycode import grammars
from anycode.grammars import Language, Node, Unprintable
from anycode.model.beam import SOFT_STEPS, Decoder, Finished
from anycode.model.grammar_table import GrammarTable
from anycode.model.paths import FlatTree
from anycode.model.torch_backend import torch_decoder

PAPER_JAVA = {"acc@1": 18.04, "acc@5": 24.83, "tree@1": 39.10, "tree@5": 55.32,
              "subtoken@1": 24.40, "subtoken@5": 35.19}


# ---------------------------------------------------------------- trees and text


def subtree_node(tree: FlatTree, i: int) -> Node:
    """Node i of `tree` and its subtree, with the field names the printer needs and flat trees do not keep."""
    node = Node(tree.types[i], [subtree_node(tree, c) for c in tree.children(i)], tree.values[i])
    tree.lang.set_fields(node)
    return node


def print_or_none(node: Node, lang: Language) -> str | None:
    try:
        return lang.print_node(node)
    except (Unprintable, IndexError, StopIteration):
        return None


_WS = re.compile(r"\s+")


def code_key(text: str) -> str:
    return _WS.sub("", text)


def same_code(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and code_key(a) == code_key(b)


def truth_code(tree: FlatTree, h: int) -> str | None:
    return print_or_none(subtree_node(tree, h), tree.lang)


def leaf_subtokens(node: Node, lang: Language) -> list[list[str]]:
    out = []
    for n in node.walk():
        if not n.children:
            out.append(lang.subtokens(n.type, n.value) if n.value is not None else [])
    return out


def _edit(a: list[str], b: list[str]) -> int:
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[-1]


def subtoken_diff(a: Node, b: Node, lang: Language) -> int | None:
    """Subtoken edits between two trees of one shape; None when the shapes differ."""
    if a.shape() != b.shape():
        return None
    return sum(_edit(x, y) for x, y in zip(leaf_subtokens(a, lang), leaf_subtokens(b, lang)))


# ---------------------------------------------------------------- decoding


@dataclass
class Prediction:
    """A candidate as evaluation scores it (the server's answers are model/completer.py's `Candidate`)."""
    code: str | None          # printed; None when the tree does not print
    logp: float
    tree: Node                # as generated
    parsed: Node | None       # the printed code parsed back; None when it does not parse


def candidates(finished: list[Finished], k: int, drop_forced: bool = True, *, lang: Language) -> list[Prediction]:
    """The first `k` distinct printed texts of the search's finished hypotheses (best first), as the
    runtime takes them: with `drop_forced`, none that closed only because the search steered it closed
    (past beam.SOFT_STEPS)."""
    out: list[Prediction] = []
    seen: set = set()
    for f in finished:
        if len(out) >= k:
            break
        if drop_forced and f.hyp.nsteps > SOFT_STEPS:
            continue
        if f.text in seen:
            continue
        seen.add(f.text)
        out.append(Prediction(f.text, f.logp, f.node, lang.parse_expression(f.text)))
    return out


def search(dec: Decoder, tree: FlatTree, h: int, beam: int = 5, drop_forced: bool = True) -> list[Prediction]:
    """The shipped search (`beam.Decoder.search`, no typed start) on hole h of `tree`."""
    ctx = dec.prepare(tree, h)
    if ctx is None:             # no context leaf: the runtime answers nothing
        return []
    return candidates(dec.search(ctx, beam, keep=beam), beam, drop_forced, lang=dec.lang)


@torch.no_grad()
def decode(model, vocab, items, beam=5, table=None, max_paths=200, max_length=24, parse_only: bool = True,
           drop_forced: bool = True, *, lang: Language) -> list[list[Prediction]]:
    """Top-`beam` candidates of every example, best first; by default only those that re-parse.
    The model runs on its own device."""
    return decode_with(torch_decoder(model, vocab, table, max_paths, max_length, lang=lang), items, beam,
                       parse_only, drop_forced)


def onnx_decoder(model_dir: Path) -> tuple[Decoder, str]:
    """The decoder the server runs on an exported model (`runtime.Completer`'s: its graphs in ONNX
    Runtime on the CPU, its grammar table, configured from its manifest), and its precision.  Raises
    runtime.ModelError, saying how to make one, where `model_dir` holds no export."""
    from anycode.model.runtime import Completer
    completer = Completer(model_dir, device="cpu")
    return completer.decoder, completer.manifest.get("precision", "")


def decode_with(dec: Decoder, items, beam=5, parse_only: bool = True,
                drop_forced: bool = True) -> list[list[Prediction]]:
    """`decode` through any decoder (`torch_decoder`, `onnx_decoder`)."""
    out = []
    for tree, h in items:
        cs = search(dec, tree, h, beam, drop_forced)
        out.append([c for c in cs if c.parsed is not None] if parse_only else cs)
    return out


# ---------------------------------------------------------------- metrics


def first_rank(cands: list[Prediction], ok) -> int | None:
    for r, c in enumerate(cands):
        if ok(c):
            return r
    return None


@dataclass
class Scored:
    acc: int | None
    tree: int | None
    sub: int | None


def score(cands: list[Prediction], tree: FlatTree, h: int) -> Scored:
    lang = tree.lang
    truth = subtree_node(tree, h)
    tcode = print_or_none(truth, lang)
    tparsed = lang.parse_expression(tcode) if tcode is not None else None
    tnode = tparsed or truth
    acc = first_rank(cands, lambda c: same_code(c.code, tcode))
    tr = first_rank(cands, lambda c: c.parsed is not None and c.parsed.shape() == tnode.shape())
    sub = first_rank(cands, lambda c: c.parsed is not None and (subtoken_diff(c.parsed, tnode, lang) or 0) <= 1
                     and subtoken_diff(c.parsed, tnode, lang) is not None)
    return Scored(acc, tr, sub)


def summarize(scored: list[Scored]) -> dict:
    n = max(len(scored), 1)
    at = lambda attr, k: 100.0 * sum(1 for s in scored if getattr(s, attr) is not None and getattr(s, attr) < k) / n
    return {"acc@1": at("acc", 1), "acc@5": at("acc", 5), "tree@1": at("tree", 1), "tree@5": at("tree", 5),
            "subtoken@1": at("sub", 1), "subtoken@5": at("sub", 5), "n": len(scored)}


# ---------------------------------------------------------------- baselines


def _template(node: Node, keep: set[str], lang: Language) -> tuple:
    """A tree with identifiers outside `keep` replaced by slots."""
    if lang.base_type(node.type) == lang.IDENTIFIER and node.value not in keep:
        return ("<slot>",)
    return (node.type, node.value if not node.children else None,
            tuple(_template(c, keep, lang) for c in node.children))


def _fill(t: tuple, names: list[str], lang: Language) -> Node:
    it = iter(names)

    def go(x):
        if x[0] == "<slot>":
            return Node(lang.IDENTIFIER, [], next(it))
        node = Node(x[0], [go(c) for c in x[2]], x[1])
        lang.set_fields(node)
        return node

    return go(t)


def _slots(t: tuple) -> int:
    return 1 if t[0] == "<slot>" else sum(_slots(c) for c in t[2])


class Baselines:
    """Built from the train split (up to `limit` examples):

    * position: the most frequent train targets at the same hole position, (parent type, child index);
    * root type (oracle): the most frequent train targets with the truth's root type;
    * copy templates: train targets with their rare identifiers turned into slots, the most frequent
      templates at the hole position, slots filled with the context's identifiers (most frequent in
      the function first, each name used once), scored by template frequency x name frequency.
    """

    def __init__(self, data_dir: Path, limit: int = 300_000, keep_names: int = 150):
        from anycode.model.dataset import Shard, shard_paths
        by_pos: dict[tuple, Counter] = defaultdict(Counter)
        by_root: dict[str, Counter] = defaultdict(Counter)
        names: Counter = Counter()
        items = []
        n = 0
        for path in shard_paths(data_dir, "train"):
            shard = Shard(path)
            a = shard.arrays
            cur_f, tree = -1, None
            for i in range(len(shard)):
                f = int(a["e_func"][i])
                if f != cur_f:
                    cur_f, tree = f, shard.tree(f)
                h = int(a["e_hole"][i])
                node = subtree_node(tree, h)
                code = print_or_none(node, tree.lang)
                if code is None:
                    continue
                pos = (tree.types[tree.parent[h]], tree.child_index[h])
                by_pos[pos][code] += 1
                by_root[node.type][code] += 1
                for x in node.walk():
                    if tree.lang.base_type(x.type) == tree.lang.IDENTIFIER:
                        names[x.value] += 1
                items.append((pos, node, tree.lang))
                n += 1
                if n >= limit:
                    break
            if n >= limit:
                break
        self.keep = {s for s, _ in names.most_common(keep_names)}
        self.templates: dict[tuple, Counter] = defaultdict(Counter)
        for pos, node, lang in items:
            self.templates[pos][_template(node, self.keep, lang)] += 1
        self.by_pos = {k: [c for c, _ in v.most_common(5)] for k, v in by_pos.items()}
        self.by_root = {k: [c for c, _ in v.most_common(5)] for k, v in by_root.items()}
        total: Counter = Counter()
        for v in by_pos.values():
            total.update(v)
        self.global_top = [c for c, _ in total.most_common(5)]
        self.templates = {k: v.most_common(20) for k, v in self.templates.items()}
        self.n_train = n

    def position(self, tree: FlatTree, h: int) -> list[str]:
        return self.by_pos.get((tree.types[tree.parent[h]], tree.child_index[h]), self.global_top)

    def root_type(self, tree: FlatTree, h: int) -> list[str]:
        return self.by_root.get(tree.types[h], self.global_top)

    def copy(self, tree: FlatTree, h: int) -> list[str]:
        ctx_names = Counter(v for i, (t, v) in enumerate(zip(tree.types, tree.values))
                            if tree.lang.base_type(t) == tree.lang.IDENTIFIER and not tree.in_subtree(i, h)
                            and v is not None)
        top = [s for s, _ in ctx_names.most_common(4)]
        tot = sum(ctx_names.values()) or 1
        pos = (tree.types[tree.parent[h]], tree.child_index[h])
        scored = []
        for t, cnt in self.templates.get(pos, []):
            k = _slots(t)
            fills = [()] if k == 0 else [f for f in product(top, repeat=k) if len(set(f)) == k] if k <= 3 else []
            for f in fills:
                s = math.log(cnt) + sum(math.log(ctx_names[x] / tot) for x in f)
                code = print_or_none(_fill(t, list(f), tree.lang), tree.lang)
                if code is not None:
                    scored.append((s, code))
        scored.sort(key=lambda x: -x[0])
        out, seen = [], set()
        for _, c in scored:
            if c not in seen:
                seen.add(c)
                out.append(c)
            if len(out) == 5:
                break
        return out


def score_texts(texts: list[str], tree: FlatTree, h: int) -> Scored:
    cands = []
    for t in texts:
        parsed = tree.lang.parse_expression(t)
        if parsed is not None:
            cands.append(Prediction(t, 0.0, parsed, parsed))
    return score(cands, tree, h)


# ---------------------------------------------------------------- the report


def size_bucket(n: int) -> str:
    for lo, hi in ((2, 3), (4, 5), (6, 8), (9, 12)):
        if n <= hi:
            return f"{lo}-{hi}"
    return "13+"


def context_excerpt(tree: FlatTree, h: int, width: int = 28) -> str:
    """The context leaves around the hole, in source order, with the hole marked."""
    leaves = [i for i in range(len(tree)) if tree.is_leaf(i) and not tree.in_subtree(i, h)]
    before = [i for i in leaves if i < h][-width:]
    after = [i for i in leaves if i >= tree.end[h]][:width // 2]
    show = lambda i: tree.values[i] if tree.values[i] is not None else tree.lang.fixed_text(tree.types[i])
    return " ".join([show(i) for i in before] + ["⟨?⟩"] + [show(i) for i in after])


def source_excerpt(corpus: Path | None, split: str, shard, f: int, truth: str | None) -> str | None:
    if corpus is None:
        return None
    name, line = shard.source_of(f)
    path = Path(corpus) / split / name
    try:
        lines = path.read_text(encoding="utf8").splitlines()
    except OSError:
        return None
    body = lines[line - 1: line - 1 + 20]
    indent = len(body[0]) - len(body[0].lstrip()) if body else 0
    out = [body[0]] if body else []
    for ln in body[1:]:
        if ln.strip() and len(ln) - len(ln.lstrip()) <= indent:
            break
        out.append(ln)
    text = "\n".join(x[indent:] for x in out)
    if truth and truth in text:
        text = text.replace(truth, "⟨?⟩", 1)
    return text


def fmt_table(rows: list[tuple[str, dict]], cols=("acc@1", "acc@5", "tree@1", "tree@5", "subtoken@1",
                                                  "subtoken@5")) -> str:
    out = ["| | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, m in rows:
        out.append(f"| {name} | " + " | ".join("" if m.get(c) is None else f"{m[c]:.2f}" for c in cols) + " |")
    return "\n".join(out)


def add_parser(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", type=Path, default=Path("model/shipped"))
    ap.add_argument("--data", type=Path, default=Path("data/dataset/python"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None, help="first N examples of a fixed shuffle of the split")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--onnx", action="store_true",
                    help="decode with the exported graphs of --model (manifest.json: what the server runs, "
                         "int8 as shipped) in ONNX Runtime on the CPU, not with the torch weights")
    ap.add_argument("--out", type=Path, default=None, help="write the results into this markdown file")
    ap.add_argument("--json", type=Path, default=None, help="write the metrics as JSON")
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus/python"),
                    help="source files for the prediction excerpts, when present")
    ap.add_argument("--baseline-train", type=int, default=300_000, help="train examples the baselines read")
    ap.add_argument("--examples", type=int, default=20, help="predictions shown in the report")
    ap.add_argument("--skip-functions-of", type=Path, default=None, metavar="DATASET",
                    help="leave out the examples of functions this dataset directory has in the split (e.g. "
                         "data/dataset/python, to score holes only in the longer functions of a dataset built "
                         "with a higher --max-function-lines)")


BEGIN, END = "<!-- eval:begin -->", "<!-- eval:end -->"


def sample_refs(data_dir: Path, split: str, limit: int | None = None, skip_functions_of: Path | None = None) -> list:
    """(shard, example index) for the split's examples in a fixed shuffle (seed 0), so that the
    first `limit` are a uniform sample, the same one for every tool that asks.  `skip_functions_of`,
    another dataset directory built from the same corpus: the examples of the functions it has in the
    same split are left out before the limit (the 20-line dataset's, to sample holes only in longer
    functions of a dataset built with a higher `--max-function-lines`)."""
    from anycode.model.dataset import Shard, shard_paths
    shards = [Shard(p) for p in shard_paths(data_dir, split)]
    refs = [(shard, i) for shard in shards for i in range(len(shard))]
    refs = [refs[j] for j in np.random.default_rng(0).permutation(len(refs))]
    if skip_functions_of is not None:
        known = function_sources(skip_functions_of, split)
        refs = [(s, i) for s, i in refs if s.source_of(int(s.arrays["e_func"][i])) not in known]
    return refs[:limit] if limit else refs


def function_sources(data_dir: Path, split: str) -> set[tuple[str, int]]:
    """(file, line) of every function in the split's shards: what a function is across two datasets."""
    from anycode.model.dataset import Shard, shard_paths
    paths = shard_paths(data_dir, split)
    if not paths:
        raise SystemExit(f"{data_dir}/{split} has no shards: --skip-functions-of needs a dataset directory "
                         f"with the {split} split built (anycode dataset build)")
    out = set()
    for p in paths:
        shard = Shard(p)
        out.update(shard.source_of(f) for f in range(len(shard.arrays["f_file"])))
    return out


def _model_on_device(args):
    """(device, model, vocab, conf): the model to evaluate on --device, on CUDA with TF32, no cuDNN attention."""
    from anycode.model.checkpoint import load_model, pick_device
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cuda.enable_cudnn_sdp(False)   # a plan per shape: slow with varying set sizes
    model, vocab, conf = load_model(args.model, device)
    return device, model, vocab, conf


def _baseline_metrics(args, items) -> tuple[Baselines | None, dict]:
    """The train-split baselines and their metrics on `items`; (None, {}) when there is no train split."""
    from anycode.model.dataset import shard_paths
    bl = Baselines(args.data, args.baseline_train) if shard_paths(args.data, "train") else None
    metrics = {}
    if bl is not None:
        metrics["most frequent target at the hole position (train)"] = summarize(
            [score_texts(bl.position(t, h), t, h) for t, h in items])
        metrics["most frequent target of the true root type (train; oracle type)"] = summarize(
            [score_texts(bl.root_type(t, h), t, h) for t, h in items])
        metrics["copy heuristic: train templates filled with context names"] = summarize(
            [score_texts(bl.copy(t, h), t, h) for t, h in items])
    return bl, metrics


def _size_rows(items, slm: list[Scored]) -> list[tuple[str, dict]]:
    """The model's metrics by target size (nodes of the model's tree), one row per non-empty bucket."""
    sizes = [subtree_node(t, h).size() for t, h in items]
    by_size = defaultdict(list)
    for s, sc in zip(sizes, slm):
        by_size[size_bucket(s)].append(sc)
    return [(f"{b} nodes (n={len(by_size[b])})", summarize(by_size[b]))
            for b in ("2-3", "4-5", "6-8", "9-12", "13+") if by_size[b]]


def _prediction_lines(args, refs, items, preds, slm) -> list[str]:
    """The report's first --examples predictions: source excerpt, truth, how it scored, the candidates."""
    lines = []
    for (shard, i), (t, h), cs, sc in list(zip(refs, items, preds, slm))[: args.examples]:
        truth = truth_code(t, h)
        f = int(shard.arrays["e_func"][i])
        src = source_excerpt(args.corpus if args.corpus and args.corpus.exists() else None, args.split,
                             shard, f, truth)
        mark = "exact" if sc.acc == 0 else "in top-5" if sc.acc is not None else \
            "tree match" if sc.tree is not None else "miss"
        lines.append(f"**{shard.source_of(f)[0]}:{shard.source_of(f)[1]}** — truth "
                     f"{'`' + truth + '`' if truth is not None else '(does not print)'} ({mark})")
        lines.append("")
        lines.append("```python")
        lines.append(src if src else context_excerpt(t, h))
        lines.append("```")
        lines.append("")
        for r, c in enumerate(cs[:5]):
            tag = " ✓" if same_code(c.code, truth) else ""
            lines.append(f"{r + 1}. `{c.code}` — {math.exp(c.logp) * 100:.1f}%{tag}")
        if not cs:
            lines.append("(no candidate re-parsed)")
        lines.append("")
    return lines


def _report_block(args, result: dict, size_rows, predictions: list[str]) -> str:
    """The markdown between BEGIN and END: the command, the metric tables and the predictions."""
    cmd = "anycode eval " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["eval"] else \
        f"anycode eval --model {args.model} --data {args.data} --split {args.split}" + \
        (f" --limit {args.limit}" if args.limit else "") + f" --beam {args.beam}" + \
        (f" --skip-functions-of {args.skip_functions_of}" if args.skip_functions_of else "")
    lines = [BEGIN, "", f"Results of `{cmd}` ({result['examples']} {args.split} examples, "
             f"beam {args.beam}, grammar table {'on' if result['grammar_table'] else 'off'}, {result['device']}, "
             f"{result['decode_seconds']:.0f} s of decoding). Percent of examples.", ""]
    rows = list(result["metrics"].items()) + [("SLM, Java (paper, Table 1 and 4; another language and data set)",
                                               PAPER_JAVA)]
    lines += [fmt_table(rows), "",
              f"Top-1 candidates that print and re-parse as one expression, before dropping those that "
              f"do not: {result['top1_parses']:.2f}%.", "", "By target size (nodes of the model's tree):", "",
              fmt_table(size_rows), "", f"### {args.examples} predictions", "",
              f"The first {args.examples} examples of the sample, as they come (not picked).", ""]
    lines += predictions
    lines.append(END)
    return "\n".join(lines)


def _write_block(path: Path, block: str) -> None:
    """Put `block` in place of the file's BEGIN..END section (appended when there is none)."""
    old = path.read_text() if path.exists() else "# The model\n\n" + BEGIN + END + "\n"
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + block + old[old.index(END) + len(END):]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    path.write_text(new)
    print(f"wrote {path}", file=sys.stderr)


def _decoder(args) -> tuple[Decoder, str]:
    """The decoder to evaluate and where it runs: --onnx, the exported graphs with the model's own
    grammar table, as the server runs them; else the torch weights on --device with the data
    directory's grammar table, where it has one."""
    if args.onnx:
        from anycode.model.runtime import ModelError
        try:
            dec, precision = onnx_decoder(args.model)
        except ModelError as e:
            raise SystemExit(f"error: --onnx reads an exported model directory: {e}") from None
        return dec, f"cpu (ONNX Runtime, {precision} graphs)"
    device, model, vocab, conf = _model_on_device(args)
    feat = conf.get("features", {})
    grammar = args.data / "grammar.json"
    table = GrammarTable.load(grammar) if grammar.exists() else None
    return torch_decoder(model, vocab, table, feat.get("max_paths", 200), feat.get("max_length", 24),
                         lang=grammars.of_config(conf)), str(device)


def run(args) -> int:
    t0 = time.time()
    dec, device = _decoder(args)
    table = dec.table
    refs = sample_refs(args.data, args.split, args.limit, args.skip_functions_of)
    items = [shard.example(i) for shard, i in refs]
    skipped = f" (none of {args.skip_functions_of}'s functions)" if args.skip_functions_of else ""
    print(f"{len(items)} {args.split} examples{skipped}; model {args.model} on {device}; grammar table: "
          f"{'yes' if table is not None else 'no'}", file=sys.stderr)

    t1 = time.time()
    with torch.no_grad():
        raw = decode_with(dec, items, args.beam, parse_only=False)
    t_dec = time.time() - t1
    parses_top1 = 100.0 * sum(1 for cs in raw if cs and cs[0].parsed is not None) / max(len(raw), 1)
    preds = [[c for c in cs if c.parsed is not None] for cs in raw]
    slm = [score(p, t, h) for p, (t, h) in zip(preds, items)]
    metrics = {"SLM (this model, beam %d)" % args.beam: summarize(slm)}
    bl, baselines = _baseline_metrics(args, items)
    metrics.update(baselines)
    size_rows = _size_rows(items, slm)

    skip = str(args.skip_functions_of) if args.skip_functions_of else None
    result = {"split": args.split, "examples": len(items), "beam": args.beam, "skip_functions_of": skip,
              "model": str(args.model), "device": str(device), "decode_seconds": t_dec,
              "examples_per_second": len(items) / max(t_dec, 1e-9), "top1_parses": parses_top1,
              "metrics": metrics, "by_size": dict(size_rows),
              "grammar_table": table is not None, "baseline_train_examples": bl.n_train if bl else 0}
    for name, m in metrics.items():
        print(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in m.items() if k != "n"), file=sys.stderr)
    print(f"top-1 parses: {parses_top1:.2f}%; decoding {t_dec:.0f}s ({result['examples_per_second']:.1f} ex/s)",
          file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))

    if args.out:
        _write_block(args.out, _report_block(args, result, size_rows,
                                             _prediction_lines(args, refs, items, preds, slm)))
    print(f"eval done in {time.time() - t0:.0f}s", file=sys.stderr)
    return 0
