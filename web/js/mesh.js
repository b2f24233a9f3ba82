// Mesh topology: one RTCPeerConnection per other participant, "perfect negotiation" so two
// peers that offer at the same time settle without glare, and an ICE restart on failure.
import { SerialQueue } from './util.js';

/** @typedef {import('./types.js').Signal} Signal */
/** @typedef {import('./types.js').TrackSink} TrackSink */
/** @typedef {import('./types.js').LocalTracks} LocalTracks */
/** @typedef {import('./types.js').Description} Description */
/** @typedef {import('./types.js').Transport} Transport */

/**
 * The camera slots are the first audio and first video transceivers (the first offer always
 * creates them in that order); any later video transceiver carries a screen share.
 * @param {RTCPeerConnection} pc
 */
function slots(pc) {
  const all = pc.getTransceivers().filter((t) => t.direction !== 'stopped');
  const audio = all.filter((t) => t.receiver.track.kind === 'audio');
  const video = all.filter((t) => t.receiver.track.kind === 'video');
  return { audio: audio[0] ?? null, video: video[0] ?? null, screens: video.slice(1) };
}

class MeshPeer {
  makingOffer = false;
  ignoreOffer = false;
  answerPending = false;
  queue = new SerialQueue();

  /**
   * @param {string} id remote socket id
   * @param {boolean} polite the polite peer yields when offers collide
   * @param {{ iceServers: RTCIceServer[], local: LocalTracks, signal: Signal, sink: TrackSink, changed: () => void }} ctx
   */
  constructor(id, polite, ctx) {
    this.id = id;
    this.polite = polite;
    this.ctx = ctx;
    const pc = new RTCPeerConnection({ iceServers: ctx.iceServers, bundlePolicy: 'max-bundle' });
    this.pc = pc;
    pc.onnegotiationneeded = async () => {
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        const d = pc.localDescription;
        if (d) ctx.signal('video:offer', { to: id, offer: { type: d.type, sdp: d.sdp } });
      } catch (err) {
        console.warn('offer failed', id, err);
      } finally {
        this.makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => {
      if (candidate) ctx.signal('video:ice-candidate', { to: id, candidate: candidate.toJSON() });
    };
    pc.onconnectionstatechange = () => ctx.changed();
    pc.oniceconnectionstatechange = () => {
      // Either side may restart; the restart becomes an offer through negotiationneeded.
      if (pc.iceConnectionState === 'failed') pc.restartIce();
    };
    pc.ontrack = (ev) => {
      const { video, screens } = slots(pc);
      const kind = /** @type {'audio' | 'video'} */ (ev.track.kind);
      const slot = kind === 'video' && ev.transceiver !== video && screens.includes(ev.transceiver) ? 'screen' : 'camera';
      if (kind === 'audio' && ev.transceiver !== slots(pc).audio) return; // only one voice per peer
      const track = ev.track;
      ctx.sink(id, slot, kind, track);
      const gone = () => ctx.sink(id, slot, kind, null);
      track.addEventListener('ended', gone);
      ev.streams[0]?.addEventListener('removetrack', (e) => {
        if (e.track === track) gone();
      });
    };
  }

  /** Put local tracks on the connection: before the first offer, or into a received offer. */
  async attachLocal() {
    const { pc, ctx } = this;
    const local = ctx.local;
    const s = slots(pc);
    for (const kind of /** @type {const} */ (['audio', 'video'])) {
      const track = local[kind];
      const t = s[kind];
      if (t) {
        if (track && t.sender.track !== track) await t.sender.replaceTrack(track);
        if (track && (t.direction === 'recvonly' || t.direction === 'inactive')) t.direction = 'sendrecv';
        if (track) t.sender.setStreams?.(local.stream);
      } else if (track) {
        pc.addTrack(track, local.stream);
      } else {
        pc.addTransceiver(kind, { direction: 'recvonly' }); // receive-only participant
      }
    }
    await this.attachScreen();
  }

  /** Publish, replace or withdraw the screen share on a spare video transceiver. */
  async attachScreen() {
    const { pc, ctx } = this;
    const screen = ctx.local.screen;
    const { screens } = slots(pc);
    const mine = screens.find((t) => t.sender.track && t.sender.track.kind === 'video');
    if (!screen) {
      if (mine) {
        await mine.sender.replaceTrack(null);
        mine.direction = 'recvonly';
      }
      return;
    }
    if (mine) {
      if (mine.sender.track !== screen) await mine.sender.replaceTrack(screen);
      return;
    }
    const spare = screens.find((t) => !t.sender.track);
    if (spare) {
      await spare.sender.replaceTrack(screen);
      if (ctx.local.screenStream) spare.sender.setStreams?.(ctx.local.screenStream);
      spare.direction = 'sendrecv';
    } else {
      pc.addTrack(screen, ctx.local.screenStream ?? new MediaStream([screen]));
    }
  }

  /** @param {Description} desc */
  onDescription(desc) {
    return this.queue.push(async () => {
      const pc = this.pc;
      const readyForOffer = !this.makingOffer && (pc.signalingState === 'stable' || this.answerPending);
      const collision = desc.type === 'offer' && !readyForOffer;
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      this.answerPending = desc.type === 'answer';
      await pc.setRemoteDescription(desc); // rolls back our own offer if we are polite
      this.answerPending = false;
      if (desc.type === 'offer') {
        await this.attachLocal();
        await pc.setLocalDescription();
        const d = pc.localDescription;
        if (d) this.ctx.signal('video:answer', { to: this.id, answer: { type: d.type, sdp: d.sdp } });
      }
    });
  }

  /** @param {RTCIceCandidateInit | null} candidate */
  onCandidate(candidate) {
    if (!candidate) return;
    return this.queue.push(async () => {
      try {
        await this.pc.addIceCandidate(candidate);
      } catch (err) {
        if (!this.ignoreOffer) console.warn('candidate rejected', err);
      }
    });
  }

  close() {
    this.pc.ontrack = null;
    this.pc.onnegotiationneeded = null;
    this.pc.onicecandidate = null;
    this.pc.onconnectionstatechange = null;
    this.pc.close();
  }
}

/** @implements {Transport} */
export class MeshTransport {
  /** @type {import('./types.js').Mode} */
  mode = 'mesh';
  /** @type {Map<string, MeshPeer>} */
  peers = new Map();

