"""The embedded Socket.IO server on several nodes: a socket's own room, and connection-state
recovery on any node (``fabric.socketio.server``). Decisions where socket.io (its Redis
adapter, §b.6 of its protocol docs) and Azure leave the choice to us, with their bounds and
what is lost.

Rules this module keeps: data only, no imports of ours but ``specs._decisions``.
"""

from __future__ import annotations

from specs._decisions import Decision

#: Recoverable broadcasts one node's log keeps (oldest dropped first; also dropped once older
#: than the recovery duration).
RECOVERY_LOG_ENTRIES = 10_000
#: Sockets one node keeps for recovery at once (oldest dropped first).
RECOVERY_KEPT_SOCKETS = 10_000
#: How long after a polling client's close packet (sent while no GET was parked) the one GET
#: that raced it still gets a noop, and how many such sids are remembered at once.
LATE_GET_GRACE_SECONDS = 1.0
LATE_GET_TOMBSTONES = 1024

DECISIONS: tuple[Decision, ...] = (
    Decision(
        "socketio.own-room",
        "Is a socket's own room (its sid) a hub group, so that servers on other nodes and REST "
        "reach it?",
        "Yes, in every mode: the socket's connection joins 0~b64(nsp)~b64(sid) when its CONNECT "
        "succeeds, as an inline group (a registry entry and a broker subscription, no group "
        "actor), and leaves it with the socket. A server sending to its own local socket still "
        "writes directly.",
        "socket.io puts every socket in its own room, and its Redis adapter reaches it from "
        "any node; Azure names the group the same way (the adapter's _getGroupName). Resolving "
        "a sid without membership would need every node to hear every sid send (socket.io's "
        "Redis adapter does that) or a sid that reveals its node; an actor per socket would add "
        "a task and a mailbox to every connection. Measured inline (benchmarks/"
        "memory_socketio.py 2000 --no-trace): 0.58 kB of live objects and 0.5 kB RSS per idle "
        "connection (15.0 -> 15.5 kB).",
    ),
    Decision(
        "socketio.recovery-log",
        "What does a node keep for connection-state recovery, and for how long?",
        "The recoverable broadcasts (no ack, not volatile) it delivered to any of its sockets, "
        "in delivery order, each once, at most RECOVERY_LOG_ENTRIES and at most the recovery "
        "duration; and each socket closed for a recoverable reason, at most "
        "RECOVERY_KEPT_SOCKETS and the recovery duration, whose closed connection stays in the "
        "socket's groups meanwhile. A CONNECT whose offset is no longer in the owner's log, or "
        "whose socket was dropped, gets a fresh socket (recovered false).",
        "socket.io's adapter keeps every broadcast for maxDisconnectionDuration with no count "
        "bound and fails the recovery when the offset is gone; we bound both. Recording at "
        "delivery (not at the origin) is what lets a node replay broadcasts that started on "
        "other nodes, and lingering in the groups is what keeps them arriving while the "
        "client is away.",
    ),
    Decision(
        "socketio.recovery-any-node",
        "How does a socket recover on a node other than the one that kept it?",
        "The new node asks every node for the pid (the kept socket answers under a hash of "
        "it; the pid itself never leaves the CONNECT), which reserves it and answers sid and "
        "groups; the new node joins them, then asks the owner alone for what the socket missed "
        "after the offset (the owner flushes its group queues first) and its session data; "
        "it writes the 40 reply, that replay, then what reached it meanwhile minus what the "
        "replay held (same offset). Owner gone, session expired, claim lost or session data "
        "that cannot cross nodes (not msgpack-serializable, with Redis): a fresh socket.",
        "Every broadcast for the socket reached the owner before the release or the new node "
        "after its subscription; offsets are unique across nodes, so a copy seen by both is "
        "dropped once. The same order of steps as a reliable Web PubSub session moving "
        "(broker.handover).",
    ),
    Decision(
        "socketio.recovery-limits",
        "What does recovery not restore?",
        "Packets that are not recoverable broadcasts (acks, emits with a callback, call, "
        "volatile ones) sent while the socket was away or before its drop was noticed; pending "
        "acknowledgements (they fail as disconnected); a reconnect that reaches a node before "
        "the owner noticed the drop is a fresh socket. The replay keeps the owner's delivery "
        "order, which keeps each publisher's order to a group but, as live traffic, none "
        "between groups or publishers.",
        "As socket.io: only broadcasts get offsets, and a session exists only once its "
        "disconnect was seen. [INF] Waiting for a half-open transport to time out before "
        "answering would delay every fresh CONNECT that carries a stale pid.",
    ),
    Decision(
        "socketio.late-poll-after-close",
        "A polling client sends its long-poll GET and a POST with the close packet at once; the "
        "POST is handled first. What does the GET get?",
        "The noop (200, `6`) it would have had if it had been parked first, once, if it comes "
        "within LATE_GET_GRACE_SECONDS of the close and no GET was parked when the close came; "
        "any later request for the sid is 400 (code 1, Session ID unknown) as usual. The "
        "session closes at the POST either way (the application hears of it then).",
        "Node's engine.io handles requests in arrival order, so the GET (sent first, on a kept-"
        "alive connection) is parked before the POST arrives and gets the noop; the official "
        "Engine.IO suite's 'forcefully closes the session' expects exactly that. Here the two "
        "requests' tasks may run in either order; with no tombstone the suite failed about one "
        "run in seven (0 in 200 with it). The tombstones are bounded "
        f"(at most {LATE_GET_TOMBSTONES} sids, oldest dropped first).",
    ),
    Decision(
        "socketio.hostile-input",
        "Where may one Socket.IO client's input cost more than Node's, and what bounds it?",
        "At most 64 namespaces per Engine.IO connection (a CONNECT past it gets CONNECT_ERROR "
        "'Too many namespaces'); once a polling session is closing, the rest of a POST body is "
        "dropped; a per-hub endpoint builds nothing for a hub until a handshake with a valid "
        "token (preflights, unknown sids and other requests are answered as the endpoint would); "
        "an ack whose arguments are too deep to encode is not sent (an error log line), never a "
        "traceback.",
        "Node bounds none of the first three (it has no per-hub endpoints), but there a namespace "
        "is cheap. Found by a fuzz run (2026-12-04): 8,000 namespaces on one connection stalled "
        "its close 15 s; 200,000 invalid packets in one POST were all processed (5 s, 200,000 "
        "log lines) where Node drops them; unauthenticated requests naming 10,000 hubs kept "
        "125 MB. Nobody is known to use more than a handful of namespaces per connection.",
    ),
)
