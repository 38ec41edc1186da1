// Browser test of the dashboard's sign-in and of its stream reader, against a stand-in
// for nfhost's HTTP side written here (node:http), so it needs no nfhost binary:
// the real page files from src/web/assets/, served as nfhost serves them, and an API
// that behaves as `nfhost serve --auth` does (401 with `WWW-Authenticate: Bearer`
// and a JSON error without a valid bearer token) or, switched off, as plain
// `nfhost serve` does (no token needed). The stream is sent in awkward pieces (lines
// cut anywhere, CRLF and CR line ends, comments, multi-line data, `retry:`, a
// connection the server drops) to exercise the page's server-sent-event parser.
//
// dashboard.test.mjs runs the page against the real service.
//
//   cd tests/browser && npm ci && node --test signin.test.mjs
//
// Environment: CHROMIUM_BIN (default /usr/bin/chromium). The form's screenshot goes
// to test-output/signin.png at the repository root.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const ASSETS = path.resolve(here, '../../src/web/assets');
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
/** Screenshots, as dashboard.test.mjs puts them. */
const OUT = path.resolve(here, '../../test-output');
const VFS = 4;
/** VFs the stand-in's traffic goes through. */
const BUSY = [1, 2];

const TYPES = { '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml' };

/** index.html with its `{{file}}` placeholders filled, as nfhost does (any value works here). */
function page() {
  return readFileSync(path.join(ASSETS, 'index.html'), 'utf8').replace(/\{\{[^}]*\}\}/g, 'test');
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * The stand-in. `auth.token` is the one token accepted (null: no auth at all, as
 * without --auth). Records every request: method, URL, Authorization header.
 */
function standIn() {
  const auth = { token: null };
  const requests = [];
  const streams = new Set();
  let streamCount = 0;
  let seq = 0;

  const pf = { name: 'pf0', mac: '02:00:00:00:00:01', link_up: true, num_vfs: VFS, total_vfs: 64, assigned_vfs: 2, wire: 'gen' };
  const vfs = [...Array(VFS).keys()].map((index) => ({
    index, mac: `02:00:00:00:01:0${index}`, vlan: 0, link_up: true, link_state_name: 'auto',
    owner: BUSY.includes(index) ? `nfs/n${index}` : '', chain: '',
  }));
  const event = () => ({
    seq: ++seq, time_ms: Date.now(), kind_name: 'nf_started', vf: 'pfs/0/vfs/1', nf: 'nfs/n1',
    message: `nfs/n1 started (${seq})`,
  });
  const frame = () => ({
    t: Date.now(),
    interval_ms: 1000,
    vfs: [...Array(VFS).keys()].map((index) => {
      const pps = BUSY.includes(index) ? 1000 + index : 0;
      return { index, rx_pps: pps, tx_pps: pps, rx_bps: pps * 8 * 100, tx_bps: pps * 8 * 100, drops: 0, drops_per_s: 0, nf: BUSY.includes(index) ? `nfs/n${index}` : '' };
    }),
    wire: { rx_pps: 2000, tx_pps: 2000 },
  });

  function allowed(req) {
    return auth.token === null || req.headers.authorization === `Bearer ${auth.token}`;
  }

  function json(res, status, body, headers = {}) {
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  }

  /**
   * The stream. The first connection sends `retry: 200`, four stats frames and an
   * event in awkward pieces, then is dropped by the server; later ones send a frame
   * a second, each cut in two.
   */
  async function stream(req, res) {
    const n = ++streamCount;
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
    streams.add(res);
    let open = true;
    res.on('close', () => { open = false; streams.delete(res); });
    const send = async (text, pause = 30) => {
      if (!open) return;
      res.write(text);
      await sleep(pause);
    };
    if (n === 1) {
      await send('\uFEFF: a comment, as the server\'s keep-alive\n\nretry: 200\n\n');
      for (let i = 0; i < 4; i++) {
        const body = JSON.stringify(frame());
        const cut = 7 + i * 5;
        // Lines cut anywhere; LF, CRLF (split between its two halves) and CR endings.
        await send(`event: stats\ndata: ${body.slice(0, cut)}`);
        await send(`${body.slice(cut)}\r`);
        await send(i % 2 ? '\n\r\n' : '\r');
      }
      // Multi-line data: the page joins the lines with \n (JSON allows it there).
      const e = JSON.stringify(event(), null, 1).split('\n');
      await send(`event:event\n${e.map((l) => `data:${l}`).join('\r\n')}\n\n`);
      // Unknown events and fields are ignored.
      await send('event: unknown\ndata: {"x":1}\nfoo: bar\n\n');
      // An unfinished event, then the server goes away: the page must reconnect.
      await send('event: stats\ndata: {"half"');
      res.destroy();
      return;
    }
    while (open) {
      const body = `event: stats\ndata: ${JSON.stringify(frame())}\n\n`;
      await send(body.slice(0, 10), 10);
      await send(body.slice(10), 990);
    }
  }

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    requests.push({ method: req.method, url: req.url, authorization: req.headers.authorization ?? null });
    if (url.pathname === '/') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-cache' });
      res.end(page());
      return;
    }
    if (url.pathname.startsWith('/assets/')) {
      const file = path.join(ASSETS, path.normalize(url.pathname.slice('/assets/'.length)));
      if (!file.startsWith(ASSETS) || !existsSync(file)) {
        json(res, 404, { error: 'no such file' });
        return;
      }
      res.writeHead(200, { 'Content-Type': `${TYPES[path.extname(file)] ?? 'text/plain'}; charset=utf-8` });
      res.end(readFileSync(file));
      return;
    }
    if (url.pathname.startsWith('/api/v1/')) {
      if (!allowed(req)) {
        json(res, 401, { error: 'a valid bearer token is needed' }, { 'WWW-Authenticate': 'Bearer' });
        return;
      }
      switch (url.pathname) {
        case '/api/v1/pf': json(res, 200, pf); return;
        case '/api/v1/vfs': json(res, 200, { vfs }); return;
        case '/api/v1/nfs': json(res, 200, { nfs: [] }); return;
        case '/api/v1/chains': json(res, 200, { chains: [] }); return;
        case '/api/v1/events': json(res, 200, { events: [] }); return;
        case '/api/v1/stream': stream(req, res); return;
        default: break;
      }
    }
    json(res, 404, { error: 'not found' });
  });

  return {
    auth,
    requests,
    streamCount: () => streamCount,
    /** Drops every open stream, as a server restart would. */
    dropStreams() {
      for (const s of streams) s.destroy();
    },
    listen: () => new Promise((resolve) => {
      server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${server.address().port}`));
    }),
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(resolve);
    }),
  };
}

/** Console lines and page errors, to check for problems and for the token. */
function watch(page) {
  const seen = { console: [], errors: [] };
  page.on('console', (m) => seen.console.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => seen.errors.push(e.message));
  return seen;
}

/** Resolves when the VF table shows traffic on the busy VFs and the chart draws it. */
async function waitLive(page, timeout = 10_000) {
  await page.waitForFunction(({ busy, vfs }) => {
    const rows = document.querySelectorAll('#vf-table tbody tr[data-vf]');
    if (rows.length !== vfs || !document.querySelector('#chart canvas')) return false;
    return busy.every((i) => Number(document.querySelector(`#vf-table tr[data-vf="${i}"] [data-rx-pps]`)
      ?.dataset.rxPps) > 0);
  }, { busy: BUSY, vfs: VFS }, { timeout, polling: 100 });
}

