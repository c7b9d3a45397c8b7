"""Why the model misses: search errors, model errors and unreachable targets.

    python -m anycode.model.diagnose [--model model/shipped] [--split dev] [--limit 300]

For each example of a fixed sample (the same shuffle as `anycode eval --limit`), the
beam's top candidate is compared with the truth scored by teacher forcing through the
search's own machinery (`beam.Decoder.score_target`, on the torch model through
model/torch_backend.py; the candidates as `anycode eval` takes them):
  * unreachable: a value of the truth has no symbol (neither in the subtoken vocabulary
    nor copyable from the context): no search can produce it;
  * search error: the truth is reachable and scores higher than the beam's top-1, so a
    wider or better search would have ranked it first;
  * model error: the truth is reachable and scores lower than the top-1.
The truth's log-probability is split into node steps (types, EOS-node) and value steps
(subtokens, whole tokens, EOS-token) to show which head loses it.

    python -m anycode.model.diagnose --reach [--split dev] [--limit 1000]

asks instead what would make the unreachable targets (of a model without file tokens)
reachable: copying any identifier (or string literal) found elsewhere in the whole file (not
only in the function; the target's own occurrences do not count), the 256 file tokens a
model with them reads (alone, and with the file's string literals beside them), or a larger
subtoken vocabulary (by train frequency).  It needs the corpus (`anycode corpus fetch`) for the files.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from anycode import grammars
from anycode.model import evaluate as E
from anycode.model.dataset import shard_paths
from anycode.model.features import context_features
from anycode.model.grammar_table import GrammarTable
from anycode.model.paths import target_steps
from anycode.model.checkpoint import load_model
from anycode.model.torch_backend import torch_decoder
from anycode.model.vocab import Vocab

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FILE_TOKENS = 256
VOCAB_SIZES = (2000, 5000, 10000)      # larger vocabularies beside the file tokens, for --reach


def unreachable_values(tree, h, cf) -> list:
    """The target's value steps whose label no symbol of the features `cf` produces."""
    return unreachable_steps(target_steps(tree, h, cf.whole_tokens), cf.symbols)


def unreachable_steps(steps, symbols) -> list:
    return [s for s in steps if s.is_value and symbols.id(s.label) is None]


def sample(data: Path, split: str, limit: int):
    return [shard.example(i) for shard, i in E.sample_refs(data, split, limit)]


def _file_literals(source: str, lang, parser=None) -> Counter:
    """How often each string literal (as written, quotes included) occurs in the file `source`."""
    data = source.encode("utf8")
    out: Counter = Counter()
    stack = [(parser or lang.new_parser()).parse(data).root_node]
    while stack:
        n = stack.pop()
        if n.type == lang.STRING:
            out[data[n.start_byte:n.end_byte].decode("utf8", "replace")] += 1
        else:
            stack.extend(n.children)
    return out


def _elsewhere(in_file: Counter, in_target: Counter) -> set:
    """What occurs in the file beyond the target's own occurrences (the file on disk still holds it)."""
    return {w for w, n in in_file.items() if n > in_target[w]}


def reachability(data: Path, corpus: Path, split: str, limit: int, max_paths=200, max_length=24) -> dict:
    """Of the sampled examples with an unreachable value, how many every change would make reachable."""
    vocab = Vocab.load(data / "vocab.json")
    counts: Counter = Counter()
    for p in shard_paths(data, "train"):
        counts.update(json.loads(p.with_suffix(".json").read_text())["subtoken_counts"])
    rank = {s: r for r, (s, _) in enumerate(counts.most_common())}
    fixes = {"identifiers of the whole file copyable": lambda i, s, r: i,     # i, s: an identifier, a string
             "identifiers and string literals of the whole file copyable": lambda i, s, r: i or s,  # found elsewhere
             "subtoken vocabulary 5,000": lambda i, s, r: r < 5000,          # r: the label's train rank
             "subtoken vocabulary 20,000": lambda i, s, r: r < 20000,
             "file identifiers or vocabulary 5,000": lambda i, s, r: i or r < 5000}
    out = {"examples": 0, "unreachable": 0, "values": Counter(), "fixed": Counter()}
    parser = None
    for shard, i in E.sample_refs(data, split, limit):
        tree, h = shard.example(i)
        out["examples"] += 1
        bad = unreachable_values(tree, h, context_features(tree, h, vocab, max_paths, max_length))
        if not bad:
            continue
        out["unreachable"] += 1
        lang = tree.lang
        parser = parser or lang.new_parser()
        try:
            text = (corpus / split / shard.source_of(int(shard.arrays["e_func"][i]))[0]).read_text(encoding="utf8")
        except OSError:
            text = ""
        own = [(lang.base_type(tree.types[k]), tree.values[k]) for k in range(h, tree.end[h]) if tree.values[k] is not None]
        elsewhere = _elsewhere(Counter(IDENTIFIER.findall(text)), Counter(v for b, v in own if b == lang.IDENTIFIER))
        strings = _elsewhere(_file_literals(text, lang, parser), Counter(v for b, v in own if b == lang.STRING))
        ok = dict.fromkeys(fixes, True)
        # what a model with file tokens reads (features.outside_identifiers over the shard's file counts),
        # and with the file's string literals copyable beside them
        left = unreachable_values(tree, h, context_features(tree, h, vocab, max_paths, max_length, FILE_TOKENS))
        if not left:
            out["fixed"][f"file tokens ({FILE_TOKENS}, as the model reads them)"] += 1
        if all(lang.base_type(tree.types[s.parent]) == lang.STRING and tree.values[s.parent] in strings for s in left):
            out["fixed"][f"file tokens ({FILE_TOKENS}) and the file's string literals copyable"] += 1
        for size in VOCAB_SIZES:
            if all(rank.get(s.label, 1 << 30) < size for s in left):
                out["fixed"][f"file tokens ({FILE_TOKENS}) and a subtoken vocabulary of {size:,}"] += 1
        for s in bad:
            base = lang.base_type(tree.types[s.parent])
            out["values"][base] += 1
            value = tree.values[s.parent] or ""
            ident, string = base == lang.IDENTIFIER and value in elsewhere, base == lang.STRING and value in strings
            for name, fix in fixes.items():
                ok[name] &= fix(ident, string, rank.get(s.label, 1 << 30))
        out["fixed"].update(k for k, v in ok.items() if v)
    return out


