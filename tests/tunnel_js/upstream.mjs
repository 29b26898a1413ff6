// A local Web PubSub event handler reached through the server tunnel, as `awps-tunnel run`
// does it: the tunnel proxy shipped in @azure/web-pubsub-socket.io 1.2.1
// (`serverProxies/HttpServerProxy`, the awps-tunnel tool's code) forwards each request that
// arrives through `/server/tunnel` to an @azure/web-pubsub-express handler on a local port
// nobody else can reach. The hub's event handler URL is `tunnel:///eventhandler/...`.
//
//   node upstream.mjs <connectionString> <hub>
//   -> {"event":"ready","port":P}       the tunnel is up
//   -> {"event":"connect"|"connected"|"message"|"disconnected", ...}   what the handler saw
//
// The handler: connect accepts with userId "u-" + the query's `name` (and refuses `name=bad`);
// a user event is echoed back as "echo:" + data.
import http from "node:http";
import { createRequire } from "node:module";
import { WebPubSubEventHandler } from "@azure/web-pubsub-express";

const require = createRequire(import.meta.url);
const { HttpServerProxy } = require("@azure/web-pubsub-socket.io/dist/serverProxies/HttpServerProxy.js");
const [connectionString, hub] = process.argv.slice(2);

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const handler = new WebPubSubEventHandler(hub, {
  path: "/eventhandler/",
  handleConnect(req, res) {
    const name = req.queries?.name?.[0] ?? "anon";
    out({ event: "connect", connectionId: req.context.connectionId, name });
    if (name === "bad") {
      res.fail(401, "no bad names here");
      return;
    }
    res.success({ userId: `u-${name}` });
  },
  handleUserEvent(req, res) {
    out({ event: "message", connectionId: req.context.connectionId, userId: req.context.userId,
          eventName: req.context.eventName, data: req.data });
    res.success(`echo:${req.data}`, "text");
  },
  onConnected(req) {
    out({ event: "connected", connectionId: req.context.connectionId, userId: req.context.userId });
  },
  onDisconnected(req) {
    out({ event: "disconnected", connectionId: req.context.connectionId, reason: req.reason ?? null });
  },
});

const middleware = handler.getMiddleware();
const local = http.createServer((req, res) => {
  // what Express would set: the middleware matches on baseUrl + path
  req.baseUrl = "";
  req.path = new URL(req.url, "http://localhost").pathname;
  middleware(req, res, () => {
    res.statusCode = 404;
    res.end("not an event handler path");
  });
});
await new Promise((resolve) => local.listen(0, "127.0.0.1", resolve));
const upstream = `http://127.0.0.1:${local.address().port}`;
const proxy = HttpServerProxy.fromConnectionString(connectionString, hub, { target: upstream });
await proxy.runAsync({
  handleProxiedRequest: async (request, _time, url, invoke) => {
    const response = await invoke();
    out({ event: "proxied", method: request.HttpMethod, path: url.pathname, status: response.StatusCode });
    return response;
  },
});
out({ event: "ready", port: local.address().port });
process.stdin.on("data", () => {});
process.stdin.on("end", () => process.exit(0));
