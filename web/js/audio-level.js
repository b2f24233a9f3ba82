// Speaking detection: one AudioContext, an AnalyserNode per voice, polled a few times a second.

const THRESHOLD = 0.02; // RMS of a normalised waveform; quiet rooms sit well below this
const HOLD_MS = 700; // keep the highlight briefly so it does not flicker between words

export class SpeakingDetector {
  /** @type {AudioContext | null} */
  #ctx = null;
  /** @type {Map<string, { track: MediaStreamTrack, source: MediaStreamAudioSourceNode, analyser: AnalyserNode, buf: Float32Array<ArrayBuffer>, last: number, speaking: boolean }>} */
  #voices = new Map();
  /** @type {ReturnType<typeof setInterval> | null} */
  #timer = null;

  /** @param {(id: string, speaking: boolean) => void} onChange */
  constructor(onChange) {
    this.onChange = onChange;
  }

  /** Browsers start audio contexts suspended until a user gesture; call from one. */
  resume() {
    if (this.#ctx && this.#ctx.state === 'suspended') this.#ctx.resume().catch(() => {});
  }

  /**
   * Follow the level of one audio track under an id (a socket id, or 'self').
   * @param {string} id
   * @param {MediaStreamTrack | null} track
   */
  watch(id, track) {
    const current = this.#voices.get(id);
    if (current && current.track === track) return;
    this.unwatch(id);
    if (!track || track.kind !== 'audio') return;
    try {
      this.#ctx ??= new AudioContext();
      const source = this.#ctx.createMediaStreamSource(new MediaStream([track]));
      const analyser = this.#ctx.createAnalyser();
      analyser.fftSize = 512;
      source.connect(analyser);
      this.#voices.set(id, { track, source, analyser, buf: new Float32Array(analyser.fftSize), last: 0, speaking: false });
      this.#timer ??= setInterval(() => this.#tick(), 150);
    } catch (err) {
      console.warn('audio level unavailable', err);
    }
  }

  /** @param {string} id */
  unwatch(id) {
    const v = this.#voices.get(id);
    if (!v) return;
    v.source.disconnect();
    this.#voices.delete(id);
    if (v.speaking) this.onChange(id, false);
    if (this.#voices.size === 0 && this.#timer) {
      clearInterval(this.#timer);
      this.#timer = null;
    }
  }

  close() {
    for (const id of [...this.#voices.keys()]) this.unwatch(id);
    this.#ctx?.close().catch(() => {});
    this.#ctx = null;
  }

  #tick() {
    const now = performance.now();
    for (const [id, v] of this.#voices) {
      v.analyser.getFloatTimeDomainData(v.buf);
      let sum = 0;
      for (const x of v.buf) sum += x * x;
      const rms = Math.sqrt(sum / v.buf.length);
      if (rms > THRESHOLD && v.track.enabled && !v.track.muted) v.last = now;
      const speaking = now - v.last < HOLD_MS;
      if (speaking !== v.speaking) {
        v.speaking = speaking;
        this.onChange(id, speaking);
      }
    }
  }
}
