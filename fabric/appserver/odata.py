"""The OData ``filter`` language of Azure Web PubSub: tokenizer, parser, type checker, compiler.

A filter selects connections by ``userId``, ``connectionId`` and ``groups`` (Microsoft Learn's
"OData filter syntax in Azure Web PubSub service", ``reference-odata-filter.md``: its EBNF and
examples). It is used by
the ``filter`` parameter of the send operations and by ``:addToGroups``/``:removeFromGroups``.

    f = compile_filter("userId in ('u1','u2') and not ('muted' in groups)")
    f(connection)  # -> bool; reads connection.user_id, .connection_id, .groups

Rules this module keeps:
- Sans-IO and pure: no trio, no clock, no global state except a bounded LRU cache of
  compiled filters.
- A filter is checked completely when it is compiled: syntax, identifier and function names,
  arity, and the type of every operand (static types: string, int, bool, null, collection).
  So a compiled filter is total: calling it never raises, whatever the connection holds
  (``user_id`` None, any group names). A bad filter is rejected before any message moves.
- Every rejection is a :class:`FilterError` (a ``ValueError``) whose ``position`` (0-based
  character offset) and ``fragment`` point at the offending part; ``str()`` reads
  ``Invalid syntax for '<fragment>' at position N: <detail>`` (the service's wording, plus the
  position). Nothing else escapes :func:`compile_filter` for any ``str`` input.
- Bounded work for hostile input: at most ``MAX_FILTER_CHARS`` characters, ``MAX_DEPTH``
  levels of nesting (parentheses, ``not``, function arguments, chained comparisons) and
  ``MAX_NODES`` syntax nodes. ``and``/``or`` chains are flat lists, so neither parsing nor
  evaluation recurses deeper than ``MAX_DEPTH`` frames.

Semantics (decisions recorded in ``specs/rest.py``; they follow Microsoft's emulator
``ODataFilterExecutor`` where the docs are silent):
- Operators, literals and function names are lower-case, as in the EBNF; identifier names are
  case-insensitive (``USERID eq 'a'`` works). Values are compared exactly (ordinal, case
  matters): ``tolower(userId) eq 'user1'`` is how to compare without case.
- ``null``: ``userId`` is null for a connection without a user. ``eq``/``ne`` compare with
  null like values (``userId eq null``); ``gt/ge/lt/le`` with a null side are false; string
  functions of null give null, ``length(null)`` is null, ``indexof`` with a null side is -1,
  ``contains/startswith/endswith`` with a null side are false, ``concat`` skips a null side;
  ``substring`` out of range (or with a null index) gives null.
- ``gt/ge/lt/le`` compare ints, or strings by code point. ``eq``/``ne`` need both sides of the
  same type (or one null). ``in`` takes a parenthesised list of values of the left side's
  type, or a collection (``groups``). Lengths and indexes count code points.
"""

from __future__ import annotations

import functools
import operator
import re
from typing import Any, Callable

__all__ = [
    "FUNCTIONS",
    "IDENTIFIERS",
    "MAX_DEPTH",
    "MAX_FILTER_CHARS",
    "MAX_NODES",
    "Filter",
    "FilterError",
    "compile_filter",
]

MAX_FILTER_CHARS = 16 * 1024
MAX_DEPTH = 100
MAX_NODES = 2000
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1

# Static types.
STRING, INT, BOOL, NULL, COLLECTION = "string", "int", "bool", "null", "collection"
_PRIMITIVE = (STRING, INT, BOOL, NULL)

#: Identifier (lower-cased) -> (canonical name, connection attribute, type).
IDENTIFIERS: dict[str, tuple[str, str, str]] = {
    "userid": ("userId", "user_id", STRING),
    "connectionid": ("connectionId", "connection_id", STRING),
    "groups": ("groups", "groups", COLLECTION),
}

#: Function name -> (parameter types per arity; a tuple of allowed types per parameter).
_S, _I, _SC = (STRING,), (INT,), (STRING, COLLECTION)
FUNCTIONS: dict[str, dict[int, tuple[tuple[str, ...], ...]]] = {
    "tolower": {1: (_S,)},
    "toupper": {1: (_S,)},
    "trim": {1: (_S,)},
    "concat": {2: (_S, _S)},
    "contains": {2: (_S, _S)},
    "startswith": {2: (_S, _S)},
    "endswith": {2: (_S, _S)},
    "indexof": {2: (_S, _S)},
    "substring": {2: (_S, _I), 3: (_S, _I, _I)},
    "length": {1: (_SC,)},
}
_RESULT = {
    "tolower": STRING, "toupper": STRING, "trim": STRING, "concat": STRING, "substring": STRING,
    "contains": BOOL, "startswith": BOOL, "endswith": BOOL, "indexof": INT, "length": INT,
}

