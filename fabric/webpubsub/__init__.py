"""The Web PubSub client edge: handshake, connection, the JSON / protobuf / simple codecs,
reliable sessions. Imports ``fabric.core``, never another edge."""
