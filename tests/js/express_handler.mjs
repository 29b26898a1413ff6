#!/usr/bin/env node
// An upstream event-handler app built with Microsoft's @azure/web-pubsub-express on express,
// as an app developer would write it. tests/interop/test_express_handler.py starts it, points
// `fabric serve --event-handler HUB=http://127.0.0.1:PORT/eventhandler/{event}` at it, and
// reads what it saw from stdout.
//
// usage: node express_handler.mjs --hub HUB [--port N] [--allowed-endpoint URL]...
//                                 [--deadline-ms N]
//   --allowed-endpoint: passed as `allowedEndpoints` (then the SDK answers the abuse-protection
//   OPTIONS with those hosts instead of "*").
//
// Behaviour (chosen by the client's query string or event name):
//   connect: ?fail=STATUS -> res.fail(STATUS, "refused by express"); otherwise
//            res.setState("greeting", "hi <name>") and res.success({userId: "express-<name>",
//            groups: ["express-group"], roles: [joinLeaveGroup, sendToGroup]}) (name = ?name, or "anon")
//   user events: "echo" -> the data back with its dataType; "state" -> the connection's
//            states as JSON; "count" -> res.setState("count", n + 1) and the new count as text;
//            "fail" -> res.fail(500, "express says no"); anything else -> res.success() (no reply)
// stdout, one JSON object per line:
//   {"type":"listening","port":N}
//   {"type":"http","method":"OPTIONS","path":...,"origin":...,"awps":...,"status":N}   every request
//   {"type":"connect"|"connected"|"disconnected"|"user-event", ...}                 every callback
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

const ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"];

const options = {
  path: "/eventhandler",
  handleConnect(req, res) {
    const query = req.queries ?? req.query ?? {};
    const name = (query.name ?? ["anon"])[0];
    print({
      type: "connect",
      connectionId: req.context.connectionId,
      userId: req.context.userId ?? null,
      hub: req.context.hub,
      signature: req.context.signature ?? null,
      query,
      subprotocols: req.subprotocols ?? null,
      claims: req.claims ?? null,
      clientCertificates: req.clientCertificates ?? null,
      hasHeaders: typeof req.headers === "object" && req.headers !== null,
    });
    if (query.fail) {
      res.fail(Number(query.fail[0]), "refused by express");
      return;
    }
    res.setState("greeting", `hi ${name}`);
    res.success({ userId: `express-${name}`, groups: ["express-group"], roles: ROLES });
  },
  onConnected(req) {
    print({ type: "connected", connectionId: req.context.connectionId, userId: req.context.userId ?? null,
            states: req.context.states });
  },
  onDisconnected(req) {
    print({ type: "disconnected", connectionId: req.context.connectionId, userId: req.context.userId ?? null,
            reason: req.reason ?? null, states: req.context.states });
  },
  handleUserEvent(req, res) {
    const ctx = req.context;
    const data = Buffer.isBuffer(req.data) ? { base64: req.data.toString("base64") } : req.data;
    print({ type: "user-event", event: ctx.eventName, connectionId: ctx.connectionId, userId: ctx.userId ?? null,
            dataType: req.dataType, data, states: ctx.states });
    switch (ctx.eventName) {
      case "echo":
        res.success(req.dataType === "json" ? JSON.stringify(req.data) : req.data, req.dataType);
        return;
      case "state":
        res.success(JSON.stringify(ctx.states), "json");
        return;
      case "count": {
        const next = (ctx.states.count ?? 0) + 1;
        res.setState("count", next);
        res.success(String(next), "text");
        return;
      }
      case "fail":
        res.fail(500, "express says no");
        return;
      default:
        res.success();
    }
  },
};
if (args["allowed-endpoint"].length) options.allowedEndpoints = args["allowed-endpoint"];
const handler = new WebPubSubEventHandler(args.hub, options);

const app = express();
app.use((req, res, next) => {
  res.on("finish", () =>
    print({ type: "http", method: req.method, path: req.path, origin: req.get("webhook-request-origin") ?? null,
            awps: req.get("ce-awpsversion") ?? null, allowed: res.getHeader("webhook-allowed-origin") ?? null,
            status: res.statusCode }),
  );
  next();
});
app.use(handler.getMiddleware());

const server = app.listen(Number(args.port), "127.0.0.1", () => print({ type: "listening", port: server.address().port }));
process.stdin.on("data", () => {});
process.stdin.on("end", () => server.close(() => process.exit(0)));
