#!/usr/bin/env node
// One @azure/web-pubsub-client 1.1 WebPubSubClient (Node 22), driven line by line from stdin,
// reporting on stdout: tests/interop/test_node22_sdks.py drives it against a running fabric
// to check invocations, group streams, keepalive and metadata as the 1.1 SDK uses them.
//
// usage: node client11.mjs --url WS_URL [--protocol json|reliable] [--deadline-ms N]
//          [--op-timeout-ms N] [--keepalive-interval-ms N] [--keepalive-timeout-ms N]
//
// stdin, one JSON object per line (id is echoed back; commands run one at a time, in order):
//   {"op":"start"} {"op":"stop"} {"op":"join","group":"g"} {"op":"leave","group":"g"}
//   {"op":"send","group":"g","dataType":"text","data":"x","noEcho":false}
//   {"op":"invoke","event":"e","dataType":"text","data":"x","abortAfterMs":N?}
//       invokeEvent; result {"response":{dataType,data}} or ok:false with the InvocationError
//   {"op":"openStream","group":"g","streamId":"s"?,"noEcho":false,"idleTimeoutMs":N?}
//       openGroupStream (resolves on streamAck 1); errors later reported as "stream-error" events
//   {"op":"write","streamId":"s","dataType":"text","data":"x"}   stream.write
//   {"op":"end","streamId":"s"}  {"op":"abort","streamId":"s","message":"m","userErrorCode":"c"}
//   {"op":"subscribeStreams","handleFromStart":true?}   onGroupStream: each stream's messages and
//       its completion are reported as "inbound-stream" events
//   {"op":"sleep","ms":N}
// stdout, one JSON object per line:
//   {"type":"ready"} / {"type":"result","id":N,"ok":...} / {"type":"event","event":...} / {"type":"fatal"}
//   group-message events carry metadata and stream (as the SDK parsed them); binary data is
//   {"base64":"..."}.
// Exit: 0 when stdin ends (after stopping the client), 1 on an internal error, 3 on the deadline.

import { parseArgs } from "node:util";
import { createInterface } from "node:readline";
import {
  WebPubSubClient,
  WebPubSubJsonProtocol,
  WebPubSubJsonReliableProtocol,
} from "@azure/web-pubsub-client";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    protocol: { type: "string", default: "reliable" },
    "deadline-ms": { type: "string", default: "60000" },
    "op-timeout-ms": { type: "string", default: "5000" },
    "keepalive-interval-ms": { type: "string" },
    "keepalive-timeout-ms": { type: "string" },
  },
});

const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const fatal = (error, code = 1) => {
  print({ type: "fatal", error: String(error && error.stack ? error.stack : error) });
  process.exit(code);
};
process.on("uncaughtException", (e) => fatal(e));
process.on("unhandledRejection", (e) => fatal(e));

const opTimeoutMs = Number(args["op-timeout-ms"]);
setTimeout(() => fatal(`deadline of ${args["deadline-ms"]} ms reached`, 3), Number(args["deadline-ms"])).unref();
if (!args.url) fatal("--url is required");

const encodeData = (data) => (data instanceof ArrayBuffer ? { base64: Buffer.from(data).toString("base64") } : data);
function decodeData(dataType, data) {
  if (dataType === "binary" || dataType === "protobuf") {
    const buf = Buffer.from(data, "base64");
    return buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
  }
  return data;
}
const describeError = (err) => ({
  name: err?.name ?? null,
  message: err?.message ?? String(err),
  errorDetail: err?.errorDetail ?? null,
  invocationId: err?.invocationId ?? null,
});

const protocols = { json: WebPubSubJsonProtocol, reliable: WebPubSubJsonReliableProtocol };
if (!(args.protocol in protocols)) fatal(`unknown --protocol ${args.protocol}`);
const options = {
  protocol: protocols[args.protocol](),
  autoReconnect: false,
  autoRejoinGroups: false,
  messageRetryOptions: { maxRetries: 0 },
};
if (args["keepalive-interval-ms"]) options.keepAliveIntervalInMs = Number(args["keepalive-interval-ms"]);
if (args["keepalive-timeout-ms"]) options.keepAliveTimeoutInMs = Number(args["keepalive-timeout-ms"]);
const client = new WebPubSubClient(args.url, options);

