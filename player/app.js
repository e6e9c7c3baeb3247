// screentape player: a day of screenshots through hls.js, with exact frames and a 24-hour timeline.
// Media time and wall-clock time are mapped through the playlist's PROGRAM-DATE-TIME of each
// fragment; the list of capture times (timeline API) drives screenshot stepping and gap skipping.
'use strict';

const $ = (id) => document.getElementById(id);
const video = $('video');
const MINUTE = 60000;
// Captures are ~10 s apart, so at 1× nothing moves for 10 s and playback looks frozen. 8× shows
// each capture for about 1.25 s: long enough to read a line, short enough to look alive (an hour
// plays in 7.5 minutes). The playhead turns yellow and trails while playing.
const DEFAULT_SPEED = 8;

const S = {
  hls: null,
  device: null,
  timeline: null,          // the timeline API's answer
  zoom: 'fit',             // 'fit' or a scale factor
  view: null,              // the timeline's zoomed window { from, to } (wall ms), or null: all of it
  pan: { x: 0, y: 0 },
  range: { from: null, to: null },
  seekToken: 0,
  followLive: false,
  ready: null,             // resolves when the first level is loaded
  lastSeek: null,          // the promise of the latest seek
  lastUrlUpdate: 0,
  signedIn: false,         // whether /api/v1/me answered on this page
  stillToken: 0,           // bumped whenever the overlay's subject changes
  still: null,             // the overlay on screen: { capture, img } or null
  frameMode: false,        // paused on a WebCodecs frame drawn on #frame (the <video> is not seeked)
  pos: null,               // the playhead (wall ms) while in frame mode
  frameSize: null,         // { w, h } of the last decoded frame
  lastSeekInfo: null,      // how the latest seek was served (path, frames decoded, timings)
};

// WebCodecs frames around the playhead (frames.js), where the browser has VideoDecoder and the
// address does not ask for `decoder=mse`; the <video>/MSE path stays for playback and as fallback.
const FR = window.ScreentapeFrames && window.ScreentapeFrames.Frames.available() &&
  new URLSearchParams(location.search).get('decoder') !== 'mse' ? new window.ScreentapeFrames.Frames() : null;

// ---------- server ----------

class AuthError extends Error {}

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, { credentials: 'same-origin', ...options });
  } catch (e) {
    setStatus('The server cannot be reached; retrying…', true);
    throw e;
  }
  if (response.status === 401) {
    // Only someone who was signed in on this page had a session that ended; a first visit
    // (or a browser whose cookie expired while the page was closed) just gets the form.
    showLogin(S.signedIn ? 'Your session has ended; please log in again.' : '');
    throw new AuthError('unauthorized');
  }
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response;
}

function setStatus(text, bad) {
  const el = $('status');
  el.textContent = text || '';
  el.classList.toggle('bad', !!bad);
}

function showLogin(message) {
  if (S.hls) { S.hls.destroy(); S.hls = null; }
  $('main').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
}

// ---------- time mapping ----------

function fragments() {
  const level = S.hls && S.hls.levels && S.hls.levels[S.hls.currentLevel >= 0 ? S.hls.currentLevel : 0];
  return (level && level.details && level.details.fragments) || [];
}

function fragAtWall(wall) {
  const frags = fragments();
  let lo = 0, hi = frags.length - 1, found = null;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (frags[mid].programDateTime <= wall) { found = frags[mid]; lo = mid + 1; } else { hi = mid - 1; }
  }
  return found;
}

function wallToMedia(wall) {
  const frags = fragments();
  if (!frags.length) return 0;
  const f = fragAtWall(wall) || frags[0];
  return f.start + Math.max(0, wall - f.programDateTime) / 1000;
}

function mediaToWall(t) {
  const frags = fragments();
  if (!frags.length) return null;
  let lo = 0, hi = frags.length - 1, found = frags[0];
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (frags[mid].start <= t + 1e-6) { found = frags[mid]; lo = mid + 1; } else { hi = mid - 1; }
  }
  // Floor, not round: seeks land 0.5 ms past a capture on purpose, and must read as the capture.
  return Math.floor(found.programDateTime + (t - found.start) * 1000 + 1e-3);
}

function currentWall() {
  if (S.frameMode) return S.pos;
  return mediaToWall(video.currentTime);
}

function gapAt(wall) {
  const tl = S.timeline;
  if (!tl) return null;
  return tl.gaps.find((g) => wall >= g.start_ms && wall < g.end_ms) || null;
}

function recordedRange() {
  const tl = S.timeline;
  if (!tl || !tl.recorded.length) return null;
  return { from: tl.recorded[0].start_ms, to: tl.recorded[tl.recorded.length - 1].end_ms };
}

// ---------- seeking ----------

function isBuffered(t) {
  for (let i = 0; i < video.buffered.length; i++) {
    if (video.buffered.start(i) <= t && t < video.buffered.end(i)) return true;
  }
  return false;
}

function nextEvent(target, name, timeoutMs) {
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); target.removeEventListener(name, done); resolve(); };
    const timer = setTimeout(done, timeoutMs);
    target.addEventListener(name, done);
  });
}

function presentedFrame(timeoutMs) {
  return new Promise((resolve) => {
    let settled = false;
    const timer = setTimeout(() => { if (!settled) { settled = true; resolve(null); } }, timeoutMs);
    video.requestVideoFrameCallback((now, meta) => {
      if (!settled) { settled = true; clearTimeout(timer); resolve(meta); }
    });
  });
}

// Seeks to wall-clock time `wall` and resolves once the right frame is presented.
// Works around hls.js/MSE showing a later minute's first frame after a backward seek whose
// target is not buffered yet (docs/media-facts.md, "Timeline rules for frame-exact seeking"): re-seek until the target is buffered and the
// presented frame is not later than the target.
function seekWall(wall, options) {
  if (!(options && options.keepLive)) setFollowLive(false);
  S.lastSeek = doSeek(wall, options || {});
  return S.lastSeek;
}

async function doSeek(wall, { skipGap = true, keepLive = false, mse = false }) {
  const token = ++S.seekToken;
  await S.ready;
  const range = recordedRange();
  if (!range) return null;
  let target = Math.min(Math.max(wall, range.from), range.to - 1);
  // Far from the live edge hls.js reloads the playlist only every target duration (600 s once
  // a day holds compacted blocks), so it may not list minutes the timeline already has: then
  // start again at the target, which loads a fresh playlist.
  const frags = fragments();
  const last = frags[frags.length - 1];
  if (last && target >= last.programDateTime + last.duration * 1000 && !S.reopening) {
    S.reopening = true;
    try { await openDevice(S.device, target, keepLive); } finally { S.reopening = false; }
    return token === S.seekToken - 1 ? { wall: target, mediaTime: video.currentTime, ms: 0 } : null;
  }
  const gap = gapAt(target);
  const caps = S.timeline.captures;
  if (caps.length && wall < caps[0]) {
    // Before the device's first capture nothing was recorded (every capture is presented from
    // its own time): say so, and show the first capture.
    notice('No recording before ' + fmt(caps[0]) + ': showing the first capture.');
    target = caps[0];
  } else if (gap && skipGap) {
    notice('No recording at ' + fmt(target) + ': showing the next available frame.');
    target = gap.end_ms;
  } else {
    notice(null);
  }
  if (video.paused && FR && !mse) {
    const r = await frameSeek(target, token);
    if (r && r.superseded) return null;
    if (r) {
      showStill(target);
      keepInView(target);
      updateClock();
      scheduleUrlUpdate();
      return r;
    }
  }
  // Playing from frame mode: the decoded frame stays on screen until the video shows the same one.
  if (!mse) { leaveFrameMode(); showStill(target, true); } else hideStill();
  const t = seekTime(target);
  const started = performance.now();
  let meta = null;
  for (let attempt = 0; attempt < 6 && token === S.seekToken; attempt++) {
    const seeked = nextEvent(video, 'seeked', 4000);
    const frame = presentedFrame(4000);
    video.currentTime = t;
    await seeked;
    if (token !== S.seekToken) return null;
    if (!isBuffered(t)) {
      await nextEvent(video, 'progress', 3000);
      continue;
    }
    meta = await frame;
    if (!meta || meta.mediaTime <= t + 0.002 || !video.paused) break;
  }
  if (token !== S.seekToken) return null;
  if (!mse) showStill(target);
  keepInView(target);
  updateClock();
  scheduleUrlUpdate();
  const ms = performance.now() - started;
  S.lastSeekInfo = { path: 'mse', wall: target, ms };
  return { wall: target, mediaTime: meta ? meta.mediaTime : video.currentTime, ms };
}

