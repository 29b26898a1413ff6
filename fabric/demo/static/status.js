// The status page: hubs, connections and message rates, from /demo/api/stats every second.
// Rates are the difference of two samples of the counters over the time between them.
const $ = (id) => document.getElementById(id);
let previous = null;

function cell(text) { const td = document.createElement("td"); td.textContent = text; return td; }

async function refresh() {
  let stats;
  try {
    const answer = await fetch("/demo/api/stats", { cache: "no-store" });
    stats = await answer.json();
  } catch (err) {
    $("updated").textContent = "fabric unreachable";
    return;
  }
  const now = performance.now();
  const rows = Object.keys(stats).sort().map((hub) => {
    const s = stats[hub];
    const before = previous?.stats[hub];
    const seconds = previous ? (now - previous.at) / 1000 : 0;
    const rate = (key) => (before && seconds > 0 ? Math.max(0, (s[key] - before[key]) / seconds).toFixed(1) : "–");
    const tr = document.createElement("tr");
    tr.dataset.hub = hub;
    tr.append(cell(hub), cell(String(s.connections)), cell(rate("publications")), cell(rate("deliveries")),
      cell(String(s.publications)), cell(String(s.deliveries)));
    return tr;
  });
  if (rows.length === 0) { const tr = document.createElement("tr"); tr.append(cell("no hub has started yet")); rows.push(tr); }
  $("hubs").replaceChildren(...rows);
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  previous = { at: now, stats };
}

refresh();
setInterval(refresh, 1000);
