// Entry point: lobby or direct join from the link, then the call page. Wires the modules
// together; each module owns one concern (session, media, topology, tiles, controls, chat).
import { SpeakingDetector } from './audio-level.js';
import { Call } from './call.js';
import { LocalMedia } from './media.js';
import { Session } from './session.js';
import { ChatPanel } from './ui/chat.js';
import { ControlBar } from './ui/controls.js';
import { fillDevicePickers } from './ui/devices.js';
import { icon } from './ui/icons.js';
import { showConnection, toast } from './ui/notify.js';
import { TileGrid } from './ui/tiles.js';
import { $, newRoomId } from './util.js';

/** @typedef {import('./ui/tiles.js').TileModel} TileModel */

const NAME_KEY = 'studycall.name';
const params = new URLSearchParams(location.search);
const media = new LocalMedia({ lowres: params.has('lowres') });
const grid = new TileGrid($('#stage'), $('#grid'), $('#screens'));
const detector = new SpeakingDetector((id, on) => grid.setSpeaking(id, on));

/** @type {{ session: Session, call: Call, controls: ControlBar, chat: ChatPanel, name: string, offs: (() => void)[] } | null} */
let current = null;

/** The link people share: the page with `?room=` (and test flags kept). @param {string} room */
function linkFor(room) {
  const u = new URL(location.pathname, location.origin);
  u.searchParams.set('room', room);
  return u.toString();
}

/** @param {string} text */
async function copy(text) {
  try {
    await navigator.clipboard.writeText(text);
    toast('Link copied. Send it to the people you want to call.');
  } catch {
    window.prompt('Copy this link:', text);
  }
}

// ---------------------------------------------------------------- lobby

const lobby = {
  root: $('#lobby'),
  form: $('#join-form', HTMLFormElement),
  name: $('#name-input', HTMLInputElement),
  room: $('#room-input', HTMLInputElement),
  preview: $('#preview-video', HTMLVideoElement),
  previewEmpty: $('#preview-empty'),
  micBtn: $('#preview-mic', HTMLButtonElement),
  camBtn: $('#preview-cam', HTMLButtonElement),
  message: $('#lobby-message'),
  share: $('#share'),
  shareLink: $('#share-link', HTMLInputElement),
};

function renderPreview() {
  lobby.preview.srcObject = media.video ? media.stream : null;
  const camOn = Boolean(media.video) && media.camOn;
  lobby.previewEmpty.hidden = camOn;
  lobby.previewEmpty.textContent = media.video ? 'Camera is off' : media.problem ? 'No camera' : 'Starting camera…';
  lobby.micBtn.innerHTML = icon(media.audio && media.micOn ? 'mic' : 'micOff', 20);
  lobby.micBtn.disabled = !media.audio;
  lobby.micBtn.classList.toggle('off', !(media.audio && media.micOn));
  lobby.micBtn.setAttribute('aria-pressed', String(Boolean(media.audio) && media.micOn));
  lobby.micBtn.setAttribute('aria-label', media.micOn ? 'Turn off microphone' : 'Turn on microphone');
  lobby.camBtn.innerHTML = icon(camOn ? 'cam' : 'camOff', 20);
  lobby.camBtn.disabled = !media.video;
  lobby.camBtn.classList.toggle('off', !camOn);
  lobby.camBtn.setAttribute('aria-pressed', String(camOn));
  lobby.camBtn.setAttribute('aria-label', media.camOn ? 'Turn off camera' : 'Turn on camera');
}

/** @param {string} [message] */
async function showLobby(message = '') {
  document.title = 'StudyCall';
  $('#call').hidden = true;
  lobby.root.hidden = false;
  lobby.name.value ||= localStorage.getItem(NAME_KEY) ?? '';
  lobby.room.value ||= params.get('room') ?? '';
  lobby.message.textContent = message;
  lobby.shareLink.value = linkFor(lobby.room.value.trim());
  lobby.share.hidden = !lobby.room.value.trim();
  (lobby.name.value ? lobby.room : lobby.name).focus();
  renderPreview();
  const problem = await media.start();
  renderPreview();
  if (problem) lobby.message.textContent = [message, problem].filter(Boolean).join(' ');
  await fillDevicePickers(media, { audio: $('#lobby-audio', HTMLSelectElement), video: $('#lobby-video', HTMLSelectElement) });
}

