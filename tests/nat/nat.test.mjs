// Real NAT traversal with the room page: two headless Chromiums, each in its own network
// namespace behind a MASQUERADE NAT, call each other through /r/<room> served by Icebreaker in a
// third namespace that does not forward (topology: tests/nat/run.sh, which runs this file).
//
//   1. default ICE policy: both pages decode each other's video, and the selected candidate pair
//      is direct on both sides (no relay candidate), the remote candidate being the other NAT's
//      public address (srflx or prflx): the browsers found each other through the addresses STUN
//      discovered, and the NATs let the checks through (hole punching);
//   2. ?relay=1: both pages decode video over relay/relay pairs, both relay addresses on the
//      server: the call goes through Icebreaker's TURN, with the credentials from `joined`.
//
// Each scenario prints PASS/FAIL with its timings (page load, joined, ICE connected, first frame
// decoded); the exit status is non-zero if one failed. Configuration (set by run.sh):
// IB_NAT_BASE (http://<server>:8080), IB_NAT_SERVER_IP, IB_NAT_PUBLIC_A / IB_NAT_PUBLIC_B (the
// NATs' public addresses), IB_NAT_CHROMIUM_A / IB_NAT_CHROMIUM_B (wrappers that exec Chromium in
// peerA's / peerB's namespace).

import { createRequire } from 'node:module';

