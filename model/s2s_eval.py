"""`anycode s2s eval`: the seq2seq baseline on the SLM's own test holes, judged by eval's code.

    anycode s2s eval --model runs/s2s [--data data/dataset/LANG] [--corpus data/corpus/LANG]
                     [--split test] [--limit 2000] [--beam 5] [--device cpu] [--json OUT.json]

Everything but the model is shared: the holes are `anycode eval`'s sample found again in their
files (model/fim_eval.py's `eval_holes`), the search is model/s2s_search.py's (the source built as
training builds it, token_search's beam, the server's own search over the exported graphs), the two
lists of candidates (`plain`, and `grammar`: only texts that parse in the hole, the server's
`Hole.verify`) come from one search, and fim_eval's `evaluate_with` judges them by evaluate.py's
`score` after parsing and printing each text as the SLM's trees are printed; a hole that does not
sit on token boundaries has no candidates (a miss).
`anycode fim eval --report FIM.json S2S.json` puts the results beside the SLM's.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from anycode import grammars
from anycode.model import fim_eval as V
from anycode.model.checkpoint import load_baseline
from anycode.model.s2s import S2SConfig, S2SModel
from anycode.model import s2s_search as S


@torch.no_grad()
def candidates(model: S2SModel, vocab: list[str], hole: V.FimHole, beam: int, check=None,
               words: dict[str, int] | None = None) -> dict:
    """The texts the model writes for `hole`, best first: "plain", every text; with `check`, also
    "grammar", only the texts it accepts (model/s2s_search.py's search, the model on torch)."""
    cfg = model.cfg
    built = S.hole_source(hole, words or S.vocab_words(vocab), cfg.vocab, cfg.max_src, cfg.max_tgt)
    if built is None:
        return {"plain": [], "grammar": []}
    dev = model.tok.weight.device
    src = torch.from_numpy(built[0])[None].to(dev)
    memory = model.encode(src)

    def decode_last(prefix):
        n = len(prefix)
        logp = model.decode(memory.expand(n, -1, -1), src.expand(n, -1), torch.from_numpy(prefix).to(dev))
        return logp[:, -1].cpu().numpy()

    return S.search(decode_last, built[1], vocab, hole.tree.lang, beam, cfg.max_tgt, check)


def evaluate(model: S2SModel, vocab: list[str], holes: list, beam: int = 5) -> dict:
    """Metrics of both searches over `holes` (fim_eval's `evaluate_with`)."""
    words = S.vocab_words(vocab)
    return V.evaluate_with(holes, lambda hole, check: candidates(model, vocab, hole, beam, check, words))


def load_run(folder: Path, device="cpu") -> tuple[S2SModel, list[str]]:
    """A run's model (best.pt, else ckpt.pt, else the fp16 weights tools/device/weights.py joined as
    slm.pt with config.json) and its vocabulary (vocab.json)."""
    vocab = json.loads((Path(folder) / "vocab.json").read_text())
    return load_baseline(folder, S2SModel, S2SConfig, device), vocab


def add_parser(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", type=Path, required=True, help="a run folder of `anycode s2s train`")
    ap.add_argument("--data", type=Path, default=Path("data/dataset") / grammars.DEFAULT)
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus") / grammars.DEFAULT)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=2000, help="first N examples of eval's fixed shuffle")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)


def run(args) -> int:
    torch.set_num_threads(args.threads)
    model, vocab = load_run(args.model, args.device)
    holes, found = V.eval_holes(args.data, args.corpus, args.split, args.limit)
    print(f"{len(holes)} {args.split} examples, {found} located in {args.corpus}; model {args.model} "
          f"({model.num_params()} parameters) on {args.device}", file=sys.stderr, flush=True)
    res = evaluate(model, vocab, holes, args.beam)
    for name, m in res.items():
        print(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in m.items() if isinstance(v, float)), file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"split": args.split, "examples": len(holes), "located": found,
                                         "beam": args.beam, "model": str(args.model), "metrics": res}, indent=1))
    return 0