// ---------- frame mode (WebCodecs) ----------

function segmentOf(frag) {
  if (!frag || frag.gap || !frag.initSegment || /\/gap\//.test(frag.url || '')) return null;
  return { url: frag.url, initUrl: frag.initSegment.url };
}

// Shows the frame on screen at `target` from the decoded-frame cache, decoding it if needed;
// resolves like a seek, { superseded } if another seek began, or null where this path cannot
// serve it (no segment listed, codec not decodable here, decoder failure): then MSE does.
async function frameSeek(target, token) {
  const frags = fragments();
  const frag = fragAtWall(target);
  const seg = segmentOf(frag);
  if (!seg || FR.broken || !(await FR.supports(seg.initUrl))) return null;
  const started = performance.now();
  const from = S.frameMode ? S.pos : currentWall();
  const dir = from == null || target === from ? 0 : Math.sign(target - from);
  FR.setPlayhead(target, dir);
  let r = null, previewMs = null;
  const pending = FR.frameAt(seg, target).catch(() => null);
  // Not decoded yet: the storyboard's tile at once (a preview), the exact frame when decoded.
  const quick = await Promise.race([pending, new Promise((res) => setTimeout(() => res('wait'), 0))]);
  if (quick === 'wait') {
    const tile = tileAt(target);
    if (tile && tile.draw && token === S.seekToken) { drawPreview(tile); previewMs = performance.now() - started; }
    r = await pending;
  } else {
    r = quick;
  }
  if (token !== S.seekToken) return { superseded: true };
  if (!r || !r.frame.format) return null;     // undecodable, or evicted before it could be drawn
  const t1 = performance.now();
  drawFrame(r.frame, r.ms);
  S.pos = target;
  S.frameMode = true;
  const ms = performance.now() - started;
  S.lastSeekInfo = { path: 'frames', wall: target, ms, cached: r.cached, decoded: r.decoded, gop: r.gop, fetchMs: r.fetchMs || 0,
    decodeMs: r.decodeMs || 0, drawMs: performance.now() - t1, cache: FR.cachedCount(), previewMs };
  // Decode ahead in the direction of travel (forward after a seek): the neighbouring segment.
  const i = frags.indexOf(frag);
  for (let j = i + (dir < 0 ? -1 : 1); j >= 0 && j < frags.length; j += dir < 0 ? -1 : 1) {
    const next = segmentOf(frags[j]);
    if (next) { FR.ahead(next); break; }
    if (!frags[j].gap) break;
  }
  return { wall: target, mediaTime: r.ms / 1000, ms, decoded: r.decoded, cached: r.cached };
}

// The storyboard tile scaled up over the picture while the exact frame decodes.
function drawPreview(tile) {
  const c = $('frame');
  const w = (S.frameSize && S.frameSize.w) || video.videoWidth || tile.w * 8;
  const h = (S.frameSize && S.frameSize.h) || video.videoHeight || tile.h * 8;
  if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
  const g = c.getContext('2d');
  g.imageSmoothingQuality = 'high';
  tile.draw(g, w, h);
  c.dataset.capture = '';
  c.dataset.preview = String(tile.capture);
  S.previewShownAt = performance.now();
  if (c.hidden) { c.hidden = false; layout(); }
}

function drawFrame(frame, ms) {
  const c = $('frame');
  delete c.dataset.preview;
  const w = frame.displayWidth, h = frame.displayHeight;
  if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
  c.getContext('2d').drawImage(frame, 0, 0, w, h);
  c.dataset.capture = String(ms);
  FR.shown = ms;
  const resized = !S.frameSize || S.frameSize.w !== w || S.frameSize.h !== h;
  S.frameSize = { w, h };
  if (c.hidden || resized) { c.hidden = false; layout(); }
}

// Back to the <video>: the caller has seeked it (or is about to).
function leaveFrameMode() {
  if (!S.frameMode && $('frame').hidden) return;
  S.frameMode = false;
  $('frame').hidden = true;
}

function spanAt(wall) {
  const tl = S.timeline;
  return (tl && tl.recorded.find((r) => wall >= r.start_ms && wall < r.end_ms)) || null;
}

// The media time to set for showing the frame on screen at `wall`. Normally half a millisecond
// past it, so float rounding never lands on the previous frame. But Chromium presents the last
// frame of a stream (the newest capture, or the last one before a gap) only when the seek lands
// exactly on its timestamp: past it, with no later frame to bound it, it shows nothing new (the
// old picture, or black after the stream was reopened). So for such a frame, seek to its own
// timestamp (plus 0.2 µs: Chromium keeps microseconds, and this survives truncation or rounding).
function seekTime(wall) {
  const caps = (S.timeline && S.timeline.captures) || [];
  const span = spanAt(wall);
  const i = captureIndexAtOrBefore(wall);
  if (span && i >= 0 && caps[i] >= span.start_ms && (i + 1 >= caps.length || caps[i + 1] >= span.end_ms)) {
    return wallToMedia(caps[i]) + 2e-7;
  }
  return wallToMedia(wall) + 0.0005;
}

function captureIndexAtOrBefore(wall) {
  const caps = (S.timeline && S.timeline.captures) || [];
  let lo = 0, hi = caps.length - 1, found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (caps[mid] <= wall) { found = mid; lo = mid + 1; } else { hi = mid - 1; }
  }
  return found;
}

async function stepScreenshot(direction) {
  video.pause();
  const caps = (S.timeline && S.timeline.captures) || [];
  if (!caps.length) return null;
  const wall = currentWall();
  const i = captureIndexAtOrBefore(wall);
  const j = Math.min(Math.max(direction > 0 ? i + 1 : i - 1, 0), caps.length - 1);
  // Stepping back from a frame shown since before its capture (a carry) lands on the capture itself.
  return seekWall(caps[j], { skipGap: false });
}

async function stepTime(ms) {
  const wall = currentWall();
  if (wall == null) return null;
  return seekWall(wall + ms);
}

// ---------- playback ----------

function togglePlay() {
  if (video.paused) play(); else video.pause();
}

function seekToken() { return S.seekToken; }

function play() {
  setFollowLive(false);
  video.playbackRate = Number($('speed').value);
  if (S.frameMode) {
    // The <video> was left where it was while stepping through decoded frames: bring it to the
    // playhead first (the frame stays on screen meanwhile), then play.
    const wall = S.pos;
    S.lastSeek = doSeek(wall, { skipGap: true, mse: true }).then((r) => { video.play().catch(() => {}); return r; });
    return S.lastSeek;
  }
  video.play().catch(() => {});
}

function setSpeed(rate) {
  $('speed').value = String(rate);
  video.playbackRate = rate;
}

// End / Live: show the newest capture, paused, and keep showing the newest one as new minutes
// are encoded (followLive), until the person seeks, steps or plays. Playing from the newest
// capture would only run into the end of the footage: nothing newer exists yet.
function goLive() {
  S.lastSeek = liveSeek();
  return S.lastSeek;
}

