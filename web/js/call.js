// The call controller: room state from the server, the live topology (mesh or sfu), remote
// media per person, and rejoining after the socket comes back. No DOM in here.
import { MeshTransport } from './mesh.js';
import { SfuTransport } from './sfu.js';
import { Emitter } from './util.js';

/** @typedef {import('./types.js').Participant} Participant */
/** @typedef {import('./types.js').RoomState} RoomState */
/** @typedef {import('./types.js').ChatMessage} ChatMessage */
/** @typedef {import('./types.js').Mode} Mode */
/** @typedef {import('./types.js').Transport} Transport */
/** @typedef {import('./types.js').ServerError} ServerError */
/** @typedef {import('./session.js').Session} Session */
/** @typedef {import('./media.js').LocalMedia} LocalMedia */
/** @typedef {{ audio: MediaStreamTrack | null, video: MediaStreamTrack | null }} RemoteMedia */

/** Plain words for the server's room-closed reasons. @type {Record<string, string>} */
const CLOSED_REASONS = {
  'closed-by-server': 'The call was ended by the organiser.',
  'host-left': 'The host left, so the call has ended.',
};

/** Signaling errors during a topology switch are expected and not worth a toast. */
const QUIET_EVENTS = new Set(['video:offer', 'video:answer', 'video:ice-candidate']);

export class Call extends Emitter {
  selfId = '';
  /** @type {Mode} */
  mode = 'mesh';
  /** @type {Map<string, Participant>} */
  participants = new Map();
  /** @type {RTCIceServer[]} */
  iceServers = [];
  /** @type {ChatMessage[]} */
  chat = [];
  /** Remote media by `<socketId>` (camera) or `<socketId>:screen`. @type {Map<string, RemoteMedia>} */
  remote = new Map();
  /** @type {Transport | null} */
  transport = null;
  joined = false;
  ended = false;
  /** @type {(() => void)[]} */
  #off = [];

  /**
   * @param {{ session: Session, roomId: string, media: LocalMedia }} opts
   */
  constructor({ session, roomId, media }) {
    super();
    this.session = session;
    this.roomId = roomId;
    this.media = media;
    this.#bind();
  }

  get socket() {
    return this.session.socket;
  }

