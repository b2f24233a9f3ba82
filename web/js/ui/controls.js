// Control bar: microphone, camera, screen, chat, settings, leave; keyboard shortcuts.
import { $ } from '../util.js';
import { icon } from './icons.js';

/**
 * @typedef {object} ControlActions
 * @property {() => void} mic
 * @property {() => void} cam
 * @property {() => void} screen
 * @property {() => void} chat
 * @property {() => void} settings
 * @property {() => void} leave
 */

/** Shortcut keys, shown in each button's tooltip. */
const KEYS = /** @type {const} */ ({ m: 'mic', v: 'cam', s: 'screen', c: 'chat', ',': 'settings' });

export class ControlBar {
  /** @param {ControlActions} actions */
  constructor(actions) {
    this.buttons = {
      mic: $('#btn-mic', HTMLButtonElement),
      cam: $('#btn-cam', HTMLButtonElement),
      screen: $('#btn-screen', HTMLButtonElement),
      chat: $('#btn-chat', HTMLButtonElement),
      settings: $('#btn-settings', HTMLButtonElement),
      leave: $('#btn-leave', HTMLButtonElement),
    };
    for (const [name, btn] of Object.entries(this.buttons)) {
      btn.addEventListener('click', () => actions[/** @type {keyof ControlActions} */ (name)]());
    }
    this.chatBadge = $('#chat-badge');
    this.onKey = (/** @type {KeyboardEvent} */ ev) => {
      if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.repeat) return;
      const target = /** @type {HTMLElement | null} */ (ev.target);
      if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) return;
      if (document.querySelector('dialog[open]')) return;
      const action = KEYS[/** @type {keyof typeof KEYS} */ (ev.key.toLowerCase())];
      if (!action) return;
      ev.preventDefault();
      actions[action]();
    };
    document.addEventListener('keydown', this.onKey);
    this.buttons.leave.innerHTML = icon('leave', 22);
    this.buttons.settings.innerHTML = icon('settings', 22);
    this.buttons.chat.innerHTML = icon('chat', 22);
    this.buttons.chat.append(this.chatBadge);
  }

  /**
   * @param {{ micOn: boolean, camOn: boolean, hasMic: boolean, hasCam: boolean, sharing: boolean, canShare: boolean, chatOpen: boolean }} s
   */
  update(s) {
    const b = this.buttons;
    this.#set(b.mic, s.hasMic && s.micOn, s.hasMic ? (s.micOn ? 'Turn off microphone (M)' : 'Turn on microphone (M)') : 'No microphone', s.hasMic && s.micOn ? 'mic' : 'micOff', !s.hasMic);
    this.#set(b.cam, s.hasCam && s.camOn, s.hasCam ? (s.camOn ? 'Turn off camera (V)' : 'Turn on camera (V)') : 'No camera', s.hasCam && s.camOn ? 'cam' : 'camOff', !s.hasCam);
    this.#set(b.screen, s.sharing, s.sharing ? 'Stop sharing your screen (S)' : 'Share your screen (S)', 'screen', !s.canShare);
    b.screen.classList.toggle('active', s.sharing);
    b.chat.setAttribute('aria-pressed', String(s.chatOpen));
    b.chat.setAttribute('aria-label', s.chatOpen ? 'Close chat (C)' : 'Open chat (C)');
    b.chat.title = b.chat.getAttribute('aria-label') ?? '';
    b.settings.setAttribute('aria-label', 'Settings: devices and quality');
    b.settings.title = 'Settings (,)';
    b.leave.setAttribute('aria-label', 'Leave call');
    b.leave.title = 'Leave call';
  }

  /**
   * @param {HTMLButtonElement} btn @param {boolean} on @param {string} label
   * @param {string} iconName @param {boolean} disabled
   */
  #set(btn, on, label, iconName, disabled) {
    btn.setAttribute('aria-pressed', String(on));
    btn.setAttribute('aria-label', label);
    btn.title = label;
    btn.disabled = disabled;
    btn.classList.toggle('off', !on && btn.id !== 'btn-screen');
    btn.innerHTML = icon(iconName, 22);
  }

  /** @param {number} n */
  setUnread(n) {
    this.chatBadge.textContent = n > 9 ? '9+' : String(n);
    this.chatBadge.hidden = n === 0;
  }

  destroy() {
    document.removeEventListener('keydown', this.onKey);
  }
}
