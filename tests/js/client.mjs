#!/usr/bin/env node
// One @azure/web-pubsub-client WebPubSubClient, driven line by line from stdin, reporting on
// stdout. Used by tests/interop/test_node_client_sdk.py to make Python and JavaScript clients
// talk to each other through `fabric serve`.
//
// usage:
//   node client.mjs --url WS_URL [options]
//   node client.mjs --connection-string CS --hub HUB [--user ID] [--role R]... [--group G]... [options]
//     (the token is minted locally by @azure/web-pubsub's getClientAccessToken)
// options: --protocol json|reliable (default reliable, the SDK's default)
//          --deadline-ms N  the whole process exits 3 after N ms (default 60000)
//          --op-timeout-ms N  each command's own bound (default 5000)
//   The URL or connection string may also come from $FABRIC_CLIENT_URL / $FABRIC_CONNECTION_STRING.
//
// stdin, one JSON object per line (id is echoed back):
//   {"id":1,"op":"start"}                   start(); the "connected" event line follows
//   {"id":2,"op":"join","group":"g"}        joinGroup with ack
//   {"id":3,"op":"leave","group":"g"}
//   {"id":4,"op":"send","group":"g","dataType":"text|json|binary","data":...,"noEcho":false}
//                                            binary data is given base64-encoded
//   {"id":5,"op":"event","event":"e","dataType":"text","data":"x"}   sendEvent with ack
//   {"id":6,"op":"stop"}                    stop(); answers once "stopped" fired
// stdout, one JSON object per line:
//   {"type":"ready","url":...}                                   once the client is built
//   {"type":"result","id":N,"ok":true,...} or {"type":"result","id":N,"ok":false,"error":{...}}
//   {"type":"event","event":"connected|disconnected|stopped|group-message|server-message|rejoin-group-failed",...}
//     binary message data is reported as {"base64":"..."}
//   {"type":"fatal","error":"..."}                               then a non-zero exit
// Exit: 0 when stdin ends (after stopping the client), 1 on an internal error, 3 on the deadline.

import { parseArgs } from "node:util";
import { createInterface } from "node:readline";
import {
  WebPubSubClient,
  WebPubSubJsonProtocol,
  WebPubSubJsonReliableProtocol,
} from "@azure/web-pubsub-client";
import { WebPubSubServiceClient } from "@azure/web-pubsub";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    "connection-string": { type: "string" },
    hub: { type: "string" },
    user: { type: "string" },
    role: { type: "string", multiple: true, default: [] },
    group: { type: "string", multiple: true, default: [] },
    protocol: { type: "string", default: "reliable" },
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

const deadlineMs = Number(args["deadline-ms"]);
const opTimeoutMs = Number(args["op-timeout-ms"]);
setTimeout(() => fatal(`deadline of ${deadlineMs} ms reached`, 3), deadlineMs).unref();

function encodeData(data) {
  if (data instanceof ArrayBuffer) return { base64: Buffer.from(data).toString("base64") };
  return data;
}

function decodeData(dataType, data) {
  if (dataType === "binary" || dataType === "protobuf") {
    const buf = Buffer.from(data, "base64");
    return buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
  }
  return data;
}

function describeError(err) {
  return {
    name: err?.name,
    message: err?.message,
    ackId: err?.ackId,
    errorDetail: err?.errorDetail ?? null,
  };
}

async function clientUrl() {
  const url = args.url ?? process.env.FABRIC_CLIENT_URL;
  if (url) return url;
  const cs = args["connection-string"] ?? process.env.FABRIC_CONNECTION_STRING;
  if (!cs || !args.hub) throw new Error("need --url, or --connection-string and --hub");
  const service = new WebPubSubServiceClient(cs, args.hub);
  const token = await service.getClientAccessToken({
    userId: args.user,
    roles: args.role,
    groups: args.group,
    expirationTimeInMinutes: 10,
  });
  return token.url;
}

const protocols = { json: WebPubSubJsonProtocol, reliable: WebPubSubJsonReliableProtocol };
if (!(args.protocol in protocols)) fatal(`unknown --protocol ${args.protocol}`);

const url = await clientUrl();
const client = new WebPubSubClient(url, {
  protocol: protocols[args.protocol](),
  autoReconnect: false,
  autoRejoinGroups: false,
  messageRetryOptions: { maxRetries: 0 },
});

let stoppedResolve;
const stopped = new Promise((resolve) => (stoppedResolve = resolve));
let started = false;

client.on("connected", (e) => print({ type: "event", event: "connected", connectionId: e.connectionId, userId: e.userId }));
client.on("disconnected", (e) =>
  print({ type: "event", event: "disconnected", connectionId: e.connectionId, message: e.message ?? null }),
);
client.on("stopped", () => {
  print({ type: "event", event: "stopped" });
  stoppedResolve();
});
client.on("group-message", (e) =>
  print({
    type: "event",
    event: "group-message",
    group: e.message.group,
    dataType: e.message.dataType,
    data: encodeData(e.message.data),
    fromUserId: e.message.fromUserId ?? null,
    sequenceId: e.message.sequenceId ?? null,
  }),
);
client.on("server-message", (e) =>
  print({
    type: "event",
    event: "server-message",
    dataType: e.message.dataType,
    data: encodeData(e.message.data),
    sequenceId: e.message.sequenceId ?? null,
  }),
);
client.on("rejoin-group-failed", (e) =>
  print({ type: "event", event: "rejoin-group-failed", group: e.group, error: describeError(e.error) }),
);

async function stopClient() {
  if (!started) return;
  started = false;
  client.stop();
  await Promise.race([stopped, new Promise((r) => setTimeout(r, opTimeoutMs))]);
}

const handlers = {
  async start() {
    await client.start({ abortSignal: AbortSignal.timeout(opTimeoutMs) });
    started = true;
    return {};
  },
  async join(cmd) {
    return client.joinGroup(cmd.group, { abortSignal: AbortSignal.timeout(opTimeoutMs) });
  },
  async leave(cmd) {
    return client.leaveGroup(cmd.group, { abortSignal: AbortSignal.timeout(opTimeoutMs) });
  },
  async send(cmd) {
    return client.sendToGroup(cmd.group, decodeData(cmd.dataType, cmd.data), cmd.dataType, {
      noEcho: Boolean(cmd.noEcho),
      fireAndForget: Boolean(cmd.fireAndForget),
      abortSignal: AbortSignal.timeout(opTimeoutMs),
    });
  },
  async event(cmd) {
    return client.sendEvent(cmd.event, decodeData(cmd.dataType, cmd.data), cmd.dataType, {
      abortSignal: AbortSignal.timeout(opTimeoutMs),
    });
  },
  async stop() {
    await stopClient();
    return {};
  },
};

// Commands run one at a time, in order, like a test script would call them.
let chain = Promise.resolve();
const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    fatal(`bad command line ${JSON.stringify(line)}: ${e}`);
  }
  chain = chain.then(async () => {
    const handler = handlers[cmd.op];
    if (!handler) {
      print({ type: "result", id: cmd.id, ok: false, error: { name: "UnknownOp", message: String(cmd.op) } });
      return;
    }
    try {
      const result = await handler(cmd);
      print({ type: "result", id: cmd.id, ok: true, ...(result ?? {}) });
    } catch (err) {
      print({ type: "result", id: cmd.id, ok: false, error: describeError(err) });
    }
  });
});
rl.on("close", () => {
  chain.then(stopClient).then(
    () => process.exit(0),
    (e) => fatal(e),
  );
});

print({ type: "ready", url: url.split("?")[0] });
