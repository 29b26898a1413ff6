// A socket.io 4 chat app, run either on plain Node socket.io or, unmodified but for one
// `useAzureSocketIO(io, { hub, connectionString })` call, in Web PubSub for Socket.IO's
// default mode against `fabric serve` (tests/tunnel/test_default_mode.py runs both).
//
//   node chat.mjs plain                      -> {"event":"ready","port":P} (clients use /socket.io)
//   node chat.mjs azure <connectionString> <hub>
//
// What the server saw (disconnect reasons) is printed as {"event":"server", ...} lines.
// Stdin closing ends the process.
import http from "node:http";
import readline from "node:readline";
import { Server } from "socket.io";
import wpsio from "@azure/web-pubsub-socket.io";

const [mode, connectionString, hub] = process.argv.slice(2);

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const server = http.createServer();
const io = new Server(server, { pingInterval: 4000, pingTimeout: 3000 });
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
if (mode === "azure") {
  await wpsio.useAzureSocketIO(io, { hub, connectionString });
}

function handlers(nsp) {
  nsp.on("connection", (socket) => {
    const name = socket.handshake.auth?.name ?? "?";
    socket.data.name = name;
    socket.emit("welcome", nsp.name);
    let echoes = 0;
    socket.on("echo", (text, cb) => cb(`${text}:${++echoes}`));
    socket.on("join", async (room, cb) => {
      await socket.join(room);
      cb(`joined ${room}`);
    });
    socket.on("leave", async (room, cb) => {
      await socket.leave(room);
      cb(`left ${room}`);
    });
    // to(room) from a socket: everyone in the room but the sender
    socket.on("say", (room, text, cb) => {
      socket.to(room).emit("msg", name, text);
      cb("said");
    });
    // io.to(rooms).except(rooms): the service's filter (and its precedence) decides
    socket.on("broadcast", (rooms, except, text, cb) => {
      let op = nsp.to(rooms);
      if (except && except.length) op = op.except(except);
      op.emit("msg", name, text);
      cb("broadcast");
    });
    socket.on("askme", async (question, cb) => {
      try {
        cb(await socket.timeout(5000).emitWithAck("question", question));
      } catch (err) {
        cb(`error: ${err.message}`);
      }
    });
    // a broadcast with acks to one socket (its own room): the service's :invoke
    socket.on("askself", async (question, cb) => {
      try {
        const answers = await nsp.to(socket.id).timeout(5000).emitWithAck("question", question);
        cb(answers.map(String));
      } catch (err) {
        cb(`error: ${err.message}`);
      }
    });
    // nobody answers "silent": the app's own timeout ends the wait, as on plain socket.io
    socket.on("asksilent", async (room, cb) => {
      try {
        cb(await nsp.to(room).timeout(500).emitWithAck("silent"));
      } catch (err) {
        cb(`error: ${err.message}`);
      }
    });
    socket.on("ask", async (room, question, cb) => {
      try {
        const answers = await nsp.to(room).timeout(5000).emitWithAck("question", question);
        cb(answers.map(String).sort());
      } catch (err) {
        cb(`error: ${err.message}`);
      }
    });
    socket.on("bin", (room, data, cb) => {
      nsp.to(room).emit("bin", name, data);
      cb(Buffer.isBuffer(data) ? data.length : -1);
    });
    socket.on("socketsJoin", async (from, to, cb) => {
      await nsp.in(from).socketsJoin(to);
      cb("ok");
    });
    socket.on("socketsLeave", async (from, to, cb) => {
      await nsp.in(from).socketsLeave(to);
      cb("ok");
    });
    socket.on("kick", (room, close, cb) => {
      cb("kicking");
      nsp.in(room).disconnectSockets(close);
    });
    socket.on("all", (text, cb) => {
      nsp.emit("all", text);
      cb("ok");
    });
    socket.on("disconnect", (reason) => out({ event: "server", nsp: nsp.name, name, disconnect: reason }));
  });
}

handlers(io.of("/"));
handlers(io.of("/ns"));

out({ event: "ready", port: server.address().port, mode });

const rl = readline.createInterface({ input: process.stdin });
rl.on("close", () => process.exit(0));
