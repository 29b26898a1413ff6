#!/usr/bin/env node
'use strict';
// Reference: the floor of a Node WebSocket server, no protocol at all (`ws`, the library
// Node socket.io runs on), for loadgen --proto raw: 'E'+json -> the same frame back;
// 'P'+json -> the json to every other connection, then 'A' to the sender.
// usage: node raw_node.js [PORT=3005]   (binds 127.0.0.1 only)
const http = require('http');
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 3005);
const server = http.createServer((req, res) => { res.writeHead(404); res.end(); });
const wss = new WebSocketServer({ server, perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    const text = isBinary ? null : data.toString();
    if (text && text[0] === 'P') {
      const body = text.slice(1);
      for (const other of wss.clients) if (other !== ws) other.send(body);
      ws.send('A');
    } else {
      ws.send(data, { binary: isBinary });
    }
  });
});
server.listen(port, '127.0.0.1', () => console.log(`raw_node listening on 127.0.0.1:${port}`));
