// SFU topology: the server is the single peer "sfu" and makes every offer. We answer,
// publishing our camera/mic (and screen) on the m-lines the server offered as recvonly,
// and map forwarded tracks to people by stream id (`<socketId>` or `<socketId>:screen`).
import { SerialQueue } from './util.js';

/** @typedef {import('./types.js').Signal} Signal */
/** @typedef {import('./types.js').TrackSink} TrackSink */
/** @typedef {import('./types.js').LocalTracks} LocalTracks */
/** @typedef {import('./types.js').Description} Description */
/** @typedef {import('./types.js').Transport} Transport */

const SCREEN_BITRATE = 1_200_000;

/**
 * The DTLS fingerprint of an SDP: a new one means a new server-side connection.
 * @param {string | undefined} sdp
 * @returns {string | null}
 */
export function fingerprintOf(sdp) {
  const match = sdp ? /\r?\na=fingerprint:(\S+ \S+)/.exec(sdp) : null;
  return match ? match[1].toLowerCase() : null;
}

/**
 * Direction the server wrote for each mid of an SDP.
 * @param {string} sdp
 * @returns {Map<string, string>}
 */
export function directionsByMid(sdp) {
  const out = new Map();
  for (const section of sdp.split(/\r?\nm=/).slice(1)) {
    const mid = /\r?\na=mid:(\S+)/.exec(section)?.[1];
    const dir = /\r?\na=(sendrecv|sendonly|recvonly|inactive)/.exec(section)?.[1] ?? 'sendrecv';
    if (mid !== undefined) out.set(mid, dir);
  }
  return out;
}

/** @implements {Transport} */
export class SfuTransport {
  /** @type {import('./types.js').Mode} */
  mode = 'sfu';
  /** @type {RTCPeerConnection | null} */
  pc = null;
  queue = new SerialQueue();
  /** @type {{ audio: RTCRtpTransceiver | null, video: RTCRtpTransceiver | null, screen: RTCRtpTransceiver | null }} */
  publish = { audio: null, video: null, screen: null };
  /** Remote tracks handed to the sink, so a replaced connection can take them back. @type {Set<string>} */
  delivered = new Set();
  /** The server's DTLS fingerprint, as it wrote it in its last offer. @type {string | null} */
  serverFingerprint = null;

  /**
   * @param {{ selfId: string, iceServers: RTCIceServer[], local: LocalTracks, signal: Signal, sink: TrackSink, changed: () => void }} opts
   */
  constructor(opts) {
    this.opts = opts;
  }

