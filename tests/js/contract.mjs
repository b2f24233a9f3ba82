// The wire contract (docs/protocol.md) seen by a client written from the documents with the
// official socket.io-client from npm. Usage: node contract.mjs <url> [apiKey] [section...]
// Each section prints PASS/FAIL with its name; the exit code is non-zero if any failed.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

// The client the web app ships, without a second npm install.
const require = createRequire(new URL('../../web/node_modules/', import.meta.url));
const { io } = require('socket.io-client');

const WAIT_MS = 4000;
const [url, apiKey = 'test-key', ...only] = process.argv.slice(2);
if (!url) {
  console.error('usage: node contract.mjs <url> [apiKey] [section...]');
  process.exit(2);
}

let opened = [];
let counter = 0;
const unique = (prefix) => `${prefix}-${process.pid}-${++counter}`;

/** Connects and records every event, so nothing emitted before we look is lost. */
async function connect(userId, { name, transports = ['websocket'], auth } = {}) {
  const socket = io(url, {
    auth: auth ?? { userId, name: name ?? userId },
    transports,
    reconnection: false,
    forceNew: true,
    timeout: WAIT_MS,
  });
  opened.push(socket);
  socket.queues = new Map();
  socket.waiters = new Map();
  socket.onAny((event, ...args) => {
    const payload = args.length === 1 ? args[0] : args;
    const waiters = socket.waiters.get(event);
    if (waiters && waiters.length) waiters.shift()(payload);
    else {
      if (!socket.queues.has(event)) socket.queues.set(event, []);
      socket.queues.get(event).push(payload);
    }
  });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${userId}: no connect in ${WAIT_MS} ms`)), WAIT_MS);
    socket.once('connect', () => { clearTimeout(timer); resolve(); });
    socket.once('connect_error', (err) => { clearTimeout(timer); reject(err); });
  });
  return socket;
}

/** The next `event` this socket received (or receives within `ms`). */
function next(socket, event, ms = WAIT_MS) {
  const queued = socket.queues.get(event);
  if (queued && queued.length) return Promise.resolve(queued.shift());
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      const list = socket.waiters.get(event);
      list.splice(list.indexOf(done), 1);
      reject(new Error(`no '${event}' within ${ms} ms`));
    }, ms);
    const done = (payload) => { clearTimeout(timer); resolve(payload); };
    if (!socket.waiters.has(event)) socket.waiters.set(event, []);
    socket.waiters.get(event).push(done);
  });
}

/** A bare `once` for events that are not recorded through onAny (connect_error, disconnect). */
function once(emitter, event, ms = WAIT_MS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no '${event}' within ${ms} ms`)), ms);
    emitter.once(event, (value) => { clearTimeout(timer); resolve(value); });
  });
}

const pending = (socket, event) => (socket.queues.get(event) ?? []).length;
const call = (socket, event, ...args) => socket.timeout(WAIT_MS).emitWithAck(event, ...args);
const user = (id) => ({ id, name: id, avatar: null });
const isIso = (value) => typeof value === 'string' && !Number.isNaN(Date.parse(value));
const OFFER = { type: 'offer', sdp: 'v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n' };
const ANSWER = { type: 'answer', sdp: 'v=0\r\n' };
const CANDIDATE = { candidate: 'candidate:1 1 udp 2122260223 127.0.0.1 9 typ host', sdpMid: '0', sdpMLineIndex: 0 };

async function api(method, path, body, key = apiKey) {
  const headers = { 'Content-Type': 'application/json' };
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(new URL(path, url), {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT_MS),
  });
  return { status: response.status, body: await response.json().catch(() => null) };
}

// -- sections ------------------------------------------------------------------------------

