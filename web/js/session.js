// Socket.IO session: who we are (userId kept per tab), and a connection state for the banner.
import { io } from 'socket.io-client';
import { Emitter, randomId } from './util.js';

/** @typedef {import('socket.io-client').Socket} Socket */
/** @typedef {'connecting' | 'connected' | 'reconnecting' | 'failed' | 'offline' | 'closed'} ConnectionState */

const USER_KEY = 'studycall.userId';

/** A random user id kept for the tab's lifetime, so a reload is the same person. */
export function userId() {
  let id = sessionStorage.getItem(USER_KEY);
  if (!id) {
    id = `u-${randomId(12)}`;
    sessionStorage.setItem(USER_KEY, id);
  }
  return id;
}

/**
 * The `sub` claim of a JWT (not verified here: the server does that). With a token the
 * server requires `userId === sub`, so a link carrying `?token=` brings its own identity.
 * @param {string} token
 * @returns {string | null}
 */
export function tokenSubject(token) {
  try {
    const part = token.split('.')[1] ?? '';
    const json = atob(part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '='));
    const sub = JSON.parse(json).sub;
    return typeof sub === 'string' && sub ? sub : null;
  } catch {
    return null;
  }
}

/**
 * Owns the socket and turns Socket.IO's many events into one ConnectionState.
 */
export class Session extends Emitter {
  /** @type {ConnectionState} */
  state = 'connecting';
  /** @type {string} */
  detail = '';
  /** True once the first connection succeeded: later `connect` events are reconnects. */
  hasConnected = false;

  /**
   * @param {{ name: string, token?: string | null }} opts
   */
  constructor({ name, token }) {
    super();
    /** @type {Record<string, string>} */
    const auth = { userId: (token && tokenSubject(token)) || userId(), name };
    if (token) auth.token = token;
    /** The id the server knows us by (chat messages from it are ours). */
    this.userId = auth.userId;
    /** @type {Socket} */
    this.socket = io({
      auth,
      reconnection: true,
      reconnectionAttempts: 20,
      reconnectionDelay: 500,
      reconnectionDelayMax: 4000,
      timeout: 10000,
    });
    const socket = this.socket;
    socket.on('connect', () => {
      const again = this.hasConnected;
      this.hasConnected = true;
      this.#set('connected');
      this.emit(again ? 'reconnected' : 'connected');
    });
    socket.on('disconnect', (reason) => {
      if (reason === 'io client disconnect') this.#set('closed');
      else this.#set(navigator.onLine ? 'reconnecting' : 'offline');
      this.emit('disconnected', reason);
    });
    socket.on('connect_error', (err) => {
      if (!socket.active) {
        // The server refused us (authentication): retrying will not help.
        this.#set('failed', err.message);
      } else if (!navigator.onLine) {
        this.#set('offline');
      } else {
        this.#set(this.hasConnected ? 'reconnecting' : 'connecting', err.message);
      }
    });
    socket.io.on('reconnect_failed', () => this.#set('failed', 'The server could not be reached.'));
    this.#onOffline = () => {
      if (this.state !== 'closed') this.#set('offline');
    };
    this.#onOnline = () => {
      if (this.state === 'closed' || socket.connected) return;
      this.#set(this.hasConnected ? 'reconnecting' : 'connecting');
      // Skip the remaining reconnection back-off: the network is back now.
      socket.disconnect();
      socket.connect();
    };
    window.addEventListener('offline', this.#onOffline);
    window.addEventListener('online', this.#onOnline);
  }

  /** @type {() => void} */
  #onOffline;
  /** @type {() => void} */
  #onOnline;

  /** Try again after `failed` (the banner's Retry button). */
  retry() {
    this.#set(this.hasConnected ? 'reconnecting' : 'connecting');
    this.socket.connect();
  }

  /**
   * Emit only while connected: Socket.IO would otherwise buffer signaling messages and
   * deliver them after a reconnect, addressed to sockets that no longer exist.
   * @param {string} event
   * @param {unknown} payload
   * @returns {boolean} whether it was sent
   */
  send(event, payload) {
    if (!this.socket.connected) return false;
    this.socket.emit(event, payload);
    return true;
  }

  /**
   * Emit with an acknowledgement and a bounded wait.
   * @param {string} event
   * @param {unknown} payload
   * @param {number} [timeoutMs]
   * @returns {Promise<any>}
   */
  request(event, payload, timeoutMs = 8000) {
    if (!this.socket.connected) return Promise.reject(new Error('You are not connected right now, so this was not sent.'));
    return this.socket.timeout(timeoutMs).emitWithAck(event, payload);
  }

  close() {
    window.removeEventListener('offline', this.#onOffline);
    window.removeEventListener('online', this.#onOnline);
    this.socket.disconnect();
    this.#set('closed');
  }

  /**
   * @param {ConnectionState} state
   * @param {string} [detail]
   */
  #set(state, detail = '') {
    if (this.state === state && this.detail === detail) return;
    this.state = state;
    this.detail = detail;
    this.emit('state', state, detail);
  }
}
