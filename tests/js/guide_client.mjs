// The guide's own client (document 004, sections 4.1-4.2: useSocket, useRoom, useWebRTC,
// useVideoChat) with the official socket.io-client, against our server.
// Usage: node guide_client.mjs <url> open|refused
//
// The hooks are transcribed without React: one `Page` per browser tab, each with the guide's
// singleton socket `io(url, { reconnection, reconnectionDelay, reconnectionAttempts })` and
// no `auth` (the guide's server expects none). Node has no RTCPeerConnection, so the peer
// connections are stand-ins that produce what a browser's would put on the wire
// (RTCSessionDescription / RTCIceCandidate as JSON).
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const require = createRequire(new URL('../../web/node_modules/', import.meta.url));
const { io } = require('socket.io-client');

const WAIT_MS = 4000;
const [url, expect] = process.argv.slice(2);

function waitFor(emitter, event, ms = WAIT_MS) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no '${event}' within ${ms} ms`)), ms);
    emitter.once(event, (value) => { clearTimeout(timer); resolve(value); });
  });
}

let candidates = 0;

/** What a browser's RTCPeerConnection puts on the wire, without the media. */
class StandInPeerConnection {
  constructor() { this.remoteDescription = null; this.remoteCandidates = []; }
  async createOffer() { return { type: 'offer', sdp: `v=0\r\no=- ${Date.now()} 2 IN IP4 127.0.0.1\r\ns=-\r\n` }; }
  async createAnswer() { return { type: 'answer', sdp: 'v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=-\r\n' }; }
  async setRemoteDescription(description) { this.remoteDescription = description; }
  async addIceCandidate(candidate) { this.remoteCandidates.push(candidate); }
  /** RTCIceCandidate.toJSON() of one host candidate. */
  candidate() {
    candidates += 1;
    return {
      candidate: `candidate:${candidates} 1 udp 2122260223 127.0.0.1 ${40000 + candidates} typ host generation 0 ufrag abcd network-id 1`,
      sdpMid: '0', sdpMLineIndex: 0, usernameFragment: 'abcd',
    };
  }
  close() {}
}

class Page {
  constructor(name) {
    this.name = name;
    // useSocket: the singleton, exactly as the guide creates it.
    this.socket = io(url, { reconnection: true, reconnectionDelay: 1000, reconnectionAttempts: 5 });
    this.isConnected = false;
    this.socket.on('connect', () => { this.isConnected = true; });
    this.socket.on('disconnect', () => { this.isConnected = false; });
    this.errors = [];
    this.socket.on('error', (error) => this.errors.push(error));
    // useRoom
    this.roomId = null;
    this.existingUsers = [];
    this.newUsers = [];
    this.closed = null;
    this.socket.on('user-joined', (data) => { this.newUsers.push(data.userId); this.sendOffer(data.userId); });
    this.socket.on('room-closed', (data) => { this.closed = data; });
    // useWebRTC
    this.peerConnections = new Map();
    this.received = [];
    this.socket.on('offer', (data) => this.handleOffer(data));
    this.socket.on('answer', (data) => this.handleAnswer(data));
    this.socket.on('ice-candidate', (data) => this.handleIceCandidate(data));
    this.socket.on('user-left', (data) => {
      const pc = this.peerConnections.get(data.userId);
      if (pc) { pc.close(); this.peerConnections.delete(data.userId); }
    });
  }

  connected() { return this.socket.connected ? Promise.resolve() : waitFor(this.socket, 'connect'); }

  createRoom(roomId) {
    return new Promise((resolve) => {
      this.socket.emit('create-room', roomId, (res) => {
        if (res.success && res.roomId) this.roomId = res.roomId;
        resolve(res);
      });
    });
  }

  joinRoom(roomId) {
    return new Promise((resolve) => {
      this.socket.emit('join-room', roomId, (res) => {
        if (res.success && res.roomId) {
          this.roomId = res.roomId;
          if (res.existingUsers && res.existingUsers.length > 0) {
            this.existingUsers = res.existingUsers;
            // useVideoChat: the joiner offers to everyone already there.
            for (const userId of res.existingUsers) this.sendOffer(userId);
          }
        }
        resolve(res);
      });
    });
  }

  leaveRoom() { this.socket.emit('leave-room'); this.roomId = null; this.existingUsers = []; }

  async handleOffer(data) {
    this.received.push(['offer', data]);
    const pc = new StandInPeerConnection();
    this.peerConnections.set(data.from, pc);
    this.socket.emit('ice-candidate', { target: data.from, candidate: pc.candidate() });
    await pc.setRemoteDescription(data.offer);
    const answer = await pc.createAnswer();
    this.socket.emit('answer', { target: data.from, answer });
  }

  async handleAnswer(data) {
    this.received.push(['answer', data]);
    const pc = this.peerConnections.get(data.from);
    if (pc) await pc.setRemoteDescription(data.answer);
  }

  async handleIceCandidate(data) {
    this.received.push(['ice-candidate', data]);
    const pc = this.peerConnections.get(data.from);
    if (pc) await pc.addIceCandidate(data.candidate);
  }

  async sendOffer(targetUserId) {
    const pc = new StandInPeerConnection();
    this.peerConnections.set(targetUserId, pc);
    this.socket.emit('ice-candidate', { target: targetUserId, candidate: pc.candidate() });
    const offer = await pc.createOffer();
    this.socket.emit('offer', { target: targetUserId, offer });
  }
}

/** Bounded wait for a condition the pages reach by themselves. */
async function until(what, predicate, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function open() {
  const [host, guest, third] = [new Page('host'), new Page('guest'), new Page('third')];
  const pages = [host, guest, third];
  try {
    await Promise.all(pages.map((p) => p.connected()));
    const room = `guide-${process.pid}`;
    assert.deepEqual(await host.createRoom(room), { success: true, roomId: room });
    const joined = await guest.joinRoom(room);
    assert.equal(joined.success, true);
    assert.deepEqual(joined.existingUsers, [host.socket.id]);
    const third_ = await third.joinRoom(room);
    assert.deepEqual(new Set(third_.existingUsers), new Set([host.socket.id, guest.socket.id]));
    // Everyone offers to everyone (the guide's glare included) and answers every offer:
    // each page ends up with a description from each other page, relayed as it was sent.
    for (const page of pages) {
      const others = pages.filter((p) => p !== page).map((p) => p.socket.id);
      await until(`${page.name}'s answers`, () =>
        others.every((id) => page.received.some(([kind, d]) => kind === 'answer' && d.from === id)));
      for (const [kind, data] of page.received) {
        assert.ok(others.includes(data.from), `${kind} from a stranger`);
        if (kind === 'ice-candidate') assert.equal(data.candidate.usernameFragment, 'abcd');
        else assert.match(data[kind].sdp, /^v=0\r\n/);
      }
    }
    // A truncated emoji (a lone surrogate, which JSON.stringify escapes as is): an error to
    // the sender, nothing to the target, and the sender is still connected.
    const before = host.received.length;
    guest.socket.emit('offer', { target: host.socket.id, offer: { type: 'offer', sdp: 'v=0 \ud83d' } });
    await until('the offer-error', () => guest.errors.length === 1);
    assert.equal(guest.errors[0].type, 'offer-error');
    assert.equal(guest.errors[0].code, 'INVALID_PAYLOAD');
    assert.equal(guest.isConnected, true);
    await guest.sendOffer(host.socket.id);
    await until('the next offer', () =>
      host.received.slice(before).some(([kind, d]) => kind === 'offer' && d.from === guest.socket.id));
    assert.ok(host.received.every(([kind, d]) => kind !== 'offer' || !d.offer.sdp.includes('\ud83d')));
    // The host leaving closes the room for the others, with the guide's alert.
    host.leaveRoom();
    await until('room-closed', () => guest.closed !== null && third.closed !== null);
    assert.equal(guest.closed.reason, 'host-left');
    assert.equal(typeof guest.closed.message, 'string');
  } finally {
    for (const page of pages) page.socket.close();
  }
}

async function refused() {
  const page = new Page('refused');
  try {
    const error = await waitFor(page.socket, 'connect_error');
    assert.equal(error.message, 'Authentication required');
    assert.equal(page.isConnected, false);
  } finally {
    page.socket.close();
  }
}

try {
  await (expect === 'open' ? open() : refused());
  console.log(`PASS ${expect}`);
  process.exit(0);
} catch (error) {
  console.log(`FAIL ${expect}: ${error?.stack ?? error}`);
  process.exit(1);
}
