// The served pages and the browser SDK against the real server, in headless Chromium.
//
// Every page comes from `icebreaker serve` itself (/r/<room>, /tools/ice, /sdk/icebreaker.js)
// and the SDK does all the signaling through the server; the test only opens pages and reads
// window.icebreaker.stats() (the room page's test hook) or window.iceTester (the ICE tester's).
// Scenarios:
//   - two participants decode each other's video;
//   - four participants each decode video from the three others (mesh);
//   - ?relay=1: the same call through Icebreaker's TURN with the credentials from `joined`
//     (selected pair relay/relay on both sides);
//   - a participant's signaling connection is cut mid-call (SDK test hook, no clean leave, and
//     kept down for 1.5 s); it resumes the same session, and a broadcast sent meanwhile arrives
//     exactly once;
//   - the same with the cut made on the server side: the kernel resets (`ss -K`) the server's
//     end of the participant's TCP connections;
//   - the server no longer knows the session on resume (resume_failed): the SDK joins again
//     under a new peer id and the call recovers;
//   - a network change (`online` event) restarts ICE (new ufrags both ways), the call stays up;
//   - signaling over the data channel: once connected, application messages, an ICE restart
//     and a renegotiation go peer to peer (the server's signaling counter does not move); when
//     the channel closes, the same go through the server again and the call stays up;
//   - WebSocket blocked: the SDK falls back to Server-Sent Events and the call connects;
//   - WebSocket and EventSource blocked: long-poll, against a peer on WebSocket;
//   - /tools/ice gathers relay candidates and says "TURN works".
//
// Run by tests/browser/run.sh (own network namespace, server started). Configuration from the
// environment: IB_HTTP_PORT (the server's HTTP listener on 127.0.0.1), IB_CERT_SPKI (for
// TURNS with the test certificate), CHROMIUM_PATH (default /usr/bin/chromium), and optionally
// IB_ONLY (comma-separated scenario numbers, for debugging).

import { execFileSync } from 'node:child_process';
import { chromium } from 'playwright-core';
import { chromiumArgs, nonce, sleep, waitFor } from './lib.mjs';

const env = process.env;
const HTTP_PORT = env.IB_HTTP_PORT;
if (!HTTP_PORT) {
  console.error('FAIL room: environment variable IB_HTTP_PORT is not set (run tests/browser/run.sh)');
  process.exit(2);
}
const BASE = `http://127.0.0.1:${HTTP_PORT}`;
const CHROMIUM = env.CHROMIUM_PATH || '/usr/bin/chromium';
const SCENARIO_TIMEOUT_MS = 45_000;
const TOTAL_TIMEOUT_MS = 210_000;

const killer = setTimeout(() => {
  console.error(`FAIL room: overall timeout of ${TOTAL_TIMEOUT_MS / 1000}s exceeded`);
  process.exit(1);
}, TOTAL_TIMEOUT_MS);
killer.unref();



/** Scripts that run in the page before the SDK loads, to block transports. */
const BLOCK_WEBSOCKET = () => {
  // A WebSocket that cannot connect, as behind a proxy that refuses upgrades: same origin
  // (allowed by the page's CSP) but a path that answers 404 to the upgrade.
  const Real = window.WebSocket;
  window.WebSocket = class extends Real {
    constructor(_url, protocols) {
      super(`ws://${location.host}/websocket-blocked-by-test`, protocols);
    }
  };
};
const BLOCK_EVENTSOURCE = () => {
  window.EventSource = class {
    constructor() {
      throw new Error('EventSource blocked by the test');
    }
  };
};

/**
 * Opens one participant: a new browser context (a new user) on /r/ROOM.
 * @returns {Promise<{page, ctx, name, diag}>}
 */
async function participant(browser, room, name, { query = '', init = [] } = {}) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  const diag = [];
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') diag.push(`${name} console.${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => diag.push(`${name} pageerror: ${e}`));
  for (const fn of init) await ctx.addInitScript(fn);
  const sep = query ? '&' : '?';
  await page.goto(`${BASE}/r/${room}${query ? '?' + query : ''}${sep}name=${encodeURIComponent(name)}`);
  await page.waitForFunction(() => window.icebreaker?.client?.peerId, null, { timeout: 15_000 });
  return { page, ctx, name, diag };
}

const snapshot = (p) => p.page.evaluate(() => window.icebreaker.stats());