let stoppedResolve;
const stopped = new Promise((resolve) => (stoppedResolve = resolve));
let started = false;
const streams = new Map();

client.on("connected", (e) => print({ type: "event", event: "connected", connectionId: e.connectionId, userId: e.userId }));
client.on("disconnected", (e) => print({ type: "event", event: "disconnected", message: e.message ?? null }));
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
    metadata: e.message.metadata ?? null,
    stream: e.message.stream ?? null,
  }),
);
client.on("server-message", (e) =>
  print({
    type: "event",
    event: "server-message",
    dataType: e.message.dataType,
    data: encodeData(e.message.data),
    metadata: e.message.metadata ?? null,
  }),
);

async function stopClient() {
  if (!started) return;
  started = false;
  client.stop();
  await Promise.race([stopped, new Promise((r) => setTimeout(r, opTimeoutMs))]);
}

const stream = (cmd) => {
  const s = streams.get(cmd.streamId);
  if (!s) throw new Error(`no open stream ${cmd.streamId}`);
  return s;
};

const handlers = {
  async start() {
    await client.start({ abortSignal: AbortSignal.timeout(opTimeoutMs) });
    started = true;
    return {};
  },
  async stop() {
    await stopClient();
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
      abortSignal: AbortSignal.timeout(opTimeoutMs),
    });
  },
  async invoke(cmd) {
    const abortSignal = AbortSignal.timeout(cmd.abortAfterMs ?? opTimeoutMs);
    const response = await client.invokeEvent(cmd.event, decodeData(cmd.dataType, cmd.data), cmd.dataType, {
      abortSignal,
      invocationId: cmd.invocationId,
    });
    return { response: { invocationId: response.invocationId, dataType: response.dataType ?? null,
                         data: encodeData(response.data) ?? null } };
  },
  async openStream(cmd) {
    const s = await client.openGroupStream(cmd.group, {
      streamId: cmd.streamId,
      noEcho: Boolean(cmd.noEcho),
      idleTimeoutInMs: cmd.idleTimeoutMs,
    });
    s.onError((error) => print({ type: "event", event: "stream-error", streamId: s.streamId, error }));
    streams.set(s.streamId, s);
    return { streamId: s.streamId };
  },
  async write(cmd) {
    await stream(cmd).write(decodeData(cmd.dataType, cmd.data), cmd.dataType);
    return {};
  },
  async end(cmd) {
    await stream(cmd).end();
    return {};
  },
  async abort(cmd) {
    await stream(cmd).abort({ message: cmd.message, userErrorCode: cmd.userErrorCode });
    return {};
  },
  async subscribeStreams(cmd) {
    client.onGroupStream(
      async (inbound) => {
        print({ type: "event", event: "inbound-stream", phase: "open", group: inbound.groupName,
                streamId: inbound.streamId });
        const received = [];
        try {
          for await (const message of inbound) {
            received.push({ data: encodeData(message.data), dataType: message.dataType,
                            streamSequenceId: message.stream?.streamSequenceId ?? null });
          }
          print({ type: "event", event: "inbound-stream", phase: "done", streamId: inbound.streamId, received });
        } catch (err) {
          print({ type: "event", event: "inbound-stream", phase: "error", streamId: inbound.streamId, received,
                  error: { name: err?.name ?? null, message: err?.message ?? null,
                           userErrorCode: err?.userErrorCode ?? null } });
        }
      },
      { handleFromStart: cmd.handleFromStart ?? true },
    );
    return {};
  },
  async sleep(cmd) {
    await new Promise((r) => setTimeout(r, cmd.ms));
    return {};
  },
};

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

print({ type: "ready" });
