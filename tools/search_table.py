"""The encoder rows of docs/search.md's results table from a `search_eval.json`
(model/search_train.py's --export, or tools/device/train_search.sh under $OUT), the training step of
the weights measured last:

    python3 tools/search_table.py search_eval.json
"""
import json
import sys

NAMES = {"concat": "concat", "sum": "weighted sum", "attention": "attention", "structural": "structural only",
         "semantic": "semantic only"}


def fmt(x) -> str:
    return "" if x is None else f"{x:.3f}"


def rows(results: dict) -> list[str]:
    out = []
    for key, name in NAMES.items():
        r = results.get(key)
        if r is None:
            continue
        if "error" in r:
            out.append(f"| {name} | failed: {r['error']} | | | | | |")
            continue
        c = r.get("cosqa") or {}
        out.append(f"| {name} | {fmt(r['dev_csn']['mrr'])} | {fmt(r['test_csn']['mrr'])} | "
                   f"{fmt((c.get('dev_mrr_answered') or {}).get('mrr'))} | {fmt(c.get('dev_accuracy_5fold'))} | "
                   f"{fmt((c.get('test_mrr_all_pairs') or {}).get('mrr'))} | {r.get('step', '')} |")
    return out


if __name__ == "__main__":
    print("\n".join(rows(json.loads(open(sys.argv[1]).read()))))