  #bind() {
    const s = this.socket;
    /** @type {[string, (...args: any[]) => void][]} */
    const handlers = [
      ['video:room-state', (/** @type {RoomState} */ st) => this.#onRoomState(st)],
      ['video:user-joined', (/** @type {{ socketId: string, userId: string, user: any }} */ p) => this.#onUserJoined(p)],
      ['video:user-left', (/** @type {{ socketId: string }} */ p) => this.#onUserLeft(p.socketId)],
      ['video:offer', (/** @type {{ from: string, offer: any }} */ m) => this.#onDescription(m.from, m.offer)],
      ['video:answer', (/** @type {{ from: string, answer: any }} */ m) => this.#onDescription(m.from, m.answer)],
      ['video:ice-candidate', (/** @type {{ from: string, candidate: any }} */ m) => this.transport?.onCandidate(m.from, m.candidate)],
      ['video:media-state-changed', (/** @type {Partial<Participant> & { socketId: string }} */ m) => this.#onMediaState(m)],
      ['video:mode-changed', (/** @type {{ roomId: string, mode: Mode }} */ m) => this.#onModeChanged(m)],
      ['video:room-closed', (/** @type {{ roomId: string, reason?: string }} */ m) => this.#onRoomClosed(m)],
      ['video:chat', (/** @type {ChatMessage} */ m) => this.#onChat(m)],
      ['error', (/** @type {ServerError} */ e) => this.#onError(e)],
    ];
    for (const [name, fn] of handlers) {
      s.on(name, fn);
      this.#off.push(() => s.off(name, fn));
    }
    this.#off.push(this.session.on('reconnected', () => this.join()));
    this.#off.push(this.session.on('connected', () => this.join()));
    const onTracks = () => this.transport?.refreshLocal();
    this.#off.push(this.media.on('tracks', onTracks));
    this.#off.push(this.media.on('screen', (/** @type {boolean} */ on) => this.#onLocalScreen(on)));
    if (s.connected) this.join();
  }

  /** Join (or rejoin after a reconnect) the room; the server answers with room-state. */
  async join() {
    if (this.ended) return;
    try {
      // `sfu: true`: this client talks to the SFU as the peer "sfu" (docs/protocol.md);
      // without it the server would play every other participant on its own connection.
      const res = await this.session.request('video:join-room', { roomId: this.roomId, sfu: true });
      if (res && res.ok === false) {
        const code = res.error?.code ?? '';
        const message = res.error?.message ?? 'Could not join the room.';
        if (code === 'ROOM_FULL' || code === 'FORBIDDEN' || code === 'NOT_FOUND') this.#end(message);
        else this.emit('toast', message);
      }
    } catch {
      // No ack in time: room-state may still arrive; the banner covers a dead connection.
    }
  }

  /** @param {RoomState} st */
  #onRoomState(st) {
    if (st.roomId !== this.roomId || this.ended) return;
    this.selfId = st.self;
    this.mode = st.mode === 'sfu' ? 'sfu' : 'mesh';
    this.iceServers = Array.isArray(st.iceServers) ? st.iceServers : [];
    this.participants = new Map((st.participants ?? []).filter((p) => p.socketId !== st.self).map((p) => [p.socketId, { ...p }]));
    const known = new Set(this.chat.map((m) => m.id));
    for (const m of st.chat ?? []) if (!known.has(m.id)) this.chat.push(m);
    this.chat.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    this.joined = true;
    this.#rebuild();
    this.#announceMediaState();
    this.emit('chat-reset', this.chat);
    this.emit('change');
  }

  /** Drop every connection and start the current mode afresh with the same local media. */
  /**
   * New connections for the current mode.
   * @param {boolean} [everyone] the newcomer offers to everyone (the documents' flow); after a
   *   mode switch only the side with the lower socket id offers, so two peers never collide.
   */
  #rebuild(everyone = true) {
    this.transport?.close();
    this.remote.clear();
    const opts = {
      selfId: this.selfId,
      iceServers: this.iceServers,
      local: this.media,
      signal: (/** @type {string} */ event, /** @type {unknown} */ payload) => {
        this.session.send(event, payload);
      },
      sink: this.#sink,
      changed: () => this.emit('change'),
    };
    this.transport = this.mode === 'sfu' ? new SfuTransport(opts) : new MeshTransport(opts);
    // Mesh: the newcomer offers (after a switch, the lower id of each pair); sfu: the server.
    if (this.mode !== 'mesh') return;
    for (const id of this.participants.keys()) {
      if (everyone || this.selfId < id) this.transport.connectTo(id);
    }
  }

  /** @type {import('./types.js').TrackSink} */
  #sink = (owner, slot, kind, track) => {
    const key = slot === 'screen' ? `${owner}:screen` : owner;
    const entry = this.remote.get(key) ?? { audio: null, video: null };
    if (!track && entry[kind] === null) return;
    entry[kind] = track;
    if (!entry.audio && !entry.video) this.remote.delete(key);
    else this.remote.set(key, entry);
    this.emit('change');
  };

  /** After (re)joining, the server's view of our mic/camera/screen must match reality. */
  #announceMediaState() {
    const m = this.media;
    if (!m.micOn || !m.audio) this.session.send('video:toggle-audio', { roomId: this.roomId, isMuted: true });
    if (!m.camOn || !m.video) this.session.send('video:toggle-video', { roomId: this.roomId, isVideoOff: true });
    if (m.screen) this.session.send('video:start-screen-share', { roomId: this.roomId });
  }

  /** @param {{ socketId: string, userId: string, user: any }} p */
  #onUserJoined(p) {
    if (p.socketId === this.selfId) return;
    this.participants.set(p.socketId, {
      socketId: p.socketId,
      userId: p.userId,
      user: p.user ?? { id: p.userId },
      isMuted: false,
      isVideoOff: false,
      isSharingScreen: false,
      joinedAt: new Date().toISOString(),
    });
    this.emit('joined', p.user?.name ?? 'Someone');
    this.emit('change');
  }

  /** @param {string} socketId */
  #onUserLeft(socketId) {
    const p = this.participants.get(socketId);
    this.participants.delete(socketId);
    this.transport?.removePeer(socketId);
    this.remote.delete(socketId);
    this.remote.delete(`${socketId}:screen`);
    if (p) this.emit('left', p.user?.name ?? 'Someone');
    this.emit('change');
  }

  /** @param {string} from @param {import('./types.js').Description} desc */
  #onDescription(from, desc) {
    if (!desc || !this.joined) return;
    // The server announces every mode change before it offers for the new mode, so a
    // description for the other mode is a late one from before the switch: drop it.
    if ((from === 'sfu') !== (this.mode === 'sfu')) return;
    this.transport?.onDescription(from, desc);
  }

  /** @param {Partial<Participant> & { socketId: string }} m */
  #onMediaState(m) {
    const p = this.participants.get(m.socketId);
    if (!p) return;
    if (typeof m.isMuted === 'boolean') p.isMuted = m.isMuted;
    if (typeof m.isVideoOff === 'boolean') p.isVideoOff = m.isVideoOff;
    if (typeof m.isSharingScreen === 'boolean') p.isSharingScreen = m.isSharingScreen;
    this.emit('change');
  }

  /** @param {{ roomId: string, mode: Mode }} m */
  #onModeChanged(m) {
    if (m.roomId !== this.roomId || !this.joined) return;
    this.mode = m.mode === 'sfu' ? 'sfu' : 'mesh';
    this.#rebuild(false);
    this.emit('mode', this.mode);
    this.emit('change');
  }

