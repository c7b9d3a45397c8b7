"""`anycode s2s eval`: the seq2seq baseline on the SLM's own test holes, judged by eval's code.

    anycode s2s eval --model runs/s2s [--data data/dataset/LANG] [--corpus data/corpus/LANG]
                     [--split test] [--limit 2000] [--beam 5] [--device cpu] [--json OUT.json]

Everything but the model is the FIM baseline's (model/fim_eval.py): the holes are `anycode eval`'s
sample found again in their files (`eval_holes`), the search is its beam (`beam_search`, here
recomputing the decoder over each hypothesis's prefix, the targets being short), the two lists of
candidates (`plain`, and `grammar`: only texts that parse in the hole, the server's `Hole.verify`)
come from one search, and `evaluate_with` judges them by evaluate.py's `score` after parsing and
printing each text as the SLM's trees are printed.  The source is built as in training
(model/s2s_data.py: the function's pieces with HOLE, its OOV pieces as slots); a hole that does not
sit on token boundaries has no candidates (a miss).  The search never writes UNK, PAD, BOS, HOLE or
a slot the source does not hold; a slot is written as the source piece it stands for.
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
from anycode.model.s2s import S2SConfig, S2SModel, load
from anycode.model.s2s_data import (BOS, EOS, FIRST_SLOT, FIRST_WORD, HOLE, JOIN, PAD, SPECIALS, UNK, code_pieces,
                                    encode_function, hole_pieces, make_example, pieces_text)


def hole_source(hole: V.FimHole, words: dict[str, int], cfg: S2SConfig) -> tuple[torch.Tensor, list[str]] | None:
    """The source [1, S] of a located hole, as training builds it, and the piece each OOV slot
    stands for; None when the hole's bytes are not whole tokens."""
    lang = hole.tree.lang
    code = hole.function_code()
    text = code.decode("utf8", "replace")
    char = (lambda i: i) if len(text) == len(code) else (lambda i: len(code[:i].decode("utf8", "replace")))
    pieces, first, spans = code_pieces(lang, text)
    ab = hole_pieces(first, spans, len(pieces), char(hole.start - hole.fn_start), char(hole.end - hole.fn_start))
    if ab is None:
        return None
    ids, oov = encode_function(pieces, words)
    src, _, slots = make_example(ids, ab[0], ab[1], cfg.vocab, cfg.max_src, cfg.max_tgt - 1)
    return torch.from_numpy(src)[None], [oov[j] for j in slots]


@torch.no_grad()
def candidates(model: S2SModel, vocab: list[str], hole: V.FimHole, beam: int, check=None,
               words: dict[str, int] | None = None) -> dict:
    """The texts the model writes for `hole`, best first: "plain", every text; with `check`, also
    "grammar", only the texts it accepts."""
    words = words or {p: i for i, p in enumerate(vocab) if i >= FIRST_WORD}
    built = hole_source(hole, words, model.cfg)
    if built is None:
        return {"plain": [], "grammar": []}
    dev = model.tok.weight.device
    src, slots = built[0].to(dev), built[1]
    memory = model.encode(src)
    banned = torch.zeros(model.cfg.vocab, dtype=torch.bool, device=dev)
    banned[[PAD, BOS, HOLE, UNK]] = True
    banned[FIRST_SLOT + len(slots): FIRST_WORD] = True
    state = {"prefix": torch.tensor([[BOS]], device=dev)}

    def advance(parents: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        prefix = torch.cat([state["prefix"][parents], tokens[:, None]], 1)
        state["prefix"] = prefix
        n = len(prefix)
        return model.decode(memory.expand(n, -1, -1), src.expand(n, -1), prefix)[:, -1]

    def to_text(ids: list[int]) -> str:
        pieces = [slots[i - FIRST_SLOT] if FIRST_SLOT <= i < FIRST_WORD else SPECIALS[JOIN] if i == JOIN else vocab[i]
                  for i in ids]
        return pieces_text(hole.tree.lang, pieces).strip()

    first = model.decode(memory, src, state["prefix"])[:, -1]
    return V.beam_search(first, advance, beam, banned, V.finishers(to_text, check), model.cfg.max_tgt, EOS)


def evaluate(model: S2SModel, vocab: list[str], holes: list, beam: int = 5) -> dict:
    """Metrics of both searches over `holes` (fim_eval's `evaluate_with`)."""
    words = {p: i for i, p in enumerate(vocab) if i >= FIRST_WORD}
    return V.evaluate_with(holes, lambda hole, check: candidates(model, vocab, hole, beam, check, words))


def load_run(folder: Path, device="cpu") -> tuple[S2SModel, list[str]]:
    """A run's model (best.pt, else ckpt.pt, else the fp16 weights tools/device/weights.py joined as
    slm.pt with config.json) and its vocabulary (vocab.json)."""
    folder = Path(folder)
    vocab = json.loads((folder / "vocab.json").read_text())
    for name in ("best.pt", "ckpt.pt"):
        if (folder / name).exists():
            return load(folder / name, device), vocab
    model = S2SModel(S2SConfig(**json.loads((folder / "config.json").read_text())["model"]))
    state = torch.load(folder / "slm.pt", map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.to(device).eval(), vocab


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
