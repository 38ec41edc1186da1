// Browser test of the dashboard: the real `nfhost serve` (engine, `gen` wire at
// 20 000 pps on VLAN 100, NF processes), the example chain applied with the real
// `nfctl`, and the page loaded in headless Chromium (Debian's, driven by
// playwright-core, which downloads no browser).
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
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
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

async function startService() {
  for (const [name, file] of [['NFHOST_BIN', NFHOST], ['NFCTL_BIN', NFCTL], ['CHROMIUM_BIN', CHROMIUM]]) {
    assert.ok(existsSync(file), `${file} not found: build with \`cargo build --bins\` or set ${name}`);
  }
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
        if ((await fetch(`${service.base}/api/v1/pf`)).ok) break;
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

async function getJSON(url) {
  const r = await fetch(url);
  assert.equal(r.status, 200, url);
  return r.json();
}

/** Watches a page for anything a person would see as broken. */
function watch(page) {
  const problems = [];
  const w = { problems, closing: false };
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => {
    // Closing the page aborts the event stream: that is us, not the page.
    if (!w.closing) problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`);
  });
  return w;
}

/** Waits until the chart legend and the VF table show traffic on the chain's VFs. */
async function waitLive(page, hops, timeout) {
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
  }, { hops, vfs: VFS }, { timeout, polling: 250 });
}

test('the dashboard shows the live chain, with no error', { timeout: 120_000 }, async () => {
  const s = await startService();

  // The example chain, through the real CLI.
  const chainFile = path.join(root, 'examples/edge.toml');
  await promisify(execFile)(NFCTL, ['--server', `http://127.0.0.1:${s.grpc}`, 'chain', 'apply', chainFile])
    .catch((e) => assert.fail(`nfctl chain apply failed: ${e.stderr || e.message}`));
  const { chains } = await getJSON(`${s.base}/api/v1/chains`);
  assert.equal(chains.length, 1);
  const chain = chains[0];
  // "pfs/0/vfs/0" + "mon" -> the legend's "vf0 (mon)".
  const hops = chain.nfs.map((nf, i) => {
    const index = Number(chain.vfs[i].split('/').pop());
    return { index, label: `vf${index} (${nf.name})`, name: nf.name };
  });

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
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