  /**
   * @param {{ selfId: string, iceServers: RTCIceServer[], local: LocalTracks, signal: Signal, sink: TrackSink, changed: () => void }} opts
   */
  constructor(opts) {
    this.opts = opts;
  }

  /** @param {string} peerId */
  #peer(peerId) {
    let p = this.peers.get(peerId);
    if (!p) {
      const { iceServers, local, signal, sink, selfId, changed } = this.opts;
      p = new MeshPeer(peerId, selfId > peerId, { iceServers, local, signal, sink, changed });
      this.peers.set(peerId, p);
    }
    return p;
  }

  /** We offer: our tracks go on first, negotiationneeded sends the offer. @param {string} peerId */
  connectTo(peerId) {
    const fresh = !this.peers.has(peerId);
    const p = this.#peer(peerId);
    if (fresh) p.queue.push(() => p.attachLocal());
  }

  /** @param {string} from @param {Description} desc */
  onDescription(from, desc) {
    if (desc.type === 'answer' && !this.peers.has(from)) return;
    this.#peer(from).onDescription(desc);
  }

  /** @param {string} from @param {RTCIceCandidateInit | null} candidate */
  onCandidate(from, candidate) {
    this.peers.get(from)?.onCandidate(candidate);
  }

  /** @param {string} peerId */
  removePeer(peerId) {
    this.peers.get(peerId)?.close();
    this.peers.delete(peerId);
  }

  async refreshLocal() {
    await Promise.all([...this.peers.values()].map((p) => p.queue.push(() => p.attachLocal())));
  }

  states() {
    /** @type {Record<string, string>} */
    const out = {};
    for (const [id, p] of this.peers) out[id] = p.pc.connectionState;
    return out;
  }

  connections() {
    /** @type {Record<string, RTCPeerConnection>} */
    const out = {};
    for (const [id, p] of this.peers) out[id] = p.pc;
    return out;
  }

  /** Mesh leaves rate control to each connection's congestion control. */
  caps() {
    return {};
  }

  close() {
    for (const p of this.peers.values()) p.close();
    this.peers.clear();
  }
}