async function liveSeek() {
  video.pause();
  const before = S.seekToken;
  await refreshTimeline(false);
  const tl = S.timeline;
  // Another seek or step began meanwhile: it wins.
  if (!tl || !tl.captures.length || S.seekToken !== before) return null;
  const r = await seekWall(tl.captures[tl.captures.length - 1], { keepLive: true });
  if (r) setFollowLive(true);
  return r;
}

function setFollowLive(on) {
  S.followLive = on;
  $('live').classList.toggle('on', on);
}

// While following live, a newer capture in the timeline is shown as soon as it is known.
function followNewest() {
  const tl = S.timeline;
  if (!S.followLive || !tl || !tl.captures.length || !video.paused) return;
  const newest = tl.captures[tl.captures.length - 1];
  const wall = currentWall();
  if (wall != null && newest > wall) seekWall(newest, { keepLive: true });
}

// While playing, jump over gaps instead of stalling in them. Playback resumes after the jump only
// if nothing else (a pause, another seek) happened meanwhile.
let skipping = false;
function skipGaps() {
  if (skipping || video.paused || !S.timeline) return;
  const wall = currentWall();
  const gap = wall != null && gapAt(wall);
  if (!gap) return;
  skipping = true;
  let pausedMeanwhile = false;
  const onPause = () => { pausedMeanwhile = true; };
  const jump = seekWall(gap.end_ms);
  const mine = S.seekToken;
  jump.then(() => {
    video.removeEventListener('pause', onPause);
    skipping = false;
    if (S.seekToken === mine && !pausedMeanwhile) video.play().catch(() => {});
  });
  // Registered after the seek starts: the seek's own transient pause state is not the user's.
  video.addEventListener('pause', onPause);
}

// ---------- exact stills while paused ----------
// The video is lossy, and where the browser plays only the 4:2:0 variant (Firefox, Safari) thin
// coloured text is unreadable (about 29 dB). While paused, the player lays the server's PNG of
// the capture on screen (frame.png, decoded from the stored 4:4:4 segment) exactly over the
// video: same box, same zoom and pan. The previous and next captures' PNGs are fetched ahead so
// a step shows its still at once. An overlay never shows another time than the one asked for:
// it is hidden the moment the subject changes, and shown again only when the right PNG is ready.

const STILLS_KEPT = 16;
const stills = new Map();      // capture ms -> { img, ready: Promise<boolean> }

// The capture on screen at `wall` (as in docs/api.md: each frame lasts until the next capture;
// a recorded stretch starts with its first capture), or null outside the footage.
function captureShownAt(wall) {
  const caps = (S.timeline && S.timeline.captures) || [];
  const span = spanAt(wall);
  if (!span) return null;
  const i = captureIndexAtOrBefore(wall);
  if (i >= 0 && caps[i] >= span.start_ms) return caps[i];
  return i + 1 < caps.length && caps[i + 1] < span.end_ms ? caps[i + 1] : null;
}

function stillEntry(capture) {
  let e = stills.get(capture);
  if (e) { stills.delete(capture); stills.set(capture, e); return e; }   // most recently used last
  const img = new Image();
  img.alt = '';
  img.className = 'still';
  img.dataset.capture = String(capture);
  img.draggable = false;
  const loaded = new Promise((resolve) => {
    img.addEventListener('load', () => resolve(true), { once: true });
    img.addEventListener('error', () => resolve(false), { once: true });
  });
  img.src = `/api/v1/devices/${S.device}/frame.png?t=${capture}`;
  e = { img, ok: null };
  e.ready = loaded.then((ok) => (ok ? img.decode().then(() => true, () => true) : false)).then((ok) => { e.ok = ok; return ok; });
  stills.set(capture, e);
  for (const key of stills.keys()) {
    if (stills.size <= STILLS_KEPT) break;
    if (!S.still || S.still.capture !== key) stills.delete(key);
  }
  return e;
}

function placeStill(img, vw, vh) {
  img.style.width = vw + 'px';
  img.style.height = vh + 'px';
  img.style.transform = video.style.transform;
}

function hideStill() {
  S.stillToken++;
  if (S.still) { S.still.img.remove(); S.still = null; }
}

// Shows the still of the capture on screen at `wall` once it is ready, if the player is paused
// then. `onlyIfReady`: show it only if it is already loaded (a seek just started), else hide.
async function showStill(wall, onlyIfReady) {
  const capture = video.paused && S.device ? captureShownAt(wall) : null;
  if (S.still && S.still.capture === capture) { prefetchAround(capture); return; }
  hideStill();
  if (capture == null) return;
  const token = S.stillToken;
  if (!stills.has(capture)) {
    // Not fetched yet: ask the server (a decode) only once the player has rested on this capture
    // for a moment, so dragging across the timeline does not queue a decode per position.
    if (onlyIfReady) return;
    await new Promise((r) => setTimeout(r, 120));
    if (token !== S.stillToken || !video.paused) return;
  }
  const e = stillEntry(capture);
  // The neighbours once this one is in: they share the server's few decoding slots.
  e.ready.then(() => { if (S.device) prefetchAround(capture); });
  if (onlyIfReady && e.ok !== true) return;
  const ok = e.ok === true || await e.ready;
  if (!ok || token !== S.stillToken || !video.paused) return;
  placeStill(e.img, video.videoWidth || (S.frameSize && S.frameSize.w) || e.img.naturalWidth, video.videoHeight || (S.frameSize && S.frameSize.h) || e.img.naturalHeight);
  $('stage').insertBefore(e.img, $('notice'));
  S.still = { capture, img: e.img };
}

function prefetchAround(capture) {
  const caps = (S.timeline && S.timeline.captures) || [];
  const i = captureIndexAtOrBefore(capture);
  for (const j of [i + 1, i - 1]) if (j >= 0 && j < caps.length) stillEntry(caps[j]);
}

// ---------- view: zoom and pan ----------

function layout() {
  const stage = $('stage');
  const fs = S.frameSize;
  const vw = video.videoWidth || (fs && fs.w) || 16, vh = video.videoHeight || (fs && fs.h) || 9;
  video.style.width = vw + 'px';
  video.style.height = vh + 'px';
  const sw = stage.clientWidth, sh = stage.clientHeight;
  let scale;
  if (S.zoom === 'fit') {
    scale = Math.min(sw / vw, sh / vh);
    S.pan = { x: (sw - vw * scale) / 2, y: (sh - vh * scale) / 2 };
  } else {
    scale = S.zoom;
    // Keep the picture on screen.
    const minX = Math.min(0, sw - vw * scale), minY = Math.min(0, sh - vh * scale);
    const maxX = Math.max(0, (sw - vw * scale) / 2), maxY = Math.max(0, (sh - vh * scale) / 2);
    S.pan.x = Math.min(Math.max(S.pan.x, minX), maxX);
    S.pan.y = Math.min(Math.max(S.pan.y, minY), maxY);
  }
  // Whole pixels: at 1:1 a fractional offset would resample (blur) the picture.
  S.pan.x = Math.round(S.pan.x); S.pan.y = Math.round(S.pan.y);
  video.style.transform = `translate(${S.pan.x}px, ${S.pan.y}px) scale(${scale})`;
  if (S.still) placeStill(S.still.img, vw, vh);
  placeStill($('frame'), vw, vh);
  stage.classList.toggle('zoomed', S.zoom !== 'fit');
  stage.classList.toggle('pixelated', scale >= 2);
  return scale;
}

