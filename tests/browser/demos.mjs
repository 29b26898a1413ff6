// Drives the demos in headless Chromium (Debian's /usr/bin/chromium) with playwright-core:
// two pages chat and draw, each must see the other's messages and strokes; a late joiner
// gets the drawing so far; hostile message text shows as text and never runs; the status
// page counts the connections. Screenshots go to OUT. Prints one JSON line of results and
// exits non-zero on the first failed check.
//
//   node demos.mjs BASE_URL OUT_DIR [CHROMIUM]
import { chromium } from "playwright-core";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, out, executable = "/usr/bin/chromium"] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), "fabric-chromium-"));
const results = {};
const HOSTILE = `<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>"'&amp;`;

function check(condition, message) {
  if (!condition) throw new Error(message);
}

const context = await chromium.launchPersistentContext(profile, {
  executablePath: executable,
  headless: true,
  viewport: { width: 1100, height: 760 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
context.setDefaultTimeout(15000);
const errors = [];
async function page() {
  const p = await context.newPage();
  p.on("pageerror", (e) => errors.push(String(e)));
  p.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  return p;
}

try {
  // ---- chat -------------------------------------------------------------------------
  const alice = await page();
  const bob = await page();
  for (const [p, name] of [[alice, "alice"], [bob, "bob"]]) {
    await p.goto(`${base}/demo/chat/?name=${name}`);
    await p.fill("#room", "lobby");
    await p.click("#join");
    await p.waitForFunction((n) => document.getElementById("state").textContent === `connected as ${n}`, name);
    await p.waitForSelector("#chat:not([hidden])");
  }
  await alice.waitForFunction(() => [...document.querySelectorAll("#online li")].some((li) => li.textContent === "bob"));
  await alice.fill("#text", "hello from alice");
  await alice.press("#text", "Enter");
  await bob.waitForFunction(() => [...document.querySelectorAll("#messages .msg")]
    .some((m) => m.querySelector(".who")?.textContent === "alice" && m.textContent.endsWith("hello from alice")));
  await bob.fill("#text", "hi alice, bob here");
  await bob.press("#text", "Enter");
  await alice.waitForFunction(() => [...document.querySelectorAll("#messages .msg")]
    .some((m) => m.querySelector(".who")?.textContent === "bob" && m.textContent.endsWith("hi alice, bob here")));
  await bob.fill("#text", HOSTILE);
  await bob.press("#text", "Enter");
  await alice.waitForFunction((h) => [...document.querySelectorAll("#messages .msg")]
    .some((m) => m.lastChild?.textContent === h), HOSTILE);
  await alice.waitForTimeout(300);
  for (const p of [alice, bob]) {
    check(await p.evaluate(() => window.__pwned === undefined), "hostile text ran as script");
    check(await p.evaluate(() => document.querySelectorAll("#messages img, #messages script").length === 0),
      "hostile text became markup");
  }
  results.chat = {
    alice: await alice.$$eval("#messages .msg", (ms) => ms.map((m) => m.textContent)),
    bob: await bob.$$eval("#messages .msg", (ms) => ms.map((m) => m.textContent)),
  };
  await alice.screenshot({ path: join(out, "chat.png") });

  // ---- whiteboard ---------------------------------------------------------------------
  const a = await page();
  const b = await page();
  for (const [p, name] of [[a, "alice"], [b, "bob"]]) {
    await p.goto(`${base}/demo/whiteboard/?name=${name}`);
    await p.fill("#room", "r1");
    await p.click("button[type=submit]");
    await p.waitForFunction(() => document.getElementById("board").dataset.ready === "1");
  }
  async function drawPath(p, color, points) {
    await p.selectOption("#color", color);
    const box = await p.locator("#board").boundingBox();
    const at = ([x, y]) => [box.x + x * box.width, box.y + y * box.height];
    await p.mouse.move(...at(points[0]));
    await p.mouse.down();
    for (const pt of points.slice(1)) await p.mouse.move(...at(pt), { steps: 4 });
    await p.mouse.up();
  }
  const wave = (y0, amp, phase) => Array.from({ length: 20 }, (_, i) => [0.1 + i * 0.04, y0 + amp * Math.sin(i / 3 + phase)]);
  await drawPath(a, "#2563eb", wave(0.3, 0.08, 0));
  await b.waitForFunction(() => window.demo.drawn() >= 1);
  await drawPath(b, "#dc2626", wave(0.6, 0.1, 1.5));
  await a.waitForFunction((n) => window.demo.drawn() >= n, await b.evaluate(() => window.demo.drawn()));
  await drawPath(a, "#16a34a", [[0.2, 0.85], [0.5, 0.75], [0.8, 0.85]]);
  const total = await a.evaluate(() => window.demo.drawn());
  await b.waitForFunction((n) => window.demo.drawn() >= n, total);
  // a pixel on alice's blue wave, as bob's canvas shows it
  const blue = await b.evaluate(() => {
    const board = document.getElementById("board");
    const d = board.getContext("2d").getImageData(Math.round(0.1 * board.width), Math.round(0.3 * board.height), 1, 1).data;
    return [d[0], d[1], d[2], d[3]];
  });
  check(blue[3] > 0 && blue[2] > blue[0], `bob's canvas lacks alice's blue stroke: ${blue}`);
  const late = await page();
  await late.goto(`${base}/demo/whiteboard/?name=carol`);
  await late.fill("#room", "r1");
  await late.click("button[type=submit]");
  await late.waitForFunction(() => document.getElementById("board").dataset.ready === "1");
  const lateDrawn = await late.evaluate(() => window.demo.drawn());
  check(lateDrawn === await b.evaluate(() => window.demo.drawn()), `the late joiner got ${lateDrawn} strokes`);
  results.whiteboard = { alice: total, bob: await b.evaluate(() => window.demo.drawn()), late: lateDrawn, pixel: blue };
  await a.screenshot({ path: join(out, "whiteboard.png") });

  // ---- status -----------------------------------------------------------------------
  const status = await page();
  await status.goto(`${base}/demo/status`);
  await status.waitForFunction(() => {
    const row = document.querySelector('#hubs tr[data-hub="demochat"]');
    return row && Number(row.children[1].textContent) >= 2 && row.children[2].textContent !== "–";
  });
  results.status = await status.$$eval("#hubs tr", (rows) => rows.map((r) => [...r.children].map((c) => c.textContent)));
  await status.screenshot({ path: join(out, "status.png") });
  check(errors.length === 0, `page errors: ${errors.join(" | ")}`);
  console.log(JSON.stringify({ ok: true, ...results }));
} catch (err) {
  console.log(JSON.stringify({ ok: false, error: String(err?.stack ?? err), errors, ...results }));
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