async function connecting() {
  const alice = await connect(unique('alice'), { name: 'Alice A.' });
  assert.equal(typeof alice.id, 'string');
  const refused = io(url, { auth: { name: 'nobody' }, transports: ['websocket'], reconnection: false, forceNew: true });
  opened.push(refused);
  const error = await once(refused, 'connect_error');
  assert.equal(error.message, 'Authentication required');
  const empty = io(url, { auth: { userId: '' }, transports: ['websocket'], reconnection: false, forceNew: true });
  opened.push(empty);
  assert.equal((await once(empty, 'connect_error')).message, 'Authentication required');
  // `name` from auth.name is what others see as `user`.
  const room = unique('room');
  const aliceId = alice.auth.userId;
  await call(alice, 'video:join-room', { roomId: room });
  const bob = await connect(unique('bob'), { name: 'Bob B.' });
  await call(bob, 'video:join-room', { roomId: room });
  const joined = await next(alice, 'video:user-joined');
  assert.deepEqual(joined.user, { id: bob.auth.userId, name: 'Bob B.', avatar: null });
  const state = await next(bob, 'video:room-state');
  assert.deepEqual(state.participants[0].user, { id: aliceId, name: 'Alice A.', avatar: null });
}

async function video(transports) {
  const room = unique('video');
  const [aId, bId, cId] = [unique('a'), unique('b'), unique('c')];
  const alice = await connect(aId, { transports });
  const bob = await connect(bId, { transports });

  const ack = await call(alice, 'video:join-room', { roomId: room });
  assert.deepEqual(ack, { ok: true, mode: 'mesh', self: alice.id, participants: [] });
  let state = await next(alice, 'video:room-state');
  assert.deepEqual(state, { roomId: room, mode: 'mesh', self: alice.id, participants: [], iceServers: [], chat: [] });

  bob.emit('video:join-room', { roomId: room, studyId: 'study-1' });
  state = await next(bob, 'video:room-state');
  assert.equal(state.roomId, room);
  assert.equal(state.self, bob.id);
  assert.ok(Array.isArray(state.iceServers) && Array.isArray(state.chat));
  assert.equal(state.participants.length, 1);
  const [p] = state.participants;
  assert.deepEqual(
    { ...p, joinedAt: undefined },
    { socketId: alice.id, userId: aId, user: user(aId), isMuted: false, isVideoOff: false, isSharingScreen: false, joinedAt: undefined },
  );
  assert.ok(isIso(p.joinedAt), `joinedAt ${p.joinedAt}`);
  assert.deepEqual(await next(alice, 'video:user-joined'), { socketId: bob.id, userId: bId, user: user(bId) });

  // Mesh relay: the newcomer offers to those in room-state.
  bob.emit('video:offer', { to: alice.id, offer: OFFER });
  assert.deepEqual(await next(alice, 'video:offer'), { from: bob.id, offer: OFFER });
  alice.emit('video:answer', { to: bob.id, answer: ANSWER });
  assert.deepEqual(await next(bob, 'video:answer'), { from: alice.id, answer: ANSWER });
  alice.emit('video:ice-candidate', { to: bob.id, candidate: CANDIDATE });
  assert.deepEqual(await next(bob, 'video:ice-candidate'), { from: alice.id, candidate: CANDIDATE });
  bob.emit('video:ice-candidate', { to: alice.id, candidate: null });
  assert.deepEqual(await next(alice, 'video:ice-candidate'), { from: bob.id, candidate: null });

  // Media flags, all four toggles.
  const flags = { socketId: bob.id, userId: bId, isMuted: false, isVideoOff: false, isSharingScreen: false };
  const toggles = [
    ['video:toggle-audio', { roomId: room, isMuted: true }, { isMuted: true }],
    ['video:toggle-video', { roomId: room, isVideoOff: true }, { isVideoOff: true }],
    ['video:start-screen-share', { roomId: room }, { isSharingScreen: true }],
    ['video:stop-screen-share', { roomId: room }, { isSharingScreen: false }],
    ['video:toggle-audio', { roomId: room, isMuted: false }, { isMuted: false }],
  ];
  for (const [event, payload, change] of toggles) {
    bob.emit(event, payload);
    Object.assign(flags, change);
    assert.deepEqual(await next(alice, 'video:media-state-changed'), flags, event);
  }

  // In-call chat: ack { ok, id }, the message to the whole room, history for a late joiner.
  const chatAck = await call(alice, 'video:chat', { roomId: room, content: 'hello room' });
  assert.equal(chatAck.ok, true);
  assert.equal(typeof chatAck.id, 'string');
  for (const socket of [alice, bob]) {
    const message = await next(socket, 'video:chat');
    assert.deepEqual(
      { ...message, createdAt: undefined, user: undefined },
      { id: chatAck.id, roomId: room, content: 'hello room', user: undefined, createdAt: undefined },
    );
    assert.equal(message.user.id, aId);
    assert.equal(message.user.name, aId);
    assert.ok(isIso(message.createdAt));
  }
  const carol = await connect(cId, { transports });
  await call(carol, 'video:join-room', { roomId: room });
  state = await next(carol, 'video:room-state');
  assert.deepEqual(state.chat.map((m) => [m.id, m.content, m.user.id]), [[chatAck.id, 'hello room', aId]]);
  assert.deepEqual(new Set(state.participants.map((x) => x.socketId)), new Set([alice.id, bob.id]));
  const bobFlags = state.participants.find((x) => x.socketId === bob.id);
  assert.equal(bobFlags.isVideoOff, true);
  await next(alice, 'video:user-joined');
  await next(bob, 'video:user-joined');

  // Signals outside the room are refused with error { code, message, event }, never delivered.
  const eve = await connect(unique('eve'), { transports });
  eve.emit('video:offer', { to: alice.id, offer: OFFER });
  const refused = await next(eve, 'error');
  assert.equal(refused.code, 'NOT_IN_ROOM');
  assert.equal(refused.event, 'video:offer');
  assert.equal(typeof refused.message, 'string');
  await call(eve, 'video:join-room', { roomId: unique('elsewhere') });
  eve.emit('video:offer', { to: alice.id, offer: OFFER });
  const notFound = await next(eve, 'error');
  assert.deepEqual(Object.keys(notFound).sort(), ['code', 'event', 'message']);
  assert.equal(notFound.code, 'NOT_FOUND');
  const chatRefused = await call(eve, 'video:chat', { roomId: room, content: 'sneak' });
  assert.equal(chatRefused.ok, false);
  assert.equal(chatRefused.error.code, 'NOT_IN_ROOM');
  assert.equal(typeof chatRefused.error.message, 'string');
  bob.emit('video:offer', { to: alice.id, offer: OFFER });
  assert.equal((await next(alice, 'video:offer')).from, bob.id);
  assert.equal(pending(alice, 'video:offer'), 0);
  assert.equal(pending(alice, 'video:chat'), 0);

  // Leaving and disconnecting: the others get user-left.
  bob.emit('video:leave-room', { roomId: room });
  assert.deepEqual(await next(alice, 'video:user-left'), { socketId: bob.id, userId: bId });
  assert.deepEqual(await next(carol, 'video:user-left'), { socketId: bob.id, userId: bId });
  const carolSid = carol.id;
  carol.disconnect();
  assert.deepEqual(await next(alice, 'video:user-left'), { socketId: carolSid, userId: cId });
}