function zoomTo(zoom, cx, cy) {
  const stage = $('stage');
  const old = layout();
  if (zoom === 'fit') { S.zoom = 'fit'; layout(); return; }
  const next = Math.min(Math.max(zoom, 0.1), 16);
  cx = cx ?? stage.clientWidth / 2; cy = cy ?? stage.clientHeight / 2;
  // Zoom around (cx, cy): the pixel under the pointer stays put.
  S.pan.x = cx - (cx - S.pan.x) * (next / old);
  S.pan.y = cy - (cy - S.pan.y) * (next / old);
  S.zoom = next;
  layout();
}

function currentScale() { return S.zoom === 'fit' ? layout() : S.zoom; }

// ---------- storyboards ----------
// One JPEG per device-hour with a small frame every 15 s (the server's storyboard endpoint),
// fetched once per hour and kept: hover previews, the picture under the pointer while dragging
// the playhead, and the first picture of a seek whose exact frame is still being decoded.

const boards = new Map();      // `${device}/${hour}` -> { meta, img, ok } (ok: null while loading)
const BOARDS_KEPT = 48;

function board(hour) {
  const key = `${S.device}/${hour}`;
  let e = boards.get(key);
  // The hour being recorded gets new tiles as minutes are encoded: look again after a minute,
  // keeping the board we have until the new one is ready.
  const live = S.timeline && S.timeline.live_edge_ms && hour + HOUR > S.timeline.live_edge_ms;
  if (e && e.ok && live && Date.now() - e.at > 60000 && !e.refreshing) {
    e.refreshing = true;
    const next = loadBoard(hour);
    next.ready.then((ok) => { if (ok && boards.get(key) === e) boards.set(key, next); else e.refreshing = false; });
  }
  if (e) return e;
  e = loadBoard(hour);
  boards.set(key, e);
  for (const k of boards.keys()) { if (boards.size <= BOARDS_KEPT) break; boards.delete(k); }
  return e;
}

function loadBoard(hour) {
  const key = `${S.device}/${hour}`;
  const e = { meta: null, img: null, ok: null, at: Date.now() };
  const base = `/api/v1/devices/${S.device}/`;
  e.ready = fetch(`${base}storyboard?hour=${hour}`, { credentials: 'same-origin' })
    .then((r) => (r.ok ? r.json() : null))
    .then((meta) => {
      if (!meta || !meta.url || !Array.isArray(meta.tiles)) return false;
      e.meta = meta;
      const img = new Image();
      img.src = base + meta.url;
      return img.decode().then(() => { e.img = img; return true; });
    })
    .catch(() => false)
    .then((ok) => { e.ok = ok; if (!ok) setTimeout(() => { if (boards.get(key) === e) boards.delete(key); }, 30000); return ok; });
  return e;
}

// The storyboard tile for `wall`: { capture, draw(g, w, h) }, { capture: null } where the board
// says nothing was recorded, or null while the hour's board is not here (it is then fetched).
function tileAt(wall) {
  if (!S.device || wall == null) return null;
  const hour = Math.floor(wall / HOUR) * HOUR;
  const e = board(hour);
  if (!e.ok) return null;
  const m = e.meta;
  const i = Math.floor((wall - m.start_ms) / m.interval_ms);
  if (i < 0 || i >= m.tiles.length) return null;
  const capture = m.tiles[i];
  if (capture == null) return { capture: null };
  const sx = (i % m.cols) * m.tile_w, sy = Math.floor(i / m.cols) * m.tile_h;
  return { capture, w: m.tile_w, h: m.tile_h, draw: (g, w, h) => g.drawImage(e.img, sx, sy, m.tile_w, m.tile_h, 0, 0, w, h) };
}

// ---------- timeline ----------

const HOUR = 3600000;
const DAY = 24 * HOUR;
const VIEW_MIN = 5 * MINUTE;
const VIEW_LEVELS = [DAY, HOUR, 5 * MINUTE];     // [ and ] step through these

// What the timeline can show: the retention window the timeline API answered for.
function timelineBounds() {
  const tl = S.timeline;
  const to = tl ? tl.to_ms : Date.now();
  return { from: tl ? Math.max(tl.from_ms, to - DAY) : to - DAY, to };
}

// The part of it on screen: S.view (zoomed) clamped to the bounds, or the whole of them.
function timelineWindow() {
  const b = timelineBounds();
  if (!S.view) return b;
  const span = Math.min(Math.max(S.view.to - S.view.from, VIEW_MIN), b.to - b.from);
  const from = Math.min(Math.max(S.view.from, b.from), b.to - span);
  return { from, to: from + span };
}

function setView(from, span) {
  const b = timelineBounds();
  span = Math.min(Math.max(span, VIEW_MIN), b.to - b.from);
  from = Math.min(Math.max(from, b.from), b.to - span);
  S.view = { from, to: from + span };
  drawTimeline();
}

// Zooms the timeline by `factor` (< 1: in) keeping `anchor` (a wall time) where it is on screen.
function zoomTimeline(factor, anchor) {
  const { from, to } = timelineWindow();
  const span = to - from;
  const wall = anchor ?? currentWall() ?? (from + to) / 2;
  const next = Math.min(Math.max(span * factor, VIEW_MIN), DAY);
  setView(wall - (wall - from) * (next / span), next);
}

// [ / ]: the next coarser / finer of 24 h, 1 h, 5 min, around the playhead.
function stepTimelineLevel(direction) {
  const { from, to } = timelineWindow();
  const span = to - from;
  const finer = VIEW_LEVELS.filter((l) => l < span * 0.99);
  const coarser = VIEW_LEVELS.filter((l) => l > span * 1.01);
  const next = direction > 0 ? finer[0] : coarser[coarser.length - 1];
  if (next) setTimelineSpan(next);
}

function setTimelineSpan(span) {
  const wall = currentWall() ?? (timelineWindow().from + timelineWindow().to) / 2;
  setView(wall - span / 2, span);
}

// The recorded footage with a margin, at least 5 minutes: what a first open shows.
function fitTimeline() {
  const r = recordedRange();
  if (!r) { S.view = null; drawTimeline(); return; }
  const span = Math.max((r.to - r.from) * 1.08, VIEW_MIN);
  setView((r.from + r.to) / 2 - span / 2, span);
}

// Keeps `wall` on screen: while playing the window slides along; a seek outside it recentres it.
function keepInView(wall) {
  if (wall == null) return;
  const { from, to } = timelineWindow();
  const span = to - from;
  // Paused (a seek, a drag on the timeline): move only if the time is off screen, so a drag near
  // an edge does not shift the strip under the pointer. Playing: slide before the edge.
  const margin = video.paused ? 0 : span * 0.02;
  if (wall >= from + margin && wall <= to - margin) return;
  setView(video.paused ? wall - span / 2 : wall - span * 0.1, span);
}

