"""specs/rest.py's operation table: one source of truth, checked against the router and
against Microsoft's Python SDK (its request builders and the status codes it accepts)."""

from __future__ import annotations

import inspect
import re
import urllib.parse

import pytest
from azure.messaging.webpubsubservice._operations import _operations as sdk_ops

from fabric.appserver import rest
from specs import rest as spec
from specs._decisions import render_decisions_markdown


def test_every_operation_has_a_handler_and_a_unique_route():
    assert set(rest._HANDLERS) == {op.name for op in spec.OPERATIONS}
    seen = {(op.method, op.path) for op in spec.OPERATIONS}
    assert len(seen) == len(spec.OPERATIONS)
    for op in spec.OPERATIONS:
        path = re.sub(r"\{[^}]+\}", "x", op.path)
        routed, params = rest.route(op.method, path)
        assert routed is op, (op.name, routed.name)
        assert set(params) == set(re.findall(r"\{([^}]+)\}", op.path))


def test_success_codes_are_the_2024_12_01_table():
    codes = {op.name: op.success for op in spec.OPERATIONS}
    assert codes == {
        "getServiceStatus": 200, "getServiceStatusGet": 200, "sendToAll": 202, "closeAllConnections": 204,
        "generateClientToken": 200, "addConnectionsToGroups": 200, "removeConnectionsFromGroups": 200,
        "closeConnection": 204, "connectionExists": 200, "sendToConnection": 202,
        "removeConnectionFromAllGroups": 204, "groupExists": 200, "closeGroupConnections": 204, "sendToGroup": 202,
        "listConnectionsInGroup": 200, "removeConnectionFromGroup": 204, "addConnectionToGroup": 200,
        "revokePermission": 204, "checkPermission": 200, "grantPermission": 200, "userExists": 200,
        "closeUserConnections": 204, "sendToUser": 202, "removeUserFromAllGroups": 204, "removeUserFromGroup": 204,
        "addUserToGroup": 200,
    }


def _sdk_builder(op: spec.Operation):
    name = op.sdk.split()[0]
    return getattr(sdk_ops, f"build_web_pub_sub_service_{name}_request")


def _placeholder_call(builder):
    kwargs = {}
    for name, param in inspect.signature(builder).parameters.items():
        if param.kind is param.VAR_KEYWORD or param.default is not inspect.Parameter.empty:
            continue
        kwargs[name] = b"" if name == "content" else f"P{name}"
    return builder(**kwargs)


SDK_OPS = [op for op in spec.OPERATIONS if op.sdk]


@pytest.mark.parametrize("op", SDK_OPS, ids=[op.name for op in SDK_OPS])
def test_the_python_sdk_builds_the_same_method_and_path(op):
    request = _placeholder_call(_sdk_builder(op))
    path = urllib.parse.urlsplit(request.url).path
    routed, params = rest.route(request.method, path)
    assert routed is op
    assert all(value.startswith("P") for value in params.values())
    assert "api-version" in urllib.parse.parse_qs(urllib.parse.urlsplit(request.url).query) or request.params


@pytest.mark.parametrize("op", SDK_OPS, ids=[op.name for op in SDK_OPS])
def test_the_python_sdk_accepts_exactly_our_success_code(op):
    from azure.messaging.webpubsubservice._operations._operations import WebPubSubServiceClientOperationsMixin as M

    method = getattr(M, op.sdk.split()[0])
    source = inspect.getsource(method)
    accepted = re.findall(r"status_code not in \[([0-9, ]+)\]", source)
    assert accepted, op.sdk
    codes = {int(c) for c in accepted[0].split(",")}
    assert op.success in codes
    if op.method == "HEAD":
        assert codes == {op.success, 404}
    else:
        assert codes == {op.success}


def test_the_sdk_lacks_only_the_operations_we_test_with_raw_http():
    assert sorted(op.name for op in spec.OPERATIONS if not op.sdk) == [
        "addConnectionsToGroups", "getServiceStatus", "getServiceStatusGet", "removeConnectionsFromGroups"]


def test_query_parameters_match_the_sdk_builders():
    """Every query parameter an SDK builder can send is one the table knows (plus api-version)."""
    for op in SDK_OPS:
        source = inspect.getsource(_sdk_builder(op))
        sent = set(re.findall(r'_params\["([A-Za-z-]+)"\]', source)) - {"api-version"}
        assert sent == {p.name for p in op.query}, (op.name, sent)


def test_decisions_render_and_have_unique_ids():
    ids = [d.id for d in spec.DECISIONS]
    assert len(ids) == len(set(ids)) and all(i.startswith("rest.") for i in ids)
    table = render_decisions_markdown(spec.DECISIONS)
    assert table.count("\n") == len(spec.DECISIONS) + 2


@pytest.mark.parametrize("name, ok", [
    ("g", True), ("a b", True), ("ü/%", True), ("x" * 1024, True),
    ("", False), ("   ", False), ("a\nb", False), ("a\x00", False), ("\x7f", False), ("\x85", False), ("x" * 1025, False),
])
def test_group_name_rule(name, ok):
    assert spec.is_valid_group_name(name) is ok