lobby.micBtn.addEventListener('click', () => media.setMic(!media.micOn));
lobby.camBtn.addEventListener('click', () => media.setCam(!media.camOn));
media.on('change', () => {
  if (!lobby.root.hidden) renderPreview();
});
$('#new-room').addEventListener('click', () => {
  lobby.room.value = newRoomId();
  lobby.shareLink.value = linkFor(lobby.room.value);
  lobby.share.hidden = false;
});
$('#copy-link').addEventListener('click', () => copy(lobby.shareLink.value));
lobby.room.addEventListener('input', () => {
  lobby.share.hidden = !lobby.room.value.trim();
  lobby.shareLink.value = linkFor(lobby.room.value.trim());
});
lobby.form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const name = lobby.name.value.trim();
  const room = lobby.room.value.trim();
  if (!name || !room) return;
  localStorage.setItem(NAME_KEY, name);
  startCall(room, name);
});

// ---------------------------------------------------------------- call

/** @param {string} roomId @param {string} name */
async function startCall(roomId, name) {
  lobby.root.hidden = true;
  lobby.preview.srcObject = null;
  $('#call').hidden = false;
  document.title = `${roomId} · StudyCall`;
  $('#room-name').textContent = roomId;
  const keep = new URLSearchParams();
  keep.set('room', roomId);
  for (const flag of ['lowres', 'token']) if (params.has(flag)) keep.set(flag, params.get(flag) ?? '');
  history.replaceState(null, '', `${location.pathname}?${keep}`);

  const session = new Session({ name, token: params.get('token') });
  const offs = [session.on('state', (/** @type {any} */ s, /** @type {string} */ d) => showConnection(s, d, () => session.retry()))];
  showConnection(session.state, '', () => session.retry());
  const problem = await media.start();
  if (problem) toast(problem, { kind: 'error', timeout: 10000 });

  const call = new Call({ session, roomId, media });
  const chat = new ChatPanel({
    selfUserId: session.userId,
    send: (text) => call.sendChat(text),
    onUnread: (n) => controls.setUnread(n),
    onError: (msg) => toast(msg, { kind: 'error' }),
  });
  const controls = new ControlBar({
    mic: () => call.setMic(!media.micOn),
    cam: () => call.setCam(!media.camOn),
    screen: () => toggleScreen(),
    chat: () => {
      chat.toggle();
      render();
    },
    settings: () => openSettings(),
    leave: () => call.leave(),
  });
  current = { session, call, controls, chat, name, offs };
  offs.push(
    call.on('change', render),
    media.on('change', render),
    call.on('chat', (/** @type {any} */ m) => chat.add(m)),
    call.on('chat-reset', (/** @type {any} */ list) => chat.reset(list)),
    call.on('toast', (/** @type {string} */ msg) => toast(msg, { kind: 'error' })),
    call.on('joined', (/** @type {string} */ who) => toast(`${who} joined`)),
    call.on('left', (/** @type {string} */ who) => toast(`${who} left`)),
    call.on('mode', (/** @type {string} */ mode) => console.info('topology is now', mode)),
    media.on('problem', (/** @type {string} */ msg) => toast(msg, { kind: 'error' })),
    call.on('ended', (/** @type {string} */ reason) => endCall(reason)),
  );
  chat.reset([]);
  render();
}

async function toggleScreen() {
  if (!current) return;
  if (media.screen) {
    media.stopScreen();
    return;
  }
  try {
    await media.startScreen();
  } catch (err) {
    const name = err instanceof Error ? err.name : '';
    if (name !== 'NotAllowedError' && name !== 'AbortError') toast(err instanceof Error ? err.message : 'Screen sharing failed.', { kind: 'error' });
  }
}

function openSettings() {
  const dialog = $('#settings', HTMLDialogElement);
  fillDevicePickers(media, {
    audio: $('#settings-audio', HTMLSelectElement),
    video: $('#settings-video', HTMLSelectElement),
    resolution: $('#settings-resolution', HTMLSelectElement),
  });
  dialog.showModal();
}

/** @param {string} reason */
function endCall(reason) {
  if (!current) return;
  const { session, controls, offs } = current;
  for (const off of offs) off();
  controls.destroy();
  session.close();
  current = null;
  media.stop();
  detector.close();
  grid.render([]);
  document.body.classList.remove('chat-open');
  $('#chat').hidden = true;
  showConnection('closed', '', () => {});
  showLobby(reason || 'You left the call.');
}

