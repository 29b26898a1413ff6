// The chat demo: Microsoft's Web PubSub client SDK (JSON subprotocol) against the fabric.
// Rooms are groups; the sender's name is the fabric's fromUserId (from the token), never a
// field a page can forge. Text from other people is inserted with textContent only.
import { WebPubSubClient } from "/demo/static/vendor/web-pubsub-client.min.js";

const $ = (id) => document.getElementById(id);
const ROOM = /^[A-Za-z0-9_-]{1,32}$/;
const MAX_SHOWN = 500;
let client = null;
let room = null;

function show(who, text, system = false) {
  const line = document.createElement("div");
  line.className = "msg" + (system ? " system" : "");
  if (who) {
    const name = document.createElement("span");
    name.className = "who";
    name.textContent = who;
    line.appendChild(name);
  }
  line.appendChild(document.createTextNode(text));
  const box = $("messages");
  box.appendChild(line);
  while (box.childElementCount > MAX_SHOWN) box.firstElementChild.remove();
  box.scrollTop = box.scrollHeight;
}

function showOnline(users, count) {
  const list = $("online");
  list.replaceChildren(...users.map((u) => { const li = document.createElement("li"); li.textContent = u; return li; }));
  $("count").textContent = `(${count})`;
}

async function join(event) {
  event.preventDefault();
  const name = $("name").value.trim();
  const wanted = $("room").value.trim();
  if (!ROOM.test(wanted)) { $("state").textContent = "room: letters, digits, _ or -"; return; }
  room = `room-${wanted}`;
  const negotiate = async () => {
    const answer = await fetch(`/demo/api/negotiate?app=chat&user=${encodeURIComponent(name)}`);
    if (!answer.ok) throw new Error((await answer.json()).message);
    return (await answer.json()).url;
  };
  client = new WebPubSubClient({ getClientAccessUrl: negotiate });
  client.on("connected", () => { $("state").textContent = `connected as ${name}`; });
  client.on("disconnected", () => { $("state").textContent = "disconnected"; });
  client.on("group-message", (e) => {
    if (e.message.group !== room) return;
    const data = e.message.data;
    const text = typeof data === "object" && data !== null && typeof data.text === "string" ? data.text : String(data);
    show(e.message.fromUserId ?? "?", text);
  });
  client.on("server-message", (e) => {
    const data = e.message.data;
    if (data && data.kind === "presence") {
      show(null, `${data.user} ${data.event === "joined" ? "joined" : "left"}`, true);
      showOnline(Array.isArray(data.online) ? data.online.map(String) : [], Number(data.count) || 0);
    }
  });
  try {
    await client.start();
    await client.joinGroup(room);
  } catch (err) {
    $("state").textContent = `could not connect: ${err.message}`;
    return;
  }
  $("login").hidden = true;
  $("chat").hidden = false;
  show(null, `you joined ${wanted}`, true);
  $("text").focus();
}

async function send(event) {
  event.preventDefault();
  const text = $("text").value;
  if (!text || !client) return;
  $("text").value = "";
  await client.sendToGroup(room, { text }, "json");
}

$("login").addEventListener("submit", join);
$("composer").addEventListener("submit", send);
$("name").value = new URLSearchParams(location.search).get("name") ?? "";
window.demo = { show };  // for the browser tests
