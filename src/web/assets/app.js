// nfhost dashboard. Loads the JSON API, follows the server-sent event stream
// (/api/v1/stream: `stats` once a second with rates computed by the server, `event`
// as things happen) and draws. No framework; uPlot draws the chart.
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

  // ---------------------------------------------------------------- data

  async function getJSON(path) {
    const r = await fetch(path, { cache: 'no-store', headers: { Accept: 'application/json' } });
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }

  let refreshing = null;
  async function refresh() {
    if (refreshing) return refreshing;
    refreshing = (async () => {
      const [pf, vfs, nfs, chains] = await Promise.allSettled([
        getJSON('/api/v1/pf'), getJSON('/api/v1/vfs'), getJSON('/api/v1/nfs'), getJSON('/api/v1/chains'),
      ]);
      if (pf.status === 'fulfilled') state.pf = pf.value;
      if (vfs.status === 'fulfilled') state.vfs = vfs.value.vfs;
      if (nfs.status === 'fulfilled') state.nfs = nfs.value.nfs;
      if (chains.status === 'fulfilled') state.chains = chains.value.chains;
      renderLive();
    })().finally(() => { refreshing = null; });
    return refreshing;
  }

  let refreshTimer = 0;
  /** Reloads soon: an event means something changed; a burst of them, one reload. */
  function refreshSoon() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, 300);
  }

  async function loadEvents() {
    try {
      state.events = (await getJSON(`/api/v1/events?limit=${MAX_EVENTS}`)).events;
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

  function connect() {
    const es = new EventSource('/api/v1/stream');
    es.addEventListener('open', () => { state.streamError = false; renderConn(); });
    es.addEventListener('error', () => { state.streamError = true; renderConn(); });
    es.addEventListener('stats', (m) => { state.streamError = false; onFrame(JSON.parse(m.data)); });
    es.addEventListener('event', (m) => onEvent(JSON.parse(m.data)));
    es.addEventListener('lagged', () => loadEvents());
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
    const [s, text] = fresh ? ['live', 'live']
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
    }
    if (state.wire) {
      $('#wire-rx').textContent = rate(state.wire.rx_pps, 'pps');
      $('#wire-tx').textContent = rate(state.wire.tx_pps, 'pps');
    }
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

  refresh();
  loadEvents();
  connect();
  setInterval(refresh, REFRESH_MS);
  setInterval(renderConn, 1000);
})();