_COMPARISONS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})
_KEYWORDS = _COMPARISONS | {"and", "or", "not", "in", "true", "false", "null"}


class FilterError(ValueError):
    """A filter that cannot be accepted. ``position`` is a 0-based character offset."""

    def __init__(self, detail: str, position: int, fragment: str) -> None:
        if len(fragment) > 80:
            fragment = fragment[:77] + "..."
        self.detail = detail
        self.position = position
        self.fragment = fragment
        super().__init__(f"Invalid syntax for '{fragment}' at position {position}: {detail}")


# --------------------------------------------------------------------------------------------
# Tokens

_TOKEN_RE = re.compile(
    r"(?P<ws>[ \t\r\n]+)"
    r"|(?P<string>'(?:[^']|'')*')"
    r"|(?P<int>[+-]?[0-9]+)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<punct>[(),])"
)


class _Token:
    __slots__ = ("kind", "text", "value", "start", "end")

    def __init__(self, kind: str, text: str, value: Any, start: int, end: int) -> None:
        self.kind = kind  # "string" | "int" | "name" | "(" | ")" | "," | "end"
        self.text = text
        self.value = value
        self.start = start
        self.end = end

    def describe(self) -> str:
        return "the end of the filter" if self.kind == "end" else f"'{self.text}'"


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos, n = 0, len(text)
    match = _TOKEN_RE.match
    while pos < n:
        m = match(text, pos)
        if m is None:
            if text[pos] == "'":
                raise FilterError("unterminated string literal (close it with ' and write a quote inside as '')",
                                  pos, text[pos:pos + 40])
            raise FilterError(f"unexpected character {text[pos]!r}", pos, text[pos:pos + 20])
        kind, end = m.lastgroup, m.end()
        raw = m.group()
        if kind == "string":
            tokens.append(_Token("string", raw, raw[1:-1].replace("''", "'"), pos, end))
        elif kind == "int":
            value = int(raw)
            if not _INT_MIN <= value <= _INT_MAX:
                raise FilterError("integer literal out of range (64-bit signed)", pos, raw)
            tokens.append(_Token("int", raw, value, pos, end))
        elif kind == "name":
            tokens.append(_Token("name", raw, raw, pos, end))
        elif kind == "punct":
            tokens.append(_Token(raw, raw, None, pos, end))
        pos = end
    tokens.append(_Token("end", "", None, n, n))
    return tokens


# --------------------------------------------------------------------------------------------
# Syntax tree (typed as it is built)