function drawTimeline() {
  const canvas = $('timeline');
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const { from, to } = timelineWindow();
  const x = (t) => ((t - from) / (to - from)) * w;
  // offline background
  g.fillStyle = '#2a2a31';
  g.fillRect(0, 22, w, 22);
  const tl = S.timeline;
  if (tl) {
    g.fillStyle = '#3fa96b';
    for (const r of tl.recorded) g.fillRect(x(r.start_ms), 22, Math.max(1, x(r.end_ms) - x(r.start_ms)), 22);
    g.fillStyle = '#5a5a66';
    for (const gap of tl.gaps) g.fillRect(x(gap.start_ms), 38, Math.max(1, x(gap.end_ms) - x(gap.start_ms)), 6);
    if (tl.live_edge_ms) { g.fillStyle = '#e84d4d'; g.fillRect(x(tl.live_edge_ms) - 1, 18, 2, 30); }
    drawActivity(g, tl.activity, from, to, w);
  }
  if (S.range.from != null) {
    const a = S.range.from, b = S.range.to ?? S.range.from;
    g.fillStyle = 'rgba(120,170,255,.35)';
    g.fillRect(x(Math.min(a, b)), 18, Math.max(2, Math.abs(x(b) - x(a))), 30);
  }
  // Ticks in the viewer's time zone, as dense as the zoom allows; a label that would be cut off
  // at the right edge is left out.
  g.fillStyle = '#aaa'; g.strokeStyle = '#555'; g.font = '11px system-ui, sans-serif'; g.textBaseline = 'top';
  const steps = [10000, 30000, MINUTE, 2 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR];
  const step = steps.find((st) => (st / (to - from)) * w >= 64) || 6 * HOUR;
  const tz = new Date(from).getTimezoneOffset() * MINUTE;
  S.tickLabels = [];
  for (let t = Math.ceil((from - tz) / step) * step + tz; t < to; t += step) {
    const d = new Date(t);
    g.beginPath(); g.moveTo(x(t) + 0.5, 16); g.lineTo(x(t) + 0.5, 48); g.stroke();
    const label = String(d.getHours()).padStart(2, '0') + ':' + String(d.getMinutes()).padStart(2, '0') +
      (step < MINUTE ? ':' + String(d.getSeconds()).padStart(2, '0') : '');
    const lw = g.measureText(label).width;
    if (x(t) + 3 + lw <= w) { g.fillText(label, x(t) + 3, 3); S.tickLabels.push({ label, x: x(t) + 3, width: lw }); }
  }
  // the span shown, at the right end of the lower edge
  const spanText = (to - from) >= HOUR ? `${+((to - from) / HOUR).toFixed(1)} h` : `${Math.round((to - from) / MINUTE)} min`;
  g.textBaseline = 'bottom'; g.fillStyle = '#777';
  g.fillText(spanText, w - g.measureText(spanText).width - 4, LANE_TOP - 1);
  // playhead (while dragging: where the pointer is; release seeks there)
  const wall = S.dragWall != null ? S.dragWall : currentWall();
  if (wall != null) {
    // Playing, the playhead is yellow and trails the last seconds it crossed, so movement shows.
    const playing = !video.paused;
    if (playing) {
      const rate = video.playbackRate || 1;
      const trail = Math.max(x(wall) - x(wall - 3000 * rate), 6);
      g.fillStyle = 'rgba(255, 214, 10, .35)';
      g.fillRect(x(wall) - trail, 18, trail, 30);
    }
    g.fillStyle = playing ? '#ffd60a' : '#fff';
    g.fillRect(x(wall) - 1, 14, 2, 36);
    g.beginPath(); g.moveTo(x(wall) - 6, 52); g.lineTo(x(wall) + 6, 52); g.lineTo(x(wall), 44); g.fill();
  }
}

// The activity lane (y 62…78): how much the screen changed per minute (encoded bytes, keyframes
// left out), as bars on a log scale relative to the largest value in view, over three decades
// (an unchanged screen's few hundred bytes a minute barely show next to a scrolled page's tens of
// kilobytes; typing shows clearly). Zoomed out, one pixel
// column shows the largest minute under it; zoomed in, a minute is a bar as wide as it is.
const LANE_TOP = 62, LANE_H = 16;
function drawActivity(g, act, from, to, w) {
  g.fillStyle = '#202027';
  g.fillRect(0, LANE_TOP, w, LANE_H);
  if (!act || !Array.isArray(act.values) || !act.step_ms) return;
  const step = act.step_ms;
  const first = Math.max(0, Math.floor((from - act.start_ms) / step));
  const last = Math.min(act.values.length - 1, Math.floor((to - act.start_ms) / step));
  if (last < first) return;
  const cols = new Float64Array(Math.ceil(w) + 1).fill(-1);
  let max = 0;
  for (let i = first; i <= last; i++) {
    const v = act.values[i];
    if (v == null || !(v >= 0)) continue;
    max = Math.max(max, v);
  }
  S.activityDrawn = [];
  if (!(max > 0)) return;
  g.fillStyle = '#7aa7ff';
  for (let i = first; i <= last; i++) {
    const v = act.values[i];
    if (v == null || !(v > 0)) continue;
    const t = act.start_ms + i * step;
    const x0 = ((t - from) / (to - from)) * w, x1 = ((t + step - from) / (to - from)) * w;
    const hgt = Math.max(1, Math.round(Math.max(0, Math.log(v / (max / 1000)) / Math.log(1000)) * (LANE_H - 1)));
    if (x1 - x0 >= 2) {
      g.fillRect(x0, LANE_TOP + LANE_H - hgt, Math.max(1, x1 - x0 - 1), hgt);
    } else {
      const c = Math.max(0, Math.min(cols.length - 1, Math.floor(x0)));
      if (hgt > cols[c]) cols[c] = hgt;
    }
  }
  for (let c = 0; c < cols.length; c++) if (cols[c] > 0) g.fillRect(c, LANE_TOP + LANE_H - cols[c], 1, cols[c]);
}

function timelineWallAt(clientX) {
  const rect = $('timeline').getBoundingClientRect();
  const { from, to } = timelineWindow();
  return Math.round(from + ((clientX - rect.left) / rect.width) * (to - from));
}

function setupTimeline() {
  const canvas = $('timeline');
  // Dragging shows the storyboard tile under the pointer (from the cached board, no decode), and
  // moves the playhead with it; releasing seeks there. Without a board for that hour yet, the
  // drag falls back to seeking as it goes (one seek at a time, the latest position wins).
  let dragging = false, pending = null, busy = false;
  const scrub = async (wall) => {
    pending = wall;
    if (busy) return;
    busy = true;
    while (pending != null) {
      const next = pending; pending = null;
      await seekWall(next);
      drawTimeline();
    }
    busy = false;
  };
  const dragTo = (clientX) => {
    const wall = timelineWallAt(clientX);
    S.dragWall = wall;
    const shown = showPreview(clientX, wall);
    if (!shown) scrub(wall);
    drawTimeline();
  };
  const release = () => {
    if (!dragging) return;
    dragging = false;
    const wall = S.dragWall;
    S.dragWall = null;
    if (wall != null) seekWall(wall);
  };
  // Two fingers on a touch screen pinch the timeline: the time under their midpoint stays there.
  const touches = new Map();
  let pinch = null;
  const fingers = () => [...touches.values()];
  canvas.addEventListener('pointerdown', (e) => {
    try { canvas.setPointerCapture(e.pointerId); } catch (_) { /* a pointer the browser no longer tracks */ }
    if (e.pointerType === 'touch') {
      touches.set(e.pointerId, e.clientX);
      if (touches.size === 2) {
        dragging = false;
        const [a, b] = fingers();
        pinch = { dist: Math.max(Math.abs(a - b), 1), view: timelineWindow(), mid: timelineWallAt((a + b) / 2) };
        return;
      }
    }
    dragging = true;
    setFollowLive(false); video.pause();
    dragTo(e.clientX);
  });
  canvas.addEventListener('pointermove', (e) => {
    if (touches.has(e.pointerId)) touches.set(e.pointerId, e.clientX);
    if (pinch && touches.size === 2) {
      const [a, b] = fingers();
      const span = (pinch.view.to - pinch.view.from) * pinch.dist / Math.max(Math.abs(a - b), 1);
      const rect = canvas.getBoundingClientRect();
      const next = Math.min(Math.max(span, VIEW_MIN), DAY);
      setView(pinch.mid - (((a + b) / 2 - rect.left) / rect.width) * next, next);
      return;
    }
    if (dragging) { dragTo(e.clientX); return; }
    showPreview(e.clientX, timelineWallAt(e.clientX));
  });
  const lift = (e) => { release(); touches.delete(e.pointerId); if (touches.size < 2) pinch = null; };
  canvas.addEventListener('pointerup', lift);
  canvas.addEventListener('pointercancel', lift);
  // Wheel (and a trackpad pinch, which browsers send as a wheel with ctrlKey): zoom around the
  // pointer; a sideways wheel or shift+wheel: move along.
  canvas.addEventListener('wheel', (e) => {
    e.preventDefault();
    const { from, to } = timelineWindow();
    const sideways = Math.abs(e.deltaX) > Math.abs(e.deltaY) ? e.deltaX : (e.shiftKey ? e.deltaY : 0);
    if (sideways) { setView(from + (sideways / canvas.clientWidth) * (to - from), to - from); return; }
    const factor = Math.pow(e.ctrlKey ? 1.01 : 1.0015, e.deltaY * (e.deltaMode === 1 ? 33 : 1));
    zoomTimeline(factor, timelineWallAt(e.clientX));
  }, { passive: false });
  canvas.addEventListener('pointerleave', () => { if (!dragging) $('preview').hidden = true; });
}

