// Device and quality pickers, shared by the lobby preview and the in-call settings dialog.
import { h } from '../util.js';
import { RESOLUTIONS } from '../media.js';

/** @typedef {import('../media.js').LocalMedia} LocalMedia */
/** @typedef {import('../media.js').Resolution} Resolution */

/**
 * Fill the selects with the current devices and wire them to the media.
 * @param {LocalMedia} media
 * @param {{ audio: HTMLSelectElement, video: HTMLSelectElement, resolution?: HTMLSelectElement }} sel
 */
export async function fillDevicePickers(media, sel) {
  const { audio, video } = await media.devices();
  /** @param {HTMLSelectElement} select @param {MediaDeviceInfo[]} list @param {'audio' | 'video'} kind */
  const fill = (select, list, kind) => {
    const current = media.currentDevice(kind);
    select.replaceChildren(
      ...list.map((d, i) => h('option', { value: d.deviceId, selected: d.deviceId === current }, [d.label || `${kind === 'audio' ? 'Microphone' : 'Camera'} ${i + 1}`])),
    );
    if (list.length === 0) select.append(h('option', { value: '' }, [kind === 'audio' ? 'No microphone found' : 'No camera found']));
    select.disabled = list.length === 0;
    select.onchange = () => {
      media.useDevice(kind, select.value);
    };
  };
  fill(sel.audio, audio, 'audio');
  fill(sel.video, video, 'video');
  const res = sel.resolution;
  if (res) {
    res.replaceChildren(
      ...Object.entries(RESOLUTIONS).map(([key, r]) => h('option', { value: key, selected: key === media.prefs.resolution }, [r.label])),
    );
    res.onchange = () => {
      media.setResolution(/** @type {Resolution} */ (res.value));
    };
  }
}
