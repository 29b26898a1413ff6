"""Web PubSub for Socket.IO's default mode: the choices the service makes where the package
(``@azure/web-pubsub-socket.io`` 1.2.1) and Microsoft's documents leave the service's side
unwritten (``fabric.socketio.tunnelled``; reference: the package's ``dist/EIO`` and
``dist/SIO/components/web-pubsub-adapter.js``).

Rules this module keeps: data only, no imports of ours but ``specs._decisions``.
"""

from __future__ import annotations

from specs._decisions import Decision

#: Seconds a handshake waits for an app server of the hub, and a connection for its own app
#: server to come back, before the handshake is refused (503) or the connection closed.
APP_WAIT_SECONDS = 5.0
#: Longest an ``:invoke`` answer stays open waiting for client acks.
INVOKE_TIMEOUT_SECONDS = 120.0
#: The first ack id the service gives an ``:invoke``'s EVENT.
FIRST_INVOKE_ACK_ID = 10**12
#: Seconds between a node's checks of whether another node serves a hub in default mode.
ELSEWHERE_CHECK_SECONDS = 1.0

DECISIONS: tuple[Decision, ...] = (
    Decision(
        "socketio-default.which-hubs",
        "Which hubs are served by app servers through the tunnel rather than by the embedded "
        "Socket.IO server?",
        "A hub is in default mode on a node once an app server opened a tunnel for it to that "
        "node (until the node restarts), if its Socket.IO endpoint is enabled, its service_mode "
        "is \"default\" and none of its event handlers is a tunnel: URL. A handshake while no app "
        "server is connected waits up to APP_WAIT_SECONDS for one, then gets 503. Nodes the app "
        "has no tunnel to: see socketio-default.other-nodes.",
        "[INF] On Azure every hub of a Socket.IO resource in default mode belongs to the app; "
        "the fabric also has an embedded Socket.IO server, so the app's tunnel is what says the "
        "hub is the app's. A tunnel: event handler marks a plain Web PubSub hub behind "
        "awps-tunnel, which would not understand Socket.IO events. Staying in default mode while "
        "the app restarts keeps clients from landing on the embedded server meanwhile.",
    ),
    Decision(
        "socketio-default.other-nodes",
        "Several nodes (Redis): which node serves a client, and what does a client get on a node "
        "the hub's app servers have no tunnel to while another node has one?",
        "Each node serves the clients that connect to it, through the app servers tunnelled to "
        "it; an app scales by attaching one instance per node (useAzureSocketIO takes one "
        "endpoint). Rooms, namespace broadcasts, excepts, socketsJoin, socketsLeave and "
        "disconnectSockets reach every node's connections (they are hub sends and filtered "
        "group changes), and each connection's packets go to the app instance of its node. A "
        "node that serves a hub marks it in the broker; a node without a tunnel checks the "
        "mark every ELSEWHERE_CHECK_SECONDS for hubs it was asked for, and while another node "
        "holds it refuses the hub's handshakes with 503 and a message naming the cause (the "
        "embedded server never takes them). The first handshake of a hub on such a node, "
        "before its first check, is still the embedded server's. Client events are not "
        "forwarded to another node's app server.",
        "[INF] The package's app instance knows only the sockets whose events reach it; one "
        "fabric of nodes is one resource on Azure, where the service routes every client to an "
        "app server. Forwarding client events between nodes (through the broker, in order, "
        "with the app's answers coming back) is the complete answer and is not built; a 503 "
        "lets socket.io-client's reconnection or a load balancer try another node, where "
        "serving the embedded server would run a Socket.IO server without the app's handlers.",
    ),
    Decision(
        "socketio-default.invoke-scope",
        "Which clients does an :invoke (emitWithAck to a room or to all) reach with several "
        "nodes?",
        "The selected connections of every node: the node whose tunnel carried it sends an "
        "invoke command to every node of the hub (itself included) with the EVENT and the "
        "filter; each node sends the EVENT to its own selected connections, answers how many "
        "it sent it to, then streams each client's ack back as it arrives and a last done "
        "once its recipients answered or left (or INVOKE_TIMEOUT_SECONDS passed). The answer "
        "to the app merges them and ends when every node that had recipients is done; a node "
        "that does not answer within the hub's request timeout counts as none. Acks waiting "
        "for the app are bounded per invocation (more are dropped and counted), and so are "
        "invocations in flight per node: past the bound a node relays nothing for one it is "
        "asked for, and one it is asked for by its app reaches its own clients only (both "
        "counted and logged).",
        "[INF] On Azure the service is one resource and emitWithAck to a room reaches every "
        "member; one node alone keeps the direct path (no command).",
    ),
    Decision(
        "socketio-default.heartbeat",
        "Does the service relay the app's Engine.IO pings to clients, or run its own heartbeat?",
        "Its own, with the pingInterval and pingTimeout the app's handshake answer names; the "
        "app's pings (a 2 sent to the connection) are answered by the service with 3.",
        "[INF] The package runs engine.io's heartbeat over :send and user events; relaying it "
        "would make every client's liveness depend on the tunnel, and a tunnel reconnect would "
        "drop clients the app still serves.",
    ),
    Decision(
        "socketio-default.app-server-lost",
        "What happens to a client whose app server is gone?",
        "Its connection stays while the same app server (the tunnel token's sub) reconnects "
        "within APP_WAIT_SECONDS; after that it is closed, and socket.io-client reconnects to "
        "an app server that is there.",
        "[INF] Only the process that accepted the connection knows its sockets: a new process "
        "answers its events with 400 (unknown connection).",
    ),
    Decision(
        "socketio-default.disconnect-with-data",
        "What does the service do with the DISCONNECT with data {\"close\": bool} that "
        "disconnectSockets broadcasts (clients reject it as it is)?",
        "Each recipient gets a plain DISCONNECT for that namespace and leaves every group of "
        "the namespace; the app is sent the client's DISCONNECT (its socket ends with \"client "
        "namespace disconnect\"). With close true the connection ends after a plain DISCONNECT "
        "for each of its namespaces (the app hears \"transport close\").",
        "[SDK] The adapter only broadcasts the packet and waits for the service to report the "
        "disconnect (web-pubsub-adapter.js disconnectSockets); [INF] the client sees what plain "
        "socket.io sends it.",
    ),
    Decision(
        "socketio-default.namespace-groups",
        "Who keeps the namespace group 0~b64(nsp)~ that io.emit targets, and the rooms of a "
        "socket that ended?",
        "The service: a connection joins the namespace group when the app's CONNECT reply for "
        "it passes, and leaves every group of a namespace when a DISCONNECT for it passes "
        "(either way).",
        "[SDK] Nothing in the package joins the namespace group, and its delAll only sends a "
        "DISCONNECT to the socket's own group; without this, rooms would outlive their sockets.",
    ),
    Decision(
        "socketio-default.invoke-end",
        "When does an :invoke answer (broadcast with acks) end?",
        "When every connection the filter selected (having the event's namespace) answered "
        "with an ACK of that namespace and id, or closed; at most INVOKE_TIMEOUT_SECONDS.",
        "[SDK] The adapter reports the number of lines it read as the client count when the "
        "stream ends; ending before the app's own timeout would resolve emitWithAck with fewer "
        "answers where plain socket.io reports a timeout.",
    ),
    Decision(
        "socketio-default.invoke-ack-ids",
        "The EVENT an :invoke carries has no ack id (the package's adapter overrides "
        "broadcastWithAck and never sets one); which id do clients answer with?",
        "The service numbers each :invoke's EVENT itself, counting from FIRST_INVOKE_ACK_ID, and "
        "takes a client's ACK with that namespace and id out of the packets for the app; an "
        "EVENT that already has an id keeps it.",
        "[SDK] web-pubsub-adapter.js broadcastWithAck (observed: the payload is 42[...] without "
        "an id). [INF] The app's own ids count from 0 per namespace, so ids from 10**12 never "
        "meet them; socket.io-client reads any integer up to 2**53.",
    ),
    Decision(
        "socketio-default.filter-precedence",
        "The adapter writes rooms plus excepts as \"A or B and not (C)\"; fix or reproduce?",
        "Reproduced: filters are evaluated with OData precedence (and before or), so two rooms "
        "and an except mean A or (B and not C), as on Azure.",
        "[SDK] web-pubsub-adapter.js _buildODataFilter; apps behave as they do on Azure.",
    ),
)
