// One socket.io-client that reconnects by itself (tests/tunnel/test_default_mode.py):
//
//   node reconnect.mjs <endpoint> <path> <token>
//   -> {"event":"welcome"|"connect"|"disconnect"|"connect_error", ...} as they happen
//   <- {"id":N,"op":"echo","text":"..."}  -> {"id":N,"ok":true,"result":"<text>:<count>"}
import readline from "node:readline";
import { io } from "socket.io-client";

const [endpoint, path, token] = process.argv.slice(2);

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const socket = io(endpoint, {
  path, query: { access_token: token }, reconnectionDelay: 200, reconnectionDelayMax: 1000, timeout: 10000,
});
socket.on("connect", () => out({ event: "connect" }));
socket.on("welcome", (nsp) => out({ event: "welcome", nsp }));
socket.on("disconnect", (reason) => out({ event: "disconnect", reason }));
socket.on("connect_error", (err) => out({ event: "connect_error", error: String(err?.message ?? err) }));

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  try {
    const result = await socket.timeout(10000).emitWithAck(cmd.op, cmd.text);
    out({ id: cmd.id, ok: true, result });
  } catch (err) {
    out({ id: cmd.id, ok: false, error: String(err?.message ?? err) });
  }
});
rl.on("close", () => process.exit(0));
