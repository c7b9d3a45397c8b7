"""Do serving and evaluation agree?  The same test-split examples through
  (A) `anycode eval`'s torch beam on the dataset's context,
  (B) the runtime, `Completer.complete` on the file's buffer with the expression cut out,
  (C) eval's torch beam on the context the runtime's hole finder builds.

    python -m anycode.model.compare_search N     (needs torch, model/shipped, data/dataset/python)
"""
import random, sys, time
from pathlib import Path
import torch
from anycode.grammars import python as g
from anycode.model import evaluate as E
from anycode.model.dataset import Shard, shard_paths
from anycode.model.grammar_table import GrammarTable
from anycode.model.holes import find_hole
from anycode.model.paths import FlatTree
from anycode.model.runtime import Completer
from anycode.model.checkpoint import load_model


def main(N: int) -> None:
    torch.set_num_threads(2)
    model, vocab, _ = load_model(Path("model/shipped"))
    table = GrammarTable.load("model/shipped/grammar.json")
    comp = Completer("model/shipped")
    shards = [Shard(p) for p in shard_paths("data/dataset/python", "test")]
    rng = random.Random(7)
    idx = [(s, i) for s, sh in enumerate(shards) for i in range(len(sh))]
    picked = rng.sample(idx, N * 2)
    items, builds = [], []
    for s, i in picked:
        sh = shards[s]
        f = int(sh.arrays["e_func"][i]); h = int(sh.arrays["e_hole"][i])
        name, line = sh.source_of(f)
        src = (Path("data/corpus/python/test") / name).read_bytes()
        fn = None
        stack = [g.parse(src).root_node]
        while stack:
            n = stack.pop(); stack.extend(n.children)
            if n.type == "function_definition" and n.start_point[0] + 1 == line:
                fn = n; break
        if fn is None: continue
        flat = FlatTree.from_node(g.convert(fn))
        a, b = flat.start_byte[h], flat.end_byte[h]
        buf = src[:a] + src[b:]
        hole = find_hole(buf, a, table=table)
        if hole is None: continue
        tree, _ = sh.example(i)
        items.append((tree, h)); builds.append((buf, a, hole))
        if len(items) >= N: break
    A = E.decode(model, vocab, items, beam=5, table=table)
    C = E.decode(model, vocab, [(hl.tree, hl.h) for _, _, hl in builds], beam=5, table=table)
    def rates(scored):
        n = len(scored)
        return [round(100 * sum(x is not None and x < k for x in col) / n, 1) for col in (
            [s.acc for s in scored], [s.tree for s in scored]) for k in (1, 5)]
    sa = [E.score(c, tr, h) for c, (tr, h) in zip(A, items)]
    sc = [E.score(c, tr, h) for c, (tr, h) in zip(C, items)]
    sb = []
    for (buf, cur, hole), (tr, h) in zip(builds, items):
        cands = comp.complete(buf, cur, deadline=time.monotonic() + 30)
        fake = [E.Candidate(c.text, c.logprob, None, g.parse_expression(c.text)) for c in cands]
        sb.append(E.score(fake, tr, h))
    print("n", len(items), "acc@1 acc@5 tree@1 tree@5")
    print("A eval beam, dataset context ", rates(sa))
    print("C eval beam, runtime context ", rates(sc))
    print("B runtime (Completer)        ", rates(sb))
    diff = [(i, E.truth_code(*items[i]), [c.code for c in A[i][:2]], [c.code for c in C[i][:2]]) for i in range(len(items)) if (sa[i].tree == 0) != (sc[i].tree == 0)]
    for d in diff[:8]: print(d)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 60)