  /** @param {{ roomId: string, reason?: string }} m */
  #onRoomClosed(m) {
    if (m.roomId !== this.roomId) return;
    const reason = m.reason ?? '';
    this.#end(CLOSED_REASONS[reason] ?? (reason ? `The call was closed (${reason}).` : 'The call was closed.'));
  }

  /** @param {ChatMessage} m */
  #onChat(m) {
    if (m.roomId !== this.roomId || this.chat.some((c) => c.id === m.id)) return;
    this.chat.push(m);
    this.emit('chat', m);
  }

  /** @param {ServerError} e */
  #onError(e) {
    const message = e?.message ?? 'Something went wrong.';
    if (e?.event && QUIET_EVENTS.has(e.event)) {
      console.warn('signaling error', e);
      return;
    }
    this.emit('toast', message);
  }

  /** @param {boolean} on */
  #onLocalScreen(on) {
    this.session.send(on ? 'video:start-screen-share' : 'video:stop-screen-share', { roomId: this.roomId });
    this.transport?.refreshLocal();
    this.emit('change');
  }

  /** @param {boolean} on */
  setMic(on) {
    this.media.setMic(on);
    this.session.send('video:toggle-audio', { roomId: this.roomId, isMuted: !on });
    this.emit('change');
  }

  /** @param {boolean} on */
  setCam(on) {
    this.media.setCam(on);
    this.session.send('video:toggle-video', { roomId: this.roomId, isVideoOff: !on });
    this.emit('change');
  }

  /**
   * @param {string} content
   * @returns {Promise<void>}
   */
  async sendChat(content) {
    const res = await this.session.request('video:chat', { roomId: this.roomId, content });
    if (res && res.ok === false) throw new Error(res.error?.message ?? 'Message not sent.');
  }

  /** Leave on purpose: tell the server, close connections. */
  leave() {
    this.session.send('video:leave-room', { roomId: this.roomId });
    this.#end('');
  }

  /** @param {string} reason */
  #end(reason) {
    if (this.ended) return;
    this.ended = true;
    this.transport?.close();
    this.transport = null;
    this.remote.clear();
    for (const off of this.#off) off();
    this.#off = [];
    this.emit('ended', reason);
  }

  /**
   * Who sends each remote track we play, by track id (an `inbound-rtp` stat's
   * `trackIdentifier`): for the test hook, to attribute getStats() to people.
   * @returns {Record<string, { owner: string, slot: 'camera' | 'screen', kind: string }>}
   */
  remoteTracks() {
    /** @type {Record<string, { owner: string, slot: 'camera' | 'screen', kind: string }>} */
    const out = {};
    for (const [key, m] of this.remote) {
      const screen = key.endsWith(':screen');
      const owner = screen ? key.slice(0, -':screen'.length) : key;
      for (const track of [m.audio, m.video]) {
        if (track) out[track.id] = { owner, slot: screen ? 'screen' : 'camera', kind: track.kind };
      }
    }
    return out;
  }

  /** A JSON-friendly picture of the call, for the test hook and debugging. */
  snapshot() {
    return {
      roomId: this.roomId,
      selfId: this.selfId,
      socketId: this.socket.id ?? null,
      connection: this.session.state,
      joined: this.joined,
      mode: this.mode,
      participants: [...this.participants.values()].map((p) => ({
        socketId: p.socketId,
        userId: p.userId,
        name: p.user?.name ?? '',
        isMuted: p.isMuted,
        isVideoOff: p.isVideoOff,
        isSharingScreen: p.isSharingScreen,
      })),
      remoteStreams: [...this.remote.keys()].sort(),
      peers: this.transport?.states() ?? {},
      bitrateCaps: this.transport?.caps() ?? {},
      chat: this.chat.length,
    };
  }
}
