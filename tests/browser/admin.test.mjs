// The admin view (/admin) in headless Chromium, against a server started with --admin-token.
//
// Two room pages (/r/<room>, fake camera and microphone) make a live call; then the admin
// page is opened, asks for the token, and must show the room with both participants and a
// drawn bandwidth chart. "Remove" on one participant: the admin view no longer lists it, the
// removed page says it was removed (and its SDK does not join again), the other page sees the
// peer leave. Last, "Start draining": the status shows draining.
//
// Run by tests/browser/run.sh (own network namespace, its own server). Configuration from the
// environment: IB_ADMIN_HTTP_PORT (the server's HTTP listener on 127.0.0.1), IB_ADMIN_TOKEN,
// CHROMIUM_PATH (default /usr/bin/chromium).

import { chromium } from 'playwright-core';
import { chromiumArgs, nonce as nonceOf, sleep, waitFor } from './lib.mjs';

const env = process.env;
const HTTP_PORT = env.IB_ADMIN_HTTP_PORT;
const TOKEN = env.IB_ADMIN_TOKEN;
if (!HTTP_PORT || !TOKEN) {
  console.error('FAIL admin: IB_ADMIN_HTTP_PORT and IB_ADMIN_TOKEN must be set (run tests/browser/run.sh)');
  process.exit(2);
}
const BASE = `http://127.0.0.1:${HTTP_PORT}`;
const CHROMIUM = env.CHROMIUM_PATH || '/usr/bin/chromium';
const TOTAL_TIMEOUT_MS = 100_000;

const killer = setTimeout(() => {
  console.error(`FAIL admin: overall timeout of ${TOTAL_TIMEOUT_MS / 1000}s exceeded`);
  process.exit(1);
}, TOTAL_TIMEOUT_MS);
killer.unref();

const nonce = () => nonceOf(6);


async function participant(browser, room, name, diag) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') diag.push(`${name} console.error: ${m.text()}`);
  });
  page.on('pageerror', (e) => diag.push(`${name} pageerror: ${e}`));
  await page.goto(`${BASE}/r/${room}?name=${encodeURIComponent(name)}`);
  await page.waitForFunction(() => window.icebreaker?.client?.peerId, null, { timeout: 15_000 });
  const peer = await page.evaluate(() => window.icebreaker.client.peerId);
  return { page, ctx, name, peer };
}

const snapshot = (p) => p.page.evaluate(() => window.icebreaker.stats());

/** The peers the admin page lists in `room` (its table rows). */
const listed = (admin, room) =>
  admin.evaluate((room) => [...document.querySelectorAll('#rooms tr.peer-row')].filter((r) => r.dataset.room === room).map((r) => r.dataset.peer), room);

