"""Scale-out: what several nodes sharing one Redis promise, and what a broker fault costs.

Nodes that name the same Redis URL (and db, and channel prefix) are one fabric: a client
cannot tell them apart from one big node. ``GUARANTEES`` are the promises that hold with
Redis up; ``FAULTS`` say, for each way Redis can fail, what keeps working, what is lost and
the bound on the loss. The design is in ``docs/design.md`` ("Scale-out"); the tests are
``tests/scaleout/`` (in-process nodes, ``fabric serve`` nodes with Microsoft's SDKs,
Hypothesis interleavings) and ``tests/broker/`` (the broker contract and Redis faults).
"""

from __future__ import annotations

import attrs

from specs._decisions import Decision


@attrs.frozen(slots=True)
class Guarantee:
    """A promise of a fabric of several nodes, with Redis up."""

    name: str
    promise: str
    how: str


@attrs.frozen(slots=True)
class Fault:
    """One way the broker fails: what keeps working, what is lost, and the bound."""

    fault: str
    meanwhile: str
    lost: str
    bound: str


#: Default bounds (``[broker]`` and the Redis broker's constructor), in seconds.
NODE_TTL = 10.0
REQUEST_TIMEOUT = 5.0
COMMAND_TIMEOUT = 5.0
BACKOFF_MAX = 5.0


GUARANTEES: tuple[Guarantee, ...] = (
    Guarantee(
        "order",
        "Messages from one publisher to one group (or user, connection, hub) reach every member, "
        "on every node, in the order they were published.",
        "A node gets a publisher's messages by one path only: its own directly, another node's "
        "through Redis, where one publisher connection and one subscriber connection per node keep "
        "order; the echo of its own messages is recognised by the envelope and skipped.",
    ),
    Guarantee(
        "exactly-once",
        "A member receives a message at most once; one present from the publish until delivery "
        "receives it, as on one node.",
        "Membership is each node's plain data read at delivery; a node subscribes a group's topic "
        "before a join returns, so a send after the join reaches it.",
    ),
    Guarantee(
        "operations",
        "Every service-API operation (join, leave, close, permissions, listings, exists, by "
        "connection, user, group or filter) acts on every node holding its target before it "
        "returns, so what follows it behaves as on one node.",
        "The operation is a command on its target's topic; the broker says how many nodes it "
        f"reached and the requester waits for that many answers, at most request_timeout "
        f"({REQUEST_TIMEOUT:g} s; a node that does not answer is left out and counted).",
    ),
    Guarantee(
        "exists",
        "A connection, user or group exists while some node holds it. A node whose process died "
        f"leaves at once; a hung node or a vanished machine within 1.5 x node_ttl "
        f"({1.5 * NODE_TTL:g} s by default).",
        "Subscriptions are the presence: Redis drops a dead process's connections and with them its "
        "subscriptions; heartbeats (a key with a TTL) and a sweep by every node remove the "
        "connections of a node whose heartbeat stopped.",
    ),
    Guarantee(
        "recovery",
        "A reliable session recovers on any node: same connection id, user, roles, groups, ack "
        "memory, every unacked message once and in order. An unknown session or a bad token is "
        "accepted and closed with 1008.",
        "The recovering node claims the session from its owner, subscribes everything the session "
        "receives on, then takes the owner's unacked messages; copies both nodes hold are one "
        "publish, recognised by its wire id (fabric/webpubsub/handover.py).",
    ),
    Guarantee(
        "isolation",
        "Nothing of one hub reaches another; fabrics sharing one Redis (another prefix or db) never "
        "see each other; another application's messages on our channels are dropped and counted.",
        "Topics carry the hub; channel names carry the prefix and the db; every message has a "
        "version-tagged envelope and wire form, and anything else is a counted drop.",
    ),
)


FAULTS: tuple[Fault, ...] = (
    Fault(
        "Redis unreachable, refusing the credentials or too old (no RESP3) at start",
        "nothing starts",
        "nothing",
        "fabric serve exits 1 before it binds, with the error naming the URL (password redacted); "
        "a malformed URL is a configuration error (exit 2).",
    ),
    Fault(
        "Redis restarts, or the connection to it is lost",
        "Every node keeps serving its own clients: local delivery, local operations, recovery of "
        "local sessions. /api/health stays 200 and shows broker state 'reconnecting'. Operations "
        "that need other nodes answer from this node alone (counted broker_publish_failed).",
        "Messages between nodes during the gap: those queued in the publisher's pipeline when it "
        "failed, those sent while reconnecting, and those other nodes published to this node "
        "between the loss of its subscriber and the confirmation of its resubscription. No "
        "message is delivered twice or out of order; nothing is replayed.",
        f"The gap: detection (at once for a closed connection) + reconnect backoff (capped at "
        f"{BACKOFF_MAX:g} s, with jitter) + one round trip to resubscribe every topic. Measured "
        "(tests/scaleout): Redis down 1 s, about 1.6 s of one node's messages to the other lost. "
        "statistics: gaps, gap_seconds, failed, reconnects.",
    ),
    Fault(
        "Redis stalls (accepts but does not answer)",
        "as above",
        "as above",
        f"A subscriber PING unanswered for command_timeout ({COMMAND_TIMEOUT:g} s) or a publish "
        "batch unanswered for connect + command timeout is a lost connection: reconnect as above.",
    ),
    Fault(
        "A node too slow to read what Redis sends it",
        "the other nodes carry on",
        "what Redis discarded when it closed the slow subscriber (client-output-buffer-limit "
        "pubsub: 32 MB, or 8 MB for 60 s, by default)",
        "one gap of that node, as above; the node's socket is read only when its hubs took the "
        "previous message, so the bound is in the kernel and in Redis, never in our memory",
    ),
    Fault(
        "A node dies (process killed) or hangs (stopped, partitioned)",
        "the other nodes carry on; its clients reconnect elsewhere (reliable sessions it held "
        "are lost: recovery answers 1008 and the SDKs start a new connection)",
        "what was queued for its clients",
        f"exists: at once for a dead process, within 1.5 x node_ttl ({1.5 * NODE_TTL:g} s) for a "
        f"hung node; operations addressed to a hung node wait request_timeout ({REQUEST_TIMEOUT:g} s) "
        "until the sweep removed it.",
    ),
    Fault(
        "A worker of fabric serve --workers N crashes",
        "the other workers carry on; the supervisor restarts it on the same port (capped "
        "backoff when it keeps crashing)",
        "its connections (their clients reconnect, to any worker) and the connections the kernel "
        "had queued on its listening socket",
        "one restart; presence of the dead worker's connections ends at once",
    ),
)


