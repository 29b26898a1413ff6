// A socket.io 4 app server in Web PubSub for Socket.IO's default mode: an unmodified
// `useAzureSocketIO(io, { hub, connectionString })` from @azure/web-pubsub-socket.io 1.2.1,
// pointed at `fabric serve`. Driven by tests/tunnel/ over stdin/stdout, one JSON object a line:
//
//   node app.mjs <connectionString> <hub>
//   -> {"event":"ready","port":P}               once useAzureSocketIO resolved (tunnel up)
//   <- {"id":N,"op":"...",...}                  a command (see `ops` below)
//   -> {"id":N,"ok":true,"result":...}          or {"id":N,"ok":false,"error":"..."}
//
// Commands use the public socket.io API (io.to(...).emit, socketsJoin, ...) where it exists;
// `service.*` calls the package's own service proxy (what the adapter calls underneath),
// whose promises reject when the service answers an unexpected status.
import http from "node:http";
import readline from "node:readline";
import { Server } from "socket.io";
import { io as connectClient } from "socket.io-client";
import wpsio from "@azure/web-pubsub-socket.io";

const { useAzureSocketIO, negotiate } = wpsio;
const [connectionString, hub] = process.argv.slice(2);

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const server = http.createServer();
const io = new Server(server);
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const started = Date.now();
await useAzureSocketIO(io, { hub, connectionString });
const service = io.engine.webPubSubConnectionManager.service;

function target(cmd) {
  let op = io.of(cmd.nsp ?? "/");
  if (cmd.to) op = op.to(cmd.to);
  if (cmd.except) op = op.except(cmd.except);
  return op;
}

function decodeArgs(args) {
  return (args ?? []).map((a) => (a && typeof a === "object" && "$bytes" in a ? Buffer.from(a.$bytes, "base64") : a));
}

async function request(path) {
  return new Promise((resolve, reject) => {
    http.get({ host: "127.0.0.1", port: server.address().port, path }, (res) => {
      let body = "";
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode, body }));
    }).on("error", reject);
  });
}

const ops = {
  // the socket.io API; the adapter turns each into a REST call through the tunnel
  emit: (cmd) => target(cmd).emit(cmd.event, ...decodeArgs(cmd.args)),
  socketsJoin: (cmd) => target(cmd).socketsJoin(cmd.rooms),
  socketsLeave: (cmd) => target(cmd).socketsLeave(cmd.rooms),
  disconnectSockets: (cmd) => target(cmd).disconnectSockets(cmd.close ?? false),
  // the adapter awaited (its errors are logged and swallowed, as in the package)
  addSockets: (cmd) => io.of(cmd.nsp ?? "/").adapter.addSockets({ rooms: new Set(cmd.in ?? []), except: new Set() },
    new Set(cmd.rooms)),
  // the service proxy: rejects on an unexpected status
  sendToConnection: (cmd) => service.sendToConnection(cmd.connectionId, cmd.payload),
  sendToAll: (cmd) => service.sendToAll(cmd.payload, { filter: cmd.filter }),
  sendToGroup: (cmd) => service.group(cmd.group).sendToAll(cmd.payload, { filter: cmd.filter }),
  addToGroups: (cmd) => service.addConnectionsToGroups(cmd.groups, cmd.filter),
  removeFromGroups: (cmd) => service.removeConnectionsFromGroups(cmd.groups, cmd.filter),
  removeFromGroup: (cmd) => service.group(cmd.group).removeConnection(cmd.connectionId),
  invoke: (cmd) => new Promise((resolve, reject) => {
    const chunks = [];
    service.invoke(cmd.payload, (chunk, end) => {
      if (chunk) chunks.push(Buffer.from(chunk).toString("utf8"));
      if (end) resolve(chunks.join(""));
    }, { filter: cmd.filter }).catch(reject);
  }),
  // negotiate(): the token a client would get, and whether the service accepts it
  negotiate: async (cmd) => {
    const handler = negotiate(io, async () => cmd.options ?? {});
    const answer = await new Promise((resolve) => {
      const res = {
        status: 0,
        writeHead(code) { this.status = code; },
        end(body) { resolve({ status: this.status, body: JSON.parse(body) }); },
      };
      handler({ url: "/negotiate" }, res, () => resolve({ status: 404 }));
    });
    return answer;
  },
  connectClient: (cmd) => new Promise((resolve) => {
    const socket = connectClient(cmd.endpoint, {
      path: cmd.path, query: cmd.token ? { access_token: cmd.token } : {}, transports: cmd.transports,
      reconnection: false, timeout: 5000,
    });
    socket.on("connect", () => {
      const sid = socket.id;
      socket.disconnect();
      resolve({ connected: true, sid });
    });
    socket.on("connect_error", (err) => {
      socket.close();
      resolve({ connected: false, error: String(err?.message ?? err), data: err?.data ?? null });
    });
  }),
  ownPath: () => request("/socket.io/?EIO=4&transport=polling"),
  exit: () => setTimeout(() => process.exit(0), 10),
};

out({ event: "ready", port: server.address().port, ms: Date.now() - started });

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  try {
    const result = await ops[cmd.op](cmd);
    out({ id: cmd.id, ok: true, result: result === undefined ? null : result });
  } catch (err) {
    out({ id: cmd.id, ok: false, error: String(err?.message ?? err) });
  }
});
rl.on("close", () => process.exit(0));
