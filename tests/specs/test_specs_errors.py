"""specs.errors: the close-code and ack-error taxonomy is complete and consistent."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from specs.errors import (
    ACK_ERRORS,
    AZURE_CLOSE_REASONS,
    CLOSE_RULES,
    INBOUND_POLICY,
    MAX_CLOSE_REASON_BYTES,
    AckErrorName,
    CloseCode,
    CloseReason,
    CloseSituation,
    close_frame_reason,
    default_ack_message,
    duplicate_ack_message,
    rule_for,
    unsupported_message,
)


def test_every_situation_has_a_rule_and_every_azure_reason_is_used():
    assert set(CLOSE_RULES) == set(CloseSituation)
    assert AZURE_CLOSE_REASONS <= {r.reason for r in CLOSE_RULES.values()}
    assert {r.value for r in AZURE_CLOSE_REASONS} == {
        "Normal", "ClosedByAppServer", "ServiceReload", "PingTimeout", "SlowClient",
    }  # fmt: skip


def test_1008_means_the_session_is_gone():
    for rule in CLOSE_RULES.values():
        if rule.code == CloseCode.SESSION_GONE:
            assert not rule.session_kept and not rule.client_recovers
        if rule.session_kept:
            assert rule.client_recovers, rule.situation


def test_codes_the_server_and_tests_rely_on():
    assert rule_for("message_too_big").code == CloseCode.MESSAGE_TOO_BIG == 1009
    assert rule_for(CloseSituation.RECOVERY_FAILED).code == 1008
    assert rule_for(CloseSituation.SLOW_CLIENT).code == CloseCode.SLOW_CONSUMER == 1008
    assert rule_for(CloseSituation.CLOSED_BY_APP_SERVER).code == CloseCode.CLOSED_BY_APP_SERVER
    assert rule_for(CloseSituation.MALFORMED_FRAME).code == CloseCode.INVALID_MESSAGE == 1007
    assert rule_for(CloseSituation.WRONG_FRAME_TYPE).code == CloseCode.WRONG_FRAME_TYPE == 1003
    assert rule_for(CloseSituation.NO_EVENT_HANDLER).code == CloseCode.NORMAL == 1000
    assert rule_for(CloseSituation.SERVER_SHUTDOWN).code == CloseCode.GOING_AWAY == 1001
    assert rule_for(CloseSituation.INTERNAL_ERROR).code == CloseCode.INTERNAL_ERROR == 1011
    assert CloseCode.FORBIDDEN == 1008
    with pytest.raises(ValueError):
        rule_for("no_such_situation")


def test_close_rule_messages_fit_a_close_frame():
    for rule in CLOSE_RULES.values():
        assert len(rule.message.encode()) <= MAX_CLOSE_REASON_BYTES
        assert rule.when and rule.why and rule.clients


@given(st.text(alphabet=st.characters(exclude_categories=()), max_size=200))
def test_close_frame_reason_truncates_on_a_character_boundary(text):
    reason = close_frame_reason(text)
    data = reason.encode("utf-8")  # valid UTF-8, no lone surrogates left
    assert len(data) <= MAX_CLOSE_REASON_BYTES
    safe = text.encode("utf-8", "replace").decode("utf-8")
    assert safe.startswith(reason)


def test_ack_error_taxonomy():
    assert set(ACK_ERRORS) == set(AckErrorName)
    documented = {"Forbidden", "InternalServerError", "Duplicate"}
    assert documented <= {n.value for n in AckErrorName}
    assert ACK_ERRORS[AckErrorName.BAD_REQUEST].ours
    for rule in ACK_ERRORS.values():
        assert rule.when and rule.default_message and rule.source
        assert default_ack_message(rule.name.value) == rule.default_message
    assert default_ack_message("SomethingNew")
    assert duplicate_ack_message(1) == "Message with ack-id: 1 has been processed"
    assert "invoke" in unsupported_message("invoke")
    assert "stream" in unsupported_message("sendToGroup", "stream")


def test_inbound_policy_refers_to_real_names():
    for outcome in INBOUND_POLICY.values():
        if outcome.ack_error is not None:
            assert ACK_ERRORS[outcome.ack_error].emitted
        if outcome.close is not None:
            assert outcome.close in CLOSE_RULES
    assert INBOUND_POLICY["invalid_message"].ack_error is AckErrorName.BAD_REQUEST
    assert INBOUND_POLICY["malformed_frame"].close is CloseSituation.MALFORMED_FRAME


def test_close_reasons_are_distinct_strings():
    values = [r.value for r in CloseReason]
    assert len(values) == len(set(values))
