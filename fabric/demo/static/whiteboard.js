// The whiteboard demo: socket.io-client against the fabric's Socket.IO server. A stroke is
// a list of points in [0, 1] (so every screen size draws the same picture), a color and a
// width; the server checks it and keeps a bounded history for late joiners.
const $ = (id) => document.getElementById(id);
const ROOM = /^[A-Za-z0-9_-]{1,32}$/;
const MAX_POINTS = 500;
const board = $("board");
const ctx = board.getContext("2d");
let socket = null;
let current = null;
let drawn = 0;

function draw(stroke) {
  const pts = stroke.points;
  if (!Array.isArray(pts) || pts.length === 0) return;
  ctx.strokeStyle = stroke.color;
  ctx.lineWidth = stroke.width * (board.width / 900);
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(pts[0][0] * board.width, pts[0][1] * board.height);
  for (const [x, y] of pts.slice(1)) ctx.lineTo(x * board.width, y * board.height);
  if (pts.length === 1) ctx.lineTo(pts[0][0] * board.width + 0.1, pts[0][1] * board.height);
  ctx.stroke();
  drawn += 1;
  $("strokes").textContent = `${drawn} strokes`;
}

function clearBoard() {
  ctx.clearRect(0, 0, board.width, board.height);
  drawn = 0;
  $("strokes").textContent = "";
}

function point(event) {
  const r = board.getBoundingClientRect();
  const x = Math.min(1, Math.max(0, (event.clientX - r.left) / r.width));
  const y = Math.min(1, Math.max(0, (event.clientY - r.top) / r.height));
  return [Math.round(x * 10000) / 10000, Math.round(y * 10000) / 10000];
}

function flush(keepLast) {
  if (!current || current.points.length === 0) return;
  const stroke = current;
  draw(stroke);
  socket.emit("stroke", stroke);
  const last = stroke.points[stroke.points.length - 1];
  current = keepLast ? { ...stroke, points: [last] } : null;
}

function start(event) {
  if (!socket) return;
  board.setPointerCapture(event.pointerId);
  current = { points: [point(event)], color: $("color").value, width: Number($("width").value) };
}

function move(event) {
  if (!current) return;
  current.points.push(point(event));
  if (current.points.length >= 32) flush(true);
}

function end() { flush(false); }

async function join(event) {
  event.preventDefault();
  const name = $("name").value.trim();
  const room = $("room").value.trim();
  if (!ROOM.test(room)) { $("state").textContent = "room: letters, digits, _ or -"; return; }
  const answer = await fetch(`/demo/api/negotiate?app=whiteboard&user=${encodeURIComponent(name)}`);
  if (!answer.ok) { $("state").textContent = (await answer.json()).message; return; }
  const info = await answer.json();
  socket = io(info.endpoint, { path: info.path, query: { access_token: info.token } });
  socket.on("connect", () => {
    socket.emit("join", { room }, (reply) => {
      if (!reply || !reply.ok) { $("state").textContent = reply ? reply.error : "join failed"; return; }
      clearBoard();
      for (const stroke of reply.strokes) draw(stroke);
      $("state").textContent = `drawing in ${room} as ${name}`;
      board.dataset.ready = "1";
    });
  });
  socket.on("disconnect", () => { $("state").textContent = "disconnected"; });
  socket.on("stroke", draw);
  socket.on("clear", clearBoard);
  $("login").hidden = true;
  $("tools").hidden = false;
  board.hidden = false;
}

$("login").addEventListener("submit", join);
$("clear").addEventListener("click", () => { clearBoard(); socket?.emit("clear"); });
board.addEventListener("pointerdown", start);
board.addEventListener("pointermove", move);
board.addEventListener("pointerup", end);
board.addEventListener("pointercancel", end);
$("name").value = new URLSearchParams(location.search).get("name") ?? "";
window.demo = { drawn: () => drawn, draw, MAX_POINTS };
