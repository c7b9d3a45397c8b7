"""S_t, R_t and child indices checked by hand on small programs."""
from anycode.grammars import python as g
from anycode.model.paths import FlatTree, context_paths, step_paths, target_steps
from anycode.model.vocab import EOS_NODE, EOS_TOK

FIG2 = b"def f(x):\n    if x > 1:\n        pass\n"


def flat(src: bytes) -> FlatTree:
    tree = g.parse(src)
    return FlatTree.from_node(g.convert(tree.root_node.named_children[0]), g.PYTHON)


def test_figure2_tree_in_preorder():
    t = flat(FIG2)
    assert t.types == ["function_definition", "identifier", "parameters", "identifier", "block",
                       "if_statement", "comparison_operator:>", "identifier", "integer", "block",
                       "pass_statement"]
    assert t.child_index == [0, 0, 1, 0, 2, 0, 0, 0, 1, 1, 0]
    assert t.parent == [-1, 0, 0, 2, 0, 4, 5, 6, 6, 5, 9]
    assert t.values[7] == "x" and t.values[8] == "1" and t.values[10] is None


def test_figure2_context_paths_go_through_the_hole_parent():
    t = flat(FIG2)
    ctx = context_paths(t, 6)
    assert ctx.leaves == [1, 3, 10]
    assert ctx.prefixes == [[1, 0, 4, 5], [3, 2, 0, 4, 5], [10, 9, 5]]
    assert ctx.root_prefix == [0, 4, 5]


def test_figure2_steps_are_depth_first_with_eos():
    t = flat(FIG2)
    steps = target_steps(t, 6, whole_tokens={"x", "f"})
    got = [(s.parent, s.child_index, s.label, s.is_value) for s in steps]
    assert got == [
        (5, 0, "comparison_operator:>", False),
        (6, 0, "identifier", False), (7, 0, "x", True), (7, 1, EOS_TOK, True),
        (6, 1, "integer", False), (8, 0, "1", True), (8, 1, EOS_TOK, True),
        (6, 2, EOS_NODE, False),
    ]


def test_figure2_paths_at_the_step_that_predicts_the_right_operand():
    t = flat(FIG2)
    steps = target_steps(t, 6, whole_tokens={"x", "f"})
    ctx = context_paths(t, 6)
    sp = step_paths(t, 6, steps, 4, ctx)
    assert sp.child_index == 1
    assert sp.root_path == [("function_definition", 0), ("block", 2), ("if_statement", 0),
                            ("comparison_operator:>", 0)]
    # context leaf f: up to the function, down through the if to `>`
    assert sp.paths[0] == (["f"], [("identifier", 0), ("function_definition", 0), ("block", 2),
                                   ("if_statement", 0), ("comparison_operator:>", 0)])
    assert sp.paths[2] == (["<empty>"], [("pass_statement", 0), ("block", 1), ("if_statement", 0),
                                         ("comparison_operator:>", 0)])
    # the generated leaf x (figure 2(d)): a path from x up to `>`
    assert sp.paths[3] == (["x"], [("identifier", 0), ("comparison_operator:>", 0)])
    assert len(sp.paths) == 4


def test_paths_at_eos_include_every_generated_leaf():
    t = flat(FIG2)
    steps = target_steps(t, 6, whole_tokens=set())
    sp = step_paths(t, 6, steps, len(steps) - 1, context_paths(t, 6))
    assert [p for p in sp.paths[3:]] == [(["x"], [("identifier", 0), ("comparison_operator:>", 0)]),
                                         (["1"], [("integer", 1), ("comparison_operator:>", 0)])]


def test_first_step_expands_the_hole_parent():
    t = flat(FIG2)
    steps = target_steps(t, 6)
    sp = step_paths(t, 6, steps, 0, context_paths(t, 6))
    assert sp.root_path == [("function_definition", 0), ("block", 2), ("if_statement", 0)]
    assert [p[1][-1] for p in sp.paths] == [("if_statement", 0)] * 3


def test_value_steps_split_identifiers_unless_copied_whole():
    src = b"def f(get_value):\n    return get_value(1) + other_name\n"
    t = flat(src)
    h = next(i for i, ty in enumerate(t.types) if ty == "binary_operator:+")
    labels = [s.label for s in target_steps(t, h, whole_tokens={"get_value"}) if s.is_value]
    assert labels == ["get_value", EOS_TOK, "1", EOS_TOK, "other", "name", EOS_TOK]


def test_empty_nonterminal_becomes_a_leaf_only_after_its_eos():
    src = b"def f(a):\n    return a.run() + 1\n"
    t = flat(src)
    h = next(i for i, ty in enumerate(t.types) if ty == "binary_operator:+")
    steps = target_steps(t, h)
    ctx = context_paths(t, h)
    args = next(i for i, ty in enumerate(t.types) if ty == "argument_list")
    close = next(k for k, s in enumerate(steps) if s.parent == args and s.label == EOS_NODE)
    at_close = step_paths(t, h, steps, close, ctx).paths[len(ctx.leaves):]
    after = step_paths(t, h, steps, close + 1, ctx).paths[len(ctx.leaves):]
    assert ("argument_list", 1) not in [p[1][0] for p in at_close]
    assert ("argument_list", 1) in [p[1][0] for p in after]


def test_caps_keep_the_nearest_leaves_and_count_what_they_drop():
    body = "\n".join(f"    v{i} = {i}" for i in range(60))
    src = f"def f(x):\n{body}\n    return x + 1\n".encode()
    t = flat(src)
    h = next(i for i, ty in enumerate(t.types) if ty == "binary_operator:+")
    ctx = context_paths(t, h, max_paths=10)
    assert len(ctx.leaves) == 10 and ctx.dropped_far == 2 + 2 * 60 - 10
    lengths = sorted(len(p) for p in context_paths(t, h, max_paths=1000).prefixes)
    assert sorted(len(p) for p in ctx.prefixes) == lengths[:10]
    short = context_paths(t, h, max_length=3)
    assert short.dropped_long > 0 and all(len(p) <= 3 for p in short.prefixes)