def diagnose(model, vocab, table, items, max_paths=200, max_length=24, beam=5, *, lang) -> list[dict]:
    dec = torch_decoder(model, vocab, table, max_paths, max_length, lang=lang)
    rows = []
    for tree, h in items:
        ctx = dec.prepare(tree, h)
        if ctx is None:
            continue            # no context leaf: the search is not asked
        cands = E.candidates(dec.search(ctx, beam, keep=beam), beam, lang=lang)
        steps, lps = dec.score_target(ctx, tree, h)
        truth = E.truth_code(tree, h)
        top = cands[0] if cands else None
        rows.append({
            "truth": truth, "top": top.code if top else None,
            "top_logp": top.logp if top else None,
            "truth_logp": float(sum(lps)),
            "truth_node_logp": float(sum(lp for s, lp in zip(steps, lps) if not s.is_value)),
            "truth_value_logp": float(sum(lp for s, lp in zip(steps, lps) if s.is_value)),
            "unreachable": bool(unreachable_steps(steps, ctx.features.symbols)),
            "exact": bool(top is not None and E.same_code(top.code, truth)),
            "tree": bool(top is not None and E.score(cands[:1], tree, h).tree == 0),
        })
    return rows


def summary(rows: list[dict]) -> dict:
    n = len(rows)
    unreach = [r for r in rows if r["unreachable"]]
    misses = [r for r in rows if not r["unreachable"] and not r["exact"] and r["top_logp"] is not None]
    search = [r for r in misses if r["truth_logp"] > r["top_logp"]]
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
    return {
        "examples": n,
        "exact_top1": sum(r["exact"] for r in rows),
        "unreachable": len(unreach),
        "reachable_misses": len(misses),
        "search_errors": len(search),
        "model_errors": len(misses) - len(search),
        "misses_tree_right": sum(r["tree"] for r in misses),
        "median_truth_logp_of_misses": med([r["truth_logp"] for r in misses]),
        "median_truth_node_logp_of_misses": med([r["truth_node_logp"] for r in misses]),
        "median_truth_value_logp_of_misses": med([r["truth_value_logp"] for r in misses]),
        "median_top1_logp_of_misses": med([r["top_logp"] for r in misses]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m anycode.model.diagnose", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=Path("model/shipped"))
    ap.add_argument("--data", type=Path, default=Path("data/dataset/python"))
    ap.add_argument("--split", default="dev")
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--reach", action="store_true", help="what would make unreachable targets reachable")
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus/python"))
    ap.add_argument("--json", type=Path, default=None, help="write the summary and every row here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.reach:
        r = reachability(args.data, args.corpus, args.split, args.limit)
        u = max(r["unreachable"], 1)
        print(f"{r['examples']} {args.split} examples; {r['unreachable']} ({100 * r['unreachable'] / r['examples']:.1f}%) "
              f"have a value no symbol produces; those values by type: {dict(r['values'])}")
        for name, n in r["fixed"].most_common():
            print(f"  all of an example's values reachable with {name}: {n} of {r['unreachable']} ({100 * n / u:.0f}%)")
        return 0
    model, vocab, conf = load_model(args.model, torch.device("cpu"))
    feat = conf.get("features", {})
    table = GrammarTable.load(args.data / "grammar.json") if (args.data / "grammar.json").exists() else None
    t0 = time.time()
    rows = diagnose(model, vocab, table, sample(args.data, args.split, args.limit),
                    feat.get("max_paths", 200), feat.get("max_length", 24), lang=grammars.of_config(conf))
    s = summary(rows)
    n = s["examples"]
    print(f"{n} {args.split} examples, model {args.model}, {time.time() - t0:.0f} s")
    print(f"  exact at rank 1: {s['exact_top1']} ({100 * s['exact_top1'] / n:.1f}%)")
    print(f"  truth has an unreachable value: {s['unreachable']} ({100 * s['unreachable'] / n:.1f}%)")
    print(f"  reachable misses: {s['reachable_misses']}; the truth scored above the top-1 (search error): "
          f"{s['search_errors']}, below it (model error): {s['model_errors']}; top-1 tree right: "
          f"{s['misses_tree_right']}")
    print(f"  median log-probability over the reachable misses: truth {s['median_truth_logp_of_misses']:.2f} "
          f"(node steps {s['median_truth_node_logp_of_misses']:.2f}, value steps "
          f"{s['median_truth_value_logp_of_misses']:.2f}), top-1 {s['median_top1_logp_of_misses']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"summary": s, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
