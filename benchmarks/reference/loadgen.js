#!/usr/bin/env node
// Load generator for benchmarks/signaling.py.
//
// It speaks Socket.IO v5 / Engine.IO v4 over a raw `ws` websocket instead of using
// socket.io-client: with socket.io-client the generator itself used ~0.7 CPU-s/s at 1,000
// clients and could not keep 5,000 offers/s going on a 2-core machine. Here outgoing packets
// are built by string concatenation around a pre-serialised 4 KB body and incoming offers and
// answers are read with indexOf, so almost all the CPU goes to the server being measured.
// Like a browser, each client offers permessage-deflate; the server decides (--no-deflate to
// not offer it).
//
// C clients join rooms of R (`video:join-room` with ack), then every client sends a SIZE-byte
// `video:offer` RATE times a second to a room-mate (round robin); the room-mate answers with a
// SIZE-byte `video:answer`. The sender matches answers to offers by an id on the first SDP line
// and records the round trip.
// With --mode chat, C clients join studies of R (`join-study` with ack) and every client sends a
// study `message` of SIZE characters with an ack RATE times a second; the round trip is message
// sent -> its ack `{ ok, id }` received (the server acks once the message is stored). Progress and results are JSON lines on stdout:
//   {"event":"joined", ...}   all clients connected and joined (then waits for "go" on stdin
//                             when --wait is given, so the driver can measure idle memory)
//   {"event":"tick", ...}     once a second while sending
//   {"event":"result", ...}   after SECONDS of sending plus up to GRACE seconds for answers
"use strict";

const WebSocket = require("ws");
const { performance } = require("perf_hooks");
const readline = require("readline");

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const url = arg("url", "http://127.0.0.1:8080");
const clients = Number(arg("clients", "100"));
const roomsOf = Number(arg("rooms-of", "4"));
const rate = Number(arg("rate", "5"));
const seconds = Number(arg("seconds", "10"));
const grace = Number(arg("grace", "3"));
const size = Number(arg("size", "4096"));
const concurrency = Number(arg("concurrency", "100"));
const joinTimeout = Number(arg("join-timeout", "60"));
const wait = process.argv.includes("--wait");
const deflate = !process.argv.includes("--no-deflate");
const prefix = arg("prefix", `bench-${process.pid}`);
const mode = arg("mode", "offer");
const chat = mode === "chat";

const wsUrl = `${url.replace(/^http/, "ws").replace(/\/$/, "")}/socket.io/?EIO=4&transport=websocket`;

