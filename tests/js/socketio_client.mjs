// socket.io-client (npm) against the fabric, driven by tests/socketio/test_socketio_interop.py.
//
//   node socketio_client.mjs '{"url": "http://127.0.0.1:PORT", "scenario": "basic", ...}'
//
// Prints one JSON line with what happened; exits non-zero (with the error) on a failure or
// when the scenario exceeds its own deadline. Every wait is bounded.
import { io } from "socket.io-client";

const spec = JSON.parse(process.argv[2]);
const DEADLINE = spec.deadline_ms || 30000;
setTimeout(() => { console.error("scenario deadline exceeded"); process.exit(3); }, DEADLINE).unref();

function within(ms, promise, what) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms); }),
  ]);
}
const once = (emitter, event, what = event, ms = 10000) =>
  within(ms, new Promise((resolve) => emitter.once(event, (...args) => resolve(args))), what);

// Every argument of the acknowledgement (emitWithAck resolves with the first one only).
const ackAll = (socket, ...args) => new Promise((resolve) => socket.emit(...args, (...answer) => resolve(answer)));

function connect(options = {}, nsp = "/") {
  const socket = io(spec.url + (nsp === "/" ? "" : nsp), {
    path: spec.path || "/socket.io/",
    transports: spec.transports || ["polling", "websocket"],
    upgrade: spec.upgrade !== false,
    reconnection: false,
    forceNew: true,
    ...options,
  });
  return socket;
}

async function connected(socket, ms = 10000) {
  if (socket.connected) return;
  const result = await within(ms, new Promise((resolve) => {
    socket.once("connect", () => resolve(null));
    socket.once("connect_error", (err) => resolve(err));
  }), "connect");
  if (result) throw new Error(`connect_error: ${result.message}`);
}

async function basic() {
  const socket = connect(spec.options || {});
  socket.on("question", (q, ack) => ack(`answer to ${q}`));
  await connected(socket);
  if (spec.upgrade_wait && (spec.transports || []).includes("websocket")) {
    if (socket.io.engine.transport.name !== "websocket") await once(socket.io.engine, "upgrade", "upgrade");
  }
  const transport = socket.io.engine.transport.name;
  const echo = await within(5000, ackAll(socket, "echo", "hello", 42, { nested: [1, true] }), "echo");
  const bin = await within(5000, ackAll(socket, "echo", "bin", Buffer.from([1, 2, 3]), { b: Buffer.from([255]) }), "binary echo");
  const asked = await within(5000, socket.emitWithAck("ask", "life"), "ask");
  const rooms = await within(5000, socket.emitWithAck("join", "r1"), "join");
  const news = once(socket, "news", "news");
  await within(5000, socket.emitWithAck("broadcast", "r1", "to-room", Buffer.from([9, 8])), "broadcast");
  const [newsText, newsBin] = await news;
  await within(5000, socket.emitWithAck("remember", "kept"), "remember");
  const who = await within(5000, socket.emitWithAck("whoami"), "whoami");
  const disconnected = once(socket, "disconnect", "kick");
  socket.emit("kick");
  const [reason] = await disconnected;
  return {
    transport, echo, bin: [bin[0], [...bin[1]], [...bin[2].b]], asked, rooms, news: [newsText, [...newsBin]],
    who, kick_reason: reason, sid: socket.id,
  };
}

async function admin() {
  const refused = connect({}, "/admin");
  const [err] = await once(refused, "connect_error", "refusal");
  refused.close();
  const ok = connect({ auth: { token: "secret" } }, "/admin");
  await connected(ok);
  const echo = await within(5000, ackAll(ok, "echo", 1), "admin echo");
  ok.close();
  return { refused: { message: err.message, data: err.data }, echo };
}

async function recovery() {
  const a = connect({ reconnection: true, reconnectionDelay: 1500, reconnectionDelayMax: 1500 });
  const b = connect();
  const got = [];
  a.on("news", (text) => got.push(text));
  await connected(a);
  await connected(b);
  const firstSid = a.id;
  await within(5000, a.emitWithAck("join", "rec"), "join");
  await within(5000, a.emitWithAck("remember", "state"), "remember");
  await within(5000, b.emitWithAck("broadcast", "rec", "m1"), "m1");
  await within(5000, new Promise((r) => { const t = setInterval(() => { if (got.length >= 1) { clearInterval(t); r(); } }, 10); }), "m1 arrives");
  const gone = once(a, "disconnect", "drop");
  a.io.engine.close(); // the transport drops; the client will reconnect
  const [dropReason] = await gone;
  await within(5000, b.emitWithAck("broadcast", "rec", "m2"), "m2");
  await within(5000, b.emitWithAck("broadcast", "rec", "m3"), "m3");
  await once(a, "connect", "reconnect", 10000);
  await within(5000, new Promise((r) => { const t = setInterval(() => { if (got.length >= 3) { clearInterval(t); r(); } }, 10); }), "replay");
  const who = await within(5000, a.emitWithAck("whoami"), "whoami");
  await within(5000, b.emitWithAck("broadcast", "rec", "m4"), "m4");
  await within(5000, new Promise((r) => { const t = setInterval(() => { if (got.length >= 4) { clearInterval(t); r(); } }, 10); }), "m4 arrives");
  const sid = a.id;
  const recovered = a.recovered;
  a.close(); b.close();
  return { drop_reason: dropReason, recovered, first_sid: firstSid, sid, got, who };
}

