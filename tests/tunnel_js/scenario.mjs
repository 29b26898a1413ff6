// The chat scenario's clients (socket.io-client 4), run against chat.mjs on plain Node
// socket.io and against the same app in default mode behind `fabric serve`; the test compares
// the two transcripts.
//
//   node scenario.mjs <endpoint> <path> <token|-> <plain|azure>
//   -> {"event":"transcript","steps":[{"step":..., "acks":[...], "A":[...], ...}, ...]}
//   -> {"event":"failed","error":"...","steps":[...]} when a client waits in vain
//
// Clients: A (polling only) with A2 on /ns over the same Engine.IO connection, B (WebSocket
// only), C (polling, then upgraded), D (WebSocket, /ns). Each step names how many events
// each client must receive; the events of a step are sorted (deliveries to different
// clients and through different service paths have no order between them).
import { Manager } from "socket.io-client";

const [endpoint, path, token, mode] = process.argv.slice(2);
const WAIT_MS = 10000;

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function plainValue(value) {
  if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) {
    return { $bytes: Buffer.from(value).toString("base64") };
  }
  return value;
}

const clients = {};

function client(name, manager, nsp) {
  const socket = manager.socket(nsp, { auth: { name } });
  const entry = { name, socket, events: [], seen: 0, wake: null };
  const record = (event) => {
    entry.events.push(JSON.stringify(event));
    if (entry.wake) entry.wake();
  };
  socket.onAny((event, ...args) => record([event, ...args.filter((a) => typeof a !== "function").map(plainValue)]));
  socket.on("question", (question, cb) => cb(`answer:${name}:${question}`));
  socket.on("disconnect", (reason) => record(["disconnect", reason]));
  clients[name] = entry;
  return entry;
}

function manager(transports) {
  return new Manager(endpoint, {
    path, transports, query: token !== "-" ? { access_token: token } : {}, reconnection: false, timeout: WAIT_MS,
  });
}

async function waitFor(entry, count) {
  const deadline = Date.now() + WAIT_MS;
  while (entry.events.length - entry.seen < count) {
    const left = deadline - Date.now();
    if (left <= 0) {
      throw new Error(`${entry.name}: expected ${count} events, got ${entry.events.slice(entry.seen).join(" ")}`);
    }
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, left);
      entry.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    entry.wake = null;
  }
}

function ask(entry, event, ...args) {
  return entry.socket.timeout(WAIT_MS).emitWithAck(event, ...args);
}

const steps = [];

async function step(name, action, expected) {
  const acks = [];
  await action(async (entry, event, ...args) => {
    acks.push([entry.name, event, plainValue(await ask(entry, event, ...args))]);
  });
  for (const [who, count] of Object.entries(expected)) {
    await waitFor(clients[who], count);
  }
  const record = { step: name, acks };
  for (const entry of Object.values(clients)) {
    record[entry.name] = entry.events.slice(entry.seen).sort();
    entry.seen = entry.events.length;
  }
  steps.push(record);
}

try {
  const m1 = manager(["polling"]);
  const A = client("A", m1, "/");
  const A2 = client("A2", m1, "/ns");
  const B = client("B", manager(["websocket"]), "/");
  const C = client("C", manager(["polling", "websocket"]), "/");
  const D = client("D", manager(["websocket"]), "/ns");

  await step("connect", async () => {}, { A: 1, A2: 1, B: 1, C: 1, D: 1 });
  await step("join", async (call) => {
    await call(A, "join", "r1");
    await call(B, "join", "r1");
    await call(C, "join", "r2");
    await call(A2, "join", "r1");
    await call(D, "join", "nr");
  }, {});
  await step("say to a room but the sender", (call) => call(A, "say", "r1", "hello r1"), { B: 1 });
  await step("one room except another", (call) => call(B, "broadcast", ["r1"], ["r2"], "t1"), { A: 1, B: 1 });
  await step("everyone except a room", (call) => call(A, "broadcast", [], ["r1"], "t2"), { C: 1 });
  // Two rooms and an except: Azure's filter "A or B and not (C)" is A or (B and not C)
  await step("two rooms except one (filter precedence)", (call) => call(C, "broadcast", ["r1", "r2"], ["r1"], "t3"),
    mode === "azure" ? { A: 1, B: 1, C: 1 } : { C: 1 });
  await step("emitWithAck to one client", (call) => call(B, "askme", "q1"), { B: 1 });
  await step("emitWithAck to a room", (call) => call(A, "ask", "r1", "q2"), { A: 1, B: 1 });
  await step("emitWithAck to one socket's room", (call) => call(C, "askself", "q3"), { C: 1 });
  await step("emitWithAck nobody answers", (call) => call(A, "asksilent", "r1"), { A: 1, B: 1 });
  await step("binary", (call) => call(A, "bin", "r1", Buffer.from([1, 2, 3, 250])), { A: 1, B: 1 });
  await step("binary over WebSocket", (call) => call(B, "bin", "r1", Buffer.from([0, 255])), { A: 1, B: 1 });
  await step("socketsJoin", async (call) => {
    await call(C, "socketsJoin", "r2", "r3");
    await call(C, "broadcast", ["r3"], [], "t4");
  }, { C: 1 });
  await step("socketsLeave", async (call) => {
    await call(C, "socketsLeave", "r2", "r3");
    await call(C, "broadcast", ["r3"], [], "t5");
    await call(C, "all", "marker");
  }, { A: 1, B: 1, C: 1 });
  await step("namespace", (call) => call(D, "all", "ns-hello"), { A2: 1, D: 1 });
  await step("leave", async (call) => {
    await call(B, "leave", "r1");
    await call(A, "broadcast", ["r1"], [], "t6");
  }, { A: 1 });
  await step("disconnectSockets", (call) => call(A, "kick", "r2", false), { C: 1 });
  await step("disconnectSockets(true)", (call) => call(A2, "kick", "nr", true), { D: 1 });
  await step("client disconnect", async (call) => {
    B.socket.disconnect();
    await call(A, "all", "after");
  }, { A: 1, B: 1 });
  out({ event: "transcript", steps });
} catch (err) {
  out({ event: "failed", error: String(err?.stack ?? err), steps });
}
for (const entry of Object.values(clients)) entry.socket.disconnect();
setTimeout(() => process.exit(0), 50);
