#!/usr/bin/env node
// An upstream event-handler app on @azure/web-pubsub-express 1.1 (Node 22), as an app developer
// would write it: tests/interop/test_node22_sdks.py points a fabric's webhook at it and reads
// what it saw from stdout.
//
// usage: node express11.mjs --hub HUB [--port N] [--allowed-endpoint URL]... [--deadline-ms N]
//                           [--endpoints-from-stdin]
//
// --endpoints-from-stdin: the allowed endpoints arrive as the first stdin line,
// {"allowedEndpoints": [URL, ...]}, once the fabric listens (so both can pick a free port
// themselves); until then every request is answered 503.
//
// Behaviour:
//   connect: res.success({roles: [joinLeaveGroup, sendToGroup]})
//   user events: "echo" -> the data back with its dataType; "fail" -> res.fail(400, "express says no");
//                "slow" -> never answered (the request ends when the fabric abandons it);
//                anything else -> res.success()
//   onGroupJoined / onGroupLeft / onConnected / onDisconnected: printed
//   A middleware in front of the SDK prints every request's x-webpubsub-metadata-* headers and,
//   for user events, answers each one back as X-WebPubSub-Metadata-<key> (plus `app: express`).
// stdout, one JSON object per line:
//   {"type":"listening","port":N}
//   {"type":"configured","allowedEndpoints":[...]}: with --endpoints-from-stdin, once the line arrived
//   {"type":"http","method":...,"path":...,"ceType":...,"eventName":...,"metadata":{...}}
//   {"type":"joined"|"left","group":...,"connectionId":...,"eventName":...,"userId":...}
//   {"type":"connected"|"disconnected"|"user-event", ...}
//   {"type":"abandoned","ceType":...,"eventName":...}: a request closed by the fabric before it was answered
// Exit: on stdin EOF (0), or 3 when the deadline passes.

import { parseArgs } from "node:util";
import express from "express";
import { WebPubSubEventHandler } from "@azure/web-pubsub-express";

const { values: args } = parseArgs({
  options: {
    hub: { type: "string" },
    port: { type: "string", default: "0" },
    "allowed-endpoint": { type: "string", multiple: true, default: [] },
    "deadline-ms": { type: "string", default: "120000" },
    "endpoints-from-stdin": { type: "boolean", default: false },
  },
});
const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const fatal = (error, code = 1) => {
  print({ type: "fatal", error: String(error && error.stack ? error.stack : error) });
  process.exit(code);
};
process.on("uncaughtException", (e) => fatal(e));
process.on("unhandledRejection", (e) => fatal(e));
setTimeout(() => fatal("deadline reached", 3), Number(args["deadline-ms"])).unref();
if (!args.hub) fatal("--hub is required");

const PREFIX = "x-webpubsub-metadata-";
const ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];
const context = (c) => ({ connectionId: c.connectionId, eventName: c.eventName, userId: c.userId ?? null });

const options = {
  path: "/eventhandler",
  handleConnect(req, res) {
    res.success({ roles: ROLES });
  },
  onConnected(req) {
    print({ type: "connected", ...context(req.context) });
  },
  onDisconnected(req) {
    print({ type: "disconnected", ...context(req.context), reason: req.reason });
  },
  onGroupJoined(req) {
    print({ type: "joined", group: req.group, ...context(req.context) });
  },
  onGroupLeft(req) {
    print({ type: "left", group: req.group, ...context(req.context) });
  },
  handleUserEvent(req, res) {
    const name = req.context.eventName;
    print({ type: "user-event", ...context(req.context), dataType: req.dataType,
            data: req.dataType === "binary" ? Buffer.from(req.data).toString("base64") : req.data });
    if (name === "echo") {
      const body = req.dataType === "json" ? JSON.stringify(req.data) : req.data;
      res.success(body, req.dataType);
    } else if (name === "fail") {
      res.fail(400, "express says no");
    } else if (name === "slow") {
      // no answer: the fabric gives up when the client cancels its invocation
    } else {
      res.success();
    }
  },
};
let middleware = null;
const configure = (allowedEndpoints) => {
  if (allowedEndpoints.length) options.allowedEndpoints = allowedEndpoints;
  middleware = new WebPubSubEventHandler(args.hub, options).getMiddleware();
};
if (!args["endpoints-from-stdin"]) configure(args["allowed-endpoint"]);

const app = express();
app.use((req, res, next) => {
  const metadata = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (name.startsWith(PREFIX)) metadata[name.slice(PREFIX.length)] = value;
  }
  const ceType = req.headers["ce-type"] ?? null;
  print({ type: "http", method: req.method, path: req.path, ceType, eventName: req.headers["ce-eventname"] ?? null,
          metadata });
  res.on("close", () => {
    if (!res.writableEnded) print({ type: "abandoned", ceType, eventName: req.headers["ce-eventname"] ?? null });
  });
  if (ceType && ceType.startsWith("azure.webpubsub.user.")) {
    for (const [key, value] of Object.entries(metadata)) res.setHeader(`X-WebPubSub-Metadata-${key}`, value);
    res.setHeader("X-WebPubSub-Metadata-App", "express");
  }
  next();
});
app.use((req, res, next) => {
  if (middleware === null) {
    res.statusCode = 503;
    res.end("not configured yet");
    return;
  }
  middleware(req, res, next);
});

const server = app.listen(Number(args.port), "127.0.0.1", () => print({ type: "listening", port: server.address().port }));
let pending = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
  if (middleware !== null) return;  // only the first line means anything
  pending += chunk;
  const end = pending.indexOf("\n");
  if (end < 0) return;
  const { allowedEndpoints } = JSON.parse(pending.slice(0, end));
  configure(allowedEndpoints);
  print({ type: "configured", allowedEndpoints });
});
process.stdin.on("end", () => server.close(() => process.exit(0)));
process.stdin.resume();