// playwright-core lives in tests/browser/node_modules (one install for both suites).
const require = createRequire(new URL('../browser/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const env = process.env;
for (const k of ['IB_NAT_BASE', 'IB_NAT_SERVER_IP', 'IB_NAT_PUBLIC_A', 'IB_NAT_PUBLIC_B', 'IB_NAT_CHROMIUM_A', 'IB_NAT_CHROMIUM_B']) {
  if (!env[k]) {
    console.error(`FAIL nat: environment variable ${k} is not set (run tests/nat/run.sh)`);
    process.exit(2);
  }
}
const BASE = env.IB_NAT_BASE;
const SERVER_IP = env.IB_NAT_SERVER_IP;
const SCENARIO_TIMEOUT_MS = 30_000;
const TOTAL_TIMEOUT_MS = 85_000;

const killer = setTimeout(() => {
  console.error(`FAIL nat: overall timeout of ${TOTAL_TIMEOUT_MS / 1000}s exceeded`);
  process.exit(1);
}, TOTAL_TIMEOUT_MS);
killer.unref();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const nonce = () => Math.random().toString(36).slice(2, 10);
const secs = (ms) => `${(ms / 1000).toFixed(2)}s`;

/** The two sides: browser, its NAT's public address, the other NAT's. */
const SIDES = [
  { name: 'A', chromium: env.IB_NAT_CHROMIUM_A, publicIp: env.IB_NAT_PUBLIC_A, privateNet: '10.1.0.' },
  { name: 'B', chromium: env.IB_NAT_CHROMIUM_B, publicIp: env.IB_NAT_PUBLIC_B, privateNet: '10.2.0.' },
];

function launchArgs() {
  const origin = new URL(BASE).origin;
  return [
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    '--autoplay-policy=no-user-gesture-required',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    // Not localhost: the page needs this to be a secure context (getUserMedia).
    `--unsafely-treat-insecure-origin-as-secure=${origin}`,
    // No DNS at all (there is none in the namespaces); MAP * also maps IP literals.
    `--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE ${SERVER_IP}`,
    // No --disable-features: Chromium honours only the last one (Playwright passes its own).
  ];
}

/** Opens the room page for one side (a fresh context in that side's browser). */
async function openPage(side, room, query) {
  const t0 = Date.now();
  const ctx = await side.browser.newContext();
  const page = await ctx.newPage();
  const diag = [];
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') diag.push(`${side.name} console.${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => diag.push(`${side.name} pageerror: ${e}`));
  const q = new URLSearchParams(query);
  q.set('name', side.name);
  await page.goto(`${BASE}/r/${room}?${q}`, { timeout: 15_000 });
  const loaded = Date.now();
  await page.waitForFunction(() => window.icebreaker?.client?.peerId, null, { timeout: 15_000, polling: 20 });
  const joined = Date.now();
  // Remember (wall clock, same machine for both pages) when ICE connected and when the first
  // remote video frame was rendered (requestVideoFrameCallback count in the page's stats()).
  await page.evaluate(() => {
    window.__natTimes = {};
    const t = window.__natTimes;
    const poll = setInterval(() => {
      for (const link of window.icebreaker.call.links.values()) {
        if (['connected', 'completed'].includes(link.pc.iceConnectionState)) t.iceConnected ??= Date.now();
      }
      if (window.icebreaker.stats().peers.some((p) => p.framesRendered > 0)) t.firstFrame ??= Date.now();
      if (t.iceConnected && t.firstFrame) clearInterval(poll);
    }, 25);
  });
  return { side, ctx, page, diag, t0, loadMs: loaded - t0, joinedMs: joined - t0 };
}

const snapshot = (p) => p.page.evaluate(() => ({ stats: window.icebreaker.stats(), times: window.__natTimes }));

const cand = (c) => (c ? `${c.type}${c.relayProtocol ? '/' + c.relayProtocol : ''} ${c.address || '(address hidden)'}:${c.port}` : 'none');

/**
 * Waits until both pages decode the other's video (framesDecoded > 0, >= 10 frames rendered)
 * over a selected pair that satisfies pathOk(peerStats, side), and returns the last snapshots.
 */
async function waitForCall(parts, deadline, what, pathOk) {
  let last;
  while (Date.now() < deadline) {
    const snaps = await Promise.all(parts.map(snapshot));
    last = snaps.map((s, i) => ({
      who: parts[i].side.name,
      transport: s.stats.transport,
      peers: s.stats.peers.map((p) => `${p.name}:${p.connectionState}/${p.iceState}/${p.path}/${cand(p.local)} -> ${cand(p.remote)}/dec=${p.framesDecoded}/rvfc=${p.framesRendered}`),
    }));
    const ok = snaps.every((s, i) => s.stats.peers.length === 1 && s.stats.peers.every(
      (p) => p.connectionState === 'connected' && p.framesDecoded > 0 && p.framesRendered >= 10 && pathOk(p, parts[i].side),
    ));
    if (ok) return snaps;
    await sleep(250);
  }
  throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
}

/**
 * Timings from the moment the second participant (B) starts loading the page, A being already in
 * the room: B's page loaded and joined, then ICE connected and first remote frame on each side.
 */
function timings(parts, snaps) {
  const b = parts[parts.length - 1];
  const at = (ms) => (ms ? secs(ms - b.t0) : '-');
  const call = parts.map((p, i) => `${p.side.name} ICE connected ${at(snaps[i].times?.iceConnected)}, first frame ${at(snaps[i].times?.firstFrame)}`).join('; ');
  return `from B opening the page: B loaded ${secs(b.loadMs)}, joined ${secs(b.joinedMs)}; ${call}`;
}

async function runCall(sides, room, query, what, pathOk) {
  const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
  const parts = [];
  try {
    // A joins first, then B (the newcomer offers).
    for (const side of sides) parts.push(await openPage(side, room, query));
    const snaps = await waitForCall(parts, deadline, what, pathOk);
    return { parts, snaps };
  } catch (err) {
    const d = parts.flatMap((p) => p.diag);
    if (d.length) err.message += `; page diagnostics: ${JSON.stringify(d.slice(0, 10))}`;
    throw err;
  } finally {
    for (const p of parts) await p.ctx.close().catch(() => {});
  }
}

const other = (side) => SIDES.find((s) => s !== side);

const SCENARIOS = [
  {
    name: 'default policy: direct call through the NATs (STUN-discovered addresses)',
    async run() {
      const room = `nat-direct-${nonce()}`;
      // Direct: no relay candidate on either end, so no TURN; and since the topology has no
      // other way between the peers, the packets go NAT to NAT. The remote candidate is the
      // other NAT's public address, learnt from its STUN (srflx, trickled) or from its checks
      // (prflx: Chromium leaves the address out of the stats then). The local candidate is the
      // host one (10.x, the base of the srflx: Chromium prunes the redundant srflx pair) or the
      // srflx/prflx with this NAT's public address.
      const addrIs = (c, ip) => !c.address || c.address === ip;
      const pathOk = (p, side) =>
        p.path === 'direct' &&
        p.local && p.remote &&
        p.local.type !== 'relay' && p.remote.type !== 'relay' &&
        ['srflx', 'prflx'].includes(p.remote.type) &&
        addrIs(p.remote, other(side).publicIp) &&
        (p.local.type === 'host' ? p.local.address.startsWith(side.privateNet) : addrIs(p.local, side.publicIp));
      const { parts, snaps } = await runCall(SIDES, room, {}, 'video over a direct (non-relay) pair via the NATs\' public addresses on both pages', pathOk);
      const pairs = snaps.map((s, i) => `${parts[i].side.name}: ${cand(s.stats.peers[0].local)} -> ${cand(s.stats.peers[0].remote)}`).join('; ');
      return `${pairs} | ${timings(parts, snaps)}`;
    },
  },
  {
    name: '?relay=1: the call goes through Icebreaker TURN (relay/relay)',
    async run() {
      const room = `nat-relay-${nonce()}`;
      const pathOk = (p) =>
        p.path === 'turn' &&
        p.local?.type === 'relay' && p.remote?.type === 'relay' &&
        p.local.address === SERVER_IP && p.remote.address === SERVER_IP;
      const { parts, snaps } = await runCall(SIDES, room, { relay: '1' }, 'video over relay/relay pairs on the server on both pages', pathOk);
      const pairs = snaps.map((s, i) => `${parts[i].side.name}: ${cand(s.stats.peers[0].local)} -> ${cand(s.stats.peers[0].remote)}`).join('; ');
      return `${pairs} | ${timings(parts, snaps)}`;
    },
  },
];

async function main() {
  const t0 = Date.now();
  const args = launchArgs();
  await Promise.all(SIDES.map(async (side) => {
    side.browser = await chromium.launch({ executablePath: side.chromium, headless: true, args, timeout: 30_000 });
  }));
  console.log(`chromium ${SIDES[0].browser.version()} launched in peerA and peerB in ${Date.now() - t0} ms; pages from ${BASE}`);
  let failed = 0;
  try {
    for (const sc of SCENARIOS) {
      const s0 = Date.now();
      try {
        const detail = await Promise.race([
          sc.run(),
          sleep(SCENARIO_TIMEOUT_MS + 5_000).then(() => { throw new Error('scenario timeout'); }),
        ]);
        console.log(`  PASS ${sc.name} (${secs(Date.now() - s0)}): ${detail}`);
      } catch (err) {
        failed++;
        console.log(`  FAIL ${sc.name} (${secs(Date.now() - s0)}): ${err.message}`);
      }
    }
  } finally {
    await Promise.all(SIDES.map((s) => s.browser?.close().catch(() => {})));
  }
  console.log(`nat scenarios: ${SCENARIOS.length - failed}/${SCENARIOS.length} passed`);
  process.exit(failed ? 1 : 0);
}

main().catch((err) => {
  console.error(`FAIL nat: ${err.stack || err}`);
  process.exit(1);
});