/** Client ports of the established TCP connections to the server's HTTP port (server side). */
function serverConnections() {
  const out = execFileSync('ss', ['-H', '-t', '-n', 'state', 'established', `( sport = :${HTTP_PORT} )`], { encoding: 'utf8' });
  return new Set(out.split('\n').map((l) => l.trim().split(/\s+/).pop()).filter(Boolean).map((a) => a.split(':').pop()));
}

/** Resets (RST) the server side of the connections from these client ports, as a crash would. */
function resetConnections(ports) {
  for (const port of ports) {
    execFileSync('ss', ['-K', '-H', '-t', 'state', 'established', `( sport = :${HTTP_PORT} and dport = :${port} )`]);
  }
}

/**
 * Waits until every participant decodes video from every other one (inbound framesDecoded > 0
 * and >= 10 frames rendered by requestVideoFrameCallback), and returns the snapshots.
 */
async function waitForVideo(parts, deadline, extra = () => true) {
  const n = parts.length;
  const res = await waitFor(`video decoded from all ${n - 1} other(s) on each of ${n} pages`, deadline, async () => {
    const snaps = await Promise.all(parts.map(snapshot));
    const info = snaps.map((s, i) => ({
      who: parts[i].name,
      transport: s.transport,
      peers: s.peers.map((p) => `${p.name}:${p.connectionState}/${p.path}/dec=${p.framesDecoded}/rvfc=${p.framesRendered}`),
    }));
    const ok = snaps.every(
      (s) => s.peers.length === n - 1 && s.peers.every((p) => p.framesDecoded > 0 && p.framesRendered >= 10 && extra(p)),
    );
    return { ok, info, snaps };
  }, 300);
  return res.snaps;
}

const fmtPaths = (parts, snaps) =>
  snaps
    .map((s, i) => `${parts[i].name}[${s.transport}]: ` + s.peers.map((p) => `${p.name} ${p.path} ${p.local?.type}/${p.remote?.type} ${Math.round(p.bitrateIn / 1000)}kbit/s`).join(', '))
    .join('; ');

async function closeAll(parts) {
  for (const p of parts) await p.ctx.close().catch(() => {});
}

function withDiag(err, parts) {
  const d = parts.flatMap((p) => p.diag);
  if (d.length) err.message += `; page diagnostics: ${JSON.stringify(d.slice(0, 10))}`;
  return err;
}

/** Runs N participants in one room and waits for full-mesh video. */
async function meshScenario(browser, n, opts = {}) {
  const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
  const room = `t${n}-${nonce()}`;
  const parts = [];
  try {
    for (let i = 0; i < n; i++) parts.push(await participant(browser, room, `P${i + 1}`, opts));
    const snaps = await waitForVideo(parts, deadline, opts.extra);
    return { parts, snaps, detail: fmtPaths(parts, snaps) };
  } catch (err) {
    await closeAll(parts);
    throw withDiag(err, parts);
  }
}

