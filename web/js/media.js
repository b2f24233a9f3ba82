// Local camera, microphone and screen: acquisition, device choice, plain-language errors.
import { Emitter } from './util.js';

/** @typedef {'low' | 'medium' | 'high'} Resolution */

/** @type {Record<Resolution, { width: number, height: number, frameRate: number, bitrate: number, label: string }>} */
export const RESOLUTIONS = {
  low: { width: 320, height: 240, frameRate: 15, bitrate: 250_000, label: 'Low (320×240, saves data)' },
  medium: { width: 640, height: 480, frameRate: 24, bitrate: 600_000, label: 'Standard (640×480)' },
  high: { width: 1280, height: 720, frameRate: 30, bitrate: 1_500_000, label: 'High (1280×720)' },
};

const PREFS_KEY = 'studycall.media';

/**
 * Turn a getUserMedia failure into a sentence a person can act on.
 * @param {unknown} err
 * @returns {string}
 */
export function mediaErrorMessage(err) {
  const name = err instanceof Error ? err.name : '';
  switch (name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'Camera and microphone access is blocked. Allow it from the icon in the address bar and reload. You can still join to watch and listen.';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'No camera or microphone was found. You can still join to watch and listen.';
    case 'NotReadableError':
    case 'AbortError':
      return 'Your camera or microphone is being used by another app. Close that app and try again.';
    case 'TypeError':
      return 'This page needs a secure address (https or localhost) to use your camera and microphone.';
    default:
      return 'Your camera or microphone could not be started. You can still join to watch and listen.';
  }
}

/**
 * The person's own media. Tracks live across peer connections and mode switches: topologies
 * read them from here and are told to refresh when one is replaced.
 */
export class LocalMedia extends Emitter {
  /** @type {MediaStreamTrack | null} */ audio = null;
  /** @type {MediaStreamTrack | null} */ video = null;
  /** @type {MediaStreamTrack | null} */ screen = null;
  /** @type {MediaStream | null} */ screenStream = null;
  /** Stream holding the current audio + video, shown on our own tile. */
  stream = new MediaStream();
  micOn = true;
  camOn = true;
  /** @type {string} last acquisition problem, in plain words ('' when fine) */
  problem = '';

  /** @param {{ lowres?: boolean }} [opts] */
  constructor(opts = {}) {
    super();
    /** @type {{ audioId: string, videoId: string, resolution: Resolution }} */
    this.prefs = { audioId: '', videoId: '', resolution: 'medium' };
    try {
      Object.assign(this.prefs, JSON.parse(localStorage.getItem(PREFS_KEY) ?? '{}'));
    } catch {
      /* ignore a corrupt preference */
    }
    if (!(this.prefs.resolution in RESOLUTIONS)) this.prefs.resolution = 'medium';
    if (opts.lowres) this.prefs.resolution = 'low';
  }

  get videoBitrate() {
    return RESOLUTIONS[this.prefs.resolution].bitrate;
  }

  get hasDevices() {
    return Boolean(this.audio || this.video);
  }