/** Turn call + media state into tiles, controls and header. */
function render() {
  if (!current) return;
  const { call, controls, chat, name } = current;
  /** @type {TileModel[]} */
  const models = [];
  const selfMuted = !media.audio || !media.micOn;
  const selfOff = !media.video || !media.camOn;
  models.push({ id: 'self', name, local: true, screen: false, audio: media.audio, video: media.video, isMuted: selfMuted, isVideoOff: selfOff, isSharingScreen: Boolean(media.screen) });
  if (media.screen) models.push({ id: 'self:screen', name, local: true, screen: true, audio: null, video: media.screen, isMuted: true, isVideoOff: false, isSharingScreen: true });
  const links = call.transport?.states() ?? {};
  /** @param {string} id */
  const linkStatus = (id) => {
    const st = links[call.mode === 'sfu' ? 'sfu' : id];
    if (!call.joined || st === 'connected') return '';
    if (st === 'failed') return 'Connection problem';
    return st === undefined && call.mode === 'mesh' ? 'Waiting…' : 'Connecting…';
  };
  const people = [...call.participants.values()].sort((a, b) => (a.joinedAt ?? '').localeCompare(b.joinedAt ?? ''));
  for (const p of people) {
    const m = call.remote.get(p.socketId);
    const pname = p.user?.name || 'Guest';
    models.push({
      id: p.socketId,
      name: pname,
      local: false,
      screen: false,
      audio: m?.audio ?? null,
      video: m?.video ?? null,
      isMuted: p.isMuted,
      isVideoOff: p.isVideoOff,
      isSharingScreen: p.isSharingScreen,
      status: linkStatus(p.socketId),
    });
    const sc = call.remote.get(`${p.socketId}:screen`);
    if (sc?.video && p.isSharingScreen) {
      models.push({ id: `${p.socketId}:screen`, name: pname, local: false, screen: true, audio: null, video: sc.video, isMuted: true, isVideoOff: false, isSharingScreen: true });
    }
  }
  grid.render(models);
  for (const m of models) if (!m.screen) detector.watch(m.id, m.audio);
  const live = new Set(models.map((m) => m.id));
  for (const id of [...grid.tiles.keys()]) if (!live.has(id)) detector.unwatch(id);

  controls.update({
    micOn: media.micOn,
    camOn: media.camOn,
    hasMic: Boolean(media.audio),
    hasCam: Boolean(media.video),
    sharing: Boolean(media.screen),
    canShare: Boolean(navigator.mediaDevices?.getDisplayMedia),
    chatOpen: chat.open,
  });
  const n = call.participants.size + 1;
  $('#people-count').textContent = `${n} ${n === 1 ? 'person' : 'people'}`;
  const mode = $('#mode-pill');
  mode.textContent = call.mode === 'sfu' ? 'Server relay' : 'Direct';
  mode.title = call.mode === 'sfu' ? 'Media goes through the server (SFU)' : 'Media goes directly between participants (mesh)';
  mode.dataset.mode = call.mode;
}

// ---------------------------------------------------------------- page-level wiring

grid.onSoundBlocked = (/** @type {boolean} */ blocked) => {
  $('#sound-btn').hidden = !blocked;
};
$('#sound-btn').addEventListener('click', () => grid.unlockSound());
$('#copy-call-link').addEventListener('click', () => current && copy(linkFor(current.call.roomId)));
$('#copy-call-link').innerHTML = `${icon('link', 16)}<span>Copy link</span>`;
$('#settings-done').addEventListener('click', () => $('#settings', HTMLDialogElement).close());
$('#chat-close').addEventListener('click', () => {
  current?.chat.toggle(false);
  render();
});
$('#chat-close').innerHTML = icon('close', 18);
$('#chat-send').innerHTML = icon('send', 18);
document.addEventListener('pointerdown', () => detector.resume(), { capture: true });
document.addEventListener('keydown', () => detector.resume(), { capture: true });
// Closing the tab: tell the room right away instead of waiting for the socket to time out.
window.addEventListener('pagehide', () => current?.session.send('video:leave-room', { roomId: current.call.roomId }));

/**
 * Test and debugging hook: the live socket, a JSON snapshot of the call, and for getStats()
 * the live peer connections (by peer: 'sfu' or a socket id) and who sends each remote track.
 */
Object.defineProperty(window, '__call', {
  value: {
    get socket() {
      return current?.session.socket ?? null;
    },
    connections() {
      return current?.call.transport?.connections() ?? {};
    },
    remoteTracks() {
      return current?.call.remoteTracks() ?? {};
    },
    get state() {
      return current ? current.call.snapshot() : { joined: false, connection: 'closed', mode: null, participants: [], remoteStreams: [], peers: {} };
    },
    snapshot() {
      return this.state;
    },
  },
});

const directRoom = params.get('room')?.trim();
const directName = params.get('name')?.trim();
if (directRoom && directName) {
  localStorage.setItem(NAME_KEY, directName);
  startCall(directRoom, directName);
} else {
  showLobby();
}
