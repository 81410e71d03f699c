// Signaling messages and bytes of one-to-one calls through the server, with and without the
// SDK's signaling data channel (bench/signaling-count starts the server and runs this).
//
// Each call: two room pages (/r/ROOM, headless Chromium, fake camera and microphone) join,
// connect and decode each other's video. The "plain" call then hangs up. The "full" call
// first does what calls do: 10 chat messages each way (Call.send), an ICE restart asked by the
// application, and a renegotiation (a new m-line, as when a screen share starts) — then both
// hang up. The figures are the server's own count for the call (GET /admin/calls, "finished":
// every client → server and server → client message of the room from the first join to the
// last leave, keepalives excluded), so nothing here is estimated.
//
// Environment: IB_HTTP (base URL), CHROMIUM_PATH, ROUNDS (default 3).

import { pathToFileURL } from 'node:url';
import path from 'node:path';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const { chromium } = await import(pathToFileURL(`${ROOT}/tests/browser/node_modules/playwright-core/index.mjs`).href);

const BASE = process.env.IB_HTTP;
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ROUNDS = Number(process.env.ROUNDS || 3);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, ms, fn) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last.ok) return last;
    await sleep(200);
  }
  throw new Error(`timed out waiting for ${what}: ${JSON.stringify(last?.info)}`);
}

async function open(browser, room, name, dc) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(`${BASE}/r/${room}?name=${name}&dcsignal=${dc ? 1 : 0}`);
  await page.waitForFunction(() => window.icebreaker?.client?.peerId, null, { timeout: 15_000 });
  return { ctx, page };
}

const link = () => [...window.icebreaker.call.links.values()][0];

async function oneCall(browser, kind, dc) {
  const room = `count-${kind}-${dc ? 'dc' : 'srv'}-${Math.random().toString(36).slice(2, 8)}`;
  const a = await open(browser, room, 'A', dc);
  const b = await open(browser, room, 'B', dc);
  const parts = [a, b];
  await waitFor('video both ways', 30_000, async () => {
    const s = await Promise.all(parts.map((p) => p.page.evaluate(() => window.icebreaker.stats())));
    return { ok: s.every((x) => x.peers.length === 1 && x.peers[0].framesRendered >= 10), info: s.map((x) => x.peers) };
  });
  // Let trickle ICE finish (late candidates are part of the call's signaling).
  await sleep(1500);
  if (kind === 'full') {
    if (dc) {
      await waitFor('signaling channel', 10_000, async () => {
        const r = await Promise.all(parts.map((p) => p.page.evaluate(`(${link})().channelUsable()`)));
        return { ok: r.every(Boolean), info: r };
      });
    }
    const [pa, pb] = await Promise.all(parts.map((p) => p.page.evaluate(() => window.icebreaker.client.peerId)));
    await a.page.evaluate((to) => {
      for (let i = 0; i < 10; i++) window.icebreaker.call.send(to, { chat: `message ${i} from A` });
    }, pb);
    await b.page.evaluate((to) => {
      for (let i = 0; i < 10; i++) window.icebreaker.call.send(to, { chat: `message ${i} from B` });
    }, pa);
    const ufrag = () => a.page.evaluate(`(${link})().pc.localDescription.sdp.match(/a=ice-ufrag:(\\S+)/)[1]`);
    const u0 = await ufrag();
    await a.page.evaluate(() => window.icebreaker.call.restartIce());
    await waitFor('ICE restart', 15_000, async () => {
      const u = await ufrag();
      const st = await a.page.evaluate(`(${link})().pc.iceConnectionState`);
      return { ok: u !== u0 && (st === 'connected' || st === 'completed'), info: { u, st } };
    });
    await sleep(1000);
    const lines = () => b.page.evaluate(`(${link})().pc.remoteDescription.sdp.split('\\nm=').length`);
    const l0 = await lines();
    await a.page.evaluate(`(${link})().pc.addTransceiver('video', { direction: 'sendonly' })`);
    await waitFor('renegotiation', 15_000, async () => ({ ok: (await lines()) === l0 + 1, info: await lines() }));
    await sleep(1000);
  }
  const counts = await Promise.all(parts.map((p) => p.page.evaluate(() => window.icebreaker.call.signalingCounts)));
  for (const p of parts) await p.page.evaluate(() => document.getElementById('leave').click());
  for (const p of parts) await p.ctx.close();
  let c = null;
  await waitFor('the call in /admin/calls', 10_000, async () => {
    const r = await (await fetch(`${BASE}/admin/calls`)).json();
    c = r.finished.find((x) => x.room === room) ?? null;
    return { ok: !!c, info: r.finished.map((x) => x.room) };
  });
  const channel = counts.reduce((s, x) => ({ messages: s.messages + x.channel.messages, bytes: s.bytes + x.channel.bytes }), { messages: 0, bytes: 0 });
  return { server: c, channel };
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    '--allow-loopback-in-peer-connection',
    '--autoplay-policy=no-user-gesture-required',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1',
  ],
});
const rows = [];
try {
  for (const [kind, dc] of [['plain', false], ['plain', true], ['full', false], ['full', true]]) {
    const runs = [];
    for (let i = 0; i < ROUNDS; i++) runs.push(await oneCall(browser, kind, dc));
    const med = (f) => runs.map(f).sort((x, y) => x - y)[Math.floor(runs.length / 2)];
    rows.push({
      call: kind,
      channel: dc,
      messages: med((r) => r.server.total.messages),
      bytes: med((r) => r.server.total.bytes),
      in: med((r) => r.server.in.messages),
      out: med((r) => r.server.out.messages),
      range: `${Math.min(...runs.map((r) => r.server.total.messages))}–${Math.max(...runs.map((r) => r.server.total.messages))}`,
      p2p: med((r) => r.channel.messages),
      p2pBytes: med((r) => r.channel.bytes),
    });
  }
} finally {
  await browser.close();
}
console.log(`chromium ${browser.version()}, ${ROUNDS} calls per row (medians; range of messages)`);
console.log('call   channel  server msgs (range)  in/out   server bytes   over the channel');
for (const r of rows) {
  console.log(
    `${r.call.padEnd(6)} ${(r.channel ? 'on' : 'off').padEnd(8)} ${String(r.messages).padStart(5)} (${r.range})`.padEnd(36) +
      `${r.in}/${r.out}`.padEnd(9) +
      `${r.bytes.toLocaleString('en')} B`.padStart(12) +
      `   ${r.p2p} msgs, ${r.p2pBytes.toLocaleString('en')} B`,
  );
}
console.log(JSON.stringify(rows));
