// Browser test of the dashboard: the real `nfhost serve` (engine, `gen` wire at
// 20 000 pps on VLAN 100, NF processes), the example chain applied with the real
// `nfctl`, and the page loaded in headless Chromium (Debian's, driven by
// playwright-core, which downloads no browser).
//
// Two scenarios: the service as it runs by default (no authentication), and the
// service with `--auth` (an admin and a tenant `blue`), where the page asks for a
// token, the tenant's is typed in, and the page shows the tenant's chain.
//
//   cargo build --bins
//   cd tests/browser && npm ci && npm test
//
// Environment: NFHOST_BIN, NFCTL_BIN (default ../../target/debug/{nfhost,nfctl}),
// CHROMIUM_BIN (default /usr/bin/chromium). Screenshots go to test-output/ at the
// repository root.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const bin = (env, name) => path.resolve(here, process.env[env] ?? `../../target/debug/${name}`);
const NFHOST = bin('NFHOST_BIN', 'nfhost');
const NFCTL = bin('NFCTL_BIN', 'nfctl');
const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const OUT = path.join(root, 'test-output');
const VFS = 16;

/** A free loopback port (bound, then released). */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The running service; stopped by `stopService` whatever happens. */
let service = null;

function checkBinaries() {
  for (const [name, file] of [['NFHOST_BIN', NFHOST], ['NFCTL_BIN', NFCTL], ['CHROMIUM_BIN', CHROMIUM]]) {
    assert.ok(existsSync(file), `${file} not found: build with \`cargo build --bins\` or set ${name}`);
  }
}

/**
 * Starts `nfhost serve` with `extraArgs`. `token`: sent with the readiness check
 * (a service started with --auth answers 401 without one).
 */
async function startService({ extraArgs = [], token = null } = {}) {
  checkBinaries();
  const grpc = await freePort();
  const http = await freePort();
  const dataDir = mkdtempSync(path.join(tmpdir(), 'nfhost-browser-'));
  const child = spawn(NFHOST, [
    'serve',
    '--grpc', `127.0.0.1:${grpc}`,
    '--http', `127.0.0.1:${http}`,
    '--data-dir', dataDir,
    '--gen-rate', '20000',
    '--gen-vlans', '100',
    '--vfs', String(VFS),
    ...extraArgs,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  service = { child, exited, dataDir, log: () => log, grpc, http, base: `http://127.0.0.1:${http}` };

  // Ready when the dashboard answers and the stored state is reconciled.
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) assert.fail(`nfhost serve exited early:\n${log}`);
    if (log.includes('ready: serving')) {
      try {
        const headers = token ? { Authorization: `Bearer ${token}` } : {};
        if ((await fetch(`${service.base}/api/v1/pf`, { headers })).ok) break;
      } catch {
        // Not listening yet.
      }
    }
    assert.ok(Date.now() < deadline, `nfhost serve did not come up in 30 s:\n${log}`);
    await sleep(100);
  }
  return service;
}

async function stopService() {
  if (!service) return;
  const { child, exited, dataDir } = service;
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGTERM');
    let timer;
    const timeout = new Promise((resolve) => { timer = setTimeout(resolve, 15_000, null); });
    const done = await Promise.race([exited, timeout]);
    clearTimeout(timer);
    if (!done) {
      child.kill('SIGKILL');
      await exited;
    }
  }
  rmSync(dataDir, { recursive: true, force: true });
  service = null;
}

after(stopService);

async function getJSON(url, token = null) {
  const r = await fetch(url, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  assert.equal(r.status, 200, url);
  return r.json();
}

/**
 * Watches a page for anything a person would see as broken. While `w.signingIn`
 * is set, a 401 from the API (and the browser's console note of it) is expected:
 * that is how the page learns it needs a token; so is the page aborting its stream
 * request when another call's 401 beat the stream's own.
 */
function watch(page) {
  const problems = [];
  const w = { problems, closing: false, signingIn: false };
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    if (w.signingIn && /status of 401/.test(m.text())) return;
    problems.push(`console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => {
    // Closing the page aborts the event stream: that is us, not the page.
    if (w.signingIn && new URL(r.url()).pathname === '/api/v1/stream'
      && r.failure()?.errorText === 'net::ERR_ABORTED') return;
    if (!w.closing) problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
  });
  page.on('response', (r) => {
    if (w.signingIn && r.status() === 401 && new URL(r.url()).pathname.startsWith('/api/v1/')) return;
    if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });
  return w;
}

/**
 * Waits until the chart legend and the VF table show traffic on the chain's VFs;
 * `vfs`: the rows the VF table must have.
 */
async function waitLive(page, hops, timeout, vfs = VFS) {
  await page.waitForFunction(({ hops, vfs }) => {
    const legend = [...document.querySelectorAll('#chart .u-legend .u-series')].map((tr) => ({
      label: tr.querySelector('.u-label')?.textContent ?? '',
      value: tr.querySelector('.u-value')?.textContent ?? '',
    }));
    const canvas = document.querySelector('#chart canvas');
    const rows = document.querySelectorAll('#vf-table tbody tr[data-vf]');
    if (!canvas || rows.length !== vfs) return false;
    return hops.every(({ index, label }) => {
      const entry = legend.find((l) => l.label === label);
      const shown = entry && parseFloat(entry.value) > 0;
      const cell = document.querySelector(`#vf-table tbody tr[data-vf="${index}"] [data-rx-pps]`);
      return shown && cell && Number(cell.dataset.rxPps) > 0;
    });
  }, { hops, vfs }, { timeout, polling: 250 });
}