const visible = (page, sel) => page.$eval(sel, (el) => el.offsetParent !== null || el.getClientRects().length > 0);
const stored = (page) => page.evaluate(() => sessionStorage.getItem('nfhost.token'));

let browser = null;
let mock = null;
let mockBase = '';
after(async () => {
  await browser?.close();
  await mock?.close();
});

test('sign-in, the token on every call, the stream parsed and reconnected, sign-out', { timeout: 90_000 }, async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} not found: apt-get install chromium, or set CHROMIUM_BIN`);
  mock = standIn();
  const TOKEN = 'tenant-blue-0123456789abcdefABCDEF';
  mock.auth.token = TOKEN;
  const base = await mock.listen();
  mockBase = base;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  try {
    await signInFlow(ctx, base);
  } finally {
    await ctx.close();
  }
});

async function signInFlow(ctx, base) {
  const TOKEN = mock.auth.token;
  const page = await ctx.newPage();
  const seen = watch(page);
  await page.goto(`${base}/`, { waitUntil: 'load' });

  // No token: the API says 401, the form shows instead of the dashboard.
  await page.waitForSelector('#signin:not([hidden])', { timeout: 5_000 });
  assert.equal(await visible(page, 'main'), false, 'the dashboard is hidden while signed out');
  assert.equal(await visible(page, '#signout'), false);
  assert.equal(await page.$eval('#signin-token', (el) => el.type), 'password');
  assert.equal(await page.$eval('#conn', (el) => el.dataset.state), 'signed-out');
  assert.match(await page.$eval('#signin-msg', (el) => el.textContent), /needs a token/);
  assert.equal(await stored(page), null);
  mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: path.join(OUT, 'signin.png') });
  // While the form is up, nothing is fetched: no 401 every few seconds.
  const before = mock.requests.filter((r) => r.url.startsWith('/api/')).length;
  await page.waitForTimeout(1_500);
  assert.equal(mock.requests.filter((r) => r.url.startsWith('/api/')).length, before, 'no API calls while signed out');

  // A wrong token: refused on the spot, not kept.
  await page.fill('#signin-token', 'wrong-token');
  await page.click('#signin button[type="submit"]');
  await page.waitForFunction(() => /refused/.test(document.querySelector('#signin-msg').textContent));
  assert.equal(await visible(page, '#signin'), true);
  assert.equal(await stored(page), null);

  // The right one, pasted with a newline: the dashboard, live from the stream.
  await page.fill('#signin-token', `${TOKEN}\n`);
  await page.click('#signin button[type="submit"]');
  await waitLive(page);
  assert.equal(await stored(page), TOKEN);
  assert.equal(await visible(page, '#signin'), false);
  assert.equal(await visible(page, '#signout'), true);
  // The event sent as multi-line data on the first connection.
  await page.waitForFunction(() => /nfs\/n1 started/.test(document.querySelector('#events').textContent), null, { timeout: 5_000 });
  assert.equal(await page.$eval('#pf-vfs', (el) => el.textContent), `${VFS} / 64`);

  // The server dropped the first stream: the page came back (after `retry: 200`)
  // and stays live.
  for (let i = 0; i < 50 && mock.streamCount() < 2; i++) await sleep(100);
  assert.ok(mock.streamCount() >= 2, `reconnected (${mock.streamCount()} stream connections)`);
  await page.waitForFunction(() => document.querySelector('#conn').dataset.state === 'live', null, { timeout: 5_000 });
  mock.dropStreams();
  const count = mock.streamCount();
  for (let i = 0; i < 50 && mock.streamCount() === count; i++) await sleep(100);
  assert.ok(mock.streamCount() > count, 'reconnected after the server dropped the stream');
  await page.waitForFunction(() => document.querySelector('#conn').dataset.state === 'live', null, { timeout: 5_000 });

  // Every API call after sign-in carried the token, in its header; no URL ever did.
  const signedIn = mock.requests.findIndex((r) => r.authorization === `Bearer ${TOKEN}`);
  assert.ok(signedIn >= 0);
  const api = mock.requests.slice(signedIn).filter((r) => r.url.startsWith('/api/'));
  assert.ok(api.some((r) => r.url === '/api/v1/stream'));
  assert.deepEqual(api.filter((r) => r.authorization !== `Bearer ${TOKEN}`), [], 'API calls without the token');
  assert.deepEqual(mock.requests.filter((r) => r.url.includes(TOKEN) || r.url.includes('wrong-token')), [], 'a token in a URL');

  // The token changes on the server (say, the principals file was rewritten): the
  // next call draws a 401, the stored token is dropped, the form says why.
  const NEW = 'tenant-blue-rotated-42';
  mock.auth.token = NEW;
  mock.dropStreams();
  await page.waitForSelector('#signin:not([hidden])', { timeout: 10_000 });
  assert.match(await page.$eval('#signin-msg', (el) => el.textContent), /refused/);
  assert.equal(await stored(page), null);
  assert.equal(await page.$$eval('#vf-table tbody tr', (r) => r.length), 0, 'what the old token showed is gone');
  await page.fill('#signin-token', NEW);
  await page.press('#signin-token', 'Enter');
  await waitLive(page);
  assert.equal(await stored(page), NEW);

  // A reload keeps the token (sessionStorage, this tab): no form.
  await page.reload({ waitUntil: 'load' });
  await waitLive(page);
  assert.equal(await visible(page, '#signin'), false);

  // Sign out: the token is gone and, the server wanting one, the form is back.
  await page.click('#signout');
  await page.waitForSelector('#signin:not([hidden])', { timeout: 5_000 });
  assert.equal(await stored(page), null);
  assert.equal(await visible(page, '#signout'), false);
  assert.match(await page.$eval('#signin-msg', (el) => el.textContent), /needs a token/);

  // Neither token ever reached the console; nothing threw.
  const leaks = seen.console.filter((l) => l.includes(TOKEN) || l.includes(NEW));
  assert.deepEqual(leaks, [], 'a token in the console');
  assert.deepEqual(seen.errors, [], 'page errors');
  // The only console errors are the browser's own notes of the 401 answers and of
  // the streams this stand-in cut.
  const errors = seen.console.filter((l) => l.startsWith('error:')
    && !/status of 401|ERR_INCOMPLETE_CHUNKED_ENCODING/.test(l));
  assert.deepEqual(errors, [], 'console errors other than 401s and cut streams');
}

test('without auth on the server: no form, no Authorization header, live as before', { timeout: 60_000 }, async () => {
  assert.ok(browser && mock, 'the first test started the browser and the stand-in');
  mock.auth.token = null;
  mock.requests.length = 0;
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await ctx.newPage();
  const seen = watch(page);
  await page.goto(`${mockBase}/`, { waitUntil: 'load' });
  await waitLive(page);
  await page.waitForTimeout(1_000);
  assert.equal(await visible(page, '#signin'), false, 'no sign-in form');
  assert.equal(await visible(page, '#signout'), false, 'no sign-out control');
  assert.equal(await visible(page, 'main'), true);
  assert.equal(await stored(page), null);
  const api = mock.requests.filter((r) => r.url.startsWith('/api/'));
  assert.ok(api.some((r) => r.url === '/api/v1/stream'));
  assert.deepEqual(api.filter((r) => r.authorization !== null), [], 'an Authorization header without a token');
  assert.deepEqual(seen.errors, []);
  assert.deepEqual(seen.console.filter((l) => l.startsWith('error:')), []);
  await ctx.close();
});
