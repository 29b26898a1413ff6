// Builds the demos' browser bundles into ../static/vendor/ (run: npm ci && node build.mjs).
// @azure/web-pubsub-client ships ES modules that import other packages, so it is bundled
// into one ES module; socket.io-client ships a browser bundle, copied as it is.
import { build } from "esbuild";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";

const out = new URL("../static/vendor/", import.meta.url);
const version = (name) => JSON.parse(readFileSync(`node_modules/${name}/package.json`, "utf8")).version;

await build({
  stdin: { contents: 'export { WebPubSubClient } from "@azure/web-pubsub-client";', resolveDir: "." },
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2020",
  minify: true,
  legalComments: "eof",
  outfile: new URL("web-pubsub-client.min.js", out).pathname,
  banner: { js: `/* @azure/web-pubsub-client ${version("@azure/web-pubsub-client")} (MIT, Microsoft Corporation), bundled with esbuild */` },
});
copyFileSync("node_modules/socket.io-client/dist/socket.io.min.js", new URL("socket.io.min.js", out).pathname);
writeFileSync(new URL("VERSIONS.txt", out).pathname,
  `@azure/web-pubsub-client ${version("@azure/web-pubsub-client")} (MIT)\nsocket.io-client ${version("socket.io-client")} (MIT)\n`);
console.log("built", out.pathname);