DECISIONS: tuple[Decision, ...] = (
    Decision(
        "broker.presence",
        "Where does the fabric keep which node holds which connection, user and group?",
        "In Redis' own table of pub/sub channels: a node subscribes a connection's, user's and "
        "group's topic while it holds one, and exists asks Redis how many nodes a no-op command "
        "on that topic reached. Heartbeat keys (SET PX node_ttl) and a sweep (CLIENT LIST, "
        "CLIENT KILL of a node whose key expired) bound how long a hung node stays.",
        "[INF] The subscription must exist anyway for delivery, is exactly in step with it, "
        "vanishes when a process dies, and is rebuilt by the resubscription after every "
        "reconnect; a second table of presence keys would need its own cleanup and could "
        "disagree with delivery. Cost: one channel per connection (about 100 bytes in Redis).",
    ),
    Decision(
        "broker.send-no-wait",
        "Does a send wait for Redis?",
        "No: a send returns once delivered to this node's members and queued for Redis (waiting "
        "only for room in the bounded queue). Commands that need answers wait for Redis' count.",
        "Measured: waiting for each PUBLISH made a client's sendToGroup stream one Redis round "
        "trip per message, which under fan-out load costs several event-loop rounds: 14k "
        "deliveries/s at N=1000 against 76k with the memory broker. Order is the queue's; a "
        "failed batch is counted (failed) and is part of the gap (broker.gap).",
    ),
    Decision(
        "broker.gap",
        "What happens to messages between nodes while Redis is unreachable?",
        "They are lost, bounded by the gap (specs FAULTS), counted, and never replayed; delivery "
        "within a node never depends on Redis.",
        "[INF] Replaying would need Redis Streams per topic (memory per topic, trimming, a "
        "cursor per node) and could still not replay to a node that was itself down. Reliable "
        "sessions whose node survives keep their own buffer; Azure Web PubSub makes no stronger "
        "promise for non-reliable clients [DOC] (concept-service-internals.md: at-most-once).",
    ),
    Decision(
        "broker.requests",
        "How does a node know how many answers an operation needs?",
        "From the broker: PUBLISH answers how many subscriber connections (one per node) got the "
        "command; the memory broker counts its nodes. A node that unsubscribed meanwhile answers "
        "'nothing here' from the broker's stray hook; a silent node is left out after "
        "request_timeout.",
        "[INF] No membership list of nodes to keep in step, and the count is taken by the same "
        "operation that delivers the command.",
    ),
    Decision(
        "broker.single-node",
        "What does scale-out cost a single node with the memory broker?",
        "Nothing on the data path: sends are the same call; operations act on local members "
        "directly (no command object, no encoding) while the memory broker has one node for the "
        "hub.",
        "The fan-out benchmark must not regress (benchmarks/scaleout.py, benchmarks/RESULTS.md).",
    ),
    Decision(
        "broker.handover",
        "How does a reliable session move to the node its client reconnected to?",
        "Claim (the owner checks the token and keeps buffering), subscribe everything on the new "
        "node, release (the owner flushes its group queues and hands over its unacked messages), "
        "flush the new node's group queues, merge by wire id, attach the socket.",
        "Every message reached the owner before the release or the new node after its "
        "subscription; the flushes make 'reached' mean 'in the buffer'. Verified by moving a "
        "session 20 times under a steady stream (Python SDK, tests/scaleout).",
    ),
    Decision(
        "broker.workers",
        "How do several processes share one port?",
        "SO_REUSEPORT: each worker listens on the port; the supervisor keeps a bound, never "
        "listening socket on it for its whole life, so --port 0 and restarts get the same port.",
        "[INF] The kernel balances new connections; no fd passing, and a worker's crash does not "
        "take the listener down. Without a broker URL, --workers > 1 is refused: the workers "
        "would be separate fabrics on one port.",
    ),
)