const SCENARIOS = [
  {
    name: 'two participants decode each other\'s video',
    async run(browser) {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const { parts } = await meshScenario(browser, 2);
      try {
        // The tiles' live bitrate (from getStats, once a second) shows the video flowing.
        const r = await waitFor('live bitrate > 100 kbit/s both ways on both pages', deadline, async () => {
          const snaps = await Promise.all(parts.map(snapshot));
          const ok = snaps.every((s) => s.peers.every((p) => p.bitrateIn > 100_000 && p.bitrateOut > 100_000));
          return { ok, info: snaps.map((s) => s.peers.map((p) => [p.bitrateIn, p.bitrateOut])), snaps };
        }, 500);
        return fmtPaths(parts, r.snaps);
      } catch (err) {
        throw withDiag(err, parts);
      } finally {
        await closeAll(parts);
      }
    },
  },
  {
    name: 'four participants, each decodes all three others (mesh)',
    async run(browser) {
      const { parts, snaps } = await meshScenario(browser, 4);
      await closeAll(parts);
      const links = snaps.reduce((a, s) => a + s.peers.length, 0);
      return `${links} peer connections with video; ${snaps.map((s, i) => `${parts[i].name}: ${s.peers.map((p) => p.path).join('/')}`).join(', ')}`;
    },
  },
  {
    name: '?relay=1: the call goes through Icebreaker TURN (relay/relay)',
    async run(browser) {
      const { parts, snaps } = await meshScenario(browser, 2, {
        query: 'relay=1',
        extra: (p) => p.path === 'turn' && p.local?.type === 'relay' && p.remote?.type === 'relay',
      });
      const ice = await parts[0].page.evaluate(() => window.icebreaker.client.iceServers);
      await closeAll(parts);
      const turnUrls = ice.flatMap((s) => [].concat(s.urls)).filter((u) => u.startsWith('turn'));
      if (!turnUrls.length) throw new Error(`no TURN server in joined.iceServers: ${JSON.stringify(ice)}`);
      const s = snaps[0].peers[0];
      return `${fmtPaths(parts, snaps)}; relay over ${s.local.relayProtocol} ${s.local.address}:${s.local.port}; iceServers from joined: ${turnUrls.join(' ')}`;
    },
  },
  {
    name: 'signaling cut mid-call: resume, broadcast sent meanwhile arrives exactly once',
    async run(browser) {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const { parts } = await meshScenario(browser, 2);
      const [a, b] = parts;
      try {
        const before = await snapshot(a);
        await a.page.evaluate(() => {
          window.__got = [];
          window.__events = [];
          const c = window.icebreaker.client;
          c.on('broadcast', (m) => window.__got.push(m.data));
          c.on('resumed', () => window.__events.push('resumed'));
          c.on('joined', () => window.__events.push('joined'));
        });
        const token = `bc-${nonce()}`;
        // Cut A's connection abruptly (no leave) and keep it down for 1.5 s, during which
        // B broadcasts; the server must keep it for A.
        await a.page.evaluate(() => window.icebreaker.client._debugDropConnection(1500));
        const during = await a.page.evaluate(() => window.icebreaker.client.state);
        await b.page.evaluate((t) => window.icebreaker.client.broadcast({ token: t }), token);
        await waitFor('A resumed and got the broadcast', deadline, async () => {
          const st = await a.page.evaluate(() => ({ state: window.icebreaker.client.state, peer: window.icebreaker.client.peerId, got: window.__got, events: window.__events }));
          return { ok: st.state === 'open' && st.got.some((d) => d && d.token === token), info: st };
        });
        // Give a duplicate every chance to show up (replay, ack races), then count.
        await sleep(2000);
        const after = await a.page.evaluate(() => ({ peer: window.icebreaker.client.peerId, got: window.__got, events: window.__events, transport: window.icebreaker.client.transport }));
        const count = after.got.filter((d) => d && d.token === token).length;
        if (count !== 1) throw new Error(`broadcast delivered ${count} times: ${JSON.stringify(after.got)}`);
        if (after.peer !== before.peer) throw new Error(`A rejoined as a new peer (${before.peer} -> ${after.peer}) instead of resuming`);
        if (!after.events.includes('resumed') || after.events.includes('joined')) throw new Error(`unexpected client events: ${after.events}`);
        // The call survived (media never depended on signaling), and B never saw A leave.
        const snaps = await waitForVideo(parts, deadline);
        const bPeers = snaps[1].peers.map((p) => p.id);
        if (!bPeers.includes(before.peer)) throw new Error('B lost A');
        return `state while cut: ${during}; resumed on ${after.transport} as ${after.peer}; broadcast delivered once; video still flowing (${snaps.map((s) => s.peers[0].framesDecoded).join('/')} frames)`;
      } catch (err) {
        throw withDiag(err, parts);
      } finally {
        await closeAll(parts);
      }
    },
  },
  {
    name: 'server side resets the TCP connection (kernel RST): resume, broadcast exactly once',
    async run(browser) {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const room = `trst-${nonce()}`;
      const parts = [];
      try {
        parts.push(await participant(browser, room, 'B'));
        const before = serverConnections();
        parts.push(await participant(browser, room, 'A'));
        const [b, a] = parts;
        await waitForVideo(parts, deadline);
        // A's connections are the ones that appeared with its page (page loads + signaling).
        const mine = [...serverConnections()].filter((p) => !before.has(p));
        if (!mine.length) throw new Error('could not find the page\'s TCP connections');
        const peer = (await snapshot(a)).peer;
        await a.page.evaluate(() => {
          window.__got = [];
          window.__events = [];
          const c = window.icebreaker.client;
          c.on('broadcast', (m) => window.__got.push(m.data));
          c.on('resumed', () => window.__events.push('resumed'));
          c.on('joined', () => window.__events.push('joined'));
        });
        const token = `rst-${nonce()}`;
        resetConnections(mine);
        await b.page.evaluate((t) => window.icebreaker.client.broadcast({ token: t }), token);
        await waitFor('A resumed and got the broadcast', deadline, async () => {
          const st = await a.page.evaluate(() => ({ state: window.icebreaker.client.state, got: window.__got, events: window.__events }));
          return { ok: st.state === 'open' && st.events.includes('resumed') && st.got.some((d) => d && d.token === token), info: st };
        });
        await sleep(2000);
        const after = await a.page.evaluate(() => ({ peer: window.icebreaker.client.peerId, got: window.__got, events: window.__events }));
        const count = after.got.filter((d) => d && d.token === token).length;
        if (count !== 1) throw new Error(`broadcast delivered ${count} times`);
        if (after.peer !== peer || after.events.includes('joined')) throw new Error(`A did not resume its session: ${JSON.stringify(after)}`);
        await waitForVideo(parts, deadline);
        return `reset ${mine.length} connection(s) of A; resumed as ${after.peer}; broadcast delivered once; video still flowing`;
      } catch (err) {
        throw withDiag(err, parts);
      } finally {
        await closeAll(parts);
      }
    },
  },
  {
    name: 'session unknown to the server on resume: SDK joins again, call recovers',
    async run(browser) {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const { parts } = await meshScenario(browser, 2);
      const [a] = parts;
      try {
        const before = (await snapshot(a)).peer;
        // A token the server never issued (same shape as a real one): the resume must be
        // refused with resume_failed, and the SDK must join the room again.
        await a.page.evaluate(() => {
          const c = window.icebreaker.client;
          c._session = 'A'.repeat(43);
          c._debugDropConnection();
        });
        await waitFor('A joined again under a new peer id', deadline, async () => {
          const st = await a.page.evaluate(() => ({ state: window.icebreaker.client.state, peer: window.icebreaker.client.peerId }));
          return { ok: st.state === 'open' && st.peer && st.peer !== before, info: st };
        });
        // B sees the old A leave only after the grace period; the new A must get video now.
        const aSnap = await waitFor('A decodes video from B again', deadline, async () => {
          const s = await snapshot(a);
          return { ok: s.peers.length === 1 && s.peers[0].framesDecoded > 0 && s.peers[0].framesRendered >= 10, info: s.peers };
        }, 300);
        const after = (await snapshot(a)).peer;
        return `A ${before} -> ${after}; A decodes B again (${aSnap.info[0].framesDecoded} frames)`;
      } catch (err) {
        throw withDiag(err, parts);
      } finally {
        await closeAll(parts);
      }
    },
  },
  {
    name: 'network change (online event): ICE restart, call stays up',
    async run(browser) {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const { parts } = await meshScenario(browser, 2);
      const [a, b] = parts;
      // The ICE ufrag each side currently uses towards the other (changes on an ICE restart).
      const ufrags = (p) => p.page.evaluate(() => {
        const link = [...window.icebreaker.call.links.values()][0];
        const ufrag = (d) => d?.sdp.match(/a=ice-ufrag:(\S+)/)?.[1] ?? null;
        return { local: ufrag(link.pc.localDescription), remote: ufrag(link.pc.remoteDescription) };
      });
      try {
        const before = { a: await ufrags(a), b: await ufrags(b) };
        await a.page.evaluate(() => window.dispatchEvent(new Event('online')));
        await waitFor('new ICE credentials on both sides', deadline, async () => {
          const now = { a: await ufrags(a), b: await ufrags(b) };
          const ok = now.a.local !== before.a.local && now.b.remote === now.a.local && now.b.local !== before.b.local && now.a.remote === now.b.local;
          return { ok, info: { before, now } };
        });
        const framesBefore = (await snapshot(b)).peers[0].framesRendered;
        await waitFor('video still flowing after the restart', deadline, async () => {
          const snaps = await Promise.all(parts.map(snapshot));
          const ok = snaps.every((s) => s.peers[0].connectionState === 'connected') && snaps[1].peers[0].framesRendered > framesBefore + 10;
          return { ok, info: snaps.map((s) => s.peers[0]) };
        });
        return 'ufrags renegotiated on both sides; connected; frames keep coming';
      } catch (err) {
        throw withDiag(err, parts);
      } finally {
        await closeAll(parts);
      }
    },
  },
  {
    name: 'signaling over the data channel: messages, ICE restart and renegotiation bypass the server; falls back when the channel closes',
    async run(browser) {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const { parts } = await meshScenario(browser, 2);
      const [a, b] = parts;
      const serverIn = async () => {
        const text = await (await fetch(`${BASE}/metrics`)).text();
        const m = text.match(/^icebreaker_signal_messages_total\{direction="in"\} (\d+)/m);
        if (!m) throw new Error('icebreaker_signal_messages_total{direction="in"} missing from /metrics');
        return Number(m[1]);
      };
      const ufrag = (p) => p.page.evaluate(() => [...window.icebreaker.call.links.values()][0].pc.localDescription.sdp.match(/a=ice-ufrag:(\S+)/)[1]);
      const mlines = (p) => p.page.evaluate(() => [...window.icebreaker.call.links.values()][0].pc.remoteDescription.sdp.split('\nm=').length - 1);
      try {
        for (const p of parts) {
          await p.page.evaluate(() => {
            window.__msgs = [];
            window.icebreaker.call.on('message', (m) => window.__msgs.push(m));
          });
        }
        await waitFor('the signaling channel ready both ways', deadline, async () => {
          const r = await Promise.all(parts.map((p) => p.page.evaluate(() => [...window.icebreaker.call.links.values()][0].channelUsable())));
          return { ok: r.every(Boolean), info: r };
        });
        const in0 = await serverIn();
        const chan0 = await a.page.evaluate(() => window.icebreaker.call.signalingCounts.channel.messages);
        const bPeer = await b.page.evaluate(() => window.icebreaker.client.peerId);
        const aUfrag = await ufrag(a);
        const bLines = await mlines(b);
        // Application messages, an ICE restart and a renegotiation (a new m-line), all from A.
        await a.page.evaluate((to) => {
          for (let i = 0; i < 5; i++) window.icebreaker.call.send(to, { n: i });
          window.icebreaker.call.restartIce();
        }, bPeer);
        await waitFor('B has the 5 messages over the channel; new ICE credentials', deadline, async () => {
          const msgs = await b.page.evaluate(() => window.__msgs);
          const ok = msgs.length === 5 && msgs.every((m, i) => m.via === 'channel' && m.data.n === i) && (await ufrag(a)) !== aUfrag;
          return { ok, info: msgs };
        });
        await a.page.evaluate(() => [...window.icebreaker.call.links.values()][0].pc.addTransceiver('video', { direction: 'recvonly' }));
        await waitFor('the renegotiated m-line at B', deadline, async () => {
          const n = await mlines(b);
          return { ok: n === bLines + 1, info: { before: bLines, now: n } };
        });
        await sleep(500);
        const in1 = await serverIn();
        if (in1 !== in0) throw new Error(`the server saw ${in1 - in0} signaling message(s) while the channel was up`);
        const chan1 = await a.page.evaluate(() => window.icebreaker.call.signalingCounts.channel.messages);
        // The channel closes: everything goes through the server again.
        await a.page.evaluate(() => [...window.icebreaker.call.links.values()][0].sig.close());
        await waitFor('the channel closed on both sides', deadline, async () => {
          const r = await Promise.all(parts.map((p) => p.page.evaluate(() => [...window.icebreaker.call.links.values()][0].channelUsable())));
          return { ok: r.every((x) => !x), info: r };
        });
        const aUfrag2 = await ufrag(a);
        await a.page.evaluate((to) => {
          window.icebreaker.call.send(to, 'after');
          window.icebreaker.call.restartIce();
        }, bPeer);
        await waitFor('the message through the server; ICE restarted again', deadline, async () => {
          const msgs = await b.page.evaluate(() => window.__msgs);
          const last = msgs[msgs.length - 1];
          const ok = msgs.length === 6 && last.via === 'server' && last.data === 'after' && (await ufrag(a)) !== aUfrag2;
          return { ok, info: msgs.slice(5) };
        });
        const in2 = await serverIn();
        if (in2 <= in1) throw new Error('the server saw nothing after the channel closed');
        const framesBefore = (await snapshot(b)).peers[0].framesRendered;
        await waitFor('video still flowing', deadline, async () => {
          const s = await snapshot(b);
          return { ok: s.peers[0].connectionState === 'connected' && s.peers[0].framesRendered > framesBefore + 10, info: s.peers[0] };
        });
        return `channel: ${chan1 - chan0} messages from A, 0 through the server; after close: ${in2 - in1} through the server`;
      } catch (err) {
        throw withDiag(err, parts);
      } finally {
        await closeAll(parts);
      }
    },
  },
  {
    name: 'WebSocket blocked: SDK falls back to SSE, call connects',
    async run(browser) {
      const { parts, snaps } = await meshScenario(browser, 2, { init: [BLOCK_WEBSOCKET] });
      await closeAll(parts);
      const ts = snaps.map((s) => s.transport);
      if (!ts.every((t) => t === 'sse')) throw new Error(`transports ${ts}, expected sse`);
      return fmtPaths(parts, snaps);
    },
  },
  {
    name: 'WebSocket and EventSource blocked: long-poll peer calls a WebSocket peer',
    async run(browser) {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const room = `tpoll-${nonce()}`;
      const parts = [];
      try {
        parts.push(await participant(browser, room, 'Poll', { init: [BLOCK_WEBSOCKET, BLOCK_EVENTSOURCE] }));
        parts.push(await participant(browser, room, 'WS'));
        const snaps = await waitForVideo(parts, deadline);
        const ts = snaps.map((s) => s.transport);
        if (ts[0] !== 'poll' || ts[1] !== 'websocket') throw new Error(`transports ${ts}, expected poll,websocket`);
        return fmtPaths(parts, snaps);
      } catch (err) {
        throw withDiag(err, parts);
      } finally {
        await closeAll(parts);
      }
    },
  },
  {
    name: '/tools/ice: relay candidates and the "TURN works" verdict',
    async run(browser) {
      const ctx = await browser.newContext();
      try {
        const page = await ctx.newPage();
        await page.goto(`${BASE}/tools/ice?auto=1&policy=relay`);
        await page.waitForFunction(() => window.iceTester?.result, null, { timeout: 30_000 });
        const r = await page.evaluate(() => window.iceTester.result);
        const verdict = (await page.textContent('#verdict')).trim();
        const relays = r.candidates.filter((c) => c.type === 'relay');
        if (!r.ok || !verdict.startsWith('TURN works')) throw new Error(`verdict "${verdict}"; errors ${JSON.stringify(r.errors)}`);
        return `"${verdict}"; ${relays.length} relay candidate(s) in ${r.elapsed} ms: ${relays.map((c) => `${c.relayProtocol} ${c.address}:${c.port}`).join(', ')}${r.errors.length ? `; errors: ${r.errors.map((e) => e.url + ' ' + e.code).join(', ')}` : ''}`;
      } finally {
        await ctx.close().catch(() => {});
      }
    },
  },
];

