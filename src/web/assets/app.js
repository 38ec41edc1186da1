// nfhost dashboard. Loads the JSON API, follows the server-sent event stream
// (/api/v1/stream: `stats` once a second with rates computed by the server, `event`
// as things happen) and draws. No framework; uPlot draws the chart.
//
// With `nfhost serve --auth` every /api/v1/* call needs `Authorization: Bearer TOKEN`
// and answers 401 without it: the page then shows a sign-in form and keeps the
// token in sessionStorage (this tab only, gone when it closes). The token goes in
// that header and nowhere else: not in a URL, not in the console. The stream is
// read with fetch (EventSource cannot send headers). Without --auth no call answers
// 401, so the form never shows and no header is sent.
'use strict';

(() => {
  /** Points kept per series: two minutes at one a second. */
  const POINTS = 120;
  /** How often the slow-changing lists (PF, VFs, NFs, chains) are reloaded. */
  const REFRESH_MS = 5000;
  /** A stream silent this long is shown as stale. */
  const STALE_MS = 3500;
  /** Events listed. */
  const MAX_EVENTS = 100;
  /** Series colours, picked by VF index so a VF keeps its colour. */
  const PALETTE = ['#0ea5e9', '#f97316', '#22c55e', '#a855f7', '#ef4444', '#eab308',
    '#14b8a6', '#ec4899', '#6366f1', '#84cc16', '#06b6d4', '#f43f5e'];

  const state = {
    pf: null,
    vfs: [],
    nfs: [],
    chains: [],
    events: [],
    /** VF index -> the latest rates from the stream. */
    rates: new Map(),
    wire: null,
    unit: 'pps',
    /** Sample times (Unix seconds) and, per VF index, the received rates. */
    times: [],
    hist: new Map(),
    lastFrameAt: 0,
    streamError: false,
    /** The API answered 401 and the sign-in form is up: nothing is fetched. */
    signedOut: false,
  };

  const $ = (sel) => document.querySelector(sel);

  // ---------------------------------------------------------------- formatting

  function esc(s) {
    return String(s ?? '').replace(/[&<>"']/g, (c) => ({
      '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
    })[c]);
  }

  /** 20000 -> "20.0 k", 7 -> "7", 0.5 -> "0.5". */
  function si(v) {
    if (v == null || !Number.isFinite(v)) return '–';
    const abs = Math.abs(v);
    for (const [p, f] of [['T', 1e12], ['G', 1e9], ['M', 1e6], ['k', 1e3]]) {
      if (abs >= f) return `${(v / f).toPrecision(3)} ${p}`;
    }
    if (abs > 0 && abs < 10 && !Number.isInteger(v)) return v.toFixed(1);
    return String(Math.round(v));
  }

  /** Axis ticks: 2000 -> "2 k", 2500 -> "2.5 k". */
  function siTick(v) {
    const abs = Math.abs(v);
    for (const [p, f] of [['T', 1e12], ['G', 1e9], ['M', 1e6], ['k', 1e3]]) {
      if (abs >= f) return `${Number((v / f).toPrecision(3))} ${p}`;
    }
    return String(Number(v.toPrecision(3)));
  }

  /** A rate with its unit: "20.0 kpps", "10.2 Mbit/s", "0 pps". */
  function rate(v, unit) {
    const s = si(v);
    if (s === '–') return s;
    const unitText = unit === 'bps' ? 'bit/s' : 'pps';
    return s.endsWith(' ') || /[a-zA-Z]$/.test(s) ? `${s}${unitText}` : `${s} ${unitText}`;
  }

  function bytes(v) {
    const s = si(v);
    return s === '–' ? s : /[a-zA-Z]$/.test(s) ? `${s}B` : `${s} B`;
  }

  function clock(ms) {
    const d = new Date(ms);
    return d.toLocaleTimeString([], { hour12: false, hour: '2-digit', minute: '2-digit', second: '2-digit' });
  }

  /** "nfs/mon" -> "mon", "chains/edge" -> "edge", "pfs/0/vfs/3" -> "vf3". */
  function short(name) {
    if (!name) return '';
    const vf = /^pfs\/\d+\/vfs\/(\d+)$/.exec(name);
    if (vf) return `vf${vf[1]}`;
    return name.replace(/^(nfs|chains)\//, '');
  }

  function vfIndex(name) {
    const m = /(\d+)$/.exec(name || '');
    return m ? Number(m[1]) : -1;
  }

  const colour = (index) => PALETTE[index % PALETTE.length];

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  /** Sets innerHTML only when it changed, so hovering and selection survive. */
  const rendered = new WeakMap();
  function setHTML(el, html) {
    if (rendered.get(el) === html) return;
    rendered.set(el, html);
    el.innerHTML = html;
  }

  // ---------------------------------------------------------------- token

  /** sessionStorage key of the bearer token. */
  const TOKEN_KEY = 'nfhost.token';
  /** Where the token lives if sessionStorage is unavailable (disabled, sandboxed). */
  let memoryToken = null;

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return memoryToken;
    }
  }

  function setToken(t) {
    memoryToken = t;
    try {
      if (t === null) sessionStorage.removeItem(TOKEN_KEY);
      else sessionStorage.setItem(TOKEN_KEY, t);
    } catch {
      // Kept in memory only: lost on reload.
    }
  }

  /** `extra` plus `Authorization: Bearer …` when a token is stored (`t`: that one). */
  function authHeaders(extra, t = token()) {
    const h = { ...extra };
    if (t) h.Authorization = `Bearer ${t}`;
    return h;
  }

  /** A 401: the server wants a (valid) token. Carries no token. */
  class Unauthorized extends Error {
    constructor(path) {
      super(`${path}: HTTP 401`);
      this.name = 'Unauthorized';
    }
  }

  /**
   * fetch with the token. A 401 shows the sign-in form, unless the token was
   * replaced while the request was out (the new one is being tried already).
   */
  async function apiFetch(path, init = {}) {
    const sent = token();
    const r = await fetch(path, { ...init, headers: authHeaders(init.headers, sent) });
    if (r.status === 401) {
      if (sent === token()) needSignIn();
      throw new Unauthorized(path);
    }
    return r;
  }

  // ---------------------------------------------------------------- data

  async function getJSON(path) {
    const r = await apiFetch(path, { cache: 'no-store', headers: { Accept: 'application/json' } });
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }

  /**
   * Counts sign-ins and sign-outs: an answer to a request sent before the latest one
   * belongs to another principal (or to none) and is dropped.
   */
  let epoch = 0;

  let refreshing = null;
  async function refresh() {
    if (state.signedOut) return undefined;
    if (refreshing) return refreshing;
    const mine = epoch;
    const p = (async () => {
      const [pf, vfs, nfs, chains] = await Promise.allSettled([
        getJSON('/api/v1/pf'), getJSON('/api/v1/vfs'), getJSON('/api/v1/nfs'), getJSON('/api/v1/chains'),
      ]);
      if (mine !== epoch) return;
      if (pf.status === 'fulfilled') state.pf = pf.value;
      if (vfs.status === 'fulfilled') state.vfs = vfs.value.vfs;
      if (nfs.status === 'fulfilled') state.nfs = nfs.value.nfs;
      if (chains.status === 'fulfilled') state.chains = chains.value.chains;
      renderLive();
    })().finally(() => { if (refreshing === p) refreshing = null; });
    refreshing = p;
    return p;
  }

  let refreshTimer = 0;
  /** Reloads soon: an event means something changed; a burst of them, one reload. */
  function refreshSoon() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, 300);
  }

  async function loadEvents() {
    if (state.signedOut) return;
    const mine = epoch;
    try {
      const { events } = await getJSON(`/api/v1/events?limit=${MAX_EVENTS}`);
      if (mine !== epoch) return;
      state.events = events;
      renderEvents(new Set());
    } catch {
      // The stream's status shows the server is unreachable; the next load retries.
    }
  }

  function onFrame(frame) {
    state.lastFrameAt = Date.now();
    state.wire = frame.wire;
    state.rates = new Map(frame.vfs.map((v) => [v.index, v]));
    state.times.push(frame.t / 1000);
    const seen = new Set();
    for (const v of frame.vfs) {
      let h = state.hist.get(v.index);
      if (!h) {
        const gap = state.times.length - 1;
        h = { pps: new Array(gap).fill(null), bps: new Array(gap).fill(null) };
        state.hist.set(v.index, h);
      }
      h.pps.push(v.rx_pps);
      h.bps.push(v.rx_bps);
      seen.add(v.index);
    }
    for (const [index, h] of state.hist) {
      if (!seen.has(index)) { h.pps.push(null); h.bps.push(null); }
    }
    if (state.times.length > POINTS) {
      const cut = state.times.length - POINTS;
      state.times.splice(0, cut);
      for (const h of state.hist.values()) { h.pps.splice(0, cut); h.bps.splice(0, cut); }
    }
    renderLive();
  }

  function onEvent(e) {
    if (state.events.some((x) => x.seq === e.seq)) return;
    state.events.push(e);
    if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
    renderEvents(new Set([e.seq]));
    refreshSoon();
  }

  // ---------------------------------------------------------------- stream

  /** What the stream's named events do (the names EventSource listened for). */
  const STREAM_HANDLERS = {
    stats: (data) => { state.streamError = false; onFrame(JSON.parse(data)); },
    event: (data) => onEvent(JSON.parse(data)),
    lagged: () => loadEvents(),
  };

  /** First wait before reconnecting (a `retry:` field from the server replaces it). */
  const RETRY_MS = 1000;
  /** Longest wait between reconnects while they keep failing. */
  const MAX_RETRY_MS = 30_000;
  /**
   * No byte in this long means the connection is dead though not closed: the
   * server's keep-alive comments come every 15 s, stats every second.
   */
  const SILENT_MS = 45_000;

  const stream = {
    /** The AbortController of the connection being read, if any. */
    current: null,
    reconnectTimer: 0,
    /** Reconnect delay in force: RETRY_MS, or what `retry:` said. */
    retryMs: RETRY_MS,
    /** Failed attempts since an event last came through: the backoff exponent. */
    failures: 0,
    /** The last `id:` seen, sent back as Last-Event-ID as EventSource does. */
    lastEventId: '',
  };

  /**
   * A server-sent event stream parser (the WHATWG "event stream interpretation"):
   * feed it decoded text as it arrives; it calls `dispatch(type, data)` for each
   * complete event. Lines end in CRLF, LF or CR; `:` lines are comments; `event`,
   * `data` (several join with newlines), `id` and `retry` are the fields; a blank
   * line ends an event; an event without data is dropped.
   */
  function sseParser(dispatch, onId, onRetry) {
    let buf = '';
    let type = '';
    let data = '';
    let hasData = false;
    let first = true;

    function line(l) {
      if (l === '') {
        if (hasData) dispatch(type || 'message', data.endsWith('\n') ? data.slice(0, -1) : data);
        type = '';
        data = '';
        hasData = false;
        return;
      }
      if (l[0] === ':') return;
      const colon = l.indexOf(':');
      const field = colon < 0 ? l : l.slice(0, colon);
      let value = colon < 0 ? '' : l.slice(colon + 1);
      if (value[0] === ' ') value = value.slice(1);
      if (field === 'event') type = value;
      else if (field === 'data') { data += `${value}\n`; hasData = true; }
      else if (field === 'id') { if (!value.includes('\0')) onId(value); }
      else if (field === 'retry') { if (/^\d+$/.test(value)) onRetry(Number(value)); }
    }

    return {
      push(text) {
        buf += text;
        if (first && buf.length) {
          if (buf[0] === '\uFEFF') buf = buf.slice(1);
          first = buf.length === 0;
        }
        let start = 0;
        for (;;) {
          const lf = buf.indexOf('\n', start);
          const cr = buf.indexOf('\r', start);
          if (lf < 0 && cr < 0) break;
          let end;
          let next;
          if (cr >= 0 && (lf < 0 || cr < lf)) {
            // A CR at the end of what came so far may be the first half of a CRLF.
            if (cr === buf.length - 1) break;
            end = cr;
            next = buf[cr + 1] === '\n' ? cr + 2 : cr + 1;
          } else {
            end = lf;
            next = lf + 1;
          }
          line(buf.slice(start, end));
          start = next;
        }
        buf = buf.slice(start);
      },
      /** The stream ended: a lone CR still ends its line; an unfinished event is dropped. */
      end() {
        if (buf.endsWith('\r')) line(buf.slice(0, -1));
        buf = '';
      },
    };
  }

  /** Closes the stream on purpose: no reconnect follows. */
  function stopStream() {
    clearTimeout(stream.reconnectTimer);
    stream.reconnectTimer = 0;
    const ctrl = stream.current;
    stream.current = null;
    if (ctrl) ctrl.abort();
  }

  /** The connection failed or ended: try again after the backoff, as EventSource would. */
  function reconnectLater() {
    state.streamError = true;
    renderConn();
    if (state.signedOut || stream.reconnectTimer) return;
    const backoff = Math.min(MAX_RETRY_MS, stream.retryMs * 2 ** Math.min(stream.failures, 10));
    stream.failures += 1;
    // Up to a fifth more, so many pages do not all come back in the same instant.
    const wait = backoff + Math.random() * backoff * 0.2;
    stream.reconnectTimer = setTimeout(() => {
      stream.reconnectTimer = 0;
      connect();
    }, wait);
  }

  /** Reports a handler's exception as an uncaught one would be, and goes on reading. */
  function report(e) {
    if (typeof reportError === 'function') reportError(e);
    else setTimeout(() => { throw e; });
  }

  /**
   * Follows /api/v1/stream: fetch with the token, the body read as it comes and
   * parsed as server-sent events. Reconnects when the connection fails or ends,
   * waiting longer after each failure in a row; a 401 shows the sign-in form.
   */
  async function connect() {
    stopStream();
    if (state.signedOut) return;
    const ctrl = new AbortController();
    stream.current = ctrl;
    // Aborting for silence is not on purpose: stream.current stays, so it reconnects.
    let silentTimer = 0;
    const quiet = () => {
      clearTimeout(silentTimer);
      silentTimer = setTimeout(() => ctrl.abort(), SILENT_MS);
    };
    const sent = token();
    const headers = { Accept: 'text/event-stream' };
    if (stream.lastEventId) headers['Last-Event-ID'] = stream.lastEventId;
    try {
      quiet();
      const r = await fetch('/api/v1/stream', {
        headers: authHeaders(headers, sent), cache: 'no-store', signal: ctrl.signal,
      });
      if (r.status === 401) {
        if (stream.current === ctrl) stream.current = null;
        if (sent === token()) needSignIn();
        return;
      }
      if (!r.ok || !r.body) throw new Error(`/api/v1/stream: HTTP ${r.status}`);
      state.streamError = false;
      renderConn();
      const parser = sseParser((type, data) => {
        if (stream.current !== ctrl) return;
        // An event came through: the connection works, the backoff starts over.
        stream.failures = 0;
        const handle = STREAM_HANDLERS[type];
        if (!handle) return;
        try {
          handle(data);
        } catch (e) {
          report(e);
        }
      }, (id) => { stream.lastEventId = id; }, (ms) => { stream.retryMs = ms; });
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        quiet();
        parser.push(decoder.decode(value, { stream: true }));
      }
      parser.push(decoder.decode());
      parser.end();
    } catch {
      // Refused, reset, aborted or silent too long: reconnect below, unless this
      // connection was stopped on purpose (sign-in, sign-out, a newer connect).
    } finally {
      clearTimeout(silentTimer);
    }
    if (stream.current === ctrl) {
      stream.current = null;
      reconnectLater();
    }
  }

  // ---------------------------------------------------------------- chart

  let plot = null;
  let plotKey = '';

  /** VF indexes whose received rate was above zero at some point in the window. */
  function chartedVfs() {
    return [...state.hist.entries()]
      .filter(([, h]) => h.pps.some((v) => v > 0))
      .map(([i]) => i)
      .sort((a, b) => a - b);
  }

  function seriesLabel(index) {
    const nf = state.rates.get(index)?.nf;
    return nf ? `vf${index} (${short(nf)})` : `vf${index}`;
  }

  function lastValue(arr) {
    for (let i = arr.length - 1; i >= 0; i--) if (arr[i] != null) return arr[i];
    return null;
  }

  function chartSize(el) {
    const width = Math.max(el.clientWidth, 240);
    const height = window.innerWidth < 600 ? 200 : 260;
    return { width, height };
  }

  function plotOptions(el, vfs) {
    const unit = state.unit;
    const axis = {
      stroke: cssVar('--muted'),
      grid: { stroke: cssVar('--line'), width: 1 },
      ticks: { stroke: cssVar('--line'), width: 1 },
      font: '11px system-ui, sans-serif',
    };
    return {
      ...chartSize(el),
      cursor: { drag: { x: false, y: false }, points: { size: 7 } },
      legend: { live: true },
      scales: {
        // A fixed two-minute window ending now, so a few points do not stretch
        // over years and the chart scrolls left like a strip chart.
        x: { time: true, range: (u, min, max) => [max - POINTS, max + 0.5] },
        y: { range: (u, min, max) => [0, max > 0 ? max * 1.15 : 1] },
      },
      axes: [
        { ...axis, space: 70, values: (u, ticks) => ticks.map((t) => clock(t * 1000)) },
        { ...axis, size: 64, values: (u, ticks) => ticks.map(siTick) },
      ],
      series: [
        {
          label: 'time',
          // With the cursor off the chart, the legend shows the latest sample.
          value: (u, v) => clock(1000 * (v ?? lastValue(u.data[0]) ?? 0)),
        },
        ...vfs.map((i, n) => ({
          label: seriesLabel(i),
          stroke: colour(i),
          width: 2,
          // The hops of a chain carry the same rate, so their lines lie on top of
          // each other: every other one dashed lets both show.
          dash: n % 2 ? [7, 5] : undefined,
          // Dots only while there are too few points to draw a line.
          points: { show: (u) => u.data[0].length < 3, size: 6 },
          spanGaps: false,
          value: (u, v, sidx, idx) => rate(idx == null ? lastValue(u.data[sidx]) : v, unit),
        })),
      ],
    };
  }

  function renderChart() {
    const el = $('#chart');
    const vfs = chartedVfs();
    if (!vfs.length || typeof uPlot === 'undefined') {
      if (plot) { plot.destroy(); plot = null; plotKey = ''; }
      setHTML(el, '<p class="empty">Waiting for traffic…</p>');
      return;
    }
    const data = [state.times.slice(), ...vfs.map((i) => state.hist.get(i)[state.unit].slice())];
    const key = `${state.unit}|${vfs.map((i) => `${i}:${seriesLabel(i)}`).join(',')}`;
    if (plot && key === plotKey) {
      plot.setData(data);
      return;
    }
    if (plot) plot.destroy();
    rendered.delete(el);
    el.textContent = '';
    plot = new uPlot(plotOptions(el, vfs), data, el);
    plotKey = key;
  }

  let resizeFrame = 0;
  window.addEventListener('resize', () => {
    cancelAnimationFrame(resizeFrame);
    resizeFrame = requestAnimationFrame(() => {
      if (plot) plot.setSize(chartSize($('#chart')));
    });
  });

  for (const b of document.querySelectorAll('.toggle button')) {
    b.addEventListener('click', () => {
      state.unit = b.dataset.unit;
      for (const o of document.querySelectorAll('.toggle button')) {
        o.setAttribute('aria-pressed', String(o === b));
      }
      renderChart();
    });
  }

  // ---------------------------------------------------------------- header

  function renderConn() {
    const el = $('#conn');
    const fresh = Date.now() - state.lastFrameAt < STALE_MS;
    const [s, text] = state.signedOut ? ['signed-out', 'signed out']
      : fresh ? ['live', 'live']
      : state.streamError ? ['down', 'reconnecting']
        : ['connecting', state.lastFrameAt ? 'stale' : 'connecting'];
    if (el.dataset.state !== s || el.lastElementChild.textContent !== text) {
      el.dataset.state = s;
      el.lastElementChild.textContent = text;
    }
  }

  function renderPf() {
    const pf = state.pf;
    if (pf) {
      $('#pf-name').textContent = pf.name;
      $('#pf-mac').textContent = pf.mac;
      setHTML($('#pf-link'), pf.link_up
        ? '<span class="dot up"></span>up' : '<span class="dot down"></span>down');
      $('#pf-vfs').textContent = `${pf.num_vfs} / ${pf.total_vfs}`;
      $('#pf-assigned').textContent = String(pf.assigned_vfs);
      $('#pf-wire').textContent = pf.wire || '–';
    } else {
      for (const id of ['#pf-name', '#pf-mac', '#pf-vfs', '#pf-assigned', '#pf-wire']) $(id).textContent = '–';
      setHTML($('#pf-link'), '–');
    }
    $('#wire-rx').textContent = state.wire ? rate(state.wire.rx_pps, 'pps') : '–';
    $('#wire-tx').textContent = state.wire ? rate(state.wire.tx_pps, 'pps') : '–';
  }

  // ---------------------------------------------------------------- VF table

  let vfRowsKey = '';

  function renderVfTable() {
    const tbody = $('#vf-table tbody');
    const key = state.vfs.map((v) => [v.index, v.mac, v.vlan, v.link_up, v.owner, v.chain].join('/')).join(';');
    if (key !== vfRowsKey) {
      vfRowsKey = key;
      tbody.innerHTML = state.vfs.map((v) => `
        <tr data-vf="${v.index}" class="idle">
          <td class="vf"><span class="swatch"></span>vf${v.index}</td>
          <td class="opt mono">${esc(v.mac)}</td>
          <td class="opt">${v.vlan ? v.vlan : '<span class="muted">–</span>'}</td>
          <td title="link state: ${esc(v.link_state_name)}">
            <span class="dot ${v.link_up ? 'up' : 'down'}"></span>${v.link_up ? 'up' : 'down'}</td>
          <td>${v.owner ? esc(short(v.owner)) : '<span class="muted">–</span>'}</td>
          <td class="opt">${v.chain ? esc(short(v.chain)) : '<span class="muted">–</span>'}</td>
          <td class="num rx" data-rx-pps="0">0</td>
          <td class="num tx" data-tx-pps="0">0</td>
          <td class="num opt rxb">0</td>
          <td class="num opt txb">0</td>
          <td class="num drops">0</td>
        </tr>`).join('');
    }
    const charted = new Set(chartedVfs());
    let active = 0;
    for (const tr of tbody.rows) {
      const index = Number(tr.dataset.vf);
      const r = state.rates.get(index);
      const rx = r?.rx_pps ?? 0;
      const tx = r?.tx_pps ?? 0;
      const busy = rx > 0 || tx > 0;
      if (busy) active += 1;
      tr.className = busy ? 'active' : 'idle';
      const [, , , , , , rxc, txc, rxb, txb, drops] = tr.cells;
      rxc.dataset.rxPps = String(rx);
      rxc.textContent = si(rx);
      txc.dataset.txPps = String(tx);
      txc.textContent = si(tx);
      rxb.textContent = si(r?.rx_bps ?? 0);
      txb.textContent = si(r?.tx_bps ?? 0);
      const d = r?.drops_per_s ?? 0;
      drops.textContent = si(d);
      drops.title = r ? `${r.drops} dropped in total` : '';
      drops.classList.toggle('bad', d > 0);
      tr.cells[0].firstElementChild.style.background = charted.has(index) ? colour(index) : 'transparent';
    }
    const assigned = state.vfs.filter((v) => v.owner).length;
    $('#vf-count').textContent = `${state.vfs.length} enabled · ${assigned} assigned · ${active} active`;
  }

  // ---------------------------------------------------------------- NFs

  function flowText(f) {
    const port = (p) => (p ? `:${p}` : '');
    const host = (a) => (String(a).includes(':') ? `[${a}]` : a);
    return `<span>${esc(host(f.src))}${port(f.sport)}</span> <span>→ ${esc(host(f.dst))}${port(f.dport)}</span>`;
  }

  /** The NF's own part of its report: the engine wraps it as {nf, runtime}. */
  function nfReport(report) {
    return report && typeof report.nf === 'object' ? report.nf : report;
  }

  function talkers(report) {
    report = nfReport(report);
    const top = Array.isArray(report?.top) ? report.top : null;
    if (!top) return '';
    const rows = top.length
      ? top.map((f) => `<tr><td class="mono flow">${flowText(f)}</td><td class="opt">${esc(f.proto)}</td>
          <td class="num">${si(f.packets)}</td><td class="num">${bytes(f.bytes)}</td></tr>`).join('')
      : '<tr><td colspan="4" class="muted">No flows yet.</td></tr>';
    const totals = report.flows != null
      ? `<small class="muted"> · ${si(report.flows)} flows, ${si(report.packets)} packets</small>` : '';
    const protocols = Array.isArray(report.protocols) && report.protocols.length
      ? `<p class="muted protocols" data-protocols>${report.protocols
        .map((p) => `${esc(p.proto)} ${si(p.packets)} pkts / ${bytes(p.bytes)}`).join(' · ')}</p>` : '';
    return `<div class="talkers"><h4>Top talkers${totals}</h4>${protocols}<div class="table-wrap"><table>
      <thead><tr><th>Flow</th><th class="opt">Proto</th><th class="num">Packets</th><th class="num">Bytes</th></tr></thead>
      <tbody>${rows}</tbody></table></div></div>`;
  }

  function renderNfs() {
    const el = $('#nfs');
    if (!state.nfs.length) {
      setHTML(el, '<p class="empty">No network functions.</p>');
      return;
    }
    setHTML(el, state.nfs.map((nf) => {
      const s = nf.status || {};
      const r = state.rates.get(vfIndex(nf.vf));
      const exit = s.reason || s.last_exit;
      return `<article class="nf" data-nf="${esc(short(nf.name))}">
        <div class="nf-head">
          <h3>${esc(short(nf.name))}</h3>
          <span class="badge kind">${esc(nf.kind)}</span>
          <span class="badge ${esc(nf.state_name)}">${esc(nf.state_name)}</span>
        </div>
        <dl class="nf-facts">
          <div><dt>VF</dt><dd>${esc(short(nf.vf))}</dd></div>
          ${nf.chain ? `<div><dt>chain</dt><dd>${esc(short(nf.chain))}</dd></div>` : ''}
          <div><dt>restarts</dt><dd class="${s.restarts ? 'restarted' : ''}">${s.restarts ?? 0}</dd></div>
          <div><dt>pid</dt><dd>${s.pid || '–'}</dd></div>
          <div><dt>in</dt><dd class="num">${rate(r?.rx_pps ?? 0, 'pps')}</dd></div>
          <div><dt>out</dt><dd class="num">${rate(r?.tx_pps ?? 0, 'pps')}</dd></div>
        </dl>
        ${exit ? `<p class="nf-exit">last exit: ${esc(exit)}</p>` : ''}
        ${talkers(nf.report)}
      </article>`;
    }).join(''));
  }

  // ---------------------------------------------------------------- chains

  function renderChains() {
    const el = $('#chains');
    if (!state.chains.length) {
      setHTML(el, '<p class="empty">No chains.</p>');
      return;
    }
    const nfByName = new Map(state.nfs.map((n) => [short(n.name), n]));
    setHTML(el, state.chains.map((c) => {
      const cl = c.classifier || {};
      const match = [cl.vlan ? `VLAN ${cl.vlan}` : 'any VLAN', cl.dst_mac ? `dst ${cl.dst_mac}` : ''].filter(Boolean);
      const egress = c.egress?.vlan
        ? `VLAN ${c.egress.vlan}${c.egress.two_way ? ', two-way' : ''}`
        : 'same VLAN';
      const hops = c.nfs.map((hop, i) => {
        const vf = c.vfs[i] || '';
        const nf = nfByName.get(hop.name);
        const st = nf?.state_name || 'pending';
        const r = state.rates.get(vfIndex(vf));
        return `<li class="arrow" aria-hidden="true">→</li>
          <li class="hop" data-vf="${vfIndex(vf)}" title="nfs/${esc(hop.name)}: ${esc(st)}">
            <b><span class="dot ${esc(st)}"></span>${esc(hop.name)}</b>
            <span>${esc(short(vf))} · ${esc(hop.kind)}</span>
            <span class="rate">${rate(r?.rx_pps ?? 0, 'pps')}</span>
          </li>`;
      }).join('');
      return `<article class="chain" data-chain="${esc(short(c.name))}">
        <div class="chain-head">
          <h3>${esc(short(c.name))}</h3>
          <span class="badge ${esc(c.isolation_name)}">${esc(c.isolation_name)}</span>
        </div>
        <p class="chain-meta">restart ${esc(c.restart_policy_name.replace('_', '-'))} · ${c.nfs.length} hop${c.nfs.length === 1 ? '' : 's'}</p>
        <ol class="hops">
          <li class="hop wire"><b>wire</b>${match.map((m) => `<span>${esc(m)}</span>`).join('')}</li>
          ${hops}
          <li class="arrow" aria-hidden="true">→</li>
          <li class="hop wire"><b>wire</b><span>${esc(egress)}</span></li>
        </ol>
      </article>`;
    }).join(''));
  }

  // ---------------------------------------------------------------- events

  function renderEvents(fresh) {
    const el = $('#events');
    if (!state.events.length) {
      setHTML(el, '<li class="empty">No events yet.</li>');
      return;
    }
    setHTML(el, state.events.slice().reverse().map((e) => {
      const fault = e.kind_name === 'dma_fault';
      const where = [short(e.vf), short(e.nf)].filter(Boolean).join(' · ');
      const f = e.dma_fault;
      const detail = fault && f
        ? `<div class="fault-detail">IOVA 0x${Number(f.iova).toString(16)} · ${f.len} bytes · ${esc(f.access)} · ${esc(f.reason)}</div>`
        : '';
      const cls = [fault ? 'fault' : '', fresh.has(e.seq) ? 'fresh' : ''].filter(Boolean).join(' ');
      return `<li class="${cls}" data-seq="${e.seq}">
        <time datetime="${new Date(e.time_ms).toISOString()}">${clock(e.time_ms)}</time>
        <span class="badge-cell"><span class="badge ${esc(e.kind_name)}">${esc(e.kind_name.replace(/_/g, ' '))}</span></span>
        <span>${where ? `<span class="where">${esc(where)}</span>` : ''}<span class="msg">${esc(e.message)}</span></span>
        ${detail}
      </li>`;
    }).join(''));
  }

  // ---------------------------------------------------------------- sign-in

  /** Forgets everything shown: the next principal sees only what it may see. */
  function resetData() {
    epoch += 1;
    refreshing = null;
    state.pf = null;
    state.vfs = [];
    state.nfs = [];
    state.chains = [];
    state.events = [];
    state.rates = new Map();
    state.wire = null;
    state.times = [];
    state.hist = new Map();
    state.lastFrameAt = 0;
    state.streamError = false;
    stream.lastEventId = '';
    renderLive();
    renderEvents(new Set());
  }

  function renderAuth() {
    document.body.classList.toggle('signed-out', state.signedOut);
    $('#signin').hidden = !state.signedOut;
    $('#signout').hidden = state.signedOut || !token();
  }

  function signInMessage(text, bad) {
    const msg = $('#signin-msg');
    msg.textContent = text;
    msg.classList.toggle('bad', bad);
  }

  /**
   * The API answered 401: stop fetching, forget what is shown, ask for a token.
   * A stored token that drew the 401 was refused, and is forgotten too.
   */
  function needSignIn() {
    if (state.signedOut) return;
    const refused = token() !== null;
    if (refused) setToken(null);
    state.signedOut = true;
    stopStream();
    clearTimeout(refreshTimer);
    resetData();
    signInMessage(refused ? 'The token was refused. Enter a valid one.' : 'This nfhost needs a token.', refused);
    renderAuth();
    const input = $('#signin-token');
    input.value = '';
    input.focus();
  }

  /** Loads everything and follows the stream, with the token stored now. */
  function start() {
    refresh();
    loadEvents();
    connect();
  }

  $('#signin').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const form = ev.currentTarget;
    const input = $('#signin-token');
    const button = form.querySelector('button');
    // A pasted token often brings a newline with it.
    const candidate = input.value.trim();
    if (!candidate) {
      signInMessage('Enter the token.', true);
      input.focus();
      return;
    }
    // A bearer token is one word of printable ASCII (RFC 6750's b64token and more);
    // anything else could not even be put in a header.
    if (!/^[\x21-\x7e]+$/.test(candidate)) {
      signInMessage('A token is one word of printable ASCII: no spaces, no other characters.', true);
      input.focus();
      return;
    }
    button.disabled = true;
    signInMessage('Checking…', false);
    try {
      // Tried once before it is kept, so a typo leaves the form up with a message.
      const r = await fetch('/api/v1/pf', {
        cache: 'no-store', headers: authHeaders({ Accept: 'application/json' }, candidate),
      });
      if (r.status === 401) {
        signInMessage('The token was refused. Check it and try again.', true);
        input.select();
        return;
      }
    } catch {
      // Unreachable just now: keep the token; the retries below say what happens.
    } finally {
      button.disabled = false;
    }
    setToken(candidate);
    input.value = '';
    state.signedOut = false;
    renderAuth();
    renderConn();
    start();
  });

  $('#signout').addEventListener('click', () => {
    setToken(null);
    stopStream();
    clearTimeout(refreshTimer);
    resetData();
    renderAuth();
    // With --auth this draws a 401, and the form.
    start();
  });

  // ---------------------------------------------------------------- main

  /** Everything but the events, which change only when one arrives. */
  function renderLive() {
    renderConn();
    renderPf();
    renderChart();
    renderVfTable();
    renderNfs();
    renderChains();
  }

  renderAuth();
  start();
  setInterval(refresh, REFRESH_MS);
  setInterval(renderConn, 1000);
})();
