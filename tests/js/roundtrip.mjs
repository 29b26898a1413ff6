#!/usr/bin/env node
// A self-contained JavaScript-only scenario against `fabric serve`: two WebPubSubClients with
// tokens minted by @azure/web-pubsub's getClientAccessToken, then join / sendToGroup (acked)
// with text, json and binary payloads / noEcho / leaveGroup / a Forbidden join.
//
// usage: node roundtrip.mjs --connection-string CS --hub HUB [--protocol json|reliable] [--deadline-ms N]
//        (or $FABRIC_CONNECTION_STRING)
// stdout: one JSON line per step: {"step":"...","ok":true,...}; finally {"step":"done","ok":true}
//         or {"step":"...","ok":false,"error":"..."} and a non-zero exit.
// Exit: 0 all steps passed, 1 a step failed, 3 the deadline (default 30000 ms) passed.

import { parseArgs } from "node:util";
import { isDeepStrictEqual } from "node:util";
import {
  WebPubSubClient,
  WebPubSubJsonProtocol,
  WebPubSubJsonReliableProtocol,
} from "@azure/web-pubsub-client";
import { WebPubSubServiceClient } from "@azure/web-pubsub";

const { values: args } = parseArgs({
  options: {
    "connection-string": { type: "string" },
    hub: { type: "string" },
    protocol: { type: "string", default: "reliable" },
    "deadline-ms": { type: "string", default: "30000" },
  },
});
const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const WAIT_MS = 5000;
setTimeout(() => {
  print({ step: "deadline", ok: false, error: `deadline of ${args["deadline-ms"]} ms reached` });
  process.exit(3);
}, Number(args["deadline-ms"])).unref();

const cs = args["connection-string"] ?? process.env.FABRIC_CONNECTION_STRING;
if (!cs || !args.hub) {
  print({ step: "args", ok: false, error: "need --connection-string and --hub" });
  process.exit(1);
}
const protocolFactory = { json: WebPubSubJsonProtocol, reliable: WebPubSubJsonReliableProtocol }[args.protocol];
if (!protocolFactory) {
  print({ step: "args", ok: false, error: `unknown --protocol ${args.protocol}` });
  process.exit(1);
}

class StepFailed extends Error {}
function check(cond, message) {
  if (!cond) throw new StepFailed(message);
}

// A client plus a queue of the group messages it received, awaitable with a timeout.
async function openClient(service, userId, roles) {
  const { url } = await service.getClientAccessToken({ userId, roles, expirationTimeInMinutes: 10 });
  const client = new WebPubSubClient(url, {
    protocol: protocolFactory(),
    autoReconnect: false,
    autoRejoinGroups: false,
    messageRetryOptions: { maxRetries: 0 },
  });
  const inbox = [];
  let wake = null;
  client.on("group-message", (e) => {
    inbox.push(e.message);
    if (wake) wake();
  });
  const connected = new Promise((resolve) => client.on("connected", resolve));
  await client.start({ abortSignal: AbortSignal.timeout(WAIT_MS) });
  const info = await withTimeout(connected, `${userId}: no connected event`);
  return {
    client,
    info,
    async next(what) {
      const deadline = Date.now() + WAIT_MS;
      while (inbox.length === 0) {
        const left = deadline - Date.now();
        check(left > 0, `${userId}: no group message (${what}) within ${WAIT_MS} ms`);
        await new Promise((resolve) => {
          wake = resolve;
          setTimeout(resolve, left);
        });
        wake = null;
      }
      return inbox.shift();
    },
  };
}

function withTimeout(promise, message) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => (timer = setTimeout(() => reject(new StepFailed(message)), WAIT_MS))),
  ]).finally(() => clearTimeout(timer));
}

const ack = () => ({ abortSignal: AbortSignal.timeout(WAIT_MS) });
const bin = (bytes) => new Uint8Array(bytes).buffer;
const sameData = (dataType, got, want) =>
  dataType === "binary" ? Buffer.from(got).equals(Buffer.from(want)) : isDeepStrictEqual(got, want);

