#!/usr/bin/env node
// One @azure/web-pubsub-client WebPubSubClient on the JSON reliable subprotocol
// (WebPubSubJsonReliableProtocol) that joins a group and records every group message, for
// tests/interop/test_reliable_sdks.py: the test publishes "m0", "m1", ... and aborts this
// client's socket (through a proxy) while it runs; the SDK recovers by itself.
//
// usage: node reliable_subscriber.mjs --url WS_URL --group G --expect N
//                                     [--deadline-ms 60000] [--op-timeout-ms 5000]
// stdin: the line "finish" (or EOF) ends the run: the client is stopped and the report printed.
// stdout, one JSON object per line:
//   {"type":"ready","connectionId":...}           connected and joined
//   {"type":"progress","received":N,"maxSequenceId":M}   every 500 messages (diagnostics)
//   {"type":"done","ok":true|false,"problems":[...],"connectionIdAtStart":...,
//    "connectionIdAtEnd":...,"connectedEvents":[ids],"disconnectedEvents":[...],
//    "received":N,"data":[...],"sequenceIds":[...]}
//   {"type":"fatal","error":"..."}
// Checks made here (the Python side checks the lists again): exactly N messages "m0".."m{N-1}"
// in order, sequence ids 1..N, one `connected` event, no `disconnected` event before the stop
// (stop() fires one itself), and the SDK's connection id unchanged at the end.
// Exit: 0 if every check passed, 1 if one failed or on an internal error, 3 on the deadline.

import { parseArgs } from "node:util";
import { createInterface } from "node:readline";
import { WebPubSubClient, WebPubSubJsonReliableProtocol } from "@azure/web-pubsub-client";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    group: { type: "string" },
    expect: { type: "string" },
    "deadline-ms": { type: "string", default: "60000" },
    "op-timeout-ms": { type: "string", default: "5000" },
  },
});

const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const fatal = (error, code = 1) => {
  print({ type: "fatal", error: String(error && error.stack ? error.stack : error) });
  process.exit(code);
};
process.on("uncaughtException", (e) => fatal(e));
process.on("unhandledRejection", (e) => fatal(e));

if (!args.url || !args.group || !args.expect) fatal("need --url, --group and --expect");
const expected = Number(args.expect);
const opTimeoutMs = Number(args["op-timeout-ms"]);
const deadlineMs = Number(args["deadline-ms"]);
setTimeout(() => fatal(`deadline of ${deadlineMs} ms reached`, 3), deadlineMs).unref();

const client = new WebPubSubClient(args.url, {
  protocol: WebPubSubJsonReliableProtocol(),
  autoReconnect: false, // a fresh connection would be a failure here: recovery must do
  autoRejoinGroups: false,
  messageRetryOptions: { maxRetries: 0 },
});

const connectedEvents = [];
const disconnectedEvents = [];
const data = [];
const sequenceIds = [];
let stoppedResolve;
const stopped = new Promise((resolve) => (stoppedResolve = resolve));
let connectedResolve;
const firstConnected = new Promise((resolve) => (connectedResolve = resolve));

client.on("connected", (e) => {
  connectedEvents.push(e.connectionId);
  connectedResolve(e.connectionId);
});
client.on("disconnected", (e) =>
  disconnectedEvents.push({ connectionId: e.connectionId ?? null, message: e.message ?? null }),
);
client.on("stopped", () => stoppedResolve());
client.on("group-message", (e) => {
  data.push(e.message.data);
  sequenceIds.push(e.message.sequenceId ?? null);
  if (data.length % 500 === 0) {
    print({ type: "progress", received: data.length, maxSequenceId: e.message.sequenceId ?? null });
  }
});

const withTimeout = (promise, what) =>
  Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer in ${opTimeoutMs} ms`)), opTimeoutMs)),
  ]);

await client.start({ abortSignal: AbortSignal.timeout(opTimeoutMs) });
const connectionIdAtStart = await withTimeout(firstConnected, "system/connected");
await client.joinGroup(args.group, { abortSignal: AbortSignal.timeout(opTimeoutMs) });
print({ type: "ready", connectionId: connectionIdAtStart });

let finishing = false;
async function finish() {
  if (finishing) return;
  finishing = true;
  // private, but the only place the SDK keeps the id it would recover with
  const connectionIdAtEnd = client._connectionId ?? null;
  const disconnectedBeforeStop = disconnectedEvents.slice(); // stop() itself fires disconnected
  client.stop();
  await Promise.race([stopped, new Promise((r) => setTimeout(r, opTimeoutMs))]);
  const problems = [];
  if (data.length !== expected) problems.push(`received ${data.length} messages, expected ${expected}`);
  const firstBadData = data.findIndex((d, i) => d !== `m${i}`);
  if (firstBadData >= 0) problems.push(`message ${firstBadData} is ${JSON.stringify(data[firstBadData])}`);
  const firstBadSeq = sequenceIds.findIndex((s, i) => s !== i + 1);
  if (firstBadSeq >= 0) problems.push(`message ${firstBadSeq} has sequenceId ${sequenceIds[firstBadSeq]}`);
  if (connectedEvents.length !== 1) problems.push(`connected fired ${connectedEvents.length} times: ${connectedEvents}`);
  if (disconnectedBeforeStop.length !== 0) {
    problems.push(`disconnected fired: ${JSON.stringify(disconnectedBeforeStop)}`);
  }
  if (connectionIdAtEnd !== connectionIdAtStart) {
    problems.push(`connection id changed from ${connectionIdAtStart} to ${connectionIdAtEnd}`);
  }
  print({
    type: "done",
    ok: problems.length === 0,
    problems,
    connectionIdAtStart,
    connectionIdAtEnd,
    connectedEvents,
    disconnectedEvents: disconnectedBeforeStop,
    received: data.length,
    data,
    sequenceIds,
  });
  process.exit(problems.length === 0 ? 0 : 1);
}

const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (line.trim() === "finish") finish().catch(fatal);
});
rl.on("close", () => finish().catch(fatal));
