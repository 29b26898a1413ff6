#!/usr/bin/env node
'use strict';
// Burst driver for `python -m benchmarks --reliability` (benchmarks/reliability.py): N
// subscribers in one group of a Web PubSub JSON server, one publisher that fires M
// sendToGroup frames WITHOUT ackIds (nothing paces it) as fast as the socket takes them, or
// spread over --send-seconds; then a fence (joinGroup with an ackId: every frame before it was
// routed) and a bounded wait until every subscriber has everything or is closed.
//
// Subscribers on json.reliable.webpubsub.azure.v1 ack like @azure/web-pubsub-client 1.x: a
// timer every 1000 ms sends the largest sequenceId seen if it changed; the "quick ack" fires
// only when one message jumps the sequence id by more than 300 (never, in order). The first
// --pause-subs of them stop reading their socket (and acking) for --pause-ms from the first
// publish, then catch up.
//
//   node burst.js --port P --hub H --group G --jwt-key K [--subs 1] [--reliable 1]
//                 [--pause-subs 0] [--pause-ms 3000] [--messages 3000] [--send-seconds 0]
//                 [--size 64] [--timeout 120] [--drain 60] [--connect-concurrency 50]
//
// Prints ONE JSON line (the report) on stdout. Every loop is bounded by count and by time
// (--timeout caps the whole run, a hard timer exits). Only 127.0.0.1 is contacted.

const WebSocket = require('ws');
const crypto = require('crypto');
const { performance } = require('perf_hooks');

const DEFAULTS = {
  host: '127.0.0.1', port: 0, hub: 'rel', group: 'g', 'jwt-key': '', subs: 1, reliable: 0,
  'pause-subs': 0, 'pause-ms': 3000, messages: 3000, 'send-seconds': 0, size: 64, timeout: 120,
  drain: 60, 'connect-concurrency': 50,
};

function parseArgs(argv) {
  const o = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i].replace(/^--/, '');
    if (!(a in DEFAULTS)) throw new Error(`unknown option ${argv[i]}`);
    const v = argv[++i];
    if (v === undefined) throw new Error(`${argv[i - 1]} needs a value`);
    o[a] = typeof DEFAULTS[a] === 'number' ? Number(v) : v;
    if (Number.isNaN(o[a])) throw new Error(`${argv[i - 1]} needs a number`);
  }
  if (o.host !== '127.0.0.1') throw new Error('this driver targets 127.0.0.1 only');
  if (!o.port || !o['jwt-key']) throw new Error('need --port and --jwt-key');
  return o;
}

const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const b64url = (b) => Buffer.from(b).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
function jwt(key, claims) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  return `${head}.${body}.${b64url(crypto.createHmac('sha256', key).update(`${head}.${body}`).digest())}`;
}

const K_I = Buffer.from('"i":');
const K_SEQ = Buffer.from('"sequenceId":');
function numAfter(buf, key) {
  const at = buf.indexOf(key);
  if (at < 0) return NaN;
  let j = at + key.length, v = 0, any = false;
  while (j < buf.length && buf[j] >= 48 && buf[j] <= 57) { v = v * 10 + (buf[j] - 48); j++; any = true; }
  return any ? v : NaN;
}

class Sub {
  constructor(o, idx, reliable, pauses) {
    Object.assign(this, { o, idx, reliable, pauses });
    this.got = 0; this.dup = 0; this.ooo = 0; this.bad = 0; this.last = -1;
    this.seen = new Uint8Array(o.messages);
    this.maxSeq = 0; this.seqUpdated = false; this.acksSent = 0; this.seqGaps = 0; this.seqRepeats = 0;
    this.connected = 0; this.disconnected = []; this.closeCode = null; this.closeReason = '';
    this.ackId = 0; this.pending = new Map(); this.paused = false; this.tLast = 0;
  }

  url() {
    const o = this.o, t = Math.floor(Date.now() / 1000);
    const token = jwt(o['jwt-key'], { aud: `http://${o.host}:${o.port}/client/hubs/${o.hub}`, iat: t, exp: t + 3600,
      sub: `burst-${this.idx}`, role: ['webpubsub.joinLeaveGroup', 'webpubsub.sendToGroup'] });
    return `ws://${o.host}:${o.port}/client/hubs/${o.hub}?access_token=${token}`;
  }

