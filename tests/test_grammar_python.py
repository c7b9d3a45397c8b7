"""The Python AST view: folded types, subtokens, and print -> parse round trips on real code."""
import argparse
import dataclasses
import json.encoder
import pathlib
import textwrap

import pytest
from hypothesis import given, settings, strategies as st

from anycode.grammars import python as g

REAL_FILES = [pathlib.Path(m.__file__) for m in (argparse, dataclasses, json.encoder, textwrap)]


def expressions_of(path: pathlib.Path):
    root = g.convert(g.parse(path.read_bytes()).root_node)
    return [n for n in root.walk() if g.base_type(n.type) in g.EXPRESSION_TYPES and n.size() > 1]


REAL_EXPRESSIONS = [e for f in REAL_FILES for e in expressions_of(f)]


def first_expression(text: str) -> g.Node:
    node = g.parse_expression(text)
    assert node is not None, text
    return node


def test_operators_are_folded_into_the_type():
    assert first_expression("a + b").type == "binary_operator:+"
    assert first_expression("a is not b").type == "comparison_operator:is not"
    assert first_expression("a < b <= c").type == "comparison_operator:<,<="
    assert first_expression("a and b").type == "boolean_operator:and"
    assert first_expression("-a").type == "unary_operator:-"
    assert first_expression("x[1:]").children[1].type == "slice:_:"
    assert first_expression("x[::2]").children[1].type == "slice:::_"


def test_punctuation_is_dropped_and_terminals_carry_values():
    call = first_expression("f(a, 'b', 1.5, None)")
    assert [c.type for c in call.children] == ["identifier", "argument_list"]
    args = call.children[1].children
    assert [(a.type, a.value) for a in args] == [("identifier", "a"), ("string", "'b'"),
                                                 ("float", "1.5"), ("none", None)]


def test_comments_are_dropped():
    node = first_expression("f(a,  # why\n  b)")
    assert [c.value for c in node.children[1].children] == ["a", "b"]


@pytest.mark.parametrize("name,parts", [
    ("getValue", ["get", "Value"]), ("get_value", ["get", "value"]), ("HTTPServer", ["HTTP", "Server"]),
    ("MAX_SIZE", ["MAX", "SIZE"]), ("__init__", ["__", "init", "__"]), ("x1", ["x", "1"]),
    ("_private_name", ["_", "private", "name"]), ("value2str", ["value", "2", "str"]),
    ("x_1", ["x_1"]), ("get_Value", ["get_Value"]),
])
def test_identifier_subtokens(name, parts):
    assert g.split_identifier(name) == parts
    assert g.join_subtokens(parts) == name


@given(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,30}", fullmatch=True))
def test_identifier_split_always_joins_back(name):
    assert g.join_subtokens(g.split_identifier(name)) == name


def test_literals_are_one_subtoken():
    assert g.subtokens("string", "'hello world'") == ["'hello world'"]
    assert g.subtokens("integer", "0x1F") == ["0x1F"]


def test_real_files_have_expressions():
    assert len(REAL_EXPRESSIONS) > 2000


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(REAL_EXPRESSIONS))
def test_printing_a_real_expression_parses_back_to_the_same_tree(node):
    assert g.round_trips(node), g.print_node(node)


def test_round_trip_rate_over_real_files():
    ok = sum(g.round_trips(e) for e in REAL_EXPRESSIONS)
    assert ok / len(REAL_EXPRESSIONS) >= 0.995


@pytest.mark.parametrize("text", [
    "[x for x in y if x]", "{k: v for k, v in d.items()}", "(a for a in b)", "lambda x, *a, k=1, **kw: x",
    "lambda: 0", "x if y else z", "not a", "await f()", "(a := 3)", "a[1:2, ::3]", "(1,)", "()",
    "f(*a, **k)", "'a' 'b'", "{**a, 'b': 1}", "{1, 2}", "a.b.c(d)[e]", "~x ** -y", "x @ y",
    "(yield)", "(yield from g)", "[*a, *b]", "f(x for x in y)", "a not in b", "f'{x}'",
])
def test_hand_picked_expressions_round_trip(text):
    node = first_expression(text)
    assert g.round_trips(node), g.print_node(node)


@pytest.mark.parametrize("text, redundant", [
    ("a and a", True), ("isinstance(o, str) or isinstance(o, str)", True), ("len(x) == len(x)", True),
    ("a < a < b", True), ("not k in k", True), ("words.get(words)", True), ("d.get('k', d)", True),
    ("[x for x in xs if x.ok and x.ok]", True), ("words[words]", True), ("a.b[a.b]", True),
    ("isinstance(o, dict) and not isinstance(o, dict)", True), ("not a or a", True), ("a and not b", False),
    ("x.count(x for x in y)", False),
    ("a and b", False), ("a < b < a", False), ("x != x", False), ("self.f(self)", False),
    ("cls.__new__(cls)", False), ("x.y.f(x)", False), ("f(x)(x)", False), ("x * x", False),
    ("a[b]", False), ("a[a:b]", False), ("f(x, x)", False),
])
def test_redundant_expressions(text, redundant):
    assert g.redundant(first_expression(text)) is redundant


