// screentape player: exact frames through WebCodecs, kept around the playhead.
//
// While paused, the player does not seek the <video> (an MSE seek decodes from the segment's
// keyframe every time, ~4 ms a frame at 1080p 4:4:4, up to 61 frames). Instead this module fetches
// the same fMP4 segments hls.js plays, demuxes them here (our segments are simple: one video track,
// moof + mdat with tfhd/tfdt/trun), decodes them with a WebCodecs VideoDecoder and keeps the decoded
// VideoFrames in a bounded cache around the playhead, so a step to a neighbouring capture is a
// canvas draw. After each step the neighbouring segment in the direction of travel is decoded
// ahead. Media time is wall-clock time (tfdt = unix ms at timescale 1000), so a decoded frame's
// timestamp is the wall time it starts being shown.
//
// Memory bound: FRAME_BUDGET bytes of decoded pictures (width × height × bytes per pixel of the
// decoder's format: 3 for I444, 1.5 for I420, 4 for BGRX), between MIN_FRAMES and MAX_FRAMES
// frames; 400 MiB holds 66 frames of 1080p 4:4:4 (coded 1920×1090) (a whole 61-frame segment plus its neighbours'
// edges). Frames farthest from the playhead are closed first. Fetched segment bytes: at most
// SEGMENTS_KEPT.
'use strict';