class _Node:
    __slots__ = ("kind", "type", "start", "end", "value", "children")

    def __init__(self, kind: str, type_: str, start: int, end: int, value: Any = None,
                 children: tuple["_Node", ...] = ()) -> None:
        self.kind = kind  # literal | ident | call | not | and | or | cmp | in_list | in_coll
        self.type = type_
        self.start = start
        self.end = end
        self.value = value  # literal value, attribute name, function name, or operator
        self.children = children


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.nodes = 0

    # -- helpers --

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        if token.kind != "end":
            self.i += 1
        return token

    def fail(self, detail: str, start: int, end: int | None = None) -> FilterError:
        if start >= len(self.text):  # at the end: show what came before
            fragment = self.text[max(0, start - 30):]
        elif end is not None and end > start:
            fragment = self.text[start:end]
        else:
            fragment = self.text[start:start + 20]
        return FilterError(detail, start, fragment)

    def node(self, *args: Any, **kwargs: Any) -> _Node:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(f"filter is too complex (more than {MAX_NODES} terms)", args[2])
        return _Node(*args, **kwargs)

    def is_keyword(self, token: _Token, *words: str) -> bool:
        return token.kind == "name" and token.text in words

    def expect_type(self, node: _Node, allowed: tuple[str, ...], where: str) -> None:
        if node.type not in allowed:
            expected = "' or '".join(allowed)
            raise self.fail(f"Type '{node.type}', expect '{expected}'{where}.", node.start, node.end)

    # -- grammar --

    def parse(self) -> _Node:
        if not self.text.strip():
            raise FilterError("the filter is empty", 0, self.text)
        root = self.or_expr(0)
        token = self.peek()
        if token.kind != "end":
            raise self.fail(f"expected 'and', 'or' or the end of the filter, found {token.describe()}",
                            token.start, token.end)
        self.expect_type(root, (BOOL,), " (a filter must be a boolean expression)")
        return root

    def or_expr(self, depth: int) -> _Node:
        return self._chain(depth, "or", self.and_expr)

    def and_expr(self, depth: int) -> _Node:
        return self._chain(depth, "and", self.cmp_expr)

    def _chain(self, depth: int, word: str, operand: Callable[[int], _Node]) -> _Node:
        first = operand(depth)
        if not self.is_keyword(self.peek(), word):
            return first
        items = [first]
        while self.is_keyword(self.peek(), word):
            self.take()
            items.append(operand(depth))
        for item in items:
            self.expect_type(item, (BOOL,), f" (operand of '{word}')")
        return self.node(word, BOOL, items[0].start, items[-1].end, children=tuple(items))

    def cmp_expr(self, depth: int) -> _Node:
        left = self.unary(depth)
        while True:
            token = self.peek()
            if token.kind != "name" or (token.text not in _COMPARISONS and token.text != "in"):
                return left
            depth += 1  # a chained comparison nests: bound it like parentheses
            if depth > MAX_DEPTH:
                raise self.fail(f"filter is nested too deeply (more than {MAX_DEPTH} levels)", token.start, token.end)
            self.take()
            if token.text == "in":
                left = self.in_rhs(left, token, depth)
            else:
                right = self.unary(depth)
                left = self.comparison(token.text, left, right)

    def comparison(self, op: str, left: _Node, right: _Node) -> _Node:
        allowed = _PRIMITIVE if op in ("eq", "ne") else (STRING, INT, NULL)
        where = f" (operand of '{op}')"
        self.expect_type(left, allowed, where)
        self.expect_type(right, allowed, where)
        if left.type != right.type and NULL not in (left.type, right.type):
            raise self.fail(f"Type '{right.type}', expect '{left.type}' (both sides of '{op}' must have the same type).",
                            left.start, right.end)
        return self.node("cmp", BOOL, left.start, right.end, op, (left, right))

    def in_rhs(self, left: _Node, token: _Token, depth: int) -> _Node:
        self.expect_type(left, _PRIMITIVE, " (left operand of 'in')")
        opening = self.peek()
        if opening.kind == "(":
            self.take()
            items = [self.or_expr(depth + 1)]
            while self.peek().kind == ",":
                self.take()
                items.append(self.or_expr(depth + 1))
            closing = self.expect(")", "to close the list after 'in'")
            if len(items) == 1 and items[0].type == COLLECTION:
                return self.in_collection(left, items[0], closing.end)
            for item in items:
                self.expect_type(item, _PRIMITIVE, " (item of an 'in' list)")
                if item.type != left.type and NULL not in (item.type, left.type):
                    raise self.fail(f"Type '{item.type}', expect '{left.type}' (an 'in' list holds values "
                                    "of the left operand's type).", item.start, item.end)
            return self.node("in_list", BOOL, left.start, closing.end, None, (left, *items))
        right = self.unary(depth)
        if right.type != COLLECTION:
            raise self.fail(f"Type '{right.type}', expect 'collection' (the right operand of 'in' is a "
                            "parenthesised list or a collection such as groups).", right.start, right.end)
        return self.in_collection(left, right, right.end)

    def in_collection(self, left: _Node, collection: _Node, end: int) -> _Node:
        if left.type not in (STRING, NULL):
            raise self.fail(f"Type '{left.type}', expect 'string' (groups holds strings).", left.start, left.end)
        return self.node("in_coll", BOOL, left.start, end, None, (left, collection))

    def expect(self, kind: str, why: str) -> _Token:
        token = self.peek()
        if token.kind != kind:
            raise self.fail(f"expected '{kind}' {why}, found {token.describe()}", token.start, token.end)
        return self.take()

    def unary(self, depth: int) -> _Node:
        token = self.peek()
        if self.is_keyword(token, "not"):
            if depth + 1 > MAX_DEPTH:
                raise self.fail(f"filter is nested too deeply (more than {MAX_DEPTH} levels)", token.start, token.end)
            self.take()
            operand = self.unary(depth + 1)
            node = self.node("not", BOOL, token.start, operand.end, None, (operand,))
            if operand.type != BOOL:
                raise self.fail(f"Type '{operand.type}', expect 'bool'. ('not' binds tighter than comparisons: "
                                "write not (...))", token.start, operand.end)
            return node
        return self.primary(depth)

    def primary(self, depth: int) -> _Node:
        token = self.take()
        kind = token.kind
        if kind == "(":
            if depth + 1 > MAX_DEPTH:
                raise self.fail(f"filter is nested too deeply (more than {MAX_DEPTH} levels)", token.start, token.end)
            inner = self.or_expr(depth + 1)
            closing = self.expect(")", "to close '('")
            inner.start, inner.end = token.start, closing.end
            return inner
        if kind == "string":
            return self.node("literal", STRING, token.start, token.end, token.value)
        if kind == "int":
            return self.node("literal", INT, token.start, token.end, token.value)
        if kind == "name":
            word = token.text
            if word == "true" or word == "false":
                return self.node("literal", BOOL, token.start, token.end, word == "true")
            if word == "null":
                return self.node("literal", NULL, token.start, token.end, None)
            if self.peek().kind == "(":
                return self.call(token, depth)
            if word in _KEYWORDS:
                raise self.fail(f"expected an expression, found '{word}'", token.start, token.end)
            known = IDENTIFIERS.get(word.lower())
            if known is None:
                raise self.fail(f"unknown identifier '{word}'; expected userId, connectionId or groups",
                                token.start, token.end)
            _, attribute, type_ = known
            return self.node("ident", type_, token.start, token.end, attribute)
        raise self.fail(f"expected an expression, found {token.describe()}", token.start, max(token.end, token.start))

    def call(self, name: _Token, depth: int) -> _Node:
        signatures = FUNCTIONS.get(name.text)
        if signatures is None:
            raise self.fail(f"unknown function '{name.text}'; expected one of {', '.join(FUNCTIONS)}",
                            name.start, name.end)
        if depth + 1 > MAX_DEPTH:
            raise self.fail(f"filter is nested too deeply (more than {MAX_DEPTH} levels)", name.start, name.end)
        self.take()  # (
        args: list[_Node] = []
        if self.peek().kind != ")":
            args.append(self.or_expr(depth + 1))
            while self.peek().kind == ",":
                self.take()
                args.append(self.or_expr(depth + 1))
        closing = self.expect(")", f"to close the arguments of {name.text}()")
        params = signatures.get(len(args))
        if params is None:
            counts = " or ".join(str(k) for k in signatures)
            raise self.fail(f"{name.text}() takes {counts} argument(s), got {len(args)}", name.start, closing.end)
        for arg, allowed in zip(args, params):
            if arg.type == NULL and INT not in allowed:
                continue  # null is a string value (of unknown content)
            self.expect_type(arg, allowed, f" (argument of {name.text}())")
        return self.node("call", _RESULT[name.text], name.start, closing.end, name.text, tuple(args))


