// Video tiles: one per camera (own one mirrored) plus a large one per shared screen, laid
// out to fill the stage; name, indicators, speaking ring, per-person volume and local mute.
import { h, initials } from '../util.js';
import { icon } from './icons.js';

/**
 * @typedef {object} TileModel
 * @property {string} id 'self', a socket id, or either with ':screen'
 * @property {string} name
 * @property {boolean} local
 * @property {boolean} screen
 * @property {MediaStreamTrack | null} audio
 * @property {MediaStreamTrack | null} video
 * @property {boolean} isMuted
 * @property {boolean} isVideoOff
 * @property {boolean} isSharingScreen
 * @property {string} [status] e.g. "Connecting…"
 */

class Tile {
  /** @type {string} */
  trackKey = '';
  volume = 1;
  localMute = false;

  /** @param {TileModel} m @param {TileGrid} grid */
  constructor(m, grid) {
    this.grid = grid;
    this.id = m.id;
    this.video = h('video', { class: 'tile-video', autoplay: true, playsinline: true });
    this.video.muted = m.local || m.screen;
    this.avatar = h('div', { class: 'avatar', 'aria-hidden': 'true' });
    this.nameEl = h('span', { class: 'tile-name' });
    this.mutedEl = h('span', { class: 'badge badge-muted', title: 'Microphone off', html: icon('micOff', 14) });
    this.sharingEl = h('span', { class: 'badge badge-sharing', title: 'Sharing screen', html: icon('screen', 14) });
    this.statusEl = h('span', { class: 'tile-status' });
    const label = h('div', { class: 'tile-label' }, [this.mutedEl, this.nameEl, this.sharingEl]);
    this.el = h('figure', { class: 'tile', 'data-peer': m.id.replace(/:screen$/, ''), 'data-kind': m.screen ? 'screen' : 'camera' }, [
      this.video,
      this.avatar,
      this.statusEl,
      label,
    ]);
    if (m.local) this.el.dataset.local = 'true';
    if (!m.local && !m.screen) this.el.append(this.#audioControls(m.name));
    this.video.addEventListener('loadeddata', () => this.el.classList.add('has-frames'));
    // Touch screens have no hover: a tap shows or hides the volume controls.
    this.el.addEventListener('click', (ev) => {
      if (!(ev.target instanceof Element && ev.target.closest('.tile-audio'))) this.el.classList.toggle('show-controls');
    });
  }

  /** Per-person volume and "mute for me": changes only this page, never the others. @param {string} name */
  #audioControls(name) {
    this.muteBtn = h('button', { class: 'tile-btn', type: 'button', 'aria-pressed': 'false', 'aria-label': `Mute ${name} for me`, html: icon('volume', 16) });
    this.slider = h('input', { class: 'tile-volume', type: 'range', min: '0', max: '1', step: '0.05', value: '1', 'aria-label': `Volume for ${name}` });
    this.muteBtn.addEventListener('click', () => {
      this.localMute = !this.localMute;
      this.#applyAudio();
    });
    this.slider.addEventListener('input', () => {
      this.volume = Number(this.slider?.value ?? 1);
      this.localMute = this.volume === 0;
      this.#applyAudio();
    });
    return h('div', { class: 'tile-audio' }, [this.muteBtn, this.slider]);
  }