async function guide() {
  const room = unique('guide');
  const host = await connect(unique('host'));
  const guest = await connect(unique('guest'));
  const third = await connect(unique('third'));

  assert.deepEqual(await call(host, 'create-room', room), { success: true, roomId: room });
  const again = await call(guest, 'create-room', room);
  assert.equal(again.success, false);
  assert.equal(typeof again.error, 'string');
  const missing = await call(guest, 'join-room', unique('missing'));
  assert.equal(missing.success, false);
  const tooLong = await call(guest, 'create-room', 'x'.repeat(101));
  assert.equal(tooLong.success, false);

  assert.deepEqual(await call(guest, 'join-room', room), { success: true, roomId: room, existingUsers: [host.id] });
  const joined = await next(host, 'user-joined');
  assert.equal(joined.userId, guest.id);
  assert.ok(isIso(joined.timestamp));
  const thirdAck = await call(third, 'join-room', room);
  assert.deepEqual(new Set(thirdAck.existingUsers), new Set([host.id, guest.id]));
  assert.equal((await next(host, 'user-joined')).userId, third.id);
  assert.equal((await next(guest, 'user-joined')).userId, third.id);

  guest.emit('offer', { target: host.id, offer: OFFER });
  assert.deepEqual(await next(host, 'offer'), { from: guest.id, offer: OFFER });
  host.emit('answer', { target: guest.id, answer: ANSWER });
  assert.deepEqual(await next(guest, 'answer'), { from: host.id, answer: ANSWER });
  host.emit('ice-candidate', { target: guest.id, candidate: CANDIDATE });
  assert.deepEqual(await next(guest, 'ice-candidate'), { from: host.id, candidate: CANDIDATE });

  // An offer over 100,000 characters of JSON is refused with error { type: "offer-error" }.
  guest.emit('offer', { target: host.id, offer: { type: 'offer', sdp: 'a'.repeat(100_001) } });
  const error = await next(guest, 'error');
  assert.equal(error.type, 'offer-error');
  assert.equal(typeof error.message, 'string');
  guest.emit('answer', { target: host.id, answer: { type: 'answer', sdp: 'a'.repeat(100_001) } });
  assert.equal((await next(guest, 'error')).type, 'answer-error');
  guest.emit('offer', { target: host.id, offer: OFFER });
  assert.deepEqual(await next(host, 'offer'), { from: guest.id, offer: OFFER });
  assert.equal(pending(host, 'offer'), 0);

  // A member leaving: user-left; the host leaving: room-closed for everyone left.
  third.emit('leave-room');
  for (const socket of [host, guest]) {
    const left = await next(socket, 'user-left');
    assert.equal(left.userId, third.id);
    assert.ok(isIso(left.timestamp));
  }
  host.emit('leave-room');
  const closed = await next(guest, 'room-closed');
  assert.equal(closed.reason, 'host-left');
  assert.equal(typeof closed.message, 'string');
  assert.ok(isIso(closed.timestamp));
  // The room is gone: joining it now fails.
  assert.equal((await call(third, 'join-room', room)).success, false);
}

