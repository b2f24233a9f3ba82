#!/usr/bin/env node
// Baseline for benchmarks/signaling.py: a plain socket.io 4.x relay with the same hot-path
// logic as signaling/ (video:join-room + ack, video:user-joined, offer/answer/ice relayed by
// `to` only inside the sender's room, disconnect cleanup). It is what users would otherwise
// run, so socket.io's defaults are kept (perMessageDeflate off, 1 MB max message).
//
//   node server.js [--host 127.0.0.1] [--port 0]
// prints "Listening on http://HOST:PORT" once it accepts connections.
"use strict";

const http = require("http");
const { Server } = require("socket.io");

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const host = arg("host", process.env.HOST || "127.0.0.1");
const port = Number(arg("port", process.env.PORT || "0"));

const httpServer = http.createServer((req, res) => {
  res.writeHead(req.url === "/health" ? 200 : 404, { "content-type": "application/json" });
  res.end(JSON.stringify({ status: "ok" }));
});
const io = new Server(httpServer, {
  cors: { origin: "*" },
  maxHttpBufferSize: 1e6,
  pingInterval: 25000,
  pingTimeout: 60000,
});

// roomId -> Map(socketId -> participant); socketId -> roomId
const rooms = new Map();
const roomOf = new Map();

const MAX_SDP = 100000;
const MAX_ROOM_ID = 100;

function error(socket, code, message, event) {
  socket.emit("error", { code, message, event });
}

function leave(socket) {
  const roomId = roomOf.get(socket.id);
  if (roomId === undefined) return;
  roomOf.delete(socket.id);
  const room = rooms.get(roomId);
  if (!room) return;
  room.delete(socket.id);
  socket.leave(`video:${roomId}`);
  socket.to(`video:${roomId}`).emit("video:user-left", {
    socketId: socket.id,
    userId: socket.data.user.id,
  });
  if (room.size === 0) rooms.delete(roomId);
}

io.use((socket, next) => {
  const userId = socket.handshake.auth && socket.handshake.auth.userId;
  if (typeof userId !== "string" || userId.length === 0 || userId.length > 128) {
    return next(new Error("Authentication required"));
  }
  socket.data.user = { id: userId, name: socket.handshake.auth.name || userId, avatar: null };
  next();
});

io.on("connection", (socket) => {
  socket.join(`user:${socket.data.user.id}`);

  socket.on("video:join-room", (payload, ack) => {
    const reply = typeof ack === "function" ? ack : () => {};
    const roomId = payload && payload.roomId;
    if (typeof roomId !== "string" || roomId.length === 0 || roomId.length > MAX_ROOM_ID) {
      return reply({ ok: false, error: { code: "INVALID_PAYLOAD", message: "roomId" } });
    }
    if (roomOf.get(socket.id) !== roomId) leave(socket);
    let room = rooms.get(roomId);
    if (!room) {
      room = new Map();
      rooms.set(roomId, room);
    }
    const user = socket.data.user;
    const me = {
      socketId: socket.id,
      userId: user.id,
      user,
      isMuted: false,
      isVideoOff: false,
      isSharingScreen: false,
      joinedAt: new Date().toISOString(),
    };
    const participants = [...room.values()];
    room.set(socket.id, me);
    roomOf.set(socket.id, roomId);
    socket.join(`video:${roomId}`);
    socket.to(`video:${roomId}`).emit("video:user-joined", {
      socketId: socket.id,
      userId: user.id,
      user,
    });
    reply({ ok: true, mode: "mesh", self: socket.id, participants });
  });

  socket.on("video:leave-room", () => leave(socket));

  function relay(event, field) {
    socket.on(event, (payload) => {
      if (!payload || typeof payload.to !== "string") {
        return error(socket, "INVALID_PAYLOAD", "to", event);
      }
      const body = payload[field];
      if (field !== "candidate") {
        if (!body || typeof body.sdp !== "string" || typeof body.type !== "string") {
          return error(socket, "INVALID_PAYLOAD", field, event);
        }
        if (body.sdp.length > MAX_SDP) return error(socket, "TOO_LARGE", "sdp", event);
      }
      const roomId = roomOf.get(socket.id);
      const room = roomId === undefined ? undefined : rooms.get(roomId);
      if (!room || !room.has(payload.to)) {
        return error(socket, "NOT_IN_ROOM", "target not in your room", event);
      }
      io.to(payload.to).emit(event, { from: socket.id, [field]: body });
    });
  }
  relay("video:offer", "offer");
  relay("video:answer", "answer");
  relay("video:ice-candidate", "candidate");

  socket.on("disconnect", () => leave(socket));
});

httpServer.listen(port, host, () => {
  const addr = httpServer.address();
  process.stdout.write(`Listening on http://${host}:${addr.port}\n`);
});

function shutdown() {
  io.close();
  httpServer.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