function out(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

// The SDP is `a=bench-id:<id>\r\n` + padding up to SIZE characters. The padding has no
// characters JSON escapes, so it is spliced into packets as is.
const HEAD = "a=bench-id:";
const PAD = "v=0 o=- 0 0 IN IP4 127.0.0.1 s=- t=0 0 a=x".repeat(Math.ceil(size / 40) + 1);
function sdpJson(id) {
  // `\r\n` written as JSON escapes: 4 characters on the wire, 2 in the decoded string.
  const n = Math.max(0, size - (HEAD.length + id.length + 2));
  return `${HEAD}${id}\\r\\n${PAD.slice(0, n)}`;
}
function offerPacket(to, id) {
  return `42["video:offer",{"to":"${to}","offer":{"type":"offer","sdp":"${sdpJson(id)}"}}]`;
}
function chatPacket(studyId, ackId, id) {
  const n = Math.max(1, size - id.length - 1);
  return `42${ackId}["message",{"studyId":"${studyId}","content":"${id} ${PAD.slice(0, n)}"}]`;
}
function answerPacket(to, id) {
  return `42["video:answer",{"to":"${to}","answer":{"type":"answer","sdp":"${sdpJson(id)}"}}]`;
}
// Reads a JSON string value after `"key":` (optional spaces) without parsing the packet.
function stringAfter(msg, key) {
  let i = msg.indexOf(`"${key}"`);
  if (i < 0) return null;
  i = msg.indexOf('"', msg.indexOf(":", i + key.length + 2) + 1);
  return msg.slice(i + 1, msg.indexOf('"', i + 1));
}
function benchId(msg) {
  const i = msg.indexOf(HEAD);
  if (i < 0) return null;
  const start = i + HEAD.length;
  return msg.slice(start, msg.indexOf("\\r", start));
}
function eventName(msg) {
  const i = msg.indexOf('"');
  return msg.slice(i + 1, msg.indexOf('"', i + 1));
}

const stats = { sent: 0, answered: 0, errors: 0, disconnects: 0, connectFailures: 0 };
const pending = new Map(); // offer id -> send time (ms)
const rtts = [];
let lastAnswerAt = 0;
let firstError = null;

function makeClient(index) {
  return new Promise((resolve) => {
    const c = { index, ws: null, self: null, mates: [], next: 0, seq: 0, timer: null, acks: new Map() };
    let done = false;
    const finish = (ok, error) => {
      if (done) return;
      done = true;
      clearTimeout(timeout);
      if (!ok) stats.connectFailures += 1;
      resolve({ c, ok, error });
    };
    const timeout = setTimeout(() => finish(false, "join timeout"), joinTimeout * 1000);
    const ws = new WebSocket(wsUrl, { perMessageDeflate: deflate, skipUTF8Validation: true });
    c.ws = ws;
    ws.on("error", (err) => finish(false, String(err && err.message)));
    ws.on("close", () => {
      if (c.self) stats.disconnects += 1;
      finish(false, "closed");
    });
    ws.on("message", (data) => {
      const msg = data.toString();
      const type = msg.charCodeAt(0);
      if (type === 0x32 /* 2: ping */) {
        ws.send("3");
        return;
      }
      if (type === 0x30 /* 0: engine open */) {
        ws.send(`40${JSON.stringify({ userId: `${prefix}-u${index}` })}`);
        return;
      }
      if (type !== 0x34 /* 4: engine message */) return;
      const kind = msg.charCodeAt(1);
      if (kind === 0x32 /* 2: event */) {
        const name = eventName(msg);
        if (name === "video:offer") {
          ws.send(answerPacket(stringAfter(msg, "from"), benchId(msg)));
        } else if (name === "video:answer") {
          const id = benchId(msg);
          const t0 = pending.get(id);
          if (t0 === undefined) return;
          pending.delete(id);
          const now = performance.now();
          rtts.push(now - t0);
          stats.answered += 1;
          lastAnswerAt = now;
        } else if (name === "video:user-joined") {
          const sid = stringAfter(msg, "socketId");
          if (!c.mates.includes(sid)) c.mates.push(sid);
        } else if (name === "video:user-left") {
          const sid = stringAfter(msg, "socketId");
          c.mates = c.mates.filter((m) => m !== sid);
        } else if (name === "error") {
          stats.errors += 1;
          if (firstError === null) firstError = msg.slice(0, 300);
        }
      } else if (kind === 0x30 /* 0: namespace connect */) {
        const roomId = `${prefix}-r${Math.floor(index / roomsOf)}`;
        if (chat) {
          c.study = `${prefix}-s${Math.floor(index / roomsOf)}`;
          ws.send(`421${JSON.stringify(["join-study", { studyId: c.study }])}`);
        } else {
          ws.send(`421${JSON.stringify(["video:join-room", { roomId }])}`);
        }
      } else if (kind === 0x33 /* 3: ack */ && chat && c.self) {
        const bracket = msg.indexOf("[");
        const key = c.acks.get(msg.slice(2, bracket));
        if (key === undefined) return;
        c.acks.delete(msg.slice(2, bracket));
        const t0 = pending.get(key);
        if (t0 === undefined) return;
        pending.delete(key);
        if (msg.startsWith('[{"ok":true', bracket)) {
          const now = performance.now();
          rtts.push(now - t0);
          stats.answered += 1;
          lastAnswerAt = now;
        } else {
          stats.errors += 1;
          if (firstError === null) firstError = msg.slice(0, 300);
        }
      } else if (kind === 0x33 /* 3: ack */) {
        const ack = JSON.parse(msg.slice(msg.indexOf("[")))[0];
        if (!ack || !ack.ok) {
          finish(false, JSON.stringify(ack));
          return;
        }
        c.self = chat ? "joined" : ack.self;
        for (const p of ack.participants || []) {
          if (!c.mates.includes(p.socketId)) c.mates.push(p.socketId);
        }
        finish(true);
      } else if (kind === 0x34 /* 4: connect_error */) {
        finish(false, msg.slice(2));
      }
    });
  });
}

function percentile(sorted, q) {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function main() {
  const all = [];
  const failures = [];
  const t0 = performance.now();
  let nextIndex = 0;
  async function worker() {
    while (nextIndex < clients) {
      const i = nextIndex++;
      const r = await makeClient(i);
      all.push(r.c);
      if (!r.ok) failures.push(r.error);
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, clients) }, worker));
  const joinStorm = (performance.now() - t0) / 1000;

  // Everyone must know their room-mates (video:user-joined may trail the last ack).
  const expected = (c) =>
    chat ? 0 : Math.min(roomsOf, clients - Math.floor(c.index / roomsOf) * roomsOf) - 1;
  const deadline = performance.now() + 10000;
  while (all.some((c) => c.self && c.mates.length < expected(c)) && performance.now() < deadline) {
    await sleep(20);
  }
  out({
    event: "joined",
    join_storm_s: joinStorm,
    connected: all.filter((c) => c.self).length,
    failed: failures.length,
    failure: failures[0] || null,
  });

  if (wait) {
    const rl = readline.createInterface({ input: process.stdin });
    await new Promise((resolve) => {
      rl.on("line", (l) => {
        if (l.trim() === "go") resolve();
      });
      rl.on("close", resolve);
    });
    rl.close();
  }

  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const period = 1000 / rate;
  for (const c of all) {
    if (!c.self || (c.mates.length === 0 && !chat)) continue;
    const fire = () => {
      if (c.ws.readyState !== WebSocket.OPEN) return;
      if (chat) {
        const ackId = String(c.seq + 2); // 1 was the join
        const id = `${c.index}.${c.seq++}`;
        c.acks.set(ackId, id);
        pending.set(id, performance.now());
        stats.sent += 1;
        c.ws.send(chatPacket(c.study, ackId, id));
        return;
      }
      if (c.mates.length === 0) return;
      const to = c.mates[c.next++ % c.mates.length];
      const id = `${c.index}.${c.seq++}`;
      pending.set(id, performance.now());
      stats.sent += 1;
      c.ws.send(offerPacket(to, id));
    };
    c.timer = setTimeout(() => {
      fire();
      c.timer = setInterval(fire, period);
    }, Math.random() * period);
  }
  const ticker = setInterval(() => {
    out({
      event: "tick",
      t: (performance.now() - start) / 1000,
      sent: stats.sent,
      answered: stats.answered,
      pending: pending.size,
    });
  }, 1000);
  await sleep(seconds * 1000);
  for (const c of all) {
    clearTimeout(c.timer);
    clearInterval(c.timer);
  }
  const sendEnd = performance.now();
  const graceEnd = sendEnd + grace * 1000;
  while (pending.size > 0 && performance.now() < graceEnd) await sleep(10);
  clearInterval(ticker);
  const cpu = process.cpuUsage(cpu0);
  const wall = (performance.now() - start) / 1000;

  const sorted = Float64Array.from(rtts).sort();
  const span = (Math.max(lastAnswerAt, sendEnd) - start) / 1000;
  out({
    event: "result",
    join_storm_s: joinStorm,
    connected: all.filter((c) => c.self).length,
    sent: stats.sent,
    answered: stats.answered,
    lost: pending.size,
    answered_per_s: span > 0 ? stats.answered / span : 0,
    offered_per_s: stats.sent / seconds,
    rtt_ms_p50: percentile(sorted, 0.5),
    rtt_ms_p99: percentile(sorted, 0.99),
    rtt_ms_max: sorted.length ? sorted[sorted.length - 1] : null,
    errors: stats.errors,
    first_error: firstError,
    disconnects: stats.disconnects,
    connect_failures: stats.connectFailures,
    loadgen_cpu_s_per_s: (cpu.user + cpu.system) / 1e6 / wall,
  });
  for (const c of all) c.ws.close();
  await sleep(50);
  process.exit(0);
}

main().catch((err) => {
  out({ event: "fatal", error: String((err && err.stack) || err) });
  process.exit(1);
});
