// Small DOM and event helpers shared by every module (no framework, no build step).

/**
 * Find an element that index.html is known to contain; throw early if the markup changed.
 * @template {HTMLElement} T
 * @param {string} selector
 * @param {new (...args: any[]) => T} [type]
 * @returns {T}
 */
export function $(selector, type) {
  const found = document.querySelector(selector);
  const want = type ?? HTMLElement;
  if (!(found instanceof want)) throw new Error(`missing element ${selector}`);
  return /** @type {T} */ (found);
}

/**
 * Create an element with attributes and children in one expression.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, string | boolean | undefined>} [attrs]
 * @param {(Node | string)[]} [children]
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (key === 'class') node.className = String(value);
    else if (key === 'html') node.innerHTML = String(value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children) node.append(child);
  return node;
}

/**
 * Minimal typed-enough event emitter: modules talk through events, not through each other.
 */
export class Emitter {
  /** @type {Map<string, Set<(...args: any[]) => void>>} */
  #handlers = new Map();

  /**
   * @param {string} name
   * @param {(...args: any[]) => void} fn
   * @returns {() => void} unsubscribe
   */
  on(name, fn) {
    let set = this.#handlers.get(name);
    if (!set) this.#handlers.set(name, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  /**
   * @param {string} name
   * @param {...any} args
   */
  emit(name, ...args) {
    for (const fn of [...(this.#handlers.get(name) ?? [])]) {
      try {
        fn(...args);
      } catch (err) {
        console.error(`handler for ${name} failed`, err);
      }
    }
  }
}

/**
 * Random id from an unambiguous alphabet; crypto.getRandomValues works on plain http too.
 * @param {number} length
 */
export function randomId(length = 10) {
  const alphabet = 'abcdefghijkmnpqrstuvwxyz23456789';
  const bytes = new Uint8Array(length);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('');
}

/** A room id people can read aloud: `abc-defg-hjk`. */
export function newRoomId() {
  const id = randomId(10);
  return `${id.slice(0, 3)}-${id.slice(3, 7)}-${id.slice(7)}`;
}

/**
 * Two-letter initials for the avatar shown when a camera is off.
 * @param {string} name
 */
export function initials(name) {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  if (parts.length === 0) return '?';
  const first = parts[0] ?? '';
  const last = parts.length > 1 ? parts[parts.length - 1] ?? '' : '';
  return ((first[0] ?? '') + (last[0] ?? first[1] ?? '')).toUpperCase();
}

/**
 * Serialise chained async work per key so that signaling messages for one connection are
 * applied strictly in arrival order (an ICE candidate must never overtake its offer).
 */
export class SerialQueue {
  /** @type {Promise<void>} */
  #tail = Promise.resolve();

  /**
   * @param {() => Promise<void>} task
   * @returns {Promise<void>}
   */
  push(task) {
    const run = this.#tail.then(task).catch((err) => console.warn('queued task failed', err));
    this.#tail = run;
    return run;
  }
}