// The hover (and drag) preview: the storyboard tile of the moment under the pointer, labelled with
// the capture it shows; "No recording" where there is none. Before the hour's board has arrived
// (or where a server has none), the frame at the minute's start (thumb.png). Returns whether the
// preview came from a storyboard.
function showPreview(clientX, wall) {
  const preview = $('preview');
  const rect = $('timeline').getBoundingClientRect();
  preview.style.left = Math.min(Math.max(clientX - rect.left, 125), rect.width - 125) + 'px';
  const minute = Math.floor(wall / MINUTE) * MINUTE;
  const span = spanAt(wall);
  const img = $('preview-img');
  const tileCanvas = $('preview-tile');
  const empty = $('preview-empty');
  const tile = span ? tileAt(wall) : null;
  let fromBoard = false;
  preview.hidden = false;
  if (tile && tile.draw) {
    if (tileCanvas.width !== tile.w || tileCanvas.height !== tile.h) { tileCanvas.width = tile.w; tileCanvas.height = tile.h; }
    tile.draw(tileCanvas.getContext('2d'), tile.w, tile.h);
    tileCanvas.dataset.capture = String(tile.capture);
    tileCanvas.hidden = false; img.hidden = true; empty.hidden = true;
    $('preview-time').textContent = fmt(tile.capture, false);
    return true;
  }
  tileCanvas.hidden = true;
  if (span && !(tile && tile.capture === null)) {
    const shown = Math.max(minute, span.start_ms);
    const src = `/api/v1/devices/${S.device}/thumb.png?t=${shown}`;
    if (img.dataset.src !== src) { img.dataset.src = src; img.src = src; }
    img.hidden = false;
    empty.hidden = true;
    $('preview-time').textContent = fmt(shown, false);
  } else {
    img.hidden = true;
    empty.hidden = false;
    $('preview-time').textContent = fmt(minute, false).replace(/:00$/, '');
    fromBoard = !!tile;
  }
  return fromBoard;
}

// ---------- typed times ----------

const WEEKDAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];

// A time as a person types it, in the viewer's time zone, relative to `now` (ms):
//   "14:05", "14:05:30", "14:05:30.250", "2pm", "2:05 pm"   the latest such time not after now
//   "today 14:05", "yesterday 14:05", "mon 9:00"            on that day (a weekday: the latest one)
//   "2025-11-26 14:05", "2025-11-26T14:05:30", "26.11. 14:05", "11/26 14:05"   on that date
//   "-10m", "-2h", "-90s", "10 min ago", "now"              relative to now
// Returns unix ms, or null if it cannot be read.
function parseWhen(input, now) {
  let s = String(input || '').trim().toLowerCase().replace(/\s+/g, ' ');
  if (!s) return null;
  if (s === 'now' || s === 'live') return now;
  const unit = { s: 1000, sec: 1000, second: 1000, seconds: 1000, m: 60000, min: 60000, mins: 60000, minute: 60000, minutes: 60000,
    h: 3600000, hour: 3600000, hours: 3600000, d: 86400000, day: 86400000, days: 86400000 };
  let m = s.match(/^-\s*(\d+(?:\.\d+)?)\s*([a-z]+)$/) || s.match(/^(\d+(?:\.\d+)?)\s*([a-z]+) ago$/);
  if (m && unit[m[2]]) return Math.round(now - Number(m[1]) * unit[m[2]]);
  if (/^\d{12,}$/.test(s)) return Number(s);             // unix ms, as in a link
  let day = null, weekday = null, noYear = false;
  const base = new Date(now);
  const consume = (re) => { const r = s.match(re); if (r) s = s.slice(r[0].length).replace(/^[ t,]+/, ''); return r; };
  if (consume(/^today\b/)) day = new Date(base.getFullYear(), base.getMonth(), base.getDate());
  else if (consume(/^yesterday\b/)) day = new Date(base.getFullYear(), base.getMonth(), base.getDate() - 1);
  else if ((m = consume(/^(\d{4})-(\d{1,2})-(\d{1,2})/))) day = new Date(+m[1], +m[2] - 1, +m[3]);
  else if ((m = consume(/^(\d{1,2})\.(\d{1,2})\.(\d{4})?/))) { day = new Date(m[3] ? +m[3] : base.getFullYear(), +m[2] - 1, +m[1]); noYear = !m[3]; }
  else if ((m = consume(/^(\d{1,2})\/(\d{1,2})(?:\/(\d{4}))?(?=[ t,]|$)/))) { day = new Date(m[3] ? +m[3] : base.getFullYear(), +m[1] - 1, +m[2]); noYear = !m[3]; }
  else if ((m = consume(/^(sun|mon|tue|wed|thu|fri|sat)[a-z]*\b/))) weekday = WEEKDAYS.indexOf(m[1]);
  let h = 0, mi = 0, sec = 0, ms = 0;
  if (s) {
    m = s.match(/^(\d{1,2})(?::(\d{2})(?::(\d{2})(?:[.,](\d{1,3}))?)?)?\s*(am|pm)?$/);
    if (!m || (m[2] === undefined && !m[5])) return null;   // a bare number is not a time
    h = +m[1]; mi = +(m[2] || 0); sec = +(m[3] || 0); ms = m[4] ? +m[4].padEnd(3, '0') : 0;
    if (m[5]) { if (h < 1 || h > 12) return null; h = (h % 12) + (m[5] === 'pm' ? 12 : 0); }
    if (h > 23 || mi > 59 || sec > 59) return null;
  } else if (day == null && weekday == null) {
    return null;
  }
  if (day == null && weekday == null) {
    // A time alone: the latest such moment not after now (so at 09:00, "14:05" is yesterday's).
    const t = new Date(base.getFullYear(), base.getMonth(), base.getDate(), h, mi, sec, ms);
    if (t.getTime() > now) t.setDate(t.getDate() - 1);
    return t.getTime();
  }
  if (weekday != null) {
    const back = (base.getDay() - weekday + 7) % 7;
    day = new Date(base.getFullYear(), base.getMonth(), base.getDate() - back);
  }
  if (isNaN(day.getTime())) return null;
  const t = new Date(day.getFullYear(), day.getMonth(), day.getDate(), h, mi, sec, ms);
  // "mon 9:00" early on a Monday, or "26.11." without a year: the latest one, not a future one.
  if (t.getTime() > now && weekday != null) t.setDate(t.getDate() - 7);
  if (t.getTime() > now && noYear) t.setFullYear(t.getFullYear() - 1);
  return t.getTime();
}

// ---------- chrome ----------

function fmt(wall, withMs = true) {
  if (wall == null) return '';
  const d = new Date(wall);
  return d.toLocaleDateString(undefined, { weekday: 'short', day: 'numeric', month: 'short' }) + ' ' +
    d.toLocaleTimeString(undefined, { hour12: false }) + (withMs ? '.' + String(d.getMilliseconds()).padStart(3, '0') : '');
}

