"""`anycode fim eval`: the fill-in-the-middle baseline on the SLM's own test holes, judged by eval's code.

    anycode fim eval --model runs/fim [--data data/dataset/LANG] [--corpus data/corpus/LANG]
                     [--split test] [--limit 2000] [--beam 5] [--device cpu] [--json OUT.json]

The holes are exactly `anycode eval`'s: the first LIMIT examples of the split's fixed shuffle
(`evaluate.sample_refs`).  Each is found again in its corpus file (`locate`: the file is parsed, the
function at the example's line is flattened as the dataset flattened it, and the hole node's bytes
are read), so the model sees the whole file: prefix = the text before the expression, suffix = the
text after it (cut to fit the block, model/fim_data.py's `fim_prompt`), and it writes the middle.

The search is model/fim_search.py's, the server's own (a beam over tokens, token_search's
`beam_search`: reading the prompt once, then one token per hypothesis with the model's key-value
cache), a hypothesis finishing at <eot>; tokens holding a
newline are never taken (every hole is one line), and the best `beam` distinct finished texts (by
log-probability, <eot> included) are the candidates.  Two lists of candidates come from one search:
`plain` takes every finished text; `grammar` takes only those that parse in the hole
(model/holes.py's `Hole.verify`, the server's own check: the file with the text in the hole
parses, the text as the expression at the hole's position), so a rejected text frees its place for
the next.

Candidates are judged by evaluate.py's `score` (acc@k on printed code, tree@k, subtoken@k), each
text first parsed and printed as the SLM's trees are, so that both models' answers are compared
in one spelling.  Also reported: how often the top-1 parses as one expression (eval's figure) and
how often it parses in its hole.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from anycode import grammars
from anycode.grammars import Language
from anycode.model import evaluate as E
from anycode.model.fim import FimModel
from anycode.model import fim_search
from anycode.model.fim_tokenizer import middle_banned
from anycode.model.holes import find_hole
from anycode.model.token_search import FimHole, blank, function_at  # noqa: F401 - shared


# ---------------------------------------------------------------- the holes, in their files


def locate(shard, i: int, corpus: Path, split: str, parser=None) -> FimHole | None:
    """Example i of `shard` in its corpus file; None when the file is missing or its function at the
    example's line no longer flattens to the example's tree."""
    tree, h = shard.example(i)
    lang = tree.lang
    name, line = shard.source_of(int(shard.arrays["e_func"][i]))
    try:
        source = (Path(corpus) / split / name).read_bytes()
    except OSError:
        return None
    root = lang.parse(source, parser).root_node
    found = function_at(lang, root, line, tree)
    if found is None:
        return None
    n, flat = found
    return FimHole(tree, h, source, flat.start_byte[h], flat.end_byte[h], n.start_byte, n.end_byte,
                   tuple(lang.comments(root, n.start_byte, n.end_byte)))


def eval_holes(data: Path, corpus: Path, split: str, limit: int | None) -> tuple[list[FimHole | None], int]:
    """The located holes of `anycode eval`'s sample (None where one could not be found), and how many
    of them were found."""
    refs = E.sample_refs(data, split, limit)
    parser = refs[0][0].lang.new_parser() if refs else None
    holes = [locate(shard, i, corpus, split, parser) for shard, i in refs]
    return holes, sum(x is not None for x in holes)


def hole_check(hole: FimHole, lang: Language, parser):
    """text -> does the file parse with `text` in the hole, as the expression there?  The server's
    check (`Hole.verify`) on the hole found at the expression's start in the file without it; where
    no hole is found there, whether the text parses as one expression."""
    found = find_hole(hole.source[: hole.start] + hole.source[hole.end:], hole.start, lang=lang, parser=parser)
    if found is None or found.start != hole.start:
        return lambda text: lang.parse_expression(text) is not None

    def check(text: str) -> bool:
        node = lang.parse_expression(text)
        return node is not None and found.verify(text, node, parser)

    return check


# ---------------------------------------------------------------- the search


@torch.no_grad()
def candidates(model: FimModel, tok, hole: FimHole, beam: int, banned, check=None, spm: bool = False) -> dict:
    """The middles the model writes for `hole`, best first: "plain", every text; with `check`, also
    "grammar", only the texts it accepts (model/fim_search.py's search, the model on torch)."""
    dev = next(model.parameters()).device
    cache = {"past": None}

    def step(tokens, parents):
        past = cache["past"]
        if parents is not None:
            parents = torch.from_numpy(parents).to(dev)
            past = [(k[parents], v[parents]) for k, v in past]
        logits, cache["past"] = model(torch.from_numpy(tokens).to(dev), past)
        return logits[:, -1].float().log_softmax(-1).cpu().numpy()

    return fim_search.search(step, tok, hole, beam, banned, model.cfg.block, check, spm)


# ---------------------------------------------------------------- judging


def prediction(text: str, logp: float, lang: Language) -> E.Prediction:
    """A middle as evaluation scores it: parsed, and printed by the language's printer when it parses."""
    parsed = lang.parse_expression(text)
    code = E.print_or_none(parsed, lang) if parsed is not None else None
    return E.Prediction(code if code is not None else text, logp, parsed, parsed)


def judge(hole: FimHole, cands: list[tuple[str, float]]) -> E.Scored:
    lang = hole.tree.lang
    return E.score([prediction(t, lp, lang) for t, lp in cands], hole.tree, hole.h)


def evaluate(model: FimModel, tok, holes: list[FimHole | None], beam: int = 5, spm: bool = False) -> dict:
    """Metrics of both searches of the FIM model over `holes` (a hole that could not be located counts
    as a miss)."""
    banned = middle_banned(tok, model.cfg.vocab)
    return evaluate_with(holes, lambda hole, check: candidates(model, tok, hole, beam, banned, check, spm))


def evaluate_with(holes: list[FimHole | None], search) -> dict:
    """Metrics of both searches over `holes`, `search(hole, check)` giving a hole's {"plain": [(text,
    logp), ...], "grammar": [...]} (`check`: `hole_check`'s); a hole not located counts as a miss.
    Every baseline of issue 21 is judged here (the FIM model, model/s2s_eval.py's seq2seq)."""
    names = ("plain", "grammar")
    scored = {n: [] for n in names}
    parses, in_hole = dict.fromkeys(names, 0), dict.fromkeys(names, 0)
    t0 = time.time()
    for i, hole in enumerate(holes):
        if i and i % 200 == 0:
            print(f"{i} holes, {time.time() - t0:.0f}s: " + "; ".join(
                f"{n} acc@1 {E.summarize(scored[n])['acc@1']:.2f} tree@1 {E.summarize(scored[n])['tree@1']:.2f}"
                for n in names), file=sys.stderr, flush=True)
        if hole is None:
            for n in names:
                scored[n].append(E.Scored(None, None, None))
            continue
        lang = hole.tree.lang
        check = hole_check(hole, lang, lang.new_parser())
        cands = search(hole, check)
        for n in names:
            scored[n].append(judge(hole, cands[n]))
            if cands[n]:
                parses[n] += lang.parse_expression(cands[n][0][0]) is not None
                in_hole[n] += check(cands[n][0][0])
    k = max(len(holes), 1)
    return {n: {**E.summarize(scored[n]), "top1_parses": 100.0 * parses[n] / k,
                "top1_parses_in_hole": 100.0 * in_hole[n] / k, "seconds": time.time() - t0,
                "by_size": by_size(holes, scored[n])} for n in names}


def by_size(holes: list[FimHole | None], scored: list[E.Scored]) -> dict:
    """The metrics by target size, in eval's buckets."""
    groups: dict[str, list] = {}
    for hole, sc in zip(holes, scored):
        if hole is not None:
            groups.setdefault(E.size_bucket(E.subtree_node(hole.tree, hole.h).size()), []).append(sc)
    return {b: E.summarize(groups[b]) for b in ("2-3", "4-5", "6-8", "9-12", "13+") if b in groups}


def load_run(folder: Path, device="cpu") -> tuple[FimModel, object]:
    """A run's model (best.pt, else ckpt.pt, else the fp16 weights tools/device/weights.py joined as
    slm.pt with config.json) and its tokenizer."""
    from anycode.model.checkpoint import load_baseline
    from anycode.model.fim import FimConfig
    from anycode.model.fim_tokenizer import load as load_tokenizer

    tok = load_tokenizer(Path(folder) / "tokenizer.json")
    return load_baseline(folder, FimModel, FimConfig, device), tok


BEGIN, END = "<!-- fim:begin -->", "<!-- fim:end -->"


def report(results: list[tuple[str, dict]], slm: Path | None, header: str) -> str:
    """A markdown block: each FIM model's two searches beside the SLM's figures on the same holes
    (`anycode eval --json`'s file, when given and of the same split and size), and by target size."""
    rows = []
    if slm is not None and slm.exists():
        ref = json.loads(slm.read_text())
        rows += [(f"{name} ({ref['examples']} {ref['split']} examples, `anycode eval`)", m)
                 for name, m in ref["metrics"].items()]
    for name, res in results:
        rows += [(f"{name}, {search} beam", m) for search, m in res.items()]
    cols = ("acc@1", "acc@5", "tree@1", "tree@5", "subtoken@1", "subtoken@5")
    lines = [BEGIN, "", header, "", E.fmt_table(rows, cols), "", "Top-1 parses as one expression / in its hole:", ""]
    lines += [f"* {name}, {search}: {m['top1_parses']:.2f}% / {m['top1_parses_in_hole']:.2f}%"
              for name, res in results for search, m in res.items()]
    for name, res in results:
        lines += ["", f"{name}, grammar beam, by target size (nodes of the SLM's tree):", "",
                  E.fmt_table([(b, m) for b, m in res["grammar"]["by_size"].items()], cols)]
    return "\n".join(lines + ["", END])


def write_block(path: Path, block: str) -> None:
    """`block` in place of the file's fim block, or at its end."""
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + block + old[old.index(END) + len(END):]
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    path.write_text(new)


def add_parser(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", type=Path, help="a run folder of `anycode fim train`")
    ap.add_argument("--data", type=Path, default=Path("data/dataset") / grammars.DEFAULT)
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus") / grammars.DEFAULT)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=2000, help="first N examples of eval's fixed shuffle")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--spm", action="store_true", help="prompt in SPM order instead of PSM")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--report", nargs="+", type=Path, default=None, metavar="JSON",
                    help="instead of evaluating: write these results (--json of fim or s2s eval) as a table into --out")
    ap.add_argument("--slm", type=Path, default=Path("model/shipped/eval_test.json"),
                    help="the SLM's figures on the same holes (anycode eval --json)")
    ap.add_argument("--out", type=Path, default=Path("docs/fim.md"))


def run(args) -> int:
    if args.report:
        done = [json.loads(p.read_text()) for p in args.report]
        header = (f"`anycode fim eval` / `anycode s2s eval` on the first {done[0]['examples']} examples of "
                  f"`anycode eval`'s {done[0]['split']} sample, beam {done[0]['beam']}; percent of examples.")
        write_block(args.out, report([(Path(d["model"]).name, d["metrics"]) for d in done], args.slm, header))
        print(f"wrote {args.out}", file=sys.stderr)
        return 0
    if args.model is None:
        raise SystemExit("error: --model RUN (or --report JSON ...) is needed")
    torch.set_num_threads(args.threads)
    model, tok = load_run(args.model, args.device)
    holes, found = eval_holes(args.data, args.corpus, args.split, args.limit)
    print(f"{len(holes)} {args.split} examples, {found} located in {args.corpus}; model {args.model} "
          f"({model.num_params()} parameters) on {args.device}", file=sys.stderr, flush=True)
    res = evaluate(model, tok, holes, args.beam, args.spm)
    for name, m in res.items():
        print(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in m.items() if isinstance(v, float)), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"split": args.split, "examples": len(holes), "located": found,
                                         "beam": args.beam, "model": str(args.model), "spm": args.spm,
                                         "metrics": res}, indent=1))
    return 0
