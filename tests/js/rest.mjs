#!/usr/bin/env node
// Microsoft's JavaScript service SDK (@azure/web-pubsub) drives the REST API of `fabric serve`;
// the effects are checked on plain `ws` WebSocket clients (json.webpubsub.azure.v1 and a simple
// client): sends with each content type, excluded, `odata` filters, user/connection sends with
// messageTtlSeconds, groups (incl. listConnections paging, addConnectionsToGroups), exists,
// permissions, closes with reasons, errors. Tokens come from getClientAccessToken.
//
// usage: node rest.mjs --connection-string CS --hub HUB [--deadline-ms N]
// stdout: one JSON line per step: {"step":"...","ok":true}; finally {"step":"done","ok":true}
//         or {"step":"...","ok":false,"error":"..."} and a non-zero exit.
// Exit: 0 all steps passed, 1 a step failed, 3 the deadline (default 40000 ms) passed.

import { parseArgs, isDeepStrictEqual } from "node:util";
import { WebPubSubServiceClient, odata } from "@azure/web-pubsub";
import WebSocket from "ws";

const { values: args } = parseArgs({
  options: {
    "connection-string": { type: "string" },
    hub: { type: "string" },
    "deadline-ms": { type: "string", default: "40000" },
  },
});
const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const WAIT_MS = 5000;
setTimeout(() => {
  print({ step: "deadline", ok: false, error: `deadline of ${args["deadline-ms"]} ms reached` });
  process.exit(3);
}, Number(args["deadline-ms"])).unref();

const cs = args["connection-string"];
const hub = args.hub;
if (!cs || !hub) {
  print({ step: "args", ok: false, error: "need --connection-string and --hub" });
  process.exit(1);
}