let noticeTimer = null;
function notice(text) {
  const el = $('notice');
  clearTimeout(noticeTimer);
  if (!text) { el.hidden = true; return; }
  el.textContent = text; el.hidden = false;
  noticeTimer = setTimeout(() => { el.hidden = true; }, 4000);
}

function updateClock() {
  const wall = currentWall();
  $('clock').textContent = wall == null ? '' : fmt(wall);
  $('play').textContent = video.paused ? '▶' : '❚❚';
  if (wall != null && S.device) {
    $('frame-png').href = `/api/v1/devices/${S.device}/frame.png?t=${wall}`;
  }
  updateDownloads();
  drawTimeline();
}

// At most two address-bar updates a second, and always the last one (a link must show this frame).
let urlTimer = null;
function scheduleUrlUpdate() {
  const wait = S.lastUrlUpdate + 500 - Date.now();
  if (wait > 0) {
    if (!urlTimer) urlTimer = setTimeout(() => { urlTimer = null; scheduleUrlUpdate(); }, wait);
    return;
  }
  S.lastUrlUpdate = Date.now();
  const wall = currentWall();
  const params = new URLSearchParams({ device: S.device });
  if (wall != null) params.set('t', String(wall));
  history.replaceState(null, '', '?' + params.toString());
}

function markRange(which) {
  const wall = currentWall();
  if (wall == null) return;
  S.range[which] = wall;
  updateDownloads();
  drawTimeline();
}

// The download menu: the marked range if there is one, else the minute on screen, in two forms.
// "Exact" is the stored H.264 High 4:4:4 (every coloured pixel; Chrome, Edge, VLC, ffmpeg);
// "Plays everywhere" is H.264 High 4:2:0 transcoded by the server (Safari, QuickTime, Firefox,
// Windows, phones), where thin coloured text blurs.
function updateDownloads() {
  if (!S.device) return;
  const { from, to } = S.range;
  let a, b, what;
  if (from != null && to != null && to !== from) {
    a = Math.min(from, to); b = Math.max(from, to);
    what = `Range ${fmt(a).split(' ').pop()}–${fmt(b).split(' ').pop()}`;
  } else {
    const wall = currentWall();
    if (wall == null) return;
    a = Math.floor(wall / MINUTE) * MINUTE; b = a + MINUTE;
    what = `The minute ${fmt(a, false).split(' ').pop().replace(/:00$/, '')}`;
  }
  const base = `/api/v1/devices/${S.device}/export.mp4?from=${a}&to=${b}`;
  $('dl-exact').href = base;
  $('dl-420').href = base + '&chroma=420';
  $('dl-what').textContent = what;
}

// ---------- loading ----------

async function refreshTimeline(follow = true) {
  if (!S.device) return;
  try {
    S.timeline = await (await api(`/api/v1/devices/${S.device}/timeline`)).json();
    setStatus(S.timeline.captures.length ? '' : 'No footage yet: the first minute appears about a minute after the first upload.');
  } catch (e) {
    if (!(e instanceof AuthError)) setStatus('The server cannot be reached; retrying…', true);
  }
  drawTimeline();
  prefetchBoards();
  if (follow) followNewest();
}

// The storyboards a person is about to need: the playhead's hour and, when the timeline shows
// three hours or fewer, every recorded hour in view (the server makes a sprite on its first
// request, so a seek or hover should not be the one waiting for it).
function prefetchBoards() {
  const tl = S.timeline;
  if (!S.device || !tl || !tl.captures.length) return;
  const hours = new Set();
  const wall = currentWall() ?? tl.captures[tl.captures.length - 1];
  hours.add(Math.floor(wall / HOUR) * HOUR);
  const { from, to } = timelineWindow();
  if (to - from <= 3 * HOUR) {
    for (const r of tl.recorded) {
      for (let h = Math.floor(Math.max(r.start_ms, from) / HOUR) * HOUR; h < Math.min(r.end_ms, to); h += HOUR) hours.add(h);
    }
  }
  for (const h of hours) board(h);
}

async function openDevice(id, startWall, live) {
  setFollowLive(false);
  const other = id !== S.device;
  if (other) { hideStill(); stills.clear(); if (FR) FR.clear(); leaveFrameMode(); }
  S.device = id;
  S.range = { from: null, to: null };
  updateDownloads();
  await refreshTimeline();
  if (other) { fitTimeline(); prefetchBoards(); }
  if (S.hls) S.hls.destroy();
  const hls = new Hls({ startPosition: 0, maxBufferLength: 120, backBufferLength: 600, liveDurationInfinity: true });
  S.hls = hls;
  let resolveReady;
  S.ready = new Promise((r) => { resolveReady = r; });
  // Prefer High 4:4:4 (coloured text stays sharp); hls.js has already dropped variants this
  // browser cannot play, so elsewhere the 4:2:0 one remains. `?variant=420` forces it. Only the
  // chosen variant is kept: no switching between them.
  hls.on(Hls.Events.MANIFEST_PARSED, (_, data) => {
    const want = new URLSearchParams(location.search).get('variant') === '420' ? 'avc1.64' : 'avc1.f4';
    const keep = Math.max(0, data.levels.findIndex((l) => (l.videoCodec || l.codecSet || '').toLowerCase().startsWith(want)));
    for (let j = data.levels.length - 1; j >= 0; j--) if (j !== keep) hls.removeLevel(j);
  });
  let snToUri = null;
  hls.on(Hls.Events.LEVEL_LOADED, (_, data) => {
    resolveReady();
    // Compaction rewrites older minutes into longer segments, so a sequence number may now name
    // another segment. hls.js matches live reloads by number; rather than let it mix the two
    // layouts, start again at the same moment (docs/storage.md).
    const now = new Map(data.details.fragments.map((f) => [f.sn, f.relurl]));
    const before = snToUri && snToUri.level === data.level ? snToUri : null;
    now.level = data.level;
    snToUri = now;
    if (before && S.hls === hls) {
      for (const [sn, uri] of now) {
        const was = before.get(sn);
        if (was !== undefined && was !== uri) { reopenAtSameMoment(); return; }
      }
    }
  });
  hls.on(Hls.Events.LEVEL_UPDATED, () => { if (S.followLive) refreshTimeline(); });
  hls.on(Hls.Events.ERROR, (_, data) => {
    if (!data.fatal) return;
    if (data.type === Hls.ErrorTypes.NETWORK_ERROR) {
      setStatus('The server cannot be reached; retrying…', true);
      setTimeout(() => { if (S.hls === hls) hls.startLoad(); }, 3000);
    } else if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
      hls.recoverMediaError();
    } else {
      setStatus(`Playback error: ${data.details}`, true);
    }
  });
  hls.loadSource(`/api/v1/devices/${id}/playlist.m3u8`);
  hls.attachMedia(video);
  if (!S.timeline || !S.timeline.captures.length) return;
  await S.ready;
  const caps = S.timeline.captures;
  const r = await seekWall(startWall ?? caps[caps.length - 1], { keepLive: live });
  if (r && live) setFollowLive(true);
}

function reopenAtSameMoment() {
  const wall = currentWall();
  const playing = !video.paused;
  S.reopens = (S.reopens || 0) + 1;
  S.lastSeek = openDevice(S.device, wall).then(() => { if (playing) return video.play(); });
}

async function start() {
  try {
    await api('/api/v1/me');
  } catch (e) {
    if (!(e instanceof AuthError)) setTimeout(start, 3000);
    return;
  }
  S.signedIn = true;
  $('login').hidden = true;
  $('main').hidden = false;
  const devices = await (await api('/api/v1/devices')).json();
  const select = $('device');
  select.replaceChildren(...devices.map((d) => new Option(d.name, d.id)));
  const params = new URLSearchParams(location.search);
  const wanted = params.get('device');
  if (wanted && devices.some((d) => d.id === wanted)) select.value = wanted;
  layout();
  if (!devices.length) { setStatus('No devices yet: add one with `screentape device add NAME`.'); return; }
  const t = params.get('t');
  const at = t && /^\d+$/.test(t) ? Number(t) : undefined;
  await openDevice(select.value, at, at === undefined);
}