def test_real_expressions_are_almost_never_redundant():
    """The rule the search drops answers by holds for what people write: at most 1 in 1,000."""
    assert sum(g.redundant(e) for e in REAL_EXPRESSIONS) <= len(REAL_EXPRESSIONS) // 1000


def test_not_one_expression():
    assert g.parse_expression("x = 1") is None
    assert g.parse_expression("f(") is None
    assert g.parse_expression("a) + (b") is None


def test_open_string_and_is_string():
    """A string literal being typed: the quote that closes it, and which tokens are strings."""
    assert g.open_string("'MODULE") == "'" and g.open_string('x + ", ') == '"'
    assert g.open_string('"""doc') == '"""' and g.open_string("f'{x") == "'"
    assert g.open_string("'a'") == "" and g.open_string("x") == "" and g.open_string("12") == ""
    assert g.open_string("'a' + b") == ""
    assert g.is_string("'a'") and g.is_string('"ab') and g.is_string('b"x"')
    assert not g.is_string("x") and not g.is_string("'a' + 'b'") and not g.is_string("12")


def test_any_string_stands_for_the_typed_one():
    """Prefix(any_string=True): any string agrees with the one being typed, and the answer writes
    the typed one, closed, in its place; a string that goes on from the typed one is kept."""
    from anycode.grammars import get
    from anycode.model.prefix import COVERED, INCONSISTENT, Prefix

    lang = get("python")
    p = Prefix("'MODULE", lang=lang, any_string=True)
    assert p.check("'x' in text") == COVERED and p.check("x in text") == INCONSISTENT
    assert p.respell("'x' in text") == "'MODULE' in text"
    assert p.respell("'MODULE_NAME' in text") == "'MODULE_NAME' in text"
    assert p.value_fits(0, '"other"') and not p.value_fits(0, "other")
    plain = Prefix("'MODULE", lang=lang)
    assert plain.check("'x' in text") == INCONSISTENT and not plain.any_string
    assert not Prefix("xs[0", lang=lang, any_string=True).any_string     # no string being typed
    q = Prefix("xs['ke", lang=lang, any_string=True)
    assert q.respell("xs['a']") == "xs['ke']" and q.check("xs[k]") == INCONSISTENT
    # a typed string that is closed, before more typed text: any string stands for it too
    r = Prefix("'.'.jo", lang=lang, any_string=True)
    assert r.check('"/".join(keys)') == COVERED and r.respell('"/".join(keys)') == "'.'.join(keys)"
    assert r.check('"/".split(keys)') == INCONSISTENT


@pytest.mark.parametrize("before, after, field", [
    ('raise E(f"Key {\'.\'', '} not in config")', ("'.'", "", '} not in config"')),
    ('raise E(f"Key {\'', "'} not in config\")", ("'", "'", "'} not in config\"")),
    ('x = f"a {len(ke', ')} d"', ("len(ke", ")", ')} d"')),
    ('x = f"a {len(ke', '} d"', ("len(ke", "", '} d"')),
    ('x = f"a {b.c', '!r} d {e} f"', ("b.c", "", '!r} d {e} f"')),
    ('x = f"{{a {b', '} {{" + c', ("b", "", '} {{"')),
    ("x = f'''a {b", "} c''' + d", ("b", "", "} c'''")),
    ('x = f"a {b:>1', '} d"', None),      # a format specifier
    ('x = "a {b', '}"', None),            # not an f-string
    ('x = f"a {b} c', '"', None),         # no field open
])
def test_interpolation(before, after, field):
    """The f-string replacement field the cursor is in: its expression typed so far, the text after
    the cursor that is still the field's, and the rest of the literal."""
    got = g.interpolation(before, after)
    if field is None:
        assert got is None
        return
    lit, start, end, lit_end = got
    assert before[lit:].startswith(("f", "F")) and before[start:] == field[0]
    assert after[:end] == field[1] and after[:lit_end] == field[2]


@pytest.mark.parametrize("source, literal, group", [
    (b'raise E("Keys " f"{k} missing")', b'f"{k}', b'"Keys " f"{k} missing"'),
    (b'raise E(\n    "Keys "\n    f"{} missing",\n)', b'f"{}', b'"Keys "\n    f"{} missing"'),
    (b'x = (f"{a}" "s")', b'f"{a}', b'f"{a}" "s"'),
    (b'x = f"{a}" + "s"', b'f"{a}', None),
    (b'x = f"{a}"', b'f"{a}', None),
])
def test_literal_group(source, literal, group):
    """The string literals written one after the other into one value with the one that starts at
    a position: where an f-string's field expression stands when it is completed."""
    got = g.literal_group(g.parse(source), source.index(literal))
    assert (None if got is None else source[got[0]:got[1]]) == group