async function studies() {
  const study = unique('study');
  const [aId, bId, cId] = [unique('sa'), unique('sb'), unique('sc')];
  const alice = await connect(aId, { name: 'Alice' });
  const bob = await connect(bId, { name: 'Bob' });

  alice.emit('presence:join-study', { studyId: study });
  await next(alice, 'chat-history');
  bob.emit('join-study', { studyId: study });
  const online = { userId: bId, user: { id: bId, name: 'Bob', avatar: null } };
  assert.deepEqual(await next(alice, 'presence:user-online'), online);
  assert.deepEqual(await next(alice, 'user-online'), online);
  assert.deepEqual(await next(alice, 'member-joined'), { studyId: study, userId: bId, userName: 'Bob' });

  const ack = await call(bob, 'message', { studyId: study, content: 'first message' });
  assert.equal(ack.ok, true);
  assert.equal(typeof ack.id, 'string');
  for (const socket of [alice, bob]) {
    const message = await next(socket, 'message');
    assert.deepEqual(
      { ...message, createdAt: undefined, user: undefined },
      { id: ack.id, studyId: study, content: 'first message', user: undefined, createdAt: undefined },
    );
    assert.equal(message.user.id, bId);
    assert.equal(message.user.name, 'Bob');
    assert.ok(isIso(message.createdAt));
  }
  const withFile = await call(alice, 'message', { studyId: study, content: 'see file', fileId: 'file-1' });
  assert.equal((await next(bob, 'message')).fileId, 'file-1');
  await next(alice, 'message');

  alice.emit('typing', { studyId: study });
  const typing = await next(bob, 'typing');
  assert.equal(typing.userId, aId);
  assert.equal(typing.userName, 'Alice');
  bob.emit('read', { messageId: withFile.id });
  for (const socket of [alice, bob]) {
    const read = await next(socket, 'read');
    assert.equal(read.messageId, withFile.id);
    assert.equal(read.userId, bId);
  }
  assert.equal(pending(alice, 'typing'), 0, 'typing goes to the others only');

  // A joiner gets the study's chat history.
  const carol = await connect(cId);
  carol.emit('join-study', { studyId: study });
  const history = await next(carol, 'chat-history');
  assert.deepEqual(history.messages.map((m) => m.content), ['first message', 'see file']);
  await next(alice, 'member-joined');
  await next(bob, 'member-joined');

  // Leaving: user-offline (both names) and member-left.
  bob.emit('leave-study', { studyId: study });
  for (const socket of [alice, carol]) {
    assert.deepEqual(await next(socket, 'presence:user-offline'), { userId: bId });
    assert.deepEqual(await next(socket, 'user-offline'), { userId: bId });
    assert.deepEqual(await next(socket, 'member-left'), { studyId: study, userId: bId });
  }
  // The last socket of a user going: user-offline too.
  carol.disconnect();
  assert.deepEqual(await next(alice, 'user-offline'), { userId: cId });
  // Not a member: refused.
  const refused = await call(bob, 'message', { studyId: study, content: 'x' });
  assert.equal(refused.ok, false);
  assert.equal(refused.error.code, 'NOT_IN_ROOM');
}