const execFileP = promisify(execFile);

/** Applies examples/edge.toml with the real nfctl; `args`: nfctl's global flags. */
async function applyChain(s, args = []) {
  const chainFile = path.join(root, 'examples/edge.toml');
  await execFileP(NFCTL, ['--server', `http://127.0.0.1:${s.grpc}`, ...args, 'chain', 'apply', chainFile])
    .catch((e) => assert.fail(`nfctl chain apply failed: ${e.stderr || e.message}`));
}

/** The chain's hops as the page labels them: "pfs/0/vfs/0" + "mon" -> "vf0 (mon)". */
function hopsOf(chain) {
  return chain.nfs.map((nf, i) => {
    const index = Number(chain.vfs[i].split('/').pop());
    return { index, label: `vf${index} (${nf.name})`, name: nf.name };
  });
}

async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

test('the dashboard shows the live chain, with no error', { timeout: 120_000 }, async () => {
  const s = await startService();

  // The example chain, through the real CLI.
  await applyChain(s);
  const { chains } = await getJSON(`${s.base}/api/v1/chains`);
  assert.equal(chains.length, 1);
  const hops = hopsOf(chains[0]);

  const browser = await launchBrowser();
  try {
    mkdirSync(OUT, { recursive: true });

    // A laptop.
    const laptop = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await laptop.newPage();
    const w = watch(page);
    await page.goto(`${s.base}/`, { waitUntil: 'load' });
    await waitLive(page, hops, 15_000).catch((e) => {
      throw new Error(`the page did not show the chain live within 15 s (${e.message})\n`
        + `problems: ${w.problems.join('; ') || 'none'}\nservice log:\n${s.log()}`);
    });

    // The VF table lists every VF, idle ones too; idle ones show zero.
    const rows = await page.$$eval('#vf-table tbody tr', (trs) => trs.map((tr) => ({
      vf: Number(tr.dataset.vf),
      rx: Number(tr.querySelector('[data-rx-pps]').dataset.rxPps),
      nf: tr.cells[4].textContent.trim(),
    })));
    assert.deepEqual(rows.map((r) => r.vf), [...Array(VFS).keys()]);
    for (const h of hops) {
      const row = rows.find((r) => r.vf === h.index);
      assert.ok(row.rx > 0, `vf${h.index} has traffic`);
      assert.equal(row.nf, h.name);
    }

    // The NFs, the chain as its hops, the monitor's top talkers, the events.
    await page.waitForSelector('#nfs .nf[data-nf="mon"] .talkers tbody tr td.mono', { timeout: 10_000 });
    const states = await page.$$eval('#nfs .nf .badge:not(.kind)', (b) => b.map((x) => x.textContent));
    assert.deepEqual(states, hops.map(() => 'running'));
    const chainText = await page.$eval('#chains .chain .hops', (el) => el.innerText.replace(/\s+/g, ' '));
    assert.match(chainText, /^wire .*→ mon .*→ fwd .*→ wire/);
    const events = await page.$$eval('#events li', (li) => li.map((x) => x.innerText));
    assert.ok(events.some((e) => /nfs\/mon started/.test(e)), events.join('\n'));
    const header = await page.$eval('#pf-vfs', (el) => el.textContent);
    assert.match(header, new RegExp(`^${VFS} / \\d+$`));
    // No --auth: no sign-in form, no sign-out control, no token kept.
    assert.deepEqual(await page.evaluate(() => ({
      signin: document.querySelector('#signin').hidden,
      signout: document.querySelector('#signout').hidden,
      token: sessionStorage.getItem('nfhost.token'),
    })), { signin: true, signout: true, token: null });

    // A few more seconds of history, so the screenshot shows lines, not dots.
    await page.waitForTimeout(6_000);
    await page.screenshot({ path: path.join(OUT, 'dashboard.png'), fullPage: true });

    // bits/s: the same series, in bits.
    await page.click('.toggle button[data-unit="bps"]');
    await page.waitForFunction((label) => [...document.querySelectorAll('#chart .u-legend .u-series')]
      .some((tr) => tr.querySelector('.u-label')?.textContent === label
        && /bit\/s$/.test(tr.querySelector('.u-value')?.textContent ?? '')
        && parseFloat(tr.querySelector('.u-value').textContent) > 0), hops[0].label, { timeout: 5_000 });
    await page.click('.toggle button[data-unit="pps"]');

    w.closing = true;
    await laptop.close();
    assert.deepEqual(w.problems, [], 'the page showed problems');

    // A phone: one column, nothing wider than the screen.
    const phone = await browser.newContext({
      viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
    });
    const p2 = await phone.newPage();
    const w2 = watch(p2);
    await p2.goto(`${s.base}/`, { waitUntil: 'load' });
    await waitLive(p2, hops, 15_000);
    const overflow = await p2.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone`);
    // Nothing spills out of its card, except inside the containers that scroll
    // sideways on purpose (wide tables).
    const spills = await p2.evaluate(() => {
      const out = [];
      for (const card of document.querySelectorAll('.card')) {
        const edge = card.getBoundingClientRect().right;
        for (const el of card.querySelectorAll('*')) {
          const wrap = el.closest('.table-wrap');
          if ((wrap && wrap !== el) || el.closest('.uplot') !== null && !el.classList.contains('uplot')) continue;
          const r = el.getBoundingClientRect();
          if (r.width > 0 && r.right > edge + 1) {
            out.push(`${card.id}: <${el.tagName.toLowerCase()} class="${el.className}"> ends at ${Math.round(r.right)} > ${Math.round(edge)}`);
          }
        }
      }
      return out;
    });
    assert.deepEqual(spills, [], 'elements spill out of their cards on a phone');
    await p2.screenshot({ path: path.join(OUT, 'dashboard-phone.png'), fullPage: true });
    w2.closing = true;
    await phone.close();
    assert.deepEqual(w2.problems, [], 'the page showed problems on a phone');
  } finally {
    await browser.close();
    await stopService();
  }
});

// ---------------------------------------------------------------- with --auth

/** A random bearer token: 32 bytes as hex. */
const newToken = () => randomBytes(32).toString('hex');
const sha256 = (text) => createHash('sha256').update(text).digest('hex');

test('with --auth: the page asks for a token and shows the tenant its chain', { timeout: 120_000 }, async (t) => {
  checkBinaries();

  // The principals: an admin and the tenant `blue`, each with a random token, of
  // which the file holds only the SHA-256.
  const secrets = mkdtempSync(path.join(tmpdir(), 'nfhost-browser-auth-'));
  const admin = newToken();
  const blue = newToken();
  const principals = path.join(secrets, 'principals.toml');
  writeFileSync(principals, [
    '[[admin]]', 'name = "ops"', `token_sha256 = "${sha256(admin)}"`, '',
    '[[tenant]]', 'name = "blue"', `token_sha256 = "${sha256(blue)}"`, 'max_vfs = 8', 'max_chains = 4', '',
  ].join('\n'), { mode: 0o600 });
  const blueFile = path.join(secrets, 'blue.token');
  writeFileSync(blueFile, `${blue}\n`, { mode: 0o600 });
  const adminFile = path.join(secrets, 'ops.token');
  writeFileSync(adminFile, `${admin}\n`, { mode: 0o600 });

  const s = await startService({ extraArgs: ['--auth', principals], token: admin });
  const browser = await launchBrowser();
  try {
    // What the page relies on, over plain HTTP: the page is public, the API wants a
    // bearer token and says so, /metrics is for admins.
    assert.equal((await fetch(`${s.base}/`)).status, 200, 'the page needs no token');
    const denied = await fetch(`${s.base}/api/v1/pf`);
    assert.equal(denied.status, 401, '/api/v1/pf without a token');
    assert.match(denied.headers.get('www-authenticate') ?? '', /^Bearer\b/);
    assert.equal(typeof (await denied.json()).error, 'string', 'a 401 has a JSON {"error": ...} body');
    const wrong = await fetch(`${s.base}/api/v1/pf`, { headers: { Authorization: `Bearer ${newToken()}` } });
    assert.equal(wrong.status, 401, 'an unknown token');
    assert.equal((await fetch(`${s.base}/metrics`)).status, 401, '/metrics without a token');
    assert.equal((await fetch(`${s.base}/metrics`, { headers: { Authorization: `Bearer ${blue}` } })).status,
      403, '/metrics with a tenant token');
    assert.equal((await fetch(`${s.base}/metrics`, { headers: { Authorization: `Bearer ${admin}` } })).status,
      200, '/metrics with an admin token');

    // The tenant applies the example chain with its own token; an admin starts an
    // NF of nobody's, which the tenant must not see.
    await applyChain(s, ['--token-file', blueFile]);
    await execFileP(NFCTL, ['--server', `http://127.0.0.1:${s.grpc}`, '--token-file', adminFile,
      'nf', 'create', 'opsmon', '--kind', 'monitor'])
      .catch((e) => assert.fail(`nfctl nf create (admin) failed: ${e.stderr || e.message}`));
    const { chains } = await getJSON(`${s.base}/api/v1/chains`, blue);
    assert.equal(chains.length, 1, 'the tenant sees its chain');
    const hops = hopsOf(chains[0]);
    const adminNfs = (await getJSON(`${s.base}/api/v1/nfs`, admin)).nfs.map((n) => n.name);
    assert.ok(adminNfs.includes('nfs/opsmon'), `the admin sees every NF: ${adminNfs}`);

    mkdirSync(OUT, { recursive: true });
    const ctx = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await ctx.newPage();
    const w = watch(page);
    w.signingIn = true;
    const urls = [];
    page.on('request', (r) => urls.push(r.url()));
    await page.goto(`${s.base}/`, { waitUntil: 'load' });

    // The API said 401: the form, not the dashboard.
    await page.waitForSelector('#signin:not([hidden])', { timeout: 10_000 });
    assert.equal(await page.$eval('#signin-token', (el) => el.type), 'password');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('nfhost.token')), null);
    await page.screenshot({ path: path.join(OUT, 'dashboard-signin.png') });

    await page.fill('#signin-token', blue);
    await page.click('#signin button[type="submit"]');
    await page.waitForSelector('#signin', { state: 'hidden', timeout: 10_000 });
    w.signingIn = false;
    // As without --auth, but only the tenant's VFs: those of its chain.
    await waitLive(page, hops, 15_000, hops.length).catch(async (e) => {
      const shown = await page.$$eval('#vf-table tbody tr', (trs) => trs.map((tr) => tr.innerText.replace(/\s+/g, ' ')));
      throw new Error(`the page did not show the tenant's chain live, and only its VFs `
        + `(${hops.map((h) => `vf${h.index}`).join(', ')}), within 15 s (${e.message})\n`
        + `VF rows shown:\n${shown.join('\n') || 'none'}\n`
        + `problems: ${w.problems.join('; ') || 'none'}\nservice log:\n${s.log()}`);
    });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('nfhost.token')), blue);

    const rows = await page.$$eval('#vf-table tbody tr', (trs) => trs.map((tr) => ({
      vf: Number(tr.dataset.vf),
      rx: Number(tr.querySelector('[data-rx-pps]').dataset.rxPps),
      nf: tr.cells[4].textContent.trim(),
    })));
    assert.deepEqual(rows.map((r) => r.vf), hops.map((h) => h.index).sort((a, b) => a - b),
      'the tenant sees its own VFs only');
    for (const h of hops) {
      const row = rows.find((r) => r.vf === h.index);
      assert.ok(row.rx > 0, `vf${h.index} has traffic`);
      assert.equal(row.nf, h.name);
    }
    await page.waitForSelector('#nfs .nf[data-nf="mon"] .talkers tbody tr td.mono', { timeout: 10_000 });
    const nfs = await page.$$eval('#nfs .nf', (a) => a.map((x) => x.dataset.nf));
    assert.deepEqual(nfs.sort(), hops.map((h) => h.name).sort(), 'the tenant sees its own NFs only');
    const chainText = await page.$eval('#chains .chain .hops', (el) => el.innerText.replace(/\s+/g, ' '));
    assert.match(chainText, /^wire .*→ mon .*→ fwd .*→ wire/);
    const events = await page.$$eval('#events li', (li) => li.map((x) => x.innerText));
    assert.ok(events.some((e) => /nfs\/mon started/.test(e)), events.join('\n'));
    assert.ok(!events.some((e) => /opsmon/.test(e)), `the tenant sees another's events:\n${events.join('\n')}`);
    assert.equal(await page.$eval('#signout', (el) => el.hidden), false, 'a sign-out control');

    await page.waitForTimeout(4_000);
    await page.screenshot({ path: path.join(OUT, 'dashboard-auth.png'), fullPage: true });

    // The token went in headers only.
    assert.deepEqual(urls.filter((u) => u.includes(blue)), [], 'the token in a URL');

    // Sign out: the token is forgotten and the form is back (the page learns it
    // from a 401, as before sign-in). Signing out closes the stream on purpose.
    w.signingIn = true;
    w.closing = true;
    await page.click('#signout');
    await page.waitForSelector('#signin:not([hidden])', { timeout: 10_000 });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('nfhost.token')), null);

    await ctx.close();
    assert.deepEqual(w.problems, [], 'the page showed problems');
  } finally {
    await browser.close();
    await stopService();
    rmSync(secrets, { recursive: true, force: true });
  }
});
