// In-call chat panel: history from room-state, live `video:chat`, unread count on the button.
import { $, h, initials } from '../util.js';

/** @typedef {import('../types.js').ChatMessage} ChatMessage */

export class ChatPanel {
  unread = 0;

  /**
   * @param {{ selfUserId: string, send: (text: string) => Promise<void>, onUnread: (n: number) => void, onError: (msg: string) => void }} opts
   */
  constructor(opts) {
    this.opts = opts;
    this.panel = $('#chat');
    this.list = $('#chat-list');
    this.form = $('#chat-form', HTMLFormElement);
    this.input = $('#chat-input', HTMLInputElement);
    this.empty = $('#chat-empty');
    this.form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const text = this.input.value.trim();
      if (!text) return;
      this.input.disabled = true;
      opts
        .send(text)
        .then(() => {
          this.input.value = '';
        })
        .catch((err) => opts.onError(err instanceof Error ? err.message : 'Message not sent.'))
        .finally(() => {
          this.input.disabled = false;
          this.input.focus({ preventScroll: true });
        });
    });
  }

  get open() {
    return !this.panel.hidden;
  }

  /** @param {boolean} [force] */
  toggle(force) {
    const open = force ?? !this.open;
    this.panel.hidden = !open;
    document.body.classList.toggle('chat-open', open);
    if (open) {
      this.unread = 0;
      this.opts.onUnread(0);
      this.input.focus({ preventScroll: true });
      this.#scroll();
    }
  }

  /** @param {ChatMessage[]} messages */
  reset(messages) {
    this.list.replaceChildren(...messages.map((m) => this.#item(m)));
    this.empty.hidden = messages.length > 0;
    this.#scroll();
  }

  /** @param {ChatMessage} m */
  add(m) {
    this.list.append(this.#item(m));
    this.empty.hidden = true;
    this.#scroll();
    if (!this.open && m.user?.id !== this.opts.selfUserId) {
      this.unread += 1;
      this.opts.onUnread(this.unread);
    }
  }

  /** @param {ChatMessage} m */
  #item(m) {
    const name = m.user?.name || 'Someone';
    const mine = m.user?.id === this.opts.selfUserId;
    const time = new Date(m.createdAt);
    const when = Number.isNaN(time.getTime()) ? '' : time.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    return h('li', { class: `msg${mine ? ' mine' : ''}`, 'data-id': m.id }, [
      h('span', { class: 'msg-avatar', 'aria-hidden': 'true' }, [initials(name)]),
      h('div', { class: 'msg-body' }, [
        h('div', { class: 'msg-meta' }, [h('strong', {}, [mine ? 'You' : name]), h('time', { datetime: m.createdAt }, [when])]),
        h('p', { class: 'msg-text' }, [m.content]),
      ]),
    ]);
  }

  #scroll() {
    this.list.scrollTop = this.list.scrollHeight;
  }
}