// ---------- wiring ----------

function onKey(e) {
  if (e.target.closest && e.target.closest('input, select, textarea')) return;
  if ($('help').open && e.key !== '?') return;
  const k = e.key;
  let handled = true;
  if (k === ' ' || k === 'k') togglePlay();
  else if (k === 'ArrowLeft' && e.shiftKey) stepTime(-MINUTE);
  else if (k === 'ArrowRight' && e.shiftKey) stepTime(MINUTE);
  else if (k === 'ArrowLeft') stepScreenshot(-1);
  else if (k === 'ArrowRight') stepScreenshot(1);
  else if (k === 'j') stepTime(-10000);
  else if (k === 'l') stepTime(10000);
  else if (/^[0-9]$/.test(k)) { const { from, to } = timelineWindow(); seekWall(from + (to - from) * Number(k) / 10); }
  else if (k === 'Home') { const c = S.timeline && S.timeline.captures; if (c && c.length) seekWall(c[0]); }
  else if (k === 'End') goLive();
  else if (k === 'f') { if (document.fullscreenElement) document.exitFullscreen(); else $('main').requestFullscreen().catch(() => {}); }
  else if (k === '+' || k === '=') zoomTo(currentScale() * 1.25);
  else if (k === '-') zoomTo(currentScale() / 1.25);
  else if (k === '1') zoomTo(1);
  else if (k === ']') stepTimelineLevel(1);
  else if (k === '[') stepTimelineLevel(-1);
  else if (k === '\\') fitTimeline();
  else if (k === 'i') markRange('from');
  else if (k === 'o') markRange('to');
  else if (k === '?') { if ($('help').open) $('help').close(); else $('help').showModal(); }
  else handled = false;
  if (handled) e.preventDefault();
}

function wire() {
  $('speed').value = String(DEFAULT_SPEED);
  document.addEventListener('keydown', onKey);
  $('play').addEventListener('click', togglePlay);
  $('speed').addEventListener('change', () => { video.playbackRate = Number($('speed').value); });
  $('prev').addEventListener('click', () => stepScreenshot(-1));
  $('next').addEventListener('click', () => stepScreenshot(1));
  $('prev-min').addEventListener('click', () => stepTime(-MINUTE));
  $('next-min').addEventListener('click', () => stepTime(MINUTE));
  $('live').addEventListener('click', goLive);
  const jump = () => {
    const text = $('jump').value;
    const wall = parseWhen(text, Date.now());
    $('jump').classList.toggle('bad', wall == null);
    if (wall == null) { notice(`Not a time: “${text}”. Try 14:05, yesterday 14:05, 2025-11-26 14:05:30 or -10m.`); return; }
    seekWall(wall);
  };
  $('jump-go').addEventListener('click', jump);
  $('jump').addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); jump(); } });
  $('jump').addEventListener('input', () => $('jump').classList.remove('bad'));
  $('zoom-fit').addEventListener('click', () => zoomTo('fit'));
  $('zoom-1').addEventListener('click', () => zoomTo(1));
  $('zoom-in').addEventListener('click', () => zoomTo(currentScale() * 1.25));
  $('zoom-out').addEventListener('click', () => zoomTo(currentScale() / 1.25));
  $('mark-in').addEventListener('click', () => markRange('from'));
  $('mark-out').addEventListener('click', () => markRange('to'));
  $('help-button').addEventListener('click', () => $('help').showModal());
  $('device').addEventListener('change', (e) => openDevice(e.target.value, undefined, true));
  $('logout').addEventListener('click', async () => { await fetch('/api/v1/logout', { method: 'POST' }); S.signedIn = false; showLogin(); });
  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    let response;
    try {
      response = await fetch('/api/v1/login', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ user: form.get('user'), password: form.get('password') }),
      });
    } catch (err) {
      $('login-error').textContent = 'The server cannot be reached.';
      return;
    }
    if (response.ok) { $('login-error').textContent = ''; start(); return; }
    const wait = response.headers.get('Retry-After');
    $('login-error').textContent =
      response.status === 429 ? `Too many failed attempts from here; try again in ${wait || 'a few'} s.` :
      response.status === 503 ? 'The server is busy; try again shortly.' :
      'Wrong user or password.';
  });
  const stage = $('stage');
  stage.addEventListener('wheel', (e) => {
    e.preventDefault();
    const rect = stage.getBoundingClientRect();
    zoomTo(currentScale() * (e.deltaY < 0 ? 1.15 : 1 / 1.15), e.clientX - rect.left, e.clientY - rect.top);
  }, { passive: false });
  let panFrom = null;
  stage.addEventListener('pointerdown', (e) => {
    if (S.zoom === 'fit') return;
    panFrom = { x: e.clientX - S.pan.x, y: e.clientY - S.pan.y };
    stage.setPointerCapture(e.pointerId);
    stage.classList.add('panning');
  });
  stage.addEventListener('pointermove', (e) => {
    if (!panFrom) return;
    S.pan = { x: e.clientX - panFrom.x, y: e.clientY - panFrom.y };
    layout();
  });
  stage.addEventListener('pointerup', () => { panFrom = null; stage.classList.remove('panning'); });
  stage.addEventListener('dblclick', () => zoomTo(S.zoom === 'fit' ? 1 : 'fit'));
  video.addEventListener('loadedmetadata', layout);
  video.addEventListener('resize', layout);
  window.addEventListener('resize', () => { layout(); drawTimeline(); });
  video.addEventListener('timeupdate', () => { if (!video.paused) keepInView(currentWall()); updateClock(); skipGaps(); scheduleUrlUpdate(); });
  for (const [id, span] of [['tl-24h', DAY], ['tl-1h', HOUR], ['tl-5m', 5 * MINUTE]]) $(id).addEventListener('click', () => setTimelineSpan(span));
  $('tl-fit').addEventListener('click', fitTimeline);
  video.addEventListener('play', () => { hideStill(); leaveFrameMode(); updateClock(); });
  video.addEventListener('pause', () => { const w = currentWall(); if (w != null) showStill(w); updateClock(); });
  setupTimeline();
  setInterval(refreshTimeline, 30000);
  // Following live: look for newer captures more often than hls.js reloads a long playlist.
  setInterval(() => { if (S.followLive) refreshTimeline(); }, 10000);
}

// For tests and scripting: the same operations the controls use.
window.screentape = {
  seekWall, stepScreenshot, parseWhen, timelineWindow, zoomTimeline, fitTimeline,
  tickLabels: () => S.tickLabels || [], stepTime, goLive, play, setSpeed, togglePlay, zoomTo,
  currentWall, wallToMedia, mediaToWall,
  lastSeekInfo: () => S.lastSeekInfo,
  frames: () => (FR ? { cached: FR.cachedCount(), max: FR.maxFrames, decodedTotal: FR.decodedTotal, broken: FR.broken ? String(FR.broken) : null } : null),
  frameMode: () => S.frameMode,
  state: () => ({ device: S.device, timeline: S.timeline, paused: video.paused, wall: currentWall(), zoom: S.zoom, reopens: S.reopens || 0,
    codec: S.hls && S.hls.levels && S.hls.levels[0] ? (S.hls.levels[0].videoCodec || S.hls.levels[0].codecSet) : null }),
  ready: () => S.ready,
  // The promise of the latest seek (from any control or key), for scripts that must wait for it.
  settled: () => S.lastSeek,
};

wire();
start();