  /** @returns {MediaTrackConstraints} */
  #videoConstraints() {
    const r = RESOLUTIONS[this.prefs.resolution];
    /** @type {MediaTrackConstraints} */
    const c = { width: { ideal: r.width }, height: { ideal: r.height }, frameRate: { ideal: r.frameRate, max: r.frameRate } };
    if (this.prefs.videoId) c.deviceId = { ideal: this.prefs.videoId };
    return c;
  }

  /** @returns {MediaTrackConstraints} */
  #audioConstraints() {
    /** @type {MediaTrackConstraints} */
    const c = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
    if (this.prefs.audioId) c.deviceId = { ideal: this.prefs.audioId };
    return c;
  }

  /**
   * Start camera and microphone. Never throws: what could not be started is left null and
   * explained in `problem`, and the call works receive-only for that kind.
   * @returns {Promise<string>} the problem ('' if both started)
   */
  start() {
    if (this.audio || this.video) return Promise.resolve(this.problem);
    // The lobby and a quick "Join" may both ask: share one request (one permission prompt).
    this.#starting ??= this.#acquire().finally(() => {
      this.#starting = null;
    });
    return this.#starting;
  }

  /** @type {Promise<string> | null} */
  #starting = null;

  /** @returns {Promise<string>} */
  async #acquire() {
    this.problem = '';
    if (!navigator.mediaDevices?.getUserMedia) {
      this.problem = mediaErrorMessage(new TypeError('no mediaDevices'));
      this.emit('change');
      return this.problem;
    }
    try {
      const s = await navigator.mediaDevices.getUserMedia({ audio: this.#audioConstraints(), video: this.#videoConstraints() });
      this.#adopt(s.getAudioTracks()[0] ?? null, 'audio');
      this.#adopt(s.getVideoTracks()[0] ?? null, 'video');
    } catch (err) {
      this.problem = mediaErrorMessage(err);
      if (!(err instanceof Error) || err.name !== 'NotAllowedError') {
        // One missing or busy device should not cost the other one.
        for (const kind of /** @type {const} */ (['audio', 'video'])) {
          try {
            const c = kind === 'audio' ? { audio: this.#audioConstraints() } : { video: this.#videoConstraints() };
            const s = await navigator.mediaDevices.getUserMedia(c);
            this.#adopt(s.getTracks()[0] ?? null, kind);
          } catch {
            /* reported through `problem` */
          }
        }
        if (this.audio && !this.video) this.problem = 'No camera is available, so others will only hear you. ' + this.problem.split('. ').slice(-1)[0];
        if (this.video && !this.audio) this.problem = 'No microphone is available, so others will only see you.';
      }
    }
    this.emit('change');
    return this.problem;
  }

  /**
   * @param {MediaStreamTrack | null} track
   * @param {'audio' | 'video'} kind
   */
  #adopt(track, kind) {
    const old = this[kind];
    if (old) {
      this.stream.removeTrack(old);
      old.stop();
    }
    this[kind] = track;
    if (!track) return;
    track.enabled = kind === 'audio' ? this.micOn : this.camOn;
    track.addEventListener('ended', () => {
      if (this[kind] !== track) return;
      this.problem = kind === 'audio' ? 'Your microphone stopped working or was unplugged.' : 'Your camera stopped working or was unplugged.';
      this.emit('problem', this.problem);
    });
    this.stream.addTrack(track);
  }

  /** @returns {Promise<{ audio: MediaDeviceInfo[], video: MediaDeviceInfo[] }>} */
  async devices() {
    const all = navigator.mediaDevices ? await navigator.mediaDevices.enumerateDevices() : [];
    return {
      audio: all.filter((d) => d.kind === 'audioinput' && d.deviceId),
      video: all.filter((d) => d.kind === 'videoinput' && d.deviceId),
    };
  }

  /** @returns {string} the device id in use for a kind */
  currentDevice(/** @type {'audio' | 'video'} */ kind) {
    return this[kind]?.getSettings().deviceId ?? this.prefs[kind === 'audio' ? 'audioId' : 'videoId'];
  }

  /**
   * Switch to another camera or microphone; topologies hear `tracks` and replace senders.
   * @param {'audio' | 'video'} kind
   * @param {string} deviceId
   */
  async useDevice(kind, deviceId) {
    if (kind === 'audio') this.prefs.audioId = deviceId;
    else this.prefs.videoId = deviceId;
    this.#save();
    const c = kind === 'audio' ? { audio: this.#audioConstraints() } : { video: this.#videoConstraints() };
    try {
      const s = await navigator.mediaDevices.getUserMedia(c);
      this.#adopt(s.getTracks()[0] ?? null, kind);
      this.problem = '';
      this.emit('tracks');
      this.emit('change');
    } catch (err) {
      this.emit('problem', mediaErrorMessage(err));
    }
  }

  /** @param {Resolution} resolution */
  async setResolution(resolution) {
    this.prefs.resolution = resolution;
    this.#save();
    if (this.video) {
      try {
        await this.video.applyConstraints(this.#videoConstraints());
      } catch (err) {
        this.emit('problem', mediaErrorMessage(err));
      }
    }
    this.emit('tracks');
  }

  /** @param {boolean} on */
  setMic(on) {
    this.micOn = on;
    if (this.audio) this.audio.enabled = on;
    this.emit('change');
  }

  /** @param {boolean} on */
  setCam(on) {
    this.camOn = on;
    if (this.video) this.video.enabled = on;
    this.emit('change');
  }

  /** Ask for a screen, window or tab. Throws if the person cancels. */
  async startScreen() {
    if (this.screen) return;
    if (!navigator.mediaDevices?.getDisplayMedia) throw new Error('Screen sharing is not supported in this browser.');
    const s = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15, max: 30 } }, audio: false });
    const track = s.getVideoTracks()[0];
    if (!track) throw new Error('No screen was chosen.');
    track.contentHint = 'detail';
    this.screen = track;
    this.screenStream = s;
    // The browser's own "Stop sharing" button ends the track.
    track.addEventListener('ended', () => {
      if (this.screen === track) this.stopScreen();
    });
    this.emit('screen', true);
    this.emit('change');
  }

  stopScreen() {
    if (!this.screen) return;
    this.screen.stop();
    this.screen = null;
    this.screenStream = null;
    this.emit('screen', false);
    this.emit('change');
  }

  /** Release every device (the camera light goes off). */
  stop() {
    this.stopScreen();
    for (const kind of /** @type {const} */ (['audio', 'video'])) {
      const t = this[kind];
      if (t) {
        t.stop();
        this.stream.removeTrack(t);
      }
      this[kind] = null;
    }
    this.emit('change');
  }

  #save() {
    localStorage.setItem(PREFS_KEY, JSON.stringify(this.prefs));
  }
}