(() => {
  const FRAME_BUDGET = 400 * 1024 * 1024;
  const MIN_FRAMES = 24, MAX_FRAMES = 600;
  const SEGMENTS_KEPT = 8;

  // ---------- ISO-BMFF boxes ----------

  const fourcc = (v, p) => String.fromCharCode(v.getUint8(p), v.getUint8(p + 1), v.getUint8(p + 2), v.getUint8(p + 3));

  function boxes(v, start, end) {
    const out = [];
    let p = start;
    while (p + 8 <= end) {
      let size = v.getUint32(p), hdr = 8;
      const type = fourcc(v, p + 4);
      if (size === 1) { size = Number(v.getBigUint64(p + 8)); hdr = 16; } else if (size === 0) size = end - p;
      if (size < hdr || p + size > end) throw new Error(`malformed ${type} box at ${p}`);
      out.push({ type, start: p, body: p + hdr, end: p + size });
      p += size;
    }
    return out;
  }
  const child = (v, box, type) => boxes(v, box.body, box.end).find((b) => b.type === type) || null;
  const path = (v, box, ...types) => types.reduce((b, t) => (b ? child(v, b, t) : null), box);
  const hex2 = (n) => n.toString(16).padStart(2, '0');

  // The init segment: timescale, the decoder configuration (codec string from avcC / av1C, which
  // names the real stream even where one playlist mixes H.264 minutes and AV1 blocks), trex defaults.
  function parseInit(buf) {
    const v = new DataView(buf);
    const moov = boxes(v, 0, v.byteLength).find((b) => b.type === 'moov');
    if (!moov) throw new Error('init segment without moov');
    const trak = boxes(v, moov.body, moov.end).find((b) => b.type === 'trak');
    const mdhd = path(v, trak, 'mdia', 'mdhd');
    const timescale = v.getUint8(mdhd.body) === 1 ? v.getUint32(mdhd.body + 20) : v.getUint32(mdhd.body + 12);
    const stsd = path(v, trak, 'mdia', 'minf', 'stbl', 'stsd');
    const entry = boxes(v, stsd.body + 8, stsd.end)[0];
    const width = v.getUint16(entry.body + 24), height = v.getUint16(entry.body + 26);
    const inner = boxes(v, entry.body + 78, entry.end);
    let codec = null, description;
    const avcC = inner.find((b) => b.type === 'avcC');
    const av1C = inner.find((b) => b.type === 'av1C');
    if (avcC) {
      codec = 'avc1.' + hex2(v.getUint8(avcC.body + 1)) + hex2(v.getUint8(avcC.body + 2)) + hex2(v.getUint8(avcC.body + 3));
      codec = codec.toUpperCase().replace('AVC1', 'avc1');
      description = new Uint8Array(buf.slice(avcC.body, avcC.end));
    } else if (av1C) {
      const b1 = v.getUint8(av1C.body + 1), b2 = v.getUint8(av1C.body + 2);
      const profile = b1 >> 5, level = b1 & 31, tier = b2 >> 7 ? 'H' : 'M';
      const depth = (b2 >> 6) & 1 ? ((b2 >> 5) & 1 ? 12 : 10) : 8;
      const mono = (b2 >> 4) & 1, sx = (b2 >> 3) & 1, sy = (b2 >> 2) & 1, pos = b2 & 3;
      // The long form (Firefox refuses the short one): BT.709 primaries, transfer and matrix, limited range.
      codec = `av01.${profile}.${String(level).padStart(2, '0')}${tier}.${String(depth).padStart(2, '0')}.${mono}.${sx}${sy}${sx && sy ? pos : 0}.01.01.01.0`;
      description = new Uint8Array(buf.slice(av1C.body, av1C.end));
    }
    const trex = path(v, moov, 'mvex', 'trex');
    const defaults = trex
      ? { duration: v.getUint32(trex.body + 12), size: v.getUint32(trex.body + 16), flags: v.getUint32(trex.body + 20) }
      : { duration: 0, size: 0, flags: 0 };
    return { timescale, codec, description, width, height, defaults };
  }

  // A media segment: every sample's wall time (ms), duration, key flag and bytes.
  function parseSegment(buf, init) {
    const v = new DataView(buf);
    const samples = [];
    for (const moof of boxes(v, 0, v.byteLength).filter((b) => b.type === 'moof')) {
      for (const traf of boxes(v, moof.body, moof.end).filter((b) => b.type === 'traf')) {
        const tfhd = child(v, traf, 'tfhd');
        const hf = v.getUint32(tfhd.body) & 0xffffff;
        let p = tfhd.body + 8, base = moof.start;
        const d = { ...init.defaults };
        if (hf & 0x1) { base = Number(v.getBigUint64(p)); p += 8; }
        if (hf & 0x2) p += 4;
        if (hf & 0x8) { d.duration = v.getUint32(p); p += 4; }
        if (hf & 0x10) { d.size = v.getUint32(p); p += 4; }
        if (hf & 0x20) { d.flags = v.getUint32(p); p += 4; }
        const tfdt = child(v, traf, 'tfdt');
        let t = tfdt ? (v.getUint8(tfdt.body) === 1 ? Number(v.getBigUint64(tfdt.body + 4)) : v.getUint32(tfdt.body + 4)) : 0;
        for (const trun of boxes(v, traf.body, traf.end).filter((b) => b.type === 'trun')) {
          const version = v.getUint8(trun.body), tf = v.getUint32(trun.body) & 0xffffff;
          const count = v.getUint32(trun.body + 4);
          let q = trun.body + 8, offset = base;
          if (tf & 0x1) { offset = base + v.getInt32(q); q += 4; }
          let firstFlags = null;
          if (tf & 0x4) { firstFlags = v.getUint32(q); q += 4; }
          for (let i = 0; i < count; i++) {
            let duration = d.duration, size = d.size, flags = i === 0 && firstFlags != null ? firstFlags : d.flags, cto = 0;
            if (tf & 0x100) { duration = v.getUint32(q); q += 4; }
            if (tf & 0x200) { size = v.getUint32(q); q += 4; }
            if (tf & 0x400) { flags = v.getUint32(q); q += 4; }
            if (tf & 0x800) { cto = version ? v.getInt32(q) : v.getUint32(q); q += 4; }
            if (offset + size > buf.byteLength) throw new Error('sample beyond the segment');
            const key = !((flags >> 16) & 1) && ((flags >> 24) & 3) !== 1;
            samples.push({
              ms: Math.round(((t + cto) * 1000) / init.timescale),
              duration: Math.round((duration * 1000) / init.timescale),
              key,
              data: new Uint8Array(buf, offset, size),
            });
            offset += size;
            t += duration;
          }
        }
      }
    }
    if (!samples.length || !samples[0].key) throw new Error('segment does not start with a keyframe');
    return samples;
  }

  // ---------- decoded frames ----------

  class Frames {
    constructor() {
      this.frames = new Map();     // wall ms -> VideoFrame
      this.waiters = new Map();    // wall ms -> [resolve]
      this.inits = new Map();      // url -> Promise<init>
      this.segments = new Map();   // url -> Promise<{ samples, fetchMs, bytes }>
      this.decoder = null;
      this.configured = null;      // init url the decoder is configured for
      this.job = null;             // { url, from, to, aborted, done }
      this.next = null;            // the decode-ahead job waiting for the decoder
      this.pos = 0;                // the playhead, wall ms: eviction keeps frames near it
      this.maxFrames = MAX_FRAMES;
      this.broken = null;
      this.decodedTotal = 0;
    }

    static available() {
      return typeof VideoDecoder === 'function' && typeof EncodedVideoChunk === 'function' && window.isSecureContext !== false;
    }

    init(url) {
      if (!this.inits.has(url)) {
        this.inits.set(url, fetch(url, { credentials: 'same-origin' }).then((r) => {
          if (!r.ok) throw new Error(`${url}: ${r.status}`);
          return r.arrayBuffer();
        }).then(async (buf) => {
          const init = parseInit(buf);
          if (!init.codec) throw new Error('unknown codec');
          init.config = { codec: init.codec, description: init.description, codedWidth: init.width, codedHeight: init.height, optimizeForLatency: false };
          const support = await VideoDecoder.isConfigSupported(init.config);
          init.supported = !!support.supported;
          return init;
        }));
        this.inits.get(url).catch(() => this.inits.delete(url));
      }
      return this.inits.get(url);
    }

    // Whether segments with this init can be decoded here (e.g. Firefox: no for avc1.F4…).
    async supports(initUrl) {
      try { return (await this.init(initUrl)).supported; } catch (_) { return false; }
    }

    segment(url, initUrl) {
      let e = this.segments.get(url);
      if (e) { this.segments.delete(url); this.segments.set(url, e); return e; }
      const t0 = performance.now();
      e = Promise.all([fetch(url, { credentials: 'same-origin' }).then((r) => {
        if (!r.ok) throw new Error(`${url}: ${r.status}`);
        return r.arrayBuffer();
      }), this.init(initUrl)]).then(([buf, init]) => ({ samples: parseSegment(buf, init), fetchMs: performance.now() - t0, bytes: buf.byteLength }));
      e.catch(() => this.segments.delete(url));
      this.segments.set(url, e);
      for (const k of this.segments.keys()) { if (this.segments.size <= SEGMENTS_KEPT) break; this.segments.delete(k); }
      return e;
    }

    // The playhead and the direction of travel (-1, 0, 1): eviction keeps the frames near the
    // playhead, those ahead in the direction of travel first.
    setPlayhead(wall, dir) { this.pos = wall; if (dir) this.dir = dir; }

    // The decoded frame shown at `wall` inside segment `seg` ({ url, initUrl }), decoding what is
    // needed. Resolves { frame, ms, decoded, fetchMs, cached } or null (superseded, or undecodable).
    async frameAt(seg, wall) {
      const fetched = !this.segments.has(seg.url);
      const { samples, fetchMs: took } = await this.segment(seg.url, seg.initUrl);
      const fetchMs = fetched ? took : 0;
      let i = -1;
      for (let k = 0; k < samples.length && samples[k].ms <= wall; k++) i = k;
      if (i < 0) i = 0;
      const ms = samples[i].ms;
      const have = this.frames.get(ms);
      let key = i;
      while (key > 0 && !samples[key].key) key--;
      if (have) return { frame: have, ms, decoded: 0, gop: i - key, fetchMs: 0, cached: true };
      const job = this.job;
      const covered = job && !job.aborted && job.url === seg.url && job.from <= i && !job.done;
      let owner = job;
      if (!covered) {
        if (this.next && this.next.url === seg.url) this.next = null;
        this.abort();
        owner = { url: seg.url, initUrl: seg.initUrl, from: key };
      }
      const got = new Promise((resolve) => {
        const list = this.waiters.get(ms) || [];
        list.push({ resolve, job: owner });
        this.waiters.set(ms, list);
      });
      if (!covered) this.start(owner);
      const t0 = performance.now();
      const frame = await got;
      if (!frame) return null;
      return { frame, ms, decoded: i - key + 1, gop: i - key, fetchMs, decodeMs: performance.now() - t0, cached: false };
    }

    // Decode `seg` in the background when the decoder is idle (the direction of travel).
    ahead(seg) {
      if (this.broken || (this.job && !this.job.done && this.job.url === seg.url)) return;
      this.next = { url: seg.url, initUrl: seg.initUrl, from: 0, background: true };
      if (!this.job || this.job.done) { const n = this.next; this.next = null; this.start(n); }
    }

    abort() {
      const job = this.job;
      if (!job || job.done) return;
      job.aborted = true;
      if (this.decoder && this.decoder.state !== 'closed') { try { this.decoder.reset(); } catch (_) { /* closed meanwhile */ } }
      this.configured = null;
    }

    start(job) {
      this.job = job;
      this.run(job).catch((e) => { job.error = e; }).finally(() => {
        job.done = true;
        // Frames this job should have produced but did not (aborted, failed, or evicted at
        // once): their waiters get null.
        for (const [ms, list] of this.waiters) {
          const mine = list.filter((w) => w.job === job);
          if (!mine.length) continue;
          const rest = list.filter((w) => w.job !== job);
          if (rest.length) this.waiters.set(ms, rest); else this.waiters.delete(ms);
          mine.forEach((w) => w.resolve(this.frames.get(ms) || null));
        }
        if (this.job === job && this.next) { const n = this.next; this.next = null; this.start(n); }
      });
    }

    async run(job) {
      const [init, seg] = await Promise.all([this.init(job.initUrl), this.segment(job.url, job.initUrl)]);
      if (job.aborted) return;
      if (!init.supported) throw new Error(`${init.codec} is not supported here`);
      const samples = seg.samples;
      // Everything from `from` on is cached already: nothing to do.
      if (samples.slice(job.from).every((s) => this.frames.has(s.ms))) return;
      if (!this.decoder || this.decoder.state === 'closed') {
        this.decoder = new VideoDecoder({
          output: (frame) => this.output(frame),
          error: (e) => { this.broken = e; this.configured = null; this.flushWaiters(); },
        });
      }
      if (this.configured !== job.initUrl) {
        this.decoder.configure(init.config);
        this.configured = job.initUrl;
      }
      job.decoded = 0;
      for (let k = job.from; k < samples.length; k++) {
        const s = samples[k];
        this.decoder.decode(new EncodedVideoChunk({ type: s.key ? 'key' : 'delta', timestamp: s.ms * 1000, duration: s.duration * 1000, data: s.data }));
        job.decoded++;
      }
      this.decodedTotal += job.decoded;
      try { await this.decoder.flush(); } catch (e) { if (!job.aborted) throw e; }
    }

    flushWaiters() {
      for (const list of this.waiters.values()) list.forEach((w) => w.resolve(null));
      this.waiters.clear();
    }

    output(frame) {
      const ms = Math.round(frame.timestamp / 1000);
      const old = this.frames.get(ms);
      if (old) old.close();
      this.frames.set(ms, frame);
      if (!this.frameBytes) {
        const per = { I444: 3, I444A: 4, I420: 1.5, I420A: 2.5, I422: 2, NV12: 1.5, RGBA: 4, RGBX: 4, BGRA: 4, BGRX: 4 }[frame.format] || 4;
        this.frameBytes = frame.codedWidth * frame.codedHeight * per;
        this.maxFrames = Math.max(MIN_FRAMES, Math.min(MAX_FRAMES, Math.floor(FRAME_BUDGET / this.frameBytes)));
      }
      const list = this.waiters.get(ms);
      if (list) { this.waiters.delete(ms); list.forEach((w) => w.resolve(frame)); }
      this.evict(ms);
    }

    // Closes the frames farthest from the playhead beyond the budget, never the one just made
    // or one on screen.
    evict(keep) {
      if (this.frames.size <= this.maxFrames) return;
      const dir = this.dir || 0;
      const cost = (ms) => { const d = ms - this.pos; return Math.abs(d) * (dir && Math.sign(d) === -dir ? 3 : 1); };
      const order = [...this.frames.keys()].sort((a, b) => cost(b) - cost(a));
      for (const ms of order) {
        if (this.frames.size <= this.maxFrames) break;
        if (ms === keep || ms === this.shown) continue;
        this.frames.get(ms).close();
        this.frames.delete(ms);
      }
    }

    cachedCount() { return this.frames.size; }

    clear() {
      this.abort();
      this.next = null;
      for (const f of this.frames.values()) f.close();
      this.frames.clear();
      this.flushWaiters();
      this.segments.clear();
    }
  }

  window.ScreentapeFrames = { Frames, parseInit, parseSegment };
})();