async function pairing() {
  const [aId, bId] = [unique('pa'), unique('pb')];
  const alice = await connect(aId);
  const bob = await connect(bId);
  // A waiting client that cancels is not matched.
  const quitter = await connect(unique('quitter'));
  assert.deepEqual(await call(quitter, 'pair:request', {}), { status: 'waiting' });
  await call(quitter, 'pair:cancel', {});

  assert.deepEqual(await call(alice, 'pair:request', {}), { status: 'waiting' });
  await call(bob, 'pair:request', {});
  const [a, b] = [await next(alice, 'pair:matched'), await next(bob, 'pair:matched')];
  assert.equal(a.roomId, b.roomId);
  assert.equal(typeof a.roomId, 'string');
  assert.deepEqual(a.peer, { socketId: bob.id, user: user(bId) });
  assert.deepEqual(b.peer, { socketId: alice.id, user: user(aId) });
  assert.equal([a.initiator, b.initiator].filter((x) => x === true).length, 1);
  assert.equal(typeof a.initiator, 'boolean');
  assert.equal(typeof b.initiator, 'boolean');
  assert.equal(pending(quitter, 'pair:matched'), 0);

  const [initiator, responder] = a.initiator ? [alice, bob] : [bob, alice];
  initiator.emit('video:offer', { to: responder.id, offer: OFFER });
  assert.deepEqual(await next(responder, 'video:offer'), { from: initiator.id, offer: OFFER });
  responder.emit('video:answer', { to: initiator.id, answer: ANSWER });
  assert.deepEqual(await next(initiator, 'video:answer'), { from: responder.id, answer: ANSWER });
  responder.emit('video:leave-room', { roomId: a.roomId });
  assert.equal((await next(initiator, 'video:user-left')).socketId, responder.id);

  // The cancelled one really left the queue: the next requester waits.
  const late = await connect(unique('late'));
  assert.deepEqual(await call(late, 'pair:request', {}), { status: 'waiting' });
  await call(late, 'pair:cancel', {});
}

