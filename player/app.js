// screentape player: log in, pick a device, play its day through hls.js.
'use strict';

const $ = (id) => document.getElementById(id);
const state = { hls: null, device: null, mediaStartMs: null };

async function api(path, options) {
  const response = await fetch(path, { credentials: 'same-origin', ...options });
  if (response.status === 401) { showLogin(); throw new Error('not logged in'); }
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response;
}

function showLogin() { $('main').hidden = true; $('login').hidden = false; }

async function start() {
  try {
    await api('/api/v1/me');
  } catch (e) { showLogin(); return; }
  $('login').hidden = true; $('main').hidden = false;
  const devices = await (await api('/api/v1/devices')).json();
  const select = $('device');
  select.replaceChildren(...devices.map((d) => new Option(d.name, d.id)));
  const wanted = new URLSearchParams(location.search).get('device');
  if (wanted && devices.some((d) => d.id === wanted)) select.value = wanted;
  if (devices.length) openDevice(select.value); else $('status').textContent = 'No devices yet.';
}

async function openDevice(id) {
  state.device = id;
  const timeline = await (await api(`/api/v1/devices/${id}/timeline`)).json();
  state.mediaStartMs = timeline.media_start_ms;
  if (state.hls) state.hls.destroy();
  const video = $('video');
  const hls = new Hls({ startPosition: 0 });
  state.hls = hls;
  hls.loadSource(`/api/v1/devices/${id}/playlist.m3u8`);
  hls.attachMedia(video);
  hls.on(Hls.Events.ERROR, (_, data) => { if (data.fatal) $('status').textContent = `Playback error: ${data.details}`; });
  $('status').textContent = timeline.media_start_ms ? '' : 'No footage yet: the first minute appears shortly.';
}

$('video').addEventListener('timeupdate', () => {
  if (state.mediaStartMs == null) return;
  $('clock').textContent = new Date(state.mediaStartMs + $('video').currentTime * 1000).toLocaleString();
});
$('device').addEventListener('change', (e) => openDevice(e.target.value));
$('logout').addEventListener('click', async () => { await fetch('/api/v1/logout', { method: 'POST' }); showLogin(); });
$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  const response = await fetch('/api/v1/login', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user: form.get('user'), password: form.get('password') }),
  });
  if (response.ok) { $('login-error').textContent = ''; start(); } else { $('login-error').textContent = 'Wrong user or password.'; }
});
start();