# --------------------------------------------------------------------------------------------
# Compiler: a tree of closures over the connection object


def _const(value: Any) -> Callable[[Any], Any]:
    return lambda c: value


def _compile(node: _Node) -> Callable[[Any], Any]:
    kind = node.kind
    if kind == "literal":
        return _const(node.value)
    if kind == "ident":
        return operator.attrgetter(node.value)
    kids = [_compile(child) for child in node.children]
    if kind == "not":
        (inner,) = kids
        return lambda c: not inner(c)
    if kind == "and":
        def all_of(c: Any) -> bool:
            for part in kids:
                if not part(c):
                    return False
            return True
        return all_of
    if kind == "or":
        def any_of(c: Any) -> bool:
            for part in kids:
                if part(c):
                    return True
            return False
        return any_of
    if kind == "cmp":
        return _comparison(node.value, *kids)
    if kind == "in_list":
        left, items = kids[0], kids[1:]
        if all(child.kind == "literal" for child in node.children[1:]):
            values = frozenset(child.value for child in node.children[1:])  # one static type: hashing is safe
            return lambda c: left(c) in values
        return lambda c: left(c) in [item(c) for item in items]
    if kind == "in_coll":
        left, collection = kids

        def member(c: Any) -> bool:
            value = left(c)
            return value is not None and value in collection(c)
        return member
    return _FUNCTIONS[node.value](*kids)


