"""Bounds, and what happens at each: the policy that keeps a server up without dropping a
client that keeps up with its network.

The rule behind every row: **a healthy client is one that reads; a slow one is one that
stopped reading.** A count of queued messages says nothing about either (a one-second burst
to a client that reads at line rate queues thousands of small frames), so counts here only
cap per-item overhead; bytes and time are the bounds that decide. Every bound is a setting
of ``[server]`` (``fabric/config.py``); ``limits = "azure"`` applies Azure's documented
counts for apps that want to see exactly what the cloud service does.

Input-work bounds (what one peer can make the server do) are rows too: no single client
can monopolise the event loop or hold memory after it is closed.
"""

from __future__ import annotations

import attrs

from specs._decisions import Decision


@attrs.frozen(slots=True)
class Limit:
    """One bound: the setting that holds it, its default, and what happens past it."""

    setting: str
    default: str
    past_it: str


LIMITS: tuple[Limit, ...] = (
    Limit("outbox_max_bytes", "4 MiB", "the connection is a slow consumer (close 1008 after "
          "system/disconnected, queued data discarded; or, with slow_consumer = \"drop\", the message "
          "is dropped and counted as lagged)"),
    Limit("outbox_max_messages", "65536", "as above; only caps per-frame overhead"),
    Limit("stall_timeout", "20 s", "a connection whose socket took no byte of ours for this long "
          "while we had data for it is a slow consumer (checked on every keepalive tick)"),
    Limit("reliable_buffer_bytes", "16 MiB", "the reliable session is not recoverable: close 1008 "
          "'The reliable message buffer is full.' (the SDKs start a new connection)"),
    Limit("reliable_buffer_messages", "65536 (1000 with limits = \"azure\")", "as above"),
    Limit("close_timeout", "2 s", "a closing socket (flush, close frame, the peer's close) is reset "
          "(TCP RST): a peer that stopped reading cannot keep the socket and its kernel buffers"),
    Limit("max_message_bytes", "1 MiB", "close 1009"),
    Limit("max_message_fragments", "1024", "close 1009; the reader also yields to other tasks every "
          "64 protocol events, so a flood of tiny frames cannot stall other clients"),
    Limit("MAX_JSON_DEPTH (specs.webpubsub_json)", "64", "a client frame closes 1007; a REST body is 400 "
          "InvalidJson; a handler answer is a BadBody failure"),
    Limit("HTTP framing", "RFC 9112", "Content-Length with Transfer-Encoding, or any transfer coding but "
          "a final chunked: 400 and the connection closed (no pipelined request after it is read)"),
)


DECISIONS: tuple[Decision, ...] = (
    Decision(
        "limits.outbox",
        "When is a plain subscriber too slow?",
        "When its queued bytes pass outbox_max_bytes (4 MiB), or it stalls (limits.stall). The "
        "count bound is 65536 frames, far above any burst a reading client meets; it only caps "
        "per-frame overhead.",
        "Reproduced on 2026-12-03: 20,000 messages to 200 subscribers in 2-3 s closed 139-162 of "
        "them at the old 1024-frame bound although each kept reading: the backlog was the server's "
        "own CPU, not the clients. A byte bound holds memory at the same level without that.",
    ),
    Decision(
        "limits.stall",
        "How is a client that stopped reading told apart from one with a long backlog?",
        "The writer records when it started waiting for the peer to take bytes (only when the "
        "kernel did not take a batch at once, so the common path reads no clock). A keepalive tick "
        "that finds it waiting longer than stall_timeout (20 s) closes the connection as a slow "
        "consumer.",
        "Progress, not queue length, is what distinguishes them; 20 s is one keepalive interval, "
        "longer than any pause a healthy client makes (a laptop lid, a GC pause, a 3 s stall).",
    ),
    Decision(
        "limits.reliable-buffer",
        "How many unacknowledged messages does a reliable session keep?",
        "Up to reliable_buffer_bytes (16 MiB, counting each message's payload plus 64 bytes) and "
        "65536 messages. With limits = \"azure\", 1000 messages, as Azure documents.",
        "@azure/web-pubsub-client acks once a second (its quick ack fires only on a gap over 300), "
        "so a 1000-message burst in under a second filled the old 1000-message buffer and the "
        "session was closed 1008 as unrecoverable; the SDK started a new connection and 75-125 of "
        "1,000 messages never arrived (reproduced 2026-12-03). No client can tell a larger buffer "
        "apart except by not losing messages; the count 1000 was never a safety property, the "
        "byte bound is.",
    ),
    Decision(
        "limits.close",
        "How long may a closed connection hold its socket?",
        "close_timeout (2 s) from the moment the close is queued; then the TCP connection is reset "
        "(SO_LINGER 0), freeing kernel buffers at once. A completed close handshake ends with FIN.",
        "Reproduced 2026-12-03: 50 slow consumers that stopped reading held 50 sockets and 14 MB "
        "until the 120 s idle timeout. RFC 6455 §7.1.1 lets the server drop the TCP connection "
        "when the peer does not complete the close.",
    ),
    Decision(
        "limits.groups-per-connection",
        "How many groups may one client connection join?",
        "max_groups_per_connection (1,000) through joinGroup messages; a join past it is refused "
        "with ack BadRequest and the connection carries on. Joins by the app server (REST, the "
        "connect answer, token claims) are not counted against it: the app server decides those. "
        "A connection's groups are left in slices when it closes, yielding between them.",
        "Azure documents no bound. Found by a fuzz run (2026-12-04): one client joined 50,000 "
        "groups (78 -> 412 MB; 100,000 long names: 1 GB), and leaving them all when it closed "
        "held the event loop for 2.6-3.1 s. 1,000 is the bound a connect answer's groups have.",
    ),
)
