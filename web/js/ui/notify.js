// Connection banner and toasts: what is going on, in plain words, without blocking the call.
import { $, h } from '../util.js';

/** @typedef {import('../session.js').ConnectionState} ConnectionState */

/** @type {Record<ConnectionState, string>} */
const BANNER_TEXT = {
  connecting: 'Connecting…',
  connected: '',
  reconnecting: 'Connection lost. Reconnecting…',
  failed: 'Could not connect to the call server.',
  offline: 'You are offline. The call will resume when your network is back.',
  closed: '',
};

/**
 * @param {ConnectionState} state
 * @param {string} detail
 * @param {() => void} onRetry
 */
export function showConnection(state, detail, onRetry) {
  const banner = $('#banner');
  banner.dataset.state = state;
  const text = BANNER_TEXT[state];
  banner.hidden = !text;
  banner.replaceChildren();
  if (!text) return;
  banner.append(h('span', { class: 'banner-dot', 'aria-hidden': 'true' }), h('span', {}, [text]));
  if (state === 'failed') {
    if (detail) banner.append(h('span', { class: 'banner-detail' }, [` (${detail})`]));
    const retry = h('button', { type: 'button', class: 'banner-btn' }, ['Try again']);
    retry.addEventListener('click', onRetry);
    banner.append(retry);
  }
}

/**
 * A short message in the corner that goes away by itself.
 * @param {string} message
 * @param {{ kind?: 'info' | 'error', timeout?: number, action?: { label: string, run: () => void } }} [opts]
 */
export function toast(message, opts = {}) {
  const box = $('#toasts');
  const kind = opts.kind ?? 'info';
  const el = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, [h('span', {}, [message])]);
  const close = () => {
    el.classList.add('leaving');
    setTimeout(() => el.remove(), 200);
  };
  if (opts.action) {
    const { label, run } = opts.action;
    const btn = h('button', { type: 'button', class: 'toast-btn' }, [label]);
    btn.addEventListener('click', () => {
      run();
      close();
    });
    el.append(btn);
  }
  box.append(el);
  while (box.children.length > 4) box.firstElementChild?.remove();
  setTimeout(close, opts.timeout ?? (kind === 'error' ? 8000 : 4000));
}