async function main() {
  const args = chromiumArgs();
  if (env.IB_CERT_SPKI) args.push(`--ignore-certificate-errors-spki-list=${env.IB_CERT_SPKI}`);
  const t0 = Date.now();
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args, timeout: 30_000 });
  console.log(`chromium ${browser.version()} launched in ${Date.now() - t0} ms; pages from ${BASE}`);
  const only = env.IB_ONLY ? new Set(env.IB_ONLY.split(',').map(Number)) : null;
  let failed = 0;
  let ran = 0;
  try {
    for (const [i, sc] of SCENARIOS.entries()) {
      if (only && !only.has(i + 1)) continue;
      ran++;
      const s0 = Date.now();
      try {
        const detail = await Promise.race([
          sc.run(browser),
          sleep(SCENARIO_TIMEOUT_MS + 10_000).then(() => {
            throw new Error('scenario timeout');
          }),
        ]);
        console.log(`  PASS ${sc.name} (${((Date.now() - s0) / 1000).toFixed(1)}s): ${detail}`);
      } catch (err) {
        failed++;
        console.log(`  FAIL ${sc.name} (${((Date.now() - s0) / 1000).toFixed(1)}s): ${err.message}`);
      }
    }
  } finally {
    await browser.close().catch(() => {});
  }
  console.log(`room scenarios: ${ran - failed}/${ran} passed`);
  process.exit(failed || !ran ? 1 : 0);
}

main().catch((err) => {
  console.error(`FAIL room: ${err.stack || err}`);
  process.exit(1);
});