def _comparison(op: str, left: Callable[[Any], Any], right: Callable[[Any], Any]) -> Callable[[Any], bool]:
    if op == "eq":
        return lambda c: left(c) == right(c)
    if op == "ne":
        return lambda c: left(c) != right(c)
    compare = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}[op]

    def ordered(c: Any) -> bool:
        a, b = left(c), right(c)
        if a is None or b is None:
            return False
        return compare(a, b)
    return ordered


def _string_map(fn: Callable[[str], str]) -> Callable[..., Callable[[Any], Any]]:
    def build(arg: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def run(c: Any) -> Any:
            value = arg(c)
            return None if value is None else fn(value)
        return run
    return build


def _string_test(fn: Callable[[str, str], bool]) -> Callable[..., Callable[[Any], Any]]:
    def build(a: Callable[[Any], Any], b: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def run(c: Any) -> bool:
            x, y = a(c), b(c)
            return x is not None and y is not None and fn(x, y)
        return run
    return build


def _indexof(a: Callable[[Any], Any], b: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def run(c: Any) -> int:
        x, y = a(c), b(c)
        return -1 if x is None or y is None else x.find(y)
    return run


def _concat(a: Callable[[Any], Any], b: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def run(c: Any) -> Any:
        x, y = a(c), b(c)
        if x is None:
            return y
        return x if y is None else x + y
    return run


def _length(a: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def run(c: Any) -> Any:
        value = a(c)
        return None if value is None else len(value)
    return run


def _substring(s: Callable[[Any], Any], start: Callable[[Any], Any],
               length: Callable[[Any], Any] | None = None) -> Callable[[Any], Any]:
    def run(c: Any) -> Any:
        text, first = s(c), start(c)
        if text is None or first is None or first < 0 or first > len(text):
            return None
        if length is None:
            return text[first:]
        count = length(c)
        if count is None or count < 0 or count > len(text) - first:
            return None
        return text[first:first + count]
    return run


_FUNCTIONS: dict[str, Callable[..., Callable[[Any], Any]]] = {
    "tolower": _string_map(str.lower),
    "toupper": _string_map(str.upper),
    "trim": _string_map(str.strip),
    "concat": _concat,
    "contains": _string_test(lambda x, y: y in x),
    "startswith": _string_test(str.startswith),
    "endswith": _string_test(str.endswith),
    "indexof": _indexof,
    "substring": _substring,
    "length": _length,
}
if not set(_FUNCTIONS) == set(FUNCTIONS) == set(_RESULT):
    _partial = (set(_FUNCTIONS) | set(FUNCTIONS) | set(_RESULT)) - (set(_FUNCTIONS) & set(FUNCTIONS) & set(_RESULT))
    raise LookupError(f"filter functions missing a signature, result type or implementation: {sorted(_partial)}")


# --------------------------------------------------------------------------------------------
# Public API


class Filter:
    """A compiled filter: call it with a connection (anything with ``user_id``,
    ``connection_id`` and ``groups``) to get a bool. Never raises."""

    __slots__ = ("source", "_match")

    def __init__(self, source: str, match: Callable[[Any], bool]) -> None:
        self.source = source
        self._match = match

    def __call__(self, connection: Any) -> bool:
        return self._match(connection)

    def __repr__(self) -> str:
        return f"Filter({self.source!r})"


@functools.lru_cache(maxsize=512)
def _compile_cached(source: str) -> Filter:
    tree = _Parser(source).parse()
    return Filter(source, _compile(tree))


def compile_filter(source: str) -> Filter:
    """Parse, type-check and compile a filter (cached). Raises :class:`FilterError`.

    ``TypeError`` if ``source`` is not a ``str``; every string input either compiles or
    raises ``FilterError``.
    """
    if not isinstance(source, str):
        raise TypeError(f"a filter is a str, not {type(source).__name__}")
    if len(source) > MAX_FILTER_CHARS:
        raise FilterError(f"filter is {len(source)} characters long; at most {MAX_FILTER_CHARS} are accepted",
                          MAX_FILTER_CHARS, source[MAX_FILTER_CHARS:MAX_FILTER_CHARS + 20])
    return _compile_cached(source)