class StepFailed extends Error {}
function check(cond, message) {
  if (!cond) throw new StepFailed(message);
}
function same(actual, expected, what) {
  check(isDeepStrictEqual(actual, expected), `${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}
async function rejects(promise, status, what) {
  try {
    await promise;
  } catch (e) {
    check(e.statusCode === status, `${what}: expected HTTP ${status}, got ${e.statusCode} (${e.message})`);
    return e;
  }
  throw new StepFailed(`${what}: expected HTTP ${status}, but it succeeded`);
}

// A WebSocket peer: every frame (JSON-parsed on the PubSub subprotocol) in a queue.
class Peer {
  constructor(label, pubsub) {
    this.label = label;
    this.pubsub = pubsub;
    this.queue = [];
    this.closed = null;
    this.wake = null;
  }
  static async open(label, url, pubsub = true) {
    const peer = new Peer(label, pubsub);
    const ws = new WebSocket(url, pubsub ? ["json.webpubsub.azure.v1"] : []);
    peer.ws = ws;
    ws.on("message", (data, isBinary) => {
      peer.queue.push(pubsub ? JSON.parse(data.toString()) : isBinary ? Buffer.from(data) : data.toString());
      if (peer.wake) peer.wake();
    });
    ws.on("close", (code, reason) => {
      peer.closed = { code, reason: reason.toString() };
      if (peer.wake) peer.wake();
    });
    await new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
    if (pubsub) {
      const connected = await peer.next("system/connected");
      check(connected.type === "system" && connected.event === "connected", `${label}: first frame ${JSON.stringify(connected)}`);
      peer.connectionId = connected.connectionId;
      peer.userId = connected.userId;
    }
    return peer;
  }
  async next(what) {
    const deadline = Date.now() + WAIT_MS;
    while (this.queue.length === 0) {
      check(this.closed === null, `${this.label}: closed (${JSON.stringify(this.closed)}) while waiting for ${what}`);
      const left = deadline - Date.now();
      check(left > 0, `${this.label}: nothing (${what}) within ${WAIT_MS} ms`);
      await new Promise((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, left);
      });
    }
    return this.queue.shift();
  }
  // Everything before the marker (a text message every peer gets); acks are skipped.
  async until(marker) {
    const got = [];
    for (;;) {
      const msg = await this.next(`marker ${marker}`);
      const data = this.pubsub ? msg.data : msg;
      if (data === marker) return got;
      if (!(this.pubsub && msg.type === "ack")) got.push(msg);
    }
  }
  async waitClosed() {
    const deadline = Date.now() + WAIT_MS;
    while (this.closed === null) {
      const left = deadline - Date.now();
      check(left > 0, `${this.label}: not closed within ${WAIT_MS} ms`);
      await new Promise((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, left);
      });
    }
    return this.closed;
  }
  send(obj) {
    this.ws.send(JSON.stringify(obj));
  }
}

const service = new WebPubSubServiceClient(cs, hub, { allowInsecureConnection: true });
let markers = 0;
// Everything each open peer received before a marker sent to all: {label: [messages]}.
async function fence() {
  const marker = `--fence-${++markers}--`;
  await service.sendToAll(marker, { contentType: "text/plain" });
  const open = Object.entries(peers).filter(([, p]) => p.closed === null);
  const got = await Promise.all(open.map(([, p]) => p.until(marker)));
  return Object.fromEntries(open.map(([label], i) => [label, got[i]]));
}
const dataOf = (msgs) => msgs.map((m) => m.data);

const ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];
const peers = {};

const steps = {
  async getClientAccessToken() {
    const a = await service.getClientAccessToken({ userId: "js-a", roles: ROLES, groups: ["js-initial"], expirationTimeInMinutes: 5 });
    check(a.url.startsWith("ws://") && a.url.includes(`/client/hubs/${hub}?access_token=`), `url ${a.url}`);
    peers.a = await Peer.open("a", a.url);
    same(peers.a.userId, "js-a", "a's userId");
    peers.b = await Peer.open("b", (await service.getClientAccessToken({ userId: "js-b", roles: ROLES })).url);
    peers.q = await Peer.open("q", (await service.getClientAccessToken({ userId: "o'quote" })).url);
    peers.anon = await Peer.open("anon", (await service.getClientAccessToken()).url);
    peers.s = await Peer.open("s", (await service.getClientAccessToken({ userId: "js-s" })).url, false);
    check(await service.groupExists("js-initial"), "the token's initial group exists");
  },

  async sendToAllContentTypes() {
    await service.sendToAll("plain ✓", { contentType: "text/plain" });
    await service.sendToAll({ obj: [1, null] });
    await service.sendToAll(Buffer.from([0, 1, 255]));
    await service.sendToAll("a json string");
    const { a, s } = await fence();
    same(a.map((m) => [m.from, m.dataType, m.data]), [
      ["server", "text", "plain ✓"], ["server", "json", { obj: [1, null] }],
      ["server", "binary", Buffer.from([0, 1, 255]).toString("base64")], ["server", "json", "a json string"],
    ], "pubsub frames");
    same(s.map((m) => (Buffer.isBuffer(m) ? [...m] : m)), ["plain ✓", '{"obj":[1,null]}', [0, 1, 255], '"a json string"'], "simple frames");
  },

  async filtersWithOdata() {
    const b = "js-b", quoted = "o'quote";
    await service.sendToAll("to b", { contentType: "text/plain", filter: odata`userId eq ${b}` });
    await service.sendToAll("to quote", { contentType: "text/plain", filter: odata`userId eq ${quoted}` });
    await service.sendToAll("to anon", { contentType: "text/plain", filter: odata`userId eq ${null}` });
    await service.sendToAll("not a", { contentType: "text/plain", filter: odata`userId ne ${"js-a"} and userId ne ${null}`,
      excludedConnections: [peers.q.connectionId] });
    const { a, b: bb, q, anon } = await fence();
    same([dataOf(a), dataOf(bb), dataOf(q), dataOf(anon)], [[], ["to b", "not a"], ["to quote"], ["to anon"]], "filtered");
  },

  async sendToUserAndConnection() {
    await service.sendToUser("js-a", "user a", { contentType: "text/plain", messageTtlSeconds: 30 });
    await service.sendToConnection(peers.b.connectionId, { to: "b" }, { messageTtlSeconds: 0 });
    await service.sendToUser("nobody-here", "lost", { contentType: "text/plain" });
    const { a, b } = await fence();
    same([dataOf(a), dataOf(b)], [["user a"], [{ to: "b" }]], "user/connection sends");
    await rejects(service.sendToAll("x", { contentType: "text/plain", messageTtlSeconds: 301 }), 400, "ttl 301");
  },

  async groups() {
    const g = `js-group-${Date.now()}`;
    const group = service.group(g);
    check(!(await service.groupExists(g)), "empty group does not exist");
    await group.addConnection(peers.a.connectionId);
    await group.addUser("js-b");
    check(await service.groupExists(g), "group exists");
    await group.sendToAll("to group", { contentType: "text/plain", excludedConnections: [peers.b.connectionId] });
    await group.sendToAll({ g: true }, { filter: odata`userId eq ${"js-b"}` });
    const { a, b } = await fence();
    same(a.map((m) => [m.from, m.group, m.data]), [["group", g, "to group"]], "a in the group");
    same(b.map((m) => [m.from, m.group, m.data]), [["group", g, { g: true }]], "b in the group");

    const expected = [peers.a, peers.b].map((p) => ({ connectionId: p.connectionId, userId: p.userId }))
      .sort((x, y) => (x.connectionId < y.connectionId ? -1 : 1));
    const all = [];
    for await (const m of await group.listConnections()) all.push({ connectionId: m.connectionId, userId: m.userId });
    same(all, expected, "listConnections");
    const pages = [];
    for await (const page of (await group.listConnections({ maxPageSize: 1 })).byPage()) {
      pages.push(page.map((m) => m.connectionId));
    }
    same(pages, expected.map((m) => [m.connectionId]), "listConnections pages of 1 (nextLink followed)");

    await group.removeUser("js-b");
    await group.removeConnection(peers.a.connectionId);
    check(!(await service.groupExists(g)), "group empty again");
    await rejects(group.addConnection("no-such-connection"), 404, "add unknown connection");
    await rejects(group.addUser("no-such-user"), 404, "add unknown user");
    await group.removeConnection("no-such-connection");

    await service.addConnectionsToGroups([g, `${g}-2`], odata`startswith(userId, ${"js-"})`);
    const members = [];
    for await (const m of await group.listConnections()) members.push(m.userId);
    same(members.sort(), ["js-a", "js-b", "js-s"], "addConnectionsToGroups by filter");
    await service.removeConnectionsFromGroups([g], odata`userId eq ${"js-s"}`);
    await service.removeConnectionFromAllGroups(peers.a.connectionId);
    await service.removeUserFromAllGroups("js-b");
    const left = [];
    for await (const m of await service.group(`${g}-2`).listConnections()) left.push(m.userId);
    same(left, ["js-s"], "after removals");
    await service.removeUserFromAllGroups("js-s");
    check(!(await service.groupExists(g)) && !(await service.groupExists(`${g}-2`)), "groups empty");
  },

  async exists() {
    check(await service.connectionExists(peers.a.connectionId), "a exists");
    check(!(await service.connectionExists("no-such-connection")), "unknown connection");
    check(await service.userExists("js-b"), "user b exists");
    check(!(await service.userExists("no-such-user")), "unknown user");
  },

  async permissions() {
    const a = peers.a;
    const g = "js-perm";
    a.send({ type: "sendToGroup", group: g, dataType: "text", data: "1", ackId: 1 });
    same((await a.next("ack 1")).success, true, "allowed first");
    check(await service.hasPermission(a.connectionId, "sendToGroup"), "has sendToGroup");
    await service.revokePermission(a.connectionId, "sendToGroup");
    check(!(await service.hasPermission(a.connectionId, "sendToGroup")), "revoked");
    a.send({ type: "sendToGroup", group: g, dataType: "text", data: "2", ackId: 2 });
    const nack = await a.next("ack 2");
    same([nack.success, nack.error && nack.error.name], [false, "Forbidden"], "the next send fails at once");
    await service.grantPermission(a.connectionId, "sendToGroup", { targetName: g });
    check(await service.hasPermission(a.connectionId, "sendToGroup", { targetName: g }), "granted on g");
    check(!(await service.hasPermission(a.connectionId, "sendToGroup", { targetName: "other" })), "not on other");
    a.send({ type: "sendToGroup", group: g, dataType: "text", data: "3", ackId: 3 });
    same((await a.next("ack 3")).success, true, "allowed on g again");
    await rejects(service.grantPermission("no-such-connection", "sendToGroup"), 404, "grant to unknown connection");
  },

  async errors() {
    const e = await rejects(service.sendToAll("x", { contentType: "text/plain", filter: "userId eq" }), 400, "bad filter");
    check(/Invalid syntax/.test(e.message) || e.code === "InvalidFilter", `error ${e.code}: ${e.message}`);
    const got = await fence();
    same(Object.values(got).flat(), [], "nothing sent by the rejected request");
  },

  async closes() {
    await service.closeConnection(peers.b.connectionId, { reason: "bye b" });
    same(await peers.b.next("disconnected"), { type: "system", event: "disconnected", message: "bye b" }, "b told why");
    same((await peers.b.waitClosed()).code, 1008, "b close code");
    await service.group("js-initial").addConnection(peers.a.connectionId);  // (the groups step removed it)
    await service.group("js-initial").closeAllConnections({ reason: "initial group closed" });
    same(await peers.a.next("disconnected"), { type: "system", event: "disconnected", message: "initial group closed" }, "a told why");
    same((await peers.a.waitClosed()).code, 1008, "a close code");
    await service.closeUserConnections("o'quote", { reason: "user closed" });
    same((await peers.q.next("disconnected")).message, "user closed", "q told why");
    await service.closeAllConnections({ reason: "everyone" });
    same((await peers.anon.next("disconnected")).message, "everyone", "anon told why");
    const s = await peers.s.waitClosed();
    same([s.code, s.reason], [1008, "everyone"], "simple client close");
    await service.closeConnection("no-such-connection");
  },
};

for (const [name, run] of Object.entries(steps)) {
  try {
    await run();
    print({ step: name, ok: true });
  } catch (e) {
    print({ step: name, ok: false, error: String(e && e.stack ? e.stack : e) });
    process.exit(1);
  }
}
print({ step: "done", ok: true });
process.exit(0);
