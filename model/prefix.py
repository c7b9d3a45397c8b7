"""The typed start of an expression as a constraint on the search.

The user has typed the first tokens of the expression at the hole (`self.items[`, `not `,
`res["er`); only trees whose printed tokens begin with those tokens are kept.  Tokens compare
whole, whitespace apart, except two that may still grow: the last typed one (a name, keyword,
number, operator or string being typed, unless a space follows it) and the last printed one of a
partial tree when its frontier is a value being spelled.  The language tokenizes
(`Language.typed_tokens`); this module only compares token lists.

`Decoder.search` asks `check` after each step that prints something new, and `value_fits` for the
parts of the value at the frontier, so that the beam only ever holds trees that agree with the
typed text.  `respell` writes an answer with the user's own typed characters in front, and
`continues` says whether a finished answer still extends what is typed (the typing-along cache).

A typed string literal (`'MODULE' in`, `", `, being typed or not) is rarely one the model can
spell: its values come from a vocabulary, with their own quotes.  `Prefix(..., any_string=True)` lets
any string stand for each typed one, and `respell` writes the user's strings in their place, the one
being typed closed (`'x' in text` -> `'MODULE' in text`): the model still says what the expression
around the strings is.
"""
from __future__ import annotations

from anycode.grammars import Language

INCONSISTENT, CONSISTENT, COVERED = -1, 0, 1


def _agree(c: str, c_partial: bool, t: str, t_partial: bool) -> bool:
    if c_partial and t_partial:
        return c.startswith(t) or t.startswith(c)
    if t_partial:
        return c.startswith(t)
    if c_partial:
        return t.startswith(c)
    return c == t


class Prefix:
    """The typed text of an expression, tokenized once per request."""

    def __init__(self, typed: str, typed_type: str = "", *, lang: Language, any_string: bool = False):
        """`typed_type`: the type of the node the typed text starts, as its own parse has it (the
        expression's root or a node down its left edge: `a.b +` starts a binary operator).
        `any_string`: any string printed matches a typed string literal."""
        self.typed = typed
        self.lang = lang
        self.tokens, self.partial = lang.typed_tokens(typed)
        self.quote = lang.open_string(typed)      # what closes the string being typed ("": none)
        self.strings = frozenset(i for i, t in enumerate(self.tokens) if lang.is_string(t))  # typed strings
        self.any_string = any_string and bool(self.strings)
        last = self.tokens[-1] if self.tokens else ""
        self.kind = (lambda t: lang.typed_kind(t, last, self.partial))  # noqa: E731
        self.anchor = self.kind(typed_type) if typed_type and self.tokens else ""

    def __bool__(self) -> bool:
        return bool(self.tokens)

    def check(self, text: str, open_value: bool = False) -> int:
        return self.check_at(text, open_value)[0]

    def check_at(self, text: str, open_value: bool = False) -> tuple[int, int]:
        """(check's answer, how many whole tokens `text` prints)."""
        """Does a tree whose printed text so far is `text` agree with the typed tokens?  `open_value`:
        the last printed token is a value still being spelled.  COVERED: every typed token is matched,
        nothing later can disagree."""
        toks, _ = self.lang.typed_tokens(text)
        typed, n, m = self.tokens, len(self.tokens), len(toks)
        whole = m - 1 if open_value else m
        for i in range(min(m, n)):
            if not self._agrees(i, toks[i], open_value and i == m - 1):
                return INCONSISTENT, whole
        if m > n or (m == n and not open_value):
            return COVERED, whole
        return CONSISTENT, whole

    def starts(self, index: int, first: frozenset | None) -> bool:
        """Can a subtree whose possible first tokens are `first` (Decoder.first_tokens: ("text", token)
        and ("value", type) pairs; None: unknown) print typed token `index` first?"""
        if first is None or index >= len(self.tokens):
            return True
        t = self.tokens[index]
        partial = self.partial and index == len(self.tokens) - 1
        for kind, x in first:
            if kind == "text":
                if x == t or (partial and x.startswith(t)):
                    return True
            elif self.lang.value_starts(x, t, partial):
                return True
        return False

    def value_fits(self, index: int, value: str) -> bool | None:
        """Can a value spelled so far as `value`, printed as token `index`, still agree with the typed
        tokens?  None: there is no typed token there (anything goes)."""
        if index >= len(self.tokens):
            return None
        return self._agrees(index, value, True)

    def _agrees(self, index: int, c: str, c_partial: bool) -> bool:
        """Does the printed token `c` (`c_partial`: still being spelled) agree with typed token `index`?"""
        if self.any_string and index in self.strings:
            return self.lang.is_string(c)
        return _agree(c, c_partial, self.tokens[index], self.partial and index == len(self.tokens) - 1)

    def adds(self, text: str) -> bool:
        """Does the finished `text` agree with the typed tokens and add something to them?"""
        if self.check(text) != COVERED:
            return False
        toks, _ = self.lang.typed_tokens(text)
        return toks != self.tokens

    def respell(self, text: str) -> str:
        """`text` (which agrees with the typed tokens) with its start written as the user typed it."""
        if not self.tokens:
            return text
        toks = self.lang.tokens(text)
        n = len(self.tokens)
        if len(toks) < n:
            return text
        last = toks[n - 1]
        if self.any_string and self.quote and not last.text.startswith(self.tokens[-1]):
            return self.typed + self.quote + text[last.end:]     # another string stood for the one being typed
        cut = last.start + len(self.tokens[-1]) if self.partial else last.end
        rest = text[cut:]
        if self.typed[-1:].isspace():
            rest = rest.lstrip()
        return self.typed + rest


def continues(text: str, typed: str, lang: Language) -> bool:
    """Is `text` (a whole answer) still an answer once `typed` is typed: it agrees with it and adds to it."""
    return Prefix(typed, lang=lang).adds(text)