  open() {
    const proto = this.reliable ? 'json.reliable.webpubsub.azure.v1' : 'json.webpubsub.azure.v1';
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url(), [proto], { perMessageDeflate: false, maxPayload: 16 << 20, handshakeTimeout: 15000 });
      this.ws = ws;
      let settled = false;
      const timer = setTimeout(() => done(new Error('connect timeout')), 15000);
      const done = (err) => { if (settled) return; settled = true; clearTimeout(timer); if (err) { try { ws.terminate(); } catch (_) {} reject(err); } else resolve(this); };
      ws.on('error', (e) => done(e));
      ws.on('close', (code, reason) => { this.closeCode = code; this.closeReason = String(reason || ''); this.stopAcks(); done(new Error(`closed ${code}`)); });
      ws.on('message', (buf) => this.frame(buf, done));
    });
  }

  frame(buf, done) {
    if (this.reliable) { // the SDK: tryUpdate(sequenceId) for every data message
      const sid = numAfter(buf, K_SEQ);
      if (sid === sid) {
        if (sid > this.maxSeq) { if (sid !== this.maxSeq + 1) this.seqGaps++; this.maxSeq = sid; this.seqUpdated = true; } else this.seqRepeats++;
      }
    }
    if (buf.indexOf(K_I) >= 0 && buf.indexOf('"type":"message"') >= 0) {
      const i = numAfter(buf, K_I);
      if (!(i >= 0 && i < this.o.messages)) { this.bad++; return; }
      if (this.seen[i]) { this.dup++; return; }
      this.seen[i] = 1; this.got++; this.tLast = now();
      if (i < this.last) this.ooo++;
      this.last = i;
      if (this.got === this.o.messages && this.onComplete) this.onComplete();
      return;
    }
    let m;
    try { m = JSON.parse(buf.toString('utf8')); } catch (_) { this.bad++; return; }
    if (m.type === 'system' && m.event === 'connected') {
      this.connected++;
      if (this.connected === 1) this.request({ type: 'joinGroup', group: this.o.group }).then(() => { this.startAcks(); done(); }, done);
    } else if (m.type === 'system' && m.event === 'disconnected') {
      this.disconnected.push(m.message || '');
    } else if (m.type === 'ack') {
      const p = this.pending.get(m.ackId);
      if (p) { this.pending.delete(m.ackId); if (m.success === false && !(m.error && m.error.name === 'Duplicate')) p.reject(new Error(JSON.stringify(m.error))); else p.resolve(m); }
    }
  }

  request(msg, timeoutMs = 15000) {
    const id = ++this.ackId;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { if (this.pending.delete(id)) reject(new Error(`no ack for ${msg.type}`)); }, timeoutMs);
      this.pending.set(id, { resolve: (v) => { clearTimeout(timer); resolve(v); }, reject: (e) => { clearTimeout(timer); reject(e); } });
      this.ws.send(JSON.stringify({ ...msg, ackId: id }));
    });
  }

  startAcks() {
    if (!this.reliable) return;
    this.ackTimer = setInterval(() => {
      if (this.paused || !this.seqUpdated || this.ws.readyState !== WebSocket.OPEN) return;
      this.seqUpdated = false; this.acksSent++;
      this.ws.send(`{"type":"sequenceAck","sequenceId":${this.maxSeq}}`);
    }, 1000);
  }

  stopAcks() { if (this.ackTimer) { clearInterval(this.ackTimer); this.ackTimer = null; } }

  pause(ms) { // stop reading the socket (TCP pushes back) and acking, like a blocked event loop
    if (!this.ws._socket) return;
    this.paused = true; this.ws._socket.pause();
    setTimeout(() => { this.paused = false; if (this.ws._socket) this.ws._socket.resume(); }, ms);
  }

  summary() {
    return { got: this.got, lost: this.o.messages - this.got, dup: this.dup, ooo: this.ooo, bad: this.bad,
      connected: this.connected, disconnected: this.disconnected, closeCode: this.closeCode, closeReason: this.closeReason,
      acksSent: this.acksSent, maxSeq: this.maxSeq, seqGaps: this.seqGaps, seqRepeats: this.seqRepeats };
  }
}

async function openAll(subs, concurrency, deadline) {
  let next = 0; const fails = [];
  async function worker() {
    while (next < subs.length && now() < deadline) {
      const s = subs[next++];
      try { await s.open(); } catch (e) { fails.push(`${s.idx}: ${e.message || e}`); }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, subs.length) }, worker));
  return fails;
}