async function http() {
  const aId = unique('na');
  const alice = await connect(aId);
  const aliceTab = await connect(aId);
  const other = await connect(unique('nb'));

  let response = await api('POST', '/api/notifications', { userId: aId, type: 'info', message: 'hi' }, null);
  assert.ok([401, 403].includes(response.status), `no key: ${response.status}`);
  response = await api('POST', '/api/notifications', { userId: aId, type: 'info', message: 'hi' }, 'wrong');
  assert.ok([401, 403].includes(response.status), `wrong key: ${response.status}`);

  const note = { userId: aId, type: 'task', message: 'You have a task', studyId: 'st-1', data: { taskId: 't1' } };
  response = await api('POST', '/api/notifications', note);
  assert.ok(response.status >= 200 && response.status < 300, `notify: ${response.status}`);
  for (const socket of [alice, aliceTab]) {
    const got = await next(socket, 'notification');
    assert.deepEqual({ ...got, id: undefined }, { id: undefined, type: 'task', message: 'You have a task', studyId: 'st-1', data: { taskId: 't1' } });
    assert.equal(typeof got.id, 'string');
  }
  await api('POST', '/api/notifications', { userId: aId, type: 'info', message: 'plain' });
  const plain = await next(alice, 'notification');
  assert.deepEqual(Object.keys(plain).sort(), ['id', 'message', 'type']);
  assert.equal(pending(other, 'notification'), 0);

  // Task events reach the study's members.
  const study = unique('st');
  alice.emit('join-study', { studyId: study });
  await next(alice, 'chat-history');
  const updated = { taskId: 't1', status: 'done', updatedBy: aId };
  response = await api('POST', `/api/studies/${study}/events`, { event: 'task-updated', data: updated });
  assert.ok(response.status >= 200 && response.status < 300, `task-updated: ${response.status}`);
  assert.deepEqual(await next(alice, 'task-updated'), updated);
  await api('POST', `/api/studies/${study}/events`, { event: 'task-assigned', data: { taskId: 't2', assigneeId: aId } });
  assert.deepEqual(await next(alice, 'task-assigned'), { taskId: 't2', assigneeId: aId });
  assert.equal(pending(other, 'task-updated'), 0);

  // Closing a video room through the API.
  const room = unique('closing');
  await call(alice, 'video:join-room', { roomId: room });
  await call(other, 'video:join-room', { roomId: room });
  response = await api('DELETE', `/api/rooms/${encodeURIComponent(room)}`);
  assert.ok(response.status >= 200 && response.status < 300, `delete: ${response.status}`);
  for (const socket of [alice, other]) {
    const closed = await next(socket, 'video:room-closed');
    assert.equal(closed.roomId, room);
    assert.equal(typeof closed.reason, 'string');
  }
  assert.equal((await api('DELETE', `/api/rooms/${encodeURIComponent(room)}`)).status, 404);

  // A guide room `x` is not the video room `x`; GET /rooms lists both.
  const shared = unique('both');
  assert.equal((await call(alice, 'create-room', shared)).success, true);
  await call(other, 'video:join-room', { roomId: shared });
  const listed = await (await fetch(new URL('/rooms', url), { signal: AbortSignal.timeout(WAIT_MS) })).json();
  const mine = listed.rooms.filter((r) => r.id === shared);
  assert.equal(mine.length, 2, JSON.stringify(listed));
  for (const r of mine) {
    for (const key of ['id', 'name', 'userCount', 'mode', 'createdAt']) assert.ok(key in r, `room lacks ${key}`);
    assert.equal(r.userCount, 1);
    assert.equal(r.mode, 'mesh');
  }
  const health = await (await fetch(new URL('/health', url), { signal: AbortSignal.timeout(WAIT_MS) })).json();
  for (const key of ['status', 'connections', 'uptime', 'timestamp', 'node', 'auth', 'redis']) {
    assert.ok(key in health, `/health lacks ${key}`);
  }
  assert.equal(health.status, 'ok');
  assert.equal(health.auth, 'open');
}

// docs/protocol.md section 1: `user` is `{ id, name, avatar }` wherever other clients see it,
// chat messages included (room-state and user-joined carry `avatar: null`).
async function chatUserShape() {
  const aId = unique('shape');
  const alice = await connect(aId, { name: 'Alice' });
  const expected = { id: aId, name: 'Alice', avatar: null };
  const room = unique('shape-room');
  await call(alice, 'video:join-room', { roomId: room });
  await call(alice, 'video:chat', { roomId: room, content: 'hi' });
  assert.deepEqual((await next(alice, 'video:chat')).user, expected, 'video:chat user');
  const study = unique('shape-study');
  await call(alice, 'join-study', { studyId: study });
  await call(alice, 'message', { studyId: study, content: 'hi' });
  assert.deepEqual((await next(alice, 'message')).user, expected, 'message user');
}

/** Every socket this script closed is gone from the server (no ghosts; a bounded poll). */
async function settled(ms = 3000) {
  const deadline = Date.now() + ms;
  let health;
  while (Date.now() < deadline) {
    health = await (await fetch(new URL('/health', url), { signal: AbortSignal.timeout(WAIT_MS) })).json();
    if (health.connections === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`server still counts ${health?.connections} connections`);
}

const SECTIONS = {
  connecting,
  'video-websocket': () => video(['websocket']),
  'video-polling': () => video(['polling']),
  guide,
  studies,
  pairing,
  http,
  'chat-user-shape': chatUserShape,
};

let failed = 0;
for (const [name, run] of Object.entries(SECTIONS)) {
  if (only.length && !only.includes(name)) continue;
  const started = Date.now();
  try {
    await run();
    console.log(`PASS ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    failed += 1;
    console.log(`FAIL ${name}: ${error?.stack ?? error}`);
  } finally {
    for (const socket of opened) socket.disconnect();
    opened = [];
  }
  try {
    await settled();
  } catch (error) {
    failed += 1;
    console.log(`FAIL ${name} cleanup: ${error}`);
  }
}
process.exit(failed ? 1 : 0);