async function fanout() {
  const n = spec.clients || 1000;
  const count = spec.count || 20;
  const room = spec.room || "fan";
  const sockets = [];
  const received = [];
  for (let i = 0; i < n; i++) {
    const s = connect({ transports: ["websocket"] });
    const mine = [];
    received.push(mine);
    s.on("seq", (k) => mine.push(k));
    sockets.push(s);
  }
  const t0 = Date.now();
  await within(90000, Promise.all(sockets.map((s) => connected(s, 90000))), "all connected");
  const tConnected = Date.now() - t0;
  await within(90000, Promise.all(sockets.map((s) => s.emitWithAck("join", room))), "all joined");
  const tJoined = Date.now() - t0;
  const started = Date.now();
  const acked = await within(30000, sockets[0].emitWithAck("burst", room, count), "burst");
  await within(60000, new Promise((r) => {
    const t = setInterval(() => { if (received.every((m) => m.length >= count)) { clearInterval(t); r(); } }, 20);
  }), "every client got every broadcast");
  await new Promise((r) => setTimeout(r, 200)); // duplicates would arrive by now
  const bad = received.map((m, i) => [i, m]).filter(([, m]) => m.length !== count || m.some((k, j) => k !== j));
  sockets.forEach((s) => s.close());
  return { clients: n, count, acked, bad: bad.slice(0, 5).map(([i, m]) => ({ i, m: m.slice(0, 30) })), bad_count: bad.length, ms: Date.now() - started, connect_ms: tConnected, join_ms: tJoined };
}

// Connection-state recovery across two nodes (spec.url = node A, spec.url_b = node B, one
// Redis): the socket drops from A and its reconnect goes to B, as a load balancer without
// sticky sessions may send it. spec.owner_gone: node A stops first (halt_node).
async function waitFor(what, check, ms = 10000) {
  const start = Date.now();
  for (;;) {
    if (await check()) return;
    if (Date.now() - start > ms) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function recoveryAcross() {
  const a = connect({ transports: spec.transports || ["websocket"] });
  const onA = connect({ transports: ["websocket"] });
  const onB = io(spec.url_b, { path: spec.path || "/socket.io/", transports: ["websocket"], reconnection: false, forceNew: true });
  const got = [];
  a.on("news", (text) => got.push(text));
  for (const s of [a, onA, onB]) await connected(s);
  const firstSid = a.id;
  await within(5000, a.emitWithAck("join", "across"), "join");
  await within(5000, a.emitWithAck("remember", "moved"), "remember");
  await within(5000, onB.emitWithAck("broadcast", "across", "m1"), "m1");
  await waitFor("m1 arrives", () => got.length >= 1);
  const gone = once(a, "disconnect", "drop");
  a.io.engine.close(); // the transport drops
  const [dropReason] = await gone;
  await waitFor("A keeps the socket", async () => (await onA.emitWithAck("kept")) >= 1);
  for (const [s, text] of [[onB, "b1"], [onA, "a1"], [onB, "b2"], [onA, "a2"]]) {
    await within(5000, s.emitWithAck("broadcast", "across", text), text);
  }
  if (spec.owner_gone) {
    const down = once(onA, "disconnect", "node A stops");
    onA.emit("halt_node");
    await down;
  }
  a.io.uri = spec.url_b; // the reconnect reaches node B
  const back = once(a, "connect", "reconnect to B");
  a.connect();
  await back;
  const missed = spec.owner_gone ? 0 : 4;
  await waitFor("replay", () => got.length >= 1 + missed);
  const who = await within(5000, a.emitWithAck("whoami"), "whoami");
  await within(5000, a.emitWithAck("join", "after"), "join after");
  await within(5000, onB.emitWithAck("broadcast", "after", "live"), "live");
  await waitFor("live arrives", () => got.includes("live"));
  const result = { drop_reason: dropReason, recovered: a.recovered, first_sid: firstSid, sid: a.id, got: [...got], who };
  a.close(); onA.close(); onB.close();
  return result;
}

const scenarios = { basic, admin, recovery, fanout, recovery_across: recoveryAcross };
try {
  const result = await scenarios[spec.scenario]();
  console.log(JSON.stringify({ ok: true, ...result }));
  process.exit(0);
} catch (err) {
  console.log(JSON.stringify({ ok: false, error: String(err && err.stack || err) }));
  process.exit(1);
}
