// Several named socket.io-client clients driven over stdin/stdout, one JSON object a line
// (tests/tunnel/test_default_mode_two_nodes.py):
//
//   node clients.mjs
//   -> {"event":"ready"}
//   <- {"id":N,"op":"connect","name":"X","endpoint":"...","path":"...","token":"...","auth":{...}}
//   <- {"id":N,"op":"emit","name":"X","event":"join","args":["r"]}     -> the ack's value
//   <- {"id":N,"op":"until","name":"X","marker":"m1"}   -> what X got before the "all" event
//                                                          carrying m1 (taken out)
//   -> {"id":N,"ok":true,"result":...} or {"id":N,"ok":false,"error":"..."}
//
// Every client answers "question" with "answer:<name>:<question>" and records "msg",
// "all", "bin" and "disconnect"; a "disconnect" is also printed as {"event":"disconnect"}.
import readline from "node:readline";
import { io } from "socket.io-client";

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const MAX_KEPT = 1000;
const clients = new Map();

function record(client, entry) {
  client.got.push(entry);
  if (client.got.length > MAX_KEPT) client.got.shift();
  for (const waiter of client.waiters.splice(0)) waiter();
}

const ops = {
  connect: (cmd) => new Promise((resolve, reject) => {
    const socket = io(cmd.endpoint, {
      path: cmd.path, query: { access_token: cmd.token }, auth: { name: cmd.name },
      transports: cmd.transports ?? ["polling", "websocket"], reconnection: false, timeout: 10000,
    });
    const client = { socket, got: [], waiters: [] };
    clients.set(cmd.name, client);
    socket.on("question", (question, cb) => cb(`answer:${cmd.name}:${question}`));
    for (const name of ["msg", "all", "bin"]) socket.on(name, (...args) => record(client, [name, ...args]));
    socket.on("disconnect", (reason) => {
      record(client, ["disconnect", reason]);
      out({ event: "disconnect", name: cmd.name, reason });
    });
    socket.once("welcome", () => resolve(socket.id));
    socket.once("connect_error", (err) => reject(new Error(String(err?.message ?? err))));
  }),
  emit: (cmd) => clients.get(cmd.name).socket.timeout(cmd.timeout ?? 10000).emitWithAck(cmd.event, ...(cmd.args ?? [])),
  until: (cmd) => new Promise((resolve, reject) => {
    const client = clients.get(cmd.name);
    const timer = setTimeout(() => reject(new Error(`no "all" ${cmd.marker} within 10 s; got ${JSON.stringify(client.got)}`)), 10000);
    const check = () => {
      const at = client.got.findIndex((e) => e[0] === "all" && e[1] === cmd.marker);
      if (at < 0) {
        client.waiters.push(check);
        return;
      }
      clearTimeout(timer);
      resolve(client.got.splice(0, at + 1).slice(0, at));
    };
    check();
  }),
  close: (cmd) => clients.get(cmd.name).socket.disconnect(),
};

out({ event: "ready" });
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
rl.on("close", () => { for (const c of clients.values()) c.socket.disconnect(); process.exit(0); });