async function main() {
  const args = chromiumArgs();
  const t0 = Date.now();
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args, timeout: 30_000 });
  console.log(`chromium ${browser.version()} launched in ${Date.now() - t0} ms; pages from ${BASE}`);
  const diag = [];
  const step = (text) => console.log(`  PASS ${text} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
  try {
    const room = `adm-${nonce()}`;
    const ada = await participant(browser, room, 'Ada', diag);
    const bob = await participant(browser, room, 'Bob', diag);
    let deadline = Date.now() + 30_000;
    await waitFor('the two pages connected to each other', deadline, async () => {
      const [a, b] = await Promise.all([snapshot(ada), snapshot(bob)]);
      const ok = [a, b].every((s) => s.peers.length === 1 && s.peers[0].connectionState === 'connected');
      return { ok, info: [a.peers, b.peers] };
    });
    step(`a live call in ${room}: ${ada.peer} (Ada) and ${bob.peer} (Bob) connected`);

    // The admin page: static, asks for the token.
    const actx = await browser.newContext();
    const admin = await actx.newPage();
    admin.on('pageerror', (e) => diag.push(`admin pageerror: ${e}`));
    admin.on('console', (m) => {
      if (m.type() === 'error') diag.push(`admin console.error: ${m.text()}`);
    });
    admin.on('dialog', (d) => d.accept());
    const res = await admin.goto(`${BASE}/admin`);
    if (res.status() !== 200) throw new Error(`/admin answered ${res.status()}`);
    await admin.waitForSelector('#token-form:not([hidden])', { timeout: 10_000 });
    await admin.fill('#token', 'not-the-token');
    await admin.click('#token-submit');
    await admin.waitForSelector('#token-error:not([hidden])', { timeout: 10_000 });
    step('/admin loads without a token, asks for it, refuses a wrong one');
    await admin.fill('#token', TOKEN);
    await admin.click('#token-submit');
    await admin.waitForSelector('#dashboard:not([hidden])', { timeout: 10_000 });
    deadline = Date.now() + 15_000;
    const rows = await waitFor('both participants listed', deadline, async () => {
      const peers = await listed(admin, room);
      const names = await admin.evaluate(() => [...document.querySelectorAll('#rooms tr.peer-row')].map((r) => r.children[1].textContent));
      return { ok: peers.includes(ada.peer) && peers.includes(bob.peer) && names.includes('Ada') && names.includes('Bob'), info: { peers, names } };
    });
    const stored = await admin.evaluate(() => sessionStorage.getItem('icebreaker.adminToken'));
    if (stored !== TOKEN) throw new Error('the token is not kept in sessionStorage');
    step(`the room and both participants are listed (${JSON.stringify(rows.info.peers)})`);

    // The chart: samples from the server's history, lines drawn on the canvas.
    deadline = Date.now() + 15_000;
    const chart = await waitFor('the bandwidth chart drawn', deadline, async () => {
      const info = await admin.evaluate(() => {
        const c = /** @type {HTMLCanvasElement} */ (document.getElementById('chart'));
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let painted = 0;
        for (let i = 3; i < px.length; i += 4) if (px[i] > 0) painted++;
        return { drawn: Number(c.dataset.drawn || 0), points: Number(c.dataset.points || 0), painted };
      });
      return { ok: info.drawn > 0 && info.painted > 1000, info };
    });
    step(`bandwidth chart drawn: ${JSON.stringify(chart.info)}`);

    // Remove Bob.
    await admin.click(`#rooms button.remove[data-peer="${bob.peer}"]`);
    deadline = Date.now() + 15_000;
    await waitFor('Bob gone from the admin view', deadline, async () => {
      const peers = await listed(admin, room);
      return { ok: !peers.includes(bob.peer) && peers.includes(ada.peer), info: peers };
    });
    await waitFor('the removed page says so', deadline, async () => {
      const s = await snapshot(bob);
      const text = await bob.page.textContent('#notice');
      return { ok: s.removed && s.state === 'closed' && /removed/.test(text), info: { removed: s.removed, state: s.state, text } };
    });
    await waitFor('Ada sees Bob leave', deadline, async () => {
      const s = await snapshot(ada);
      return { ok: s.peers.length === 0, info: s.peers };
    });
    // It stays removed: no rejoin behind the operator's back.
    await sleep(3000);
    const after = await snapshot(bob);
    const peersAfter = await listed(admin, room);
    if (after.state !== 'closed' || peersAfter.length !== 1) {
      throw new Error(`the removed page came back: state ${after.state}, listed ${JSON.stringify(peersAfter)}`);
    }
    step('remove: gone from the admin view, the removed page shows it and stays out, the other page saw the peer leave');

    // Start draining (last: the server takes no new joins after it).
    await admin.click('#drain');
    deadline = Date.now() + 10_000;
    await waitFor('the status shows draining', deadline, async () => {
      const d = await admin.evaluate(() => document.getElementById('node-info').dataset.draining);
      const pill = await admin.textContent('#conn-pill');
      return { ok: d === 'true' && /draining/.test(pill), info: { d, pill } };
    });
    step('drain: the status shows draining');
    const bad = diag.filter((d) => !/Failed to load resource|WebSocket connection/.test(d));
    if (bad.length) throw new Error(`page errors: ${bad.join(' | ')}`);
    console.log('admin view: all checks passed');
  } finally {
    await browser.close().catch(() => {});
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`FAIL admin: ${err.stack || err}`);
    process.exit(1);
  },
);
