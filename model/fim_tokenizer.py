"""The fill-in-the-middle baseline's tokenizer: byte-level BPE learned from the corpus's train split.

    anycode fim tokenizer [--corpus data/corpus/LANG] [--out data/fim/LANG/tokenizer.json] [--vocab 16384]

Byte-level (GPT-2's byte alphabet and pre-tokenizer, no normalizer, no prefix space), so that every
string, whatever its characters or indentation, encodes and decodes back to itself exactly: a
completion is code put back into a buffer, and a tokenizer that lost a space or a byte would turn
right answers into wrong ones.  The FIM sentinels (Bavarian et al. 2022) are special tokens with
fixed ids, the first of the vocabulary, so that the model, the training examples and the search agree
on them without looking them up.

The result is one tokenizer.json, read by the `tokenizers` package (Rust, no torch): training and
evaluation read it through `load`.  A server that ran this model would need `tokenizers` among the
serving dependencies (a compiled wheel of a few MB), or an encoder of our own over the same
file's vocabulary and merges (slower per request, nothing to install).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from anycode import grammars

# fixed ids 0..4: the search and the examples use these numbers directly
PAD, PREFIX, SUFFIX, MIDDLE, EOT = 0, 1, 2, 3, 4
SPECIALS = ["<pad>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<eot>"]
DEFAULT_VOCAB = 16384


def train_tokenizer(texts: Iterator[str], vocab_size: int = DEFAULT_VOCAB, min_frequency: int = 2,
                    length: int | None = None):
    """A byte-level BPE `tokenizers.Tokenizer` learned from `texts`, with SPECIALS at ids 0..4."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    check_specials(tok)
    tok.encode_special_tokens = True
    return tok


def check_specials(tok) -> None:
    """The sentinels must sit at their fixed ids: a tokenizer.json from elsewhere may not have them."""
    got = [tok.token_to_id(s) for s in SPECIALS]
    if got != list(range(len(SPECIALS))):
        raise ValueError(f"tokenizer's special ids {dict(zip(SPECIALS, got))}, expected 0..{len(SPECIALS) - 1}")


def load(path: Path):
    """The tokenizer of a tokenizer.json, its sentinels checked."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    check_specials(tok)
    tok.encode_special_tokens = True     # not kept in the file: "<eot>" in source text is text
    return tok


def encode(tok, text: str) -> list[int]:
    """Ids of `text`; a sentinel's spelling in it is plain text (source code may contain "<eot>"): the
    tokenizer must come from `load` or `train_tokenizer`, which set that."""
    return tok.encode(text, add_special_tokens=False, is_pretokenized=False).ids if text else []


def decode(tok, ids: list[int]) -> str:
    """The text of `ids`; sentinel ids are dropped."""
    return tok.decode([i for i in ids if i >= len(SPECIALS)], skip_special_tokens=False)


def middle_banned(tok, vocab: int) -> np.ndarray:
    """[vocab] True for tokens a middle never takes: the sentinels but <eot>, and any holding a newline
    (every hole is one line)."""
    out = np.zeros(vocab, dtype=bool)
    for i in range(vocab):
        out[i] = (i < len(SPECIALS) and i != EOT) or (i >= len(SPECIALS) and "\n" in tok.decode([i]))
    return out


def corpus_texts(corpus_dir: Path, split: str = "train", max_bytes: int | None = None,
                 every: int = 1) -> Iterator[str]:
    """The split's files as text, in the corpus's order (model/corpus.py; of every `every`-th project),
    up to `max_bytes` in all."""
    from anycode.model.corpus import iter_files

    total = 0
    for _, path in iter_files(corpus_dir, split, every):
        data = path.read_bytes()
        total += len(data)
        yield data.decode("utf8", "replace")
        if max_bytes is not None and total >= max_bytes:
            return


def add_parser(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus") / grammars.DEFAULT)
    ap.add_argument("--out", type=Path, default=Path("data/fim") / grammars.DEFAULT / "tokenizer.json")
    ap.add_argument("--vocab", type=int, default=DEFAULT_VOCAB)
    ap.add_argument("--max-mb", type=float, default=None, help="learn from the first N MB of the train split")
    ap.add_argument("--every", type=int, default=1, help="learn from every Nth train project only")


def run(args) -> int:
    t0 = time.time()
    cap = int(args.max_mb * 1e6) if args.max_mb else None
    tok = train_tokenizer(corpus_texts(args.corpus, "train", cap, args.every), args.vocab)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(args.out))
    print(f"{args.out}: {tok.get_vocab_size()} tokens, learned in {time.time() - t0:.0f}s", file=sys.stderr)
    return 0