  #connection() {
    if (this.pc) return this.pc;
    const { iceServers, signal, sink, changed } = this.opts;
    const pc = new RTCPeerConnection({ iceServers, bundlePolicy: 'max-bundle' });
    this.pc = pc;
    pc.onconnectionstatechange = () => changed();
    pc.onicecandidate = ({ candidate }) => {
      if (candidate) signal('video:ice-candidate', { to: 'sfu', candidate: candidate.toJSON() });
    };
    pc.ontrack = (ev) => {
      const streamId = ev.streams[0]?.id;
      if (!streamId || streamId === this.opts.selfId || streamId === `${this.opts.selfId}:screen`) return;
      const screen = streamId.endsWith(':screen');
      const owner = screen ? streamId.slice(0, -':screen'.length) : streamId;
      const slot = screen ? 'screen' : 'camera';
      const kind = /** @type {'audio' | 'video'} */ (ev.track.kind);
      const track = ev.track;
      sink(owner, slot, kind, track);
      this.delivered.add(JSON.stringify([owner, slot, kind]));
      const stream = ev.streams[0];
      const gone = () => sink(owner, slot, kind, null);
      track.addEventListener('ended', gone);
      stream?.addEventListener('removetrack', (e) => {
        if (e.track === track) gone();
      });
    };
    return pc;
  }

  /** In sfu mode the server offers; nothing to do per peer. @param {string} _peerId */
  connectTo(_peerId) {}

  /** @param {string} from @param {Description} desc */
  onDescription(from, desc) {
    if (from !== 'sfu' || desc.type !== 'offer') return;
    this.queue.push(async () => {
      // The server replaced our connection (its side failed, or another node took the room
      // over): a new DTLS identity cannot be renegotiated, so start a fresh one.
      const fingerprint = fingerprintOf(desc.sdp);
      if (this.pc && this.serverFingerprint && fingerprint !== this.serverFingerprint) this.#reset();
      this.serverFingerprint = fingerprint;
      const pc = this.#connection();
      await pc.setRemoteDescription(desc);
      this.#assignPublishSlots(desc.sdp ?? '');
      await this.#attach();
      await pc.setLocalDescription();
      const d = pc.localDescription;
      if (d) this.opts.signal('video:answer', { to: 'sfu', answer: { type: d.type, sdp: d.sdp } });
      await this.#capBitrates();
    });
  }

  /**
   * The server's recvonly m-lines are ours to publish on: the first audio is the microphone,
   * the first video the camera, a second video the screen share.
   * @param {string} sdp
   */
  #assignPublishSlots(sdp) {
    const pc = this.pc;
    if (!pc) return;
    const dirs = directionsByMid(sdp);
    const recv = pc.getTransceivers().filter((t) => t.mid !== null && dirs.get(t.mid) === 'recvonly');
    const audio = recv.filter((t) => t.receiver.track.kind === 'audio');
    const video = recv.filter((t) => t.receiver.track.kind === 'video');
    const keep = (/** @type {RTCRtpTransceiver | null} */ cur, /** @type {RTCRtpTransceiver[]} */ list, index = 0) =>
      cur && list.includes(cur) ? cur : list.filter((t) => t !== this.publish.video && t !== this.publish.screen)[index] ?? null;
    this.publish.audio = keep(this.publish.audio, audio);
    this.publish.video = keep(this.publish.video, video);
    this.publish.screen = keep(this.publish.screen, video.filter((t) => t !== this.publish.video));
  }

  async #attach() {
    const { local } = this.opts;
    /** @type {[RTCRtpTransceiver | null, MediaStreamTrack | null][]} */
    const pairs = [
      [this.publish.audio, local.audio],
      [this.publish.video, local.video],
      [this.publish.screen, local.screen],
    ];
    for (const [t, track] of pairs) {
      if (!t) continue;
      if (t.sender.track !== track) await t.sender.replaceTrack(track);
      t.direction = track ? 'sendrecv' : 'recvonly';
    }
  }

  /** aiortc has no per-subscriber rate control: publishers cap themselves (one encoding). */
  async #capBitrates() {
    /** @type {[RTCRtpTransceiver | null, number][]} */
    const caps = [
      [this.publish.video, this.opts.local.videoBitrate],
      [this.publish.screen, SCREEN_BITRATE],
    ];
    for (const [t, max] of caps) {
      if (!t || !t.sender.track) continue;
      try {
        const params = t.sender.getParameters();
        if (!params.encodings || params.encodings.length === 0) continue;
        params.encodings = [{ ...params.encodings[0], maxBitrate: max }];
        await t.sender.setParameters(params);
      } catch (err) {
        console.warn('could not cap bitrate', err);
      }
    }
  }

  /** @param {string} from @param {RTCIceCandidateInit | null} candidate */
  onCandidate(from, candidate) {
    if (from !== 'sfu' || !candidate) return;
    this.queue.push(async () => {
      if (!this.pc || !this.pc.remoteDescription) return;
      try {
        await this.pc.addIceCandidate(candidate);
      } catch (err) {
        console.warn('sfu candidate rejected', err);
      }
    });
  }

  /** The server renegotiates when people leave; nothing to close here. @param {string} _peerId */
  removePeer(_peerId) {}

  /** A new device or resolution: swap tracks in place, no renegotiation needed. */
  async refreshLocal() {
    await this.queue.push(async () => {
      await this.#attachExisting();
      await this.#capBitrates();
    });
  }

  /** Replace tracks on already negotiated senders only (direction changes need an offer). */
  async #attachExisting() {
    const { local } = this.opts;
    if (this.publish.audio && this.publish.audio.sender.track !== local.audio) await this.publish.audio.sender.replaceTrack(local.audio);
    if (this.publish.video && this.publish.video.sender.track !== local.video) await this.publish.video.sender.replaceTrack(local.video);
    if (this.publish.screen && !local.screen && this.publish.screen.sender.track) await this.publish.screen.sender.replaceTrack(null);
    if (this.publish.screen && local.screen && this.publish.screen.sender.track !== local.screen) {
      // The server offered the screen m-line already: publish on it.
      if (this.publish.screen.currentDirection === 'sendonly' || this.publish.screen.currentDirection === 'sendrecv') {
        await this.publish.screen.sender.replaceTrack(local.screen);
      }
    }
  }

  /** @returns {Record<string, number>} */
  caps() {
    /** @type {Record<string, number>} */
    const out = {};
    for (const slot of /** @type {const} */ (['video', 'screen'])) {
      const max = this.publish[slot]?.sender.getParameters().encodings?.[0]?.maxBitrate;
      if (max) out[slot] = max;
    }
    return out;
  }

  /** @returns {Record<string, string>} */
  states() {
    return this.pc ? { sfu: this.pc.connectionState } : {};
  }

  /** @returns {Record<string, RTCPeerConnection>} */
  connections() {
    return this.pc ? { sfu: this.pc } : {};
  }

  /** Drops the connection and the tracks it delivered (their tiles go back to avatars). */
  #reset() {
    this.close();
    this.publish = { audio: null, video: null, screen: null };
    for (const key of this.delivered) {
      const [owner, slot, kind] = JSON.parse(key);
      this.opts.sink(owner, slot, kind, null);
    }
    this.delivered.clear();
  }

  close() {
    if (!this.pc) return;
    this.pc.ontrack = null;
    this.pc.onicecandidate = null;
    this.pc.onconnectionstatechange = null;
    this.pc.close();
    this.pc = null;
  }
}
