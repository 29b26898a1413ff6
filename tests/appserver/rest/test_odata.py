"""fabric.odata: the filter language, checked against a plain reference evaluator.

The property tests generate typed syntax trees, render them as filter text (minimal
parentheses, so operator precedence is exercised; random spacing and identifier case), and
check that the compiled filter agrees with `reference_eval` (written independently, straight
from the rules in fabric/odata.py's header) on generated connections. Garbage text only ever
raises FilterError.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric.appserver.odata import MAX_DEPTH, MAX_NODES, FilterError, compile_filter


class Conn:
    def __init__(self, connection_id, user_id, groups):
        self.connection_id = connection_id
        self.user_id = user_id
        self.groups = frozenset(groups)

    def __repr__(self):
        return f"Conn({self.connection_id!r}, {self.user_id!r}, {sorted(self.groups)!r})"


# ---- the reference evaluator ------------------------------------------------------------------
# Trees: ("lit", v) ("id", "userId"|"connectionId"|"groups") ("call", name, [args]) ("not", x)
# ("and", [xs]) ("or", [xs]) ("cmp", op, a, b) ("in_list", a, [items]) ("in_groups", a)

def reference_eval(node, conn):
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "id":
        return {"userId": conn.user_id, "connectionId": conn.connection_id, "groups": conn.groups}[node[1]]
    if kind == "not":
        return not reference_eval(node[1], conn)
    if kind == "and":
        return all([reference_eval(x, conn) for x in node[1]])
    if kind == "or":
        return any([reference_eval(x, conn) for x in node[1]])
    if kind == "cmp":
        op, a, b = node[1], reference_eval(node[2], conn), reference_eval(node[3], conn)
        if op == "eq":
            return a == b
        if op == "ne":
            return a != b
        if a is None or b is None:
            return False
        return {"gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b}[op]
    if kind == "in_list":
        value = reference_eval(node[1], conn)
        return any(value == reference_eval(item, conn) for item in node[2])
    if kind == "in_groups":
        value = reference_eval(node[1], conn)
        return value is not None and value in conn.groups
    name, args = node[1], [reference_eval(a, conn) for a in node[2]]
    if name in ("tolower", "toupper", "trim"):
        s = args[0]
        return None if s is None else {"tolower": s.lower(), "toupper": s.upper(), "trim": s.strip()}[name]
    if name == "length":
        return None if args[0] is None else len(args[0])
    if name in ("contains", "startswith", "endswith"):
        s, t = args
        if s is None or t is None:
            return False
        return {"contains": t in s, "startswith": s.startswith(t), "endswith": s.endswith(t)}[name]
    if name == "indexof":
        s, t = args
        return -1 if s is None or t is None else s.find(t)
    if name == "concat":
        s, t = args
        if s is None and t is None:
            return None
        return (s or "") + (t or "")
    if name == "substring":
        s, start = args[0], args[1]
        if s is None or start is None or not 0 <= start <= len(s):
            return None
        if len(args) == 2:
            return s[start:]
        n = args[2]
        if n is None or n < 0 or start + n > len(s):
            return None
        return s[start:start + n]
    raise AssertionError(node)


# ---- generated trees ----------------------------------------------------------------------------

ALPHABET = "abAB1 '-"
short_text = st.text(ALPHABET, max_size=6)
small_int = st.integers(-3, 12)


def str_expr(depth):
    leaves = st.one_of(
        short_text.map(lambda s: ("lit", s)),
        st.sampled_from(["userId", "connectionId"]).map(lambda n: ("id", n)),
    )
    if depth <= 0:
        return leaves
    sub = st.deferred(lambda: str_expr(depth - 1))
    return st.one_of(
        leaves,
        st.tuples(st.sampled_from(["tolower", "toupper", "trim"]), sub).map(lambda t: ("call", t[0], [t[1]])),
        st.tuples(sub, sub).map(lambda t: ("call", "concat", list(t))),
        st.tuples(sub, int_expr(depth - 1)).map(lambda t: ("call", "substring", list(t))),
        st.tuples(sub, int_expr(depth - 1), int_expr(depth - 1)).map(lambda t: ("call", "substring", list(t))),
    )


def int_expr(depth):
    leaves = small_int.map(lambda i: ("lit", i))
    if depth <= 0:
        return leaves
    sub = st.deferred(lambda: str_expr(depth - 1))
    return st.one_of(
        leaves,
        sub.map(lambda s: ("call", "length", [s])),
        st.just(("call", "length", [("id", "groups")])),
        st.tuples(sub, sub).map(lambda t: ("call", "indexof", list(t))),
    )


def bool_expr(depth):
    leaves = st.one_of(
        st.booleans().map(lambda b: ("lit", b)),
        st.tuples(short_text, st.just(None)).map(lambda t: ("in_groups", ("lit", t[0]))),
    )
    if depth <= 0:
        return leaves
    sub = st.deferred(lambda: bool_expr(depth - 1))
    s, i = str_expr(depth - 1), int_expr(depth - 1)
    null = st.just(("lit", None))
    return st.one_of(
        leaves,
        sub.map(lambda x: ("not", x)),
        st.lists(sub, min_size=2, max_size=4).map(lambda xs: ("and", xs)),
        st.lists(sub, min_size=2, max_size=4).map(lambda xs: ("or", xs)),
        st.tuples(st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le"]), s, st.one_of(s, null)).map(
            lambda t: ("cmp", t[0], t[1], t[2])),
        st.tuples(st.sampled_from(["eq", "ne", "gt", "ge", "lt", "le"]), i, i).map(lambda t: ("cmp", t[0], t[1], t[2])),
        st.tuples(st.sampled_from(["eq", "ne"]), sub, st.one_of(sub, null)).map(lambda t: ("cmp", t[0], t[1], t[2])),
        st.tuples(s, st.lists(st.one_of(s, null), min_size=1, max_size=4)).map(lambda t: ("in_list", t[0], t[1])),
        st.tuples(i, st.lists(i, min_size=1, max_size=3)).map(lambda t: ("in_list", t[0], t[1])),
        s.map(lambda x: ("in_groups", x)),
        st.tuples(st.sampled_from(["contains", "startswith", "endswith"]), s, s).map(
            lambda t: ("call", t[0], [t[1], t[2]])),
    )


# ---- rendering with minimal parentheses -----------------------------------------------------------

PREC = {"or": 1, "and": 2, "cmp": 3, "in_list": 3, "in_groups": 3, "not": 4}


def render(node, draw, min_prec=1):
    kind = node[0]
    prec = PREC.get(kind, 5)
    sp = lambda: draw(st.sampled_from([" ", "  ", "\t"]))  # noqa: E731
    if kind == "lit":
        v = node[1]
        text = ("null" if v is None else "true" if v is True else "false" if v is False
                else str(v) if isinstance(v, int) else "'" + v.replace("'", "''") + "'")
    elif kind == "id":
        name = node[1]
        text = draw(st.sampled_from([name, name.lower(), name.upper()]))
    elif kind == "call":
        text = node[1] + "(" + ("," + draw(st.sampled_from(["", " "]))).join(render(a, draw) for a in node[2]) + ")"
    elif kind == "not":
        text = "not" + sp() + render(node[1], draw, 4)
    elif kind in ("and", "or"):
        child = PREC[kind] + 1
        text = (sp() + kind + sp()).join(render(x, draw, child) for x in node[1])
    elif kind == "cmp":
        text = render(node[2], draw, 3) + sp() + node[1] + sp() + render(node[3], draw, 4)
    elif kind == "in_list":
        text = render(node[1], draw, 3) + sp() + "in" + sp() + "(" + ",".join(render(x, draw) for x in node[2]) + ")"
    else:  # in_groups
        text = render(node[1], draw, 3) + sp() + "in" + sp() + draw(st.sampled_from(["groups", "(groups)", "GROUPS"]))
    if prec < min_prec or (prec < 5 and draw(st.integers(0, 9)) == 0):
        text = "(" + text + ")"
    return text


connections = st.builds(
    Conn,
    st.text("abcAB1", min_size=1, max_size=5),
    st.one_of(st.none(), st.text(ALPHABET, max_size=6)),
    st.sets(short_text, max_size=3),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), bool_expr(3), st.lists(connections, min_size=1, max_size=6))
def test_generated_filters_agree_with_the_reference_evaluator(data, tree, conns):
    text = render(tree, data.draw)
    compiled = compile_filter(text)
    for conn in conns:
        assert compiled(conn) is reference_eval(tree, conn), (text, conn)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_random_text_only_ever_raises_filter_error(text):
    try:
        compiled = compile_filter(text)
    except FilterError as exc:
        assert 0 <= exc.position <= len(text)
        assert str(exc).startswith("Invalid syntax for '")
    else:
        # it compiled: then it evaluates without raising
        assert compiled(Conn("c", None, ())) in (True, False)


TOKENS = st.sampled_from(["userId", "connectionId", "groups", "eq", "ne", "gt", "and", "or", "not", "in",
                          "(", ")", ",", "'x'", "''", "'", "1", "-2", "null", "true", "length", "substring",
                          "tolower", "concat", "indexof", "'a''b'", " "])


@settings(max_examples=300, deadline=None)
@given(st.lists(TOKENS, max_size=12))
def test_token_soup_only_ever_raises_filter_error(tokens):
    text = " ".join(tokens)
    try:
        compiled = compile_filter(text)
    except FilterError:
        return
    for conn in (Conn("c", None, ()), Conn("c", "x", {"x"})):
        assert compiled(conn) in (True, False)


# ---- documented examples and decisions -----------------------------------------------------------

U1 = Conn("c1", "user1", {"group1"})
U1_UP = Conn("c2", "USER1", {"group1", "group2"})
ANON = Conn("c3", None, ())
LONG = Conn("c4", "user-ab-de", {"group3"})
QUOTE = Conn("c5", "user'1", ())
ALL = [U1, U1_UP, ANON, LONG, QUOTE]


@pytest.mark.parametrize("text, expected", [
    ("userId eq 'user1'", [U1]),
    ("connectionId ne 'c1'", [U1_UP, ANON, LONG, QUOTE]),
    ("'group1' in groups", [U1, U1_UP]),
    ("userId eq null", [ANON]),
    ("userId ne null", [U1, U1_UP, LONG, QUOTE]),
    ("tolower(userId) eq 'user1'", [U1, U1_UP]),
    ("toupper(userId) eq 'USER1'", [U1, U1_UP]),
    ("trim(concat(' ', userId)) eq 'user1'", [U1]),
    ("substring(userId,5,2) eq 'ab'", [LONG]),
    ("substring(userId,5) eq 'ab-de'", [LONG]),
    ("endswith(userId,'de')", [LONG]),
    ("startswith(userId,'user')", [U1, LONG, QUOTE]),
    ("contains(userId,'ab')", [LONG]),
    ("indexof(userId,'-ab-') ge 0", [LONG]),
    ("length(userId) gt 5", [LONG, QUOTE]),
    ("length(groups) gt 1", [U1_UP]),
    ("'group1' in groups or 'group3' in groups", [U1, U1_UP, LONG]),
    ("userId in ('user1', 'user2', 'user3') and 'group1' in groups", [U1]),
    ("userId eq 'user1' and connectionId ne '123'", [U1]),
    ("userId eq 'user1' and (not ('group1' in groups))", []),
    ("userId eq 'user''1'", [QUOTE]),
    ("not endswith(userId, 'milk')", ALL),
    ("not (length(userId) gt 5)", [U1, U1_UP, ANON]),
    ("UserID eq 'user1'", [U1]),  # identifier names are case-insensitive
    ("true", ALL),
    ("false", []),
    ("userId in (null, 'user1')", [U1, ANON]),
    ("userId ge 'user1'", [U1]),  # ordinal: '-' and "'" sort before '1'
    ("userId lt 'user1'", [U1_UP, LONG, QUOTE]),
])
def test_documented_examples(text, expected):
    f = compile_filter(text)
    assert [c for c in ALL if f(c)] == expected


def test_precedence_and_binds_tighter_than_or():
    a = compile_filter("length(userId) gt 0 and length(userId) lt 3 or length(userId) gt 7 and length(userId) lt 11")
    b = compile_filter("((length(userId) gt 0) and (length(userId) lt 3)) or ((length(userId) gt 7) and (length(userId) lt 11))")
    assert [a(c) for c in ALL] == [b(c) for c in ALL] == [False, False, False, True, False]


def test_not_binds_tighter_than_comparisons_and_the_error_points_at_it():
    with pytest.raises(FilterError) as info:
        compile_filter("not length(userId) gt 5")
    assert info.value.fragment == "not length(userId)"
    assert info.value.position == 0
    assert "Type 'int', expect 'bool'" in str(info.value)


@pytest.mark.parametrize("text, fragment, position", [
    ("userId eq 'a' and foo eq 1", "foo", 18),
    ("userId eq 'a' and length(userId, 1) gt 2", "length(userId, 1)", 18),
    ("userId eq 'a' or connectionId eq 5", "connectionId eq 5", 17),
    ("userId eq 'a' xor true", "xor", 14),
    ("userId eq 'abc", "'abc", 10),
    ("userId eq 'a' and", "userId eq 'a' and", 17),
    ("'a' in userId", "userId", 7),
    ("tolower(groups) eq 'a'", "groups", 8),
    ("userId eq 'a' # x", "# x", 14),
    ("substring(userId, 'a') eq 'b'", "'a'", 18),
    ("EQ(userId)", "EQ", 0),
    ("userId EQ 'a'", "EQ", 7),
    ("length(userId)", "length(userId)", 0),
])
def test_errors_point_at_the_offending_part(text, fragment, position):
    with pytest.raises(FilterError) as info:
        compile_filter(text)
    assert info.value.fragment == fragment
    assert info.value.position == position
    assert fragment in str(info.value)


@pytest.mark.parametrize("text", [
    "(" * 5000 + "true" + ")" * 5000,
    "not " * 5000 + "true",
    "userId eq " * 3000 + "'a'",
    "tolower(" * 3000 + "userId" + ")" * 3000 + " eq 'a'",
    " or ".join(["true"] * (MAX_NODES + 10)),
    "userId in (" + ",".join(["'a'"] * (MAX_NODES + 10)) + ")",
    "x" * 20000,
])
def test_hostile_sizes_are_rejected_cleanly(text):
    with pytest.raises(FilterError):
        compile_filter(text)


def test_long_flat_chains_evaluate_without_deep_recursion():
    n = MAX_NODES // 2 - 1
    f = compile_filter(" or ".join(["userId eq 'nobody'"] * (n // 3)) + " or true")
    assert f(ANON) is True
    depth_ok = "(" * (MAX_DEPTH - 1) + "true" + ")" * (MAX_DEPTH - 1)
    assert compile_filter(depth_ok)(ANON) is True


def test_non_string_filters_are_a_type_error():
    with pytest.raises(TypeError):
        compile_filter(None)  # type: ignore[arg-type]


def test_compiled_filters_are_cached():
    assert compile_filter("userId eq 'cache'") is compile_filter("userId eq 'cache'")