  #applyAudio() {
    if (this.el.dataset.local || this.el.dataset.kind === 'screen') return;
    this.video.volume = this.volume;
    this.video.muted = this.localMute || this.grid.soundBlocked;
    if (this.muteBtn) {
      this.muteBtn.setAttribute('aria-pressed', String(this.localMute));
      this.muteBtn.innerHTML = icon(this.localMute ? 'volumeOff' : 'volume', 16);
    }
  }

  /** @param {TileModel} m */
  update(m) {
    const label = m.local ? (m.screen ? 'Your screen' : `${m.name} (you)`) : m.screen ? `${m.name}'s screen` : m.name;
    if (this.nameEl.textContent !== label) this.nameEl.textContent = label;
    this.avatar.textContent = initials(m.name);
    this.el.setAttribute('aria-label', `${label}${m.isMuted && !m.screen ? ', microphone off' : ''}${m.isVideoOff && !m.screen ? ', camera off' : ''}`);
    this.mutedEl.hidden = m.screen || !m.isMuted;
    this.sharingEl.hidden = m.screen || !m.isSharingScreen;
    this.el.dataset.muted = String(m.isMuted);
    this.el.dataset.videoOff = String(m.isVideoOff);
    this.el.classList.toggle('video-off', m.isVideoOff || !m.video);
    this.el.classList.toggle('self-view', m.local && !m.screen);
    this.statusEl.textContent = m.status ?? '';
    this.statusEl.hidden = !m.status;
    const key = `${m.audio?.id ?? ''}|${m.video?.id ?? ''}`;
    if (key !== this.trackKey) {
      this.trackKey = key;
      const tracks = /** @type {MediaStreamTrack[]} */ ([m.screen || m.local ? null : m.audio, m.video].filter(Boolean));
      this.el.classList.remove('has-frames');
      this.video.srcObject = tracks.length ? new MediaStream(tracks) : null;
      if (tracks.length) this.play();
    }
    this.#applyAudio();
  }

  play() {
    this.video.play().catch((err) => {
      if (err && err.name === 'NotAllowedError' && !this.video.muted) {
        // Autoplay with sound needs a click: play silently and offer to turn sound on.
        this.grid.blockSound();
        this.video.muted = true;
        this.video.play().catch(() => {});
      }
    });
  }

  /** @param {boolean} on */
  setSpeaking(on) {
    this.el.classList.toggle('speaking', on);
  }

  remove() {
    this.video.srcObject = null;
    this.el.remove();
  }
}

export class TileGrid {
  /** @type {Map<string, Tile>} */
  tiles = new Map();
  soundBlocked = false;
  /** @type {(blocked: boolean) => void} */
  onSoundBlocked = () => {};

  /** @param {HTMLElement} stage @param {HTMLElement} grid @param {HTMLElement} screens */
  constructor(stage, grid, screens) {
    this.stage = stage;
    this.grid = grid;
    this.screens = screens;
    new ResizeObserver(() => this.layout()).observe(stage);
  }

  /** @param {TileModel[]} models */
  render(models) {
    const seen = new Set();
    for (const m of models) {
      seen.add(m.id);
      let t = this.tiles.get(m.id);
      if (!t) {
        t = new Tile(m, this);
        this.tiles.set(m.id, t);
      }
      const parent = m.screen ? this.screens : this.grid;
      if (t.el.parentElement !== parent) parent.append(t.el);
      t.update(m);
    }
    for (const [id, t] of this.tiles) {
      if (!seen.has(id)) {
        t.remove();
        this.tiles.delete(id);
      }
    }
    // Keep DOM order equal to model order (self first, then by join time).
    for (const m of models) {
      const t = this.tiles.get(m.id);
      if (t) (m.screen ? this.screens : this.grid).append(t.el);
    }
    this.layout();
  }

  /** @param {string} id @param {boolean} on */
  setSpeaking(id, on) {
    this.tiles.get(id)?.setSpeaking(on);
  }

  blockSound() {
    if (this.soundBlocked) return;
    this.soundBlocked = true;
    this.onSoundBlocked(true);
  }

  /** Called from a click: browsers now allow sound. */
  unlockSound() {
    this.soundBlocked = false;
    for (const t of this.tiles.values()) {
      if (!t.el.dataset.local && t.el.dataset.kind !== 'screen') {
        t.video.muted = t.localMute;
        t.play();
      }
    }
    this.onSoundBlocked(false);
  }

  /** Pick the column count that gives the largest 16:9 tiles in the space we have. */
  layout() {
    const sharing = this.screens.children.length > 0;
    this.stage.classList.toggle('has-screen', sharing);
    this.screens.hidden = !sharing;
    const n = this.grid.children.length;
    if (n === 0) return;
    const W = this.grid.clientWidth;
    const H = this.grid.clientHeight;
    if (!W || !H) return;
    const gap = 12;
    const ratio = 16 / 9;
    let best = { cols: 1, w: 0 };
    for (let cols = 1; cols <= n; cols++) {
      const rows = Math.ceil(n / cols);
      const w = Math.min((W - gap * (cols - 1)) / cols, ((H - gap * (rows - 1)) / rows) * ratio);
      if (w > best.w) best = { cols, w };
    }
    this.grid.style.setProperty('--cols', String(best.cols));
    this.grid.style.setProperty('--tile-w', `${Math.floor(best.w)}px`);
  }
}
