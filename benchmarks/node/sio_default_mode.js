#!/usr/bin/env node
'use strict';
// The loadgen.js Socket.IO contract (the same as sio_node.js) on socket.io 4.8, run either on
// plain Node socket.io or, with one `useAzureSocketIO(io, { hub, connectionString })` call from
// @azure/web-pubsub-socket.io, in Web PubSub for Socket.IO's default mode (clients connect to
// the service, here `fabric serve`, which tunnels their packets to this process).
//   namespace /fanout
//   'join'(room, ack)             -> socket.join(room); ack(true)
//   'publish'(room, payload, ack) -> socket.to(room).emit('message', payload); ack(true)
//   'echo'(payload, ack)          -> ack(payload)
// usage: node sio_default_mode.js PORT                       plain: clients use 127.0.0.1:PORT
//        AZURE_CONNECTION_STRING=... AZURE_HUB=bench node sio_default_mode.js PORT
//                                   default mode: PORT listens once the tunnel is up (readiness)
const http = require('http');
const { Server } = require('socket.io');

const port = Number(process.argv[2] || 3001);
const connectionString = process.env.AZURE_CONNECTION_STRING || '';
const hub = process.env.AZURE_HUB || 'bench';

async function main() {
  const httpServer = http.createServer((req, res) => { res.writeHead(404); res.end(); });
  const io = new Server(httpServer, {
    transports: ['websocket'], serveClient: false, perMessageDeflate: false, httpCompression: false,
  });
  if (connectionString) {
    const { useAzureSocketIO } = require('@azure/web-pubsub-socket.io');
    await useAzureSocketIO(io, { hub, connectionString });
  }
  const nsp = io.of('/fanout');
  nsp.on('connection', (socket) => {
    socket.on('join', async (room, ack) => {
      await socket.join(String(room)); // the adapter's join is a service call in default mode
      if (typeof ack === 'function') ack(true);
    });
    socket.on('publish', (room, payload, ack) => {
      socket.to(String(room)).emit('message', payload);
      if (typeof ack === 'function') ack(true);
    });
    socket.on('echo', (payload, ack) => { if (typeof ack === 'function') ack(payload); });
  });
  httpServer.listen(port, '127.0.0.1', () => console.error(
    `sio_default_mode (${connectionString ? `default mode, hub ${hub}` : 'plain'}) on 127.0.0.1:${port} pid ${process.pid}`));
}

main().catch((err) => { console.error(err); process.exit(1); });
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