function aggregate(list, M) {
  const codes = {}; let lost = 0, dup = 0, ooo = 0, bad = 0, complete = 0, closed = 0, disc = 0, reconnected = 0, acks = 0, gaps = 0;
  const reasons = new Set();
  for (const s of list) {
    const x = s.summary();
    lost += x.lost; dup += x.dup; ooo += x.ooo; bad += x.bad; acks += x.acksSent; gaps += x.seqGaps;
    if (x.got === M) complete++;
    if (x.closeCode !== null) { closed++; codes[x.closeCode] = (codes[x.closeCode] || 0) + 1; if (x.closeReason) reasons.add(x.closeReason); }
    if (x.disconnected.length) { disc++; x.disconnected.forEach((r) => reasons.add(r)); }
    if (x.connected !== 1) reconnected++;
  }
  return { subs: list.length, complete, lost, duplicated: dup, out_of_order: ooo, bad_frames: bad, closed,
    close_codes: codes, disconnected: disc, not_one_connected: reconnected, acks_sent: acks, seq_gaps: gaps,
    reasons: [...reasons].slice(0, 5) };
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const t0 = now();
  const deadline = t0 + o.timeout * 1000;
  const hard = setTimeout(() => { console.log(JSON.stringify({ error: 'hard timeout' })); process.exit(2); }, (o.timeout + 10) * 1000);
  hard.unref();
  const M = o.messages;
  const subs = Array.from({ length: o.subs }, (_, i) => new Sub(o, i, !!o.reliable, i < o['pause-subs']));
  const fails = await openAll(subs, o['connect-concurrency'], deadline);
  const live = subs.filter((s) => s.connected === 1 && s.closeCode === null);
  const pub = new Sub({ ...o, messages: 1 }, 'pub', false, false);
  await pub.open();
  const pad = 'x'.repeat(Math.max(0, o.size - 16));
  let completeCount = 0; let wake = null;
  for (const s of subs) s.onComplete = () => { completeCount++; if (wake) wake(); };

  const tSend0 = now();
  for (const s of subs) if (s.pauses) s.pause(o['pause-ms']);
  const frame = (i) => `{"type":"sendToGroup","group":${JSON.stringify(o.group)},"dataType":"json","noEcho":true,"data":{"i":${i},"p":"${pad}"}}`;
  if (o['send-seconds'] > 0) { // spread evenly: a batch every 5 ms
    const per = M / (o['send-seconds'] * 200);
    let sent = 0, tick = 0;
    while (sent < M && now() < deadline) {
      tick++;
      const due = Math.min(M, Math.ceil(per * tick));
      while (sent < due) pub.ws.send(frame(sent++));
      const wait = tSend0 + tick * 5 - now();
      if (wait > 0) await sleep(wait);
    }
  } else {
    for (let i = 0; i < M; i++) pub.ws.send(frame(i));
  }
  // Wait until the socket took everything (bufferedAmount), then the fence.
  while (pub.ws.bufferedAmount > 0 && now() < deadline) await sleep(1);
  const tSent = now();
  let fenceOk = true;
  try { await pub.request({ type: 'joinGroup', group: `${o.group}-fence` }, Math.max(1000, Math.min(o.drain * 1000, deadline - now()))); } catch (e) { fenceOk = false; }
  const tFence = now();
  const drainUntil = Math.min(deadline, now() + o.drain * 1000);
  const allDone = () => subs.every((s) => s.got === M || s.closeCode !== null || s.connected !== 1);
  while (!allDone() && now() < drainUntil) {
    await new Promise((r) => { wake = r; setTimeout(r, 100); });
    wake = null;
  }
  const tEnd = now();
  let tLast = 0; for (const s of subs) if (s.tLast > tLast) tLast = s.tLast;
  const paused = subs.filter((s) => s.pauses), steady = subs.filter((s) => !s.pauses);
  const report = {
    messages: M, subs: o.subs, reliable: !!o.reliable, size: o.size, connect_failures: fails.length,
    first_connect_errors: fails.slice(0, 3), fence_ok: fenceOk, live_at_start: live.length,
    send_s: +((tSent - tSend0) / 1000).toFixed(3), fence_s: +((tFence - tSend0) / 1000).toFixed(3),
    last_delivery_s: tLast ? +((tLast - tSend0) / 1000).toFixed(3) : null,
    wall_s: +((tEnd - t0) / 1000).toFixed(3), timed_out: !allDone(),
    steady: aggregate(steady, M), paused: paused.length ? aggregate(paused, M) : null,
    publisher_close_code: pub.closeCode,
  };
  for (const s of subs) { s.stopAcks(); try { s.ws.terminate(); } catch (_) {} }
  try { pub.ws.terminate(); } catch (_) {}
  console.log(JSON.stringify(report));
  setTimeout(() => process.exit(0), 50);
}

main().catch((e) => { console.log(JSON.stringify({ error: String(e && e.stack || e) })); process.exit(1); });
