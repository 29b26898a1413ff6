"""Declared counters: every count the fabric keeps has a name and a help text here.

Rules this module keeps:
- A counter that is not in its catalogue cannot be created: ``counters["typo"] += 1`` raises
  ``KeyError`` instead of inventing a new metric.
- Counting is a dict update (no lock, no task): cheap enough for any path but the
  per-recipient delivery loop, which counts per publication, never per recipient.
- Catalogues are data (name, help) that metrics exposition and docs render from.
"""

from __future__ import annotations

from typing import Iterable

import attrs


@attrs.frozen(slots=True)
class CounterSpec:
    """One declared counter: its name (a Prometheus-safe identifier) and what it counts."""

    name: str
    help: str


class Counters:
    """A fixed set of integer counters, indexed by name like a dict."""

    __slots__ = ("_values",)

    def __init__(self, catalogue: Iterable[CounterSpec]) -> None:
        self._values = {spec.name: 0 for spec in catalogue}

    def __getitem__(self, name: str) -> int:
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(f"{name!r} is not a declared counter") from None

    def __setitem__(self, name: str, value: int) -> None:
        if name not in self._values:
            raise KeyError(f"{name!r} is not a declared counter")
        self._values[name] = value

    def as_dict(self) -> dict[str, int]:
        return dict(self._values)

    def clear(self) -> None:
        for name in self._values:
            self._values[name] = 0


def _catalogue(*rows: tuple[str, str]) -> tuple[CounterSpec, ...]:
    return tuple(CounterSpec(name, help) for name, help in rows)


#: What a hub counts (``Hub.statistics()["counters"]``).
HUB_COUNTERS = _catalogue(
    ("connections_opened", "Connections registered with the hub."),
    ("connections_closed", "Connections removed from the hub."),
    ("connect_rejected", "Handshakes refused by the connect handler or its answer."),
    ("ping_timeouts", "Connections closed (or detached) because the client stopped answering pings."),
    ("handler_failures", "connected/disconnected notification handlers that raised."),
    ("notifications_dropped", "connected/disconnected notifications dropped because the queue was full."),
    ("group_publications_lost", "Group publications lost because the group actor stopped meanwhile."),
    ("expired", "Publications dropped because their TTL passed before delivery."),
    ("expired_not_replayed", "Unacked reliable messages not replayed because their TTL passed."),
    ("lagged", "Messages dropped for slow consumers under the 'drop' policy."),
    ("slow_consumer_closed", "Connections closed as slow consumers."),
    ("reliable_buffer_full", "Reliable sessions closed because their replay buffer overflowed."),
    ("sessions_detached", "Reliable sessions that lost their socket and waited for recovery."),
    ("sessions_recovered", "Reliable sessions resumed on a new socket."),
    ("sessions_expired", "Reliable sessions discarded after the reconnect window."),
    ("recoveries_refused", "Recovery requests refused (unknown session, bad token, wrong subprotocol)."),
    ("malformed_frames", "Client frames that could not be parsed (connection closed)."),
    ("invalid_messages", "Parseable client messages that broke a rule."),
    ("unsupported_messages", "Client messages of a kind this server does not implement."),
    ("unhandled_events", "User events with no handler."),
    ("event_handler_failures", "User events whose handler failed."),
    ("invocations", "Client invocations (invoke) handed to the event handler."),
    ("invocation_failures", "Invocations answered with an error (refused or failed)."),
    ("invocations_cancelled", "Invocations stopped by cancelInvocation or the end of their transport."),
    ("invocations_duplicate", "invoke messages ignored because the same invocationId was running."),
    ("invocation_cancels_ignored", "cancelInvocation messages for no running invocation."),
    ("streams_opened", "Client group streams accepted."),
    ("streams_refused", "Stream starts refused (forbidden, invalid, too many)."),
    ("streams_closed", "Client group streams ended (any reason)."),
    ("streams_idle_timeout", "Client group streams ended by their idle timeout."),
    ("stream_fragments", "Stream fragments published."),
    ("stream_duplicates", "Stream fragments not republished because their id was already accepted."),
    ("stream_nacks", "Stream fragments refused with streamNack (a gap in the sequence)."),
    ("stream_not_found", "Stream messages for a stream that is not open (answered StreamNotFound)."),
    ("presence_events", "Group presence notifications (joined/left) delivered to a handler."),
    ("presence_dropped", "Group presence notifications dropped because the queue was full or stopped."),
    ("broker_publish_failed", "Sends that reached this node's members but not the broker (other nodes may have missed them)."),
    ("broker_closed", "Sends and answers dropped because the broker was closing (shutdown)."),
    ("requests_sent", "Operations sent to the other nodes of the hub (commands awaiting answers)."),
    ("requests_timed_out", "Operations that lacked some node's answer within the request timeout."),
    ("commands_applied", "Commands from the hub's nodes (this one included) applied here."),
    ("commands_failed", "Commands that raised while applied here."),
    ("commands_dropped", "Commands dropped because this node's command queue was full."),
    ("sessions_handed_over", "Reliable sessions this node handed to another node that recovered them."),
    ("sessions_taken_over", "Reliable sessions this node took over from another node."),
)


#: What a hub's webhook client counts (``WebhookEventHandler.statistics()["counters"]``).
#: ``failed_<failure>`` has one row per ``specs.upstream.Failure`` value.
WEBHOOK_COUNTERS = _catalogue(
    ("requests", "HTTP requests sent to event handlers."),
    ("validations_ok", "Abuse-protection validations that passed."),
    ("validations_failed", "Abuse-protection validations that failed."),
    ("connect_rejected", "connect events the handler refused."),
    ("connected_delivered", "connected notifications delivered."),
    ("connected_failed", "connected notifications that failed after retries."),
    ("disconnected_delivered", "disconnected notifications delivered."),
    ("disconnected_failed", "disconnected notifications that failed after retries."),
    ("joined_delivered", "Group presence joined notifications delivered."),
    ("joined_failed", "Group presence joined notifications that failed after retries."),
    ("left_delivered", "Group presence left notifications delivered."),
    ("left_failed", "Group presence left notifications that failed after retries."),
    ("invocations", "Invocations (invoke) sent to an event handler."),
    ("notification_retries", "Notification retries after an unreachable handler."),
    ("notifications_dropped", "Notifications dropped because a queue was full or the client stopped."),
    ("state_not_base64", "ce-connectionState answers that were not base64 (kept as text)."),
) + tuple(CounterSpec(f"failed_{failure}", f"Upstream calls that failed: {failure}.") for failure in (
    "unreachable", "timeout", "validation_failed", "client_error", "server_error", "redirect",
    "unexpected_status", "body_too_large", "content_encoding", "bad_content_type", "bad_body",
    "subprotocol_not_offered", "bad_connection_state", "unsendable", "handler_error", "not_running",
))
