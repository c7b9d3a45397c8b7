"""Speed of the exported code-search encoders on this machine (docs/search.md, "Speed and size").

    .venv/bin/python tools/search_speed.py [PACKED] [PAIRS]

Exports the base config of the `concat` variant with untrained weights (the speed does not depend on
them; nothing here is a model to use) to a temporary folder, then times featurizing and encoding
2,000 test-split functions, 200 single queries, and the inner products and top 10 over 100,000
random vectors.
"""
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from anycode import grammars
from anycode.model import search_data as sd
from anycode.model import search_train as st
from anycode.model.search_export import export
from anycode.model.search_runtime import SearchEncoders


def main() -> None:
    packed = Path(sys.argv[1] if len(sys.argv) > 1 else ".c23/search")
    pairs_dir = Path(sys.argv[2] if len(sys.argv) > 2 else "data/search/python")
    data = st.load_packed(packed)
    cfg, _ = st.make_config(data, "base", "concat", {})
    model = st.SearchModel(cfg, {k: torch.from_numpy(v) for k, v in data["tables"].items()})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        st.save_best(tmp / "w.pt", model, data["tables"], {"step": 0, "dev_mrr": 0.0})
        out = export(tmp / "w.pt", packed, tmp / "onnx")
        print(f"export: {sum(p.stat().st_size for p in out.iterdir()) / 2**20:.1f} MiB")
        enc = SearchEncoders(out)
        lang = grammars.get(data.get("language") or grammars.DEFAULT)
        pairs = list(itertools.islice(sd.read_pairs(pairs_dir, "test"), 2000))
        t = time.time()
        feats = [sd.source_features(p["code"], lang) for p in pairs]
        tf = time.time() - t
        t = time.time()
        enc.functions(feats)
        te = time.time() - t
        t = time.time()
        for p in pairs[:200]:
            enc.queries([p["query"]])
        tq = (time.time() - t) / 200
        print(f"featurize {len(pairs) / tf:.0f} functions/s, encode {len(pairs) / te:.0f} functions/s, "
              f"query {tq * 1000:.1f} ms")
        vecs = np.random.default_rng(0).standard_normal((100_000, enc.width)).astype(np.float32)
        q = enc.queries(["read a file"])[0]
        times = []
        for _ in range(50):
            t = time.time()
            s = vecs @ q
            np.argpartition(-s, 10)[:10]
            times.append(time.time() - t)
        print(f"scoring 100,000 vectors: p95 {np.percentile(times, 95) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
