"""Pooled random ids: the same form as ``secrets.token_urlsafe``, never repeated, and a
forked child (``fabric serve --workers``) never hands out its parent's pooled bytes."""

import re

from fabric.core import ids
from fabric.core.hub import new_connection_id
from tests.forking import in_forked_child


def test_ids_are_base64url_of_the_asked_length_and_do_not_repeat():
    made = [ids.random_id(16) for _ in range(20_000)]  # several pool refills
    assert len(set(made)) == len(made)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", i) for i in made)
    assert re.fullmatch(r"[A-Za-z0-9_-]{20}", ids.random_id(15))
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", new_connection_id())


def test_a_forked_child_draws_fresh_bytes():
    ids.random_id(16)  # the parent has a pool with bytes left in it
    child = in_forked_child(lambda: "".join(ids.random_id(16) for _ in range(4)))
    parent = "".join(ids.random_id(16) for _ in range(4))
    assert len(child) == len(parent) == 88 and child != parent
