"""model/diagnose.py: how misses are classified."""
from anycode.model.diagnose import summary


def row(truth_lp, top_lp, *, exact=False, unreachable=False, tree=False):
    return {"truth": "a.b", "top": "a.c", "top_logp": top_lp, "truth_logp": truth_lp,
            "truth_node_logp": truth_lp / 2, "truth_value_logp": truth_lp / 2,
            "unreachable": unreachable, "exact": exact, "tree": tree}


def test_summary_separates_search_errors_model_errors_and_unreachable_truths():
    rows = [
        row(-1.0, -1.0, exact=True, tree=True),         # found
        row(-2.0, -3.0),                                # the truth beats the top-1: the search missed it
        row(-9.0, -3.0, tree=True),                     # the model prefers its top-1: a model error
        row(-8.0, -4.0),                                # a model error
        row(-30.0, -2.0, unreachable=True),             # no symbol produces a value of the truth
    ]
    s = summary(rows)
    assert s["examples"] == 5 and s["exact_top1"] == 1 and s["unreachable"] == 1
    assert s["reachable_misses"] == 3
    assert s["search_errors"] == 1 and s["model_errors"] == 2
    assert s["misses_tree_right"] == 1
    assert s["median_truth_logp_of_misses"] == -8.0
    assert s["median_top1_logp_of_misses"] == -3.0


def test_a_string_counts_as_copyable_only_beyond_the_targets_own_occurrences():
    """--reach's file string literals: each literal as written, quotes included (an f-string whole),
    and the target's own occurrences taken out, since the file on disk still holds the target."""
    from collections import Counter

    from anycode import grammars
    from anycode.model.diagnose import _elsewhere, _file_literals

    source = 'x = "a"\ny = f("a", \'b\')\nz = f"{x}!"\n'
    found = _file_literals(source, grammars.get("python"))
    assert found == Counter({'"a"': 2, "'b'": 1, 'f"{x}!"': 1})
    assert _elsewhere(found, Counter({'"a"': 1, "'b'": 1})) == {'"a"', 'f"{x}!"'}
