"""What every protocol shares: hubs and their registry, group actors, publications,
payloads, auth and permissions, the event-handler interface, brokers, counters.

Never imports an edge (``fabric.webpubsub``, ``fabric.socketio``, ``fabric.appserver``).
"""