const clients = [];
let step = "setup";
try {
  const service = new WebPubSubServiceClient(cs, args.hub);
  const roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];
  const group = `g_${process.pid}`;

  step = "start";
  const alice = await openClient(service, "js_alice", roles);
  const bob = await openClient(service, "js_bob", roles);
  clients.push(alice, bob);
  check(alice.info.connectionId && bob.info.connectionId && alice.info.connectionId !== bob.info.connectionId,
    `connection ids ${alice.info.connectionId} / ${bob.info.connectionId}`);
  check(alice.info.userId === "js_alice", `userId ${alice.info.userId}`);
  print({ step, ok: true, connectionIds: [alice.info.connectionId, bob.info.connectionId] });

  step = "join";
  await bob.client.joinGroup(group, ack());
  print({ step, ok: true });

  step = "sendToGroup";
  const payloads = [
    ["text", "héllo ✓"],
    ["json", { n: 1, list: [1, "two", null], nested: { t: true } }],
    ["json", "a json string"],
    ["binary", bin([0, 1, 254, 255, 128])],
  ];
  for (const [dataType, data] of payloads) {
    const result = await alice.client.sendToGroup(group, data, dataType, ack());
    check(result.isDuplicated === false, `unexpected duplicate ack ${JSON.stringify(result)}`);
  }
  for (const [dataType, data] of payloads) {
    const msg = await bob.next(dataType);
    check(msg.group === group && msg.dataType === dataType && sameData(dataType, msg.data, data),
      `expected ${dataType} ${JSON.stringify(data)}, got ${msg.dataType} ${JSON.stringify(msg.data)}`);
    check(msg.fromUserId === "js_alice", `fromUserId ${msg.fromUserId}`);
  }
  print({ step, ok: true, count: payloads.length });

  step = "noEcho";
  await alice.client.joinGroup(group, ack());
  await alice.client.sendToGroup(group, "not-for-alice", "text", { noEcho: true, ...ack() });
  await alice.client.sendToGroup(group, "for-everyone", "text", ack());
  const aliceFirst = await alice.next("echo");
  check(aliceFirst.data === "for-everyone", `alice got ${JSON.stringify(aliceFirst.data)} first`);
  check((await bob.next("noEcho 1")).data === "not-for-alice", "bob missed the noEcho message");
  check((await bob.next("noEcho 2")).data === "for-everyone", "bob missed the echoed message");
  print({ step, ok: true });

  step = "leaveGroup";
  await bob.client.leaveGroup(group, ack());
  await alice.client.sendToGroup(group, "after-leave", "text", ack());
  await bob.client.joinGroup(group, ack());
  await alice.client.sendToGroup(group, "after-rejoin", "text", ack());
  const bobNext = await bob.next("after rejoin");
  check(bobNext.data === "after-rejoin", `bob got ${JSON.stringify(bobNext.data)} after leaving`);
  print({ step, ok: true });

  step = "forbidden";
  const nobody = await openClient(service, "js_nobody", []);
  clients.push(nobody);
  let error = null;
  try {
    await nobody.client.joinGroup(group, ack());
  } catch (e) {
    error = e;
  }
  check(error && error.errorDetail && error.errorDetail.name === "Forbidden",
    `joinGroup without a role: ${error ? JSON.stringify({ message: error.message, detail: error.errorDetail }) : "succeeded"}`);
  print({ step, ok: true, error: error.errorDetail });

  print({ step: "done", ok: true });
} catch (e) {
  print({ step, ok: false, error: String(e && e.stack ? e.stack : e) });
  process.exitCode = 1;
} finally {
  for (const c of clients) c.client.stop();
  // Stopped clients leave no timers behind; give the close frames a moment, bounded.
  setTimeout(() => process.exit(process.exitCode ?? 0), 200).unref();
}
