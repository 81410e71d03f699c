// Two cluster nodes (one Redis) and the room page in headless Chromium: a call whose signaling
// crosses nodes, and a node's death behind a load balancer.
//
// Every page is /r/<room> from `icebreaker serve --cluster ...` itself; the SDK does all the
// signaling, the test only opens pages, sends broadcasts through the SDK and reads
// window.icebreaker (the room page's test hook). Scenarios:
//   1. P1 opens the room on node 1, P2 the same room on node 2: both list the other as a peer
//      (same id and name on both sides), decode each other's video (mesh; the offer, answer and
//      candidates go node 1 → Redis → node 2 and back), and a broadcast crosses the nodes each
//      way exactly once;
//   2. Chromium's own TURN client: node 1 takes one allocation at most (--max-allocations 1);
//      a page gathers relay candidates with node 1 as its only TURN server twice: the second
//      allocation, refused by the full node 1 with 300 Try Alternate (ALTERNATE-SERVER from the
//      cluster's registry), is made on node 2 (its relay port is in node 2's range). Chromium
//      refuses redirects to loopback addresses: node 2 also listens on a veth address of the
//      namespace (run.sh), which it announces first;
//   3. a load balancer (a TCP proxy written here: each new connection goes to the first backend
//      that accepts it, node 1 then node 2) in front of both nodes; P3 and P4 open the room
//      through it (both land on node 1) and decode each other's video; node 1 is killed
//      (SIGKILL, its PID from run.sh): the pages' WebSockets drop, the SDK reconnects through
//      the proxy, which now reaches node 2, and resumes the session there (`resumed`, same peer
//      id, no `joined`, neither page sees the other leave); a broadcast P3 sends once its
//      connection has dropped reaches P4 exactly once, one P4 sends back after the resume
//      reaches P3 exactly once, and the video keeps being decoded on both pages (media is peer
//      to peer and never touched node 1). Kills node 1: runs last.
//
// Run by tests/browser/run.sh (own network namespace; Redis and two nodes started there).
// Configuration from the environment: IB_CLUSTER_HTTP1, IB_CLUSTER_HTTP2 (the nodes' HTTP
// listeners on 127.0.0.1), IB_CLUSTER_N1_PID (node 1's PID, for scenario 2), IB_CLUSTER_PROXY_PORT
// (where scenario 2's proxy listens), CHROMIUM_PATH (default /usr/bin/chromium), and optionally
// IB_ONLY (comma-separated scenario numbers, for debugging).

import crypto from 'node:crypto';
import net from 'node:net';
import { chromium } from 'playwright-core';
import { chromiumArgs, nonce, sleep, waitFor } from './lib.mjs';

const env = process.env;
const HTTP1 = Number(env.IB_CLUSTER_HTTP1);
const HTTP2 = Number(env.IB_CLUSTER_HTTP2);
const N1_PID = Number(env.IB_CLUSTER_N1_PID);
const PROXY_PORT = Number(env.IB_CLUSTER_PROXY_PORT);
const TURN1 = Number(env.IB_CLUSTER_TURN1);
const TURN2 = Number(env.IB_CLUSTER_TURN2);
if (!HTTP1 || !HTTP2 || !N1_PID || !PROXY_PORT) {
  console.error('FAIL cluster: IB_CLUSTER_HTTP1, IB_CLUSTER_HTTP2, IB_CLUSTER_N1_PID and IB_CLUSTER_PROXY_PORT must be set (run tests/browser/run.sh)');
  process.exit(2);
}
const CHROMIUM = env.CHROMIUM_PATH || '/usr/bin/chromium';
const SCENARIO_TIMEOUT_MS = 40_000;
const TOTAL_TIMEOUT_MS = 100_000;

const killer = setTimeout(() => {
  console.error(`FAIL cluster: overall timeout of ${TOTAL_TIMEOUT_MS / 1000}s exceeded`);
  process.exit(1);
}, TOTAL_TIMEOUT_MS);
killer.unref();

const base = (port) => `http://127.0.0.1:${port}`;


/**
 * Opens one participant: a new browser context (a new user) on ORIGIN/r/ROOM.
 * @returns {Promise<{page, ctx, name, diag}>}
 */
async function participant(browser, origin, room, name) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  const diag = [];
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') diag.push(`${name} console.${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => diag.push(`${name} pageerror: ${e}`));
  await page.goto(`${origin}/r/${room}?name=${encodeURIComponent(name)}`);
  await page.waitForFunction(() => window.icebreaker?.client?.peerId, null, { timeout: 15_000 });
  return { page, ctx, name, diag };
}

const snapshot = (p) => p.page.evaluate(() => window.icebreaker.stats());

/**
 * Waits until every participant decodes video from every other one (inbound framesDecoded > 0
 * and >= MIN rendered frames by requestVideoFrameCallback, per peer), and returns the snapshots.
 */
async function waitForVideo(parts, deadline, minFrames = () => 10) {
  const n = parts.length;
  const res = await waitFor(`video decoded from all ${n - 1} other(s) on each of ${n} pages`, deadline, async () => {
    const snaps = await Promise.all(parts.map(snapshot));
    const info = snaps.map((s, i) => ({
      who: parts[i].name,
      state: s.state,
      transport: s.transport,
      peers: s.peers.map((p) => `${p.name}:${p.connectionState}/${p.path}/dec=${p.framesDecoded}/rvfc=${p.framesRendered}`),
    }));
    const ok = snaps.every(
      (s, i) => s.peers.length === n - 1 && s.peers.every((p) => p.connectionState === 'connected' && p.framesDecoded > 0 && p.framesRendered >= minFrames(i, p)),
    );
    return { ok, info, snaps };
  }, 300);
  return res.snaps;
}

async function closeAll(parts) {
  for (const p of parts) await p.ctx.close().catch(() => {});
}

function withDiag(err, parts) {
  const d = parts.flatMap((p) => p.diag);
  if (d.length) err.message += `; page diagnostics: ${JSON.stringify(d.slice(0, 10))}`;
  return err;
}

/** Records the client's events on the page (window.__rec), from now on. */
const record = (p) =>
  p.page.evaluate(() => {
    const rec = { got: [], events: [], states: [], removed: [] };
    window.__rec = rec;
    const c = window.icebreaker.client;
    c.on('broadcast', (m) => rec.got.push({ from: m.from, data: m.data }));
    c.on('resumed', (i) => rec.events.push(`resumed:${i.peer}`));
    c.on('joined', (i) => rec.events.push(`joined:${i.peer}`));
    c.on('peer-left', (m) => rec.events.push(`peer-left:${m.peer}`));
    c.on('peer-joined', (m) => rec.events.push(`peer-joined:${m.peer.id}`));
    c.on('state', (s) => rec.states.push(s.state));
    window.icebreaker.call.on('peer-removed', (m) => rec.removed.push(m.peer));
  });
const recorded = (p) =>
  p.page.evaluate(() => ({ ...window.__rec, state: window.icebreaker.client.state, transport: window.icebreaker.client.transport, peer: window.icebreaker.client.peerId }));
const countToken = (rec, token) => rec.got.filter((m) => m.data && m.data.token === token).length;

/**
 * A load balancer's worth of TCP proxy: each new connection goes to the first backend (in list
 * order) that accepts it; bytes pass unchanged both ways (so the Host header and the page's
 * Origin stay the proxy's host:port); when either side closes, so does the other.
 */
function startProxy(port, backends) {
  const stats = { accepted: backends.map(() => 0), open: backends.map(() => 0), refused: backends.map(() => 0), unplaced: 0 };
  const sockets = new Set();
  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    sockets.add(client);
    client.on('error', () => {});
    client.on('close', () => sockets.delete(client));
    const attempt = (i) => {
      if (client.destroyed) return;
      if (i >= backends.length) {
        stats.unplaced++;
        client.destroy();
        return;
      }
      const up = net.connect({ host: '127.0.0.1', port: backends[i] });
      let connected = false;
      const timer = setTimeout(() => up.destroy(new Error('connect timeout')), 1000);
      up.on('error', () => {
        clearTimeout(timer);
        if (!connected) {
          stats.refused[i]++;
          attempt(i + 1);
        }
        // Once connected, 'close' follows and takes the client side down.
      });
      up.once('connect', () => {
        clearTimeout(timer);
        connected = true;
        stats.accepted[i]++;
        stats.open[i]++;
        sockets.add(up);
        up.on('close', () => {
          stats.open[i]--;
          sockets.delete(up);
          client.destroy();
        });
        client.on('close', () => up.destroy());
        up.pipe(client);
        client.pipe(up);
        client.resume();
      });
    };
    attempt(0);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      resolve({
        stats,
        snapshot: () => JSON.parse(JSON.stringify(stats)),
        close: () => {
          server.close();
          for (const s of sockets) s.destroy();
        },
      });
    });
  });
}

/** The node's Prometheus gauges (name → value) from its /metrics. */
async function metrics(port) {
  const res = await fetch(`${base(port)}/metrics`);
  if (!res.ok) throw new Error(`GET /metrics on :${port}: ${res.status}`);
  const out = {};
  for (const line of (await res.text()).split('\n')) {
    const m = line.match(/^(icebreaker_(?:signal|cluster|turn)_[a-z_]+) (\S+)$/);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

/** True once nothing accepts TCP connections on 127.0.0.1:PORT any more. */
const refused = (port) =>
  new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.on('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.on('error', () => resolve(true));
  });

const SCENARIOS = [
  {
    name: 'P1 on node 1, P2 on node 2: peers of each other, video both ways, broadcasts cross the nodes',
    async run(browser) {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const room = `cl-${nonce()}`;
      const parts = [];
      try {
        // Both nodes are in the cluster and see each other (heartbeats every 2 s).
        await waitFor('both nodes up in a cluster of 2', deadline, async () => {
          const m = await Promise.all([HTTP1, HTTP2].map(metrics));
          return { ok: m.every((x) => x.icebreaker_cluster_up === 1 && x.icebreaker_cluster_nodes === 2), info: m };
        });
        parts.push(await participant(browser, base(HTTP1), room, 'P1'));
        parts.push(await participant(browser, base(HTTP2), room, 'P2'));
        const [p1, p2] = parts;
        const snaps = await waitForVideo(parts, deadline);
        // Each page knows the other under the id the other got from its own node, and its name.
        const ids = snaps.map((s) => s.peer);
        for (const [i, s] of snaps.entries()) {
          const other = 1 - i;
          const known = await parts[i].page.evaluate(() => [...window.icebreaker.client.peers.values()].map((p) => ({ id: p.id, name: p.name })));
          const want = { id: ids[other], name: parts[other].name };
          if (known.length !== 1 || known[0].id !== want.id || known[0].name !== want.name) {
            throw new Error(`${parts[i].name} knows peers ${JSON.stringify(known)}, expected ${JSON.stringify([want])}`);
          }
          if (s.peers[0].id !== want.id || s.peers[0].name !== want.name) throw new Error(`${parts[i].name}'s tile: ${JSON.stringify(s.peers[0])}`);
          if (s.state !== 'open' || s.transport !== 'websocket') throw new Error(`${parts[i].name}: ${s.state}/${s.transport}`);
        }
        // Broadcasts: node 1 → node 2 and node 2 → node 1, each once.
        await Promise.all(parts.map(record));
        const t1 = `a-${nonce()}`;
        const t2 = `b-${nonce()}`;
        await p1.page.evaluate((t) => window.icebreaker.client.broadcast({ token: t }), t1);
        await p2.page.evaluate((t) => window.icebreaker.client.broadcast({ token: t }), t2);
        await waitFor('each broadcast at the other page', deadline, async () => {
          const r = await Promise.all(parts.map(recorded));
          return { ok: countToken(r[1], t1) >= 1 && countToken(r[0], t2) >= 1, info: r.map((x) => x.got) };
        });
        await sleep(1000);
        const r = await Promise.all(parts.map(recorded));
        const counts = [countToken(r[1], t1), countToken(r[0], t2)];
        if (counts.some((c) => c !== 1)) throw new Error(`broadcasts delivered ${counts} times`);
        if (r[1].got.find((m) => m.data?.token === t1).from !== ids[0]) throw new Error(`P1's broadcast has from=${JSON.stringify(r[1].got)}`);
        return `P1 ${ids[0]} (node 1) <-> P2 ${ids[1]} (node 2); ${snaps.map((s, i) => `${parts[i].name}: ${s.peers[0].path} ${s.peers[0].local?.type}/${s.peers[0].remote?.type} dec=${s.peers[0].framesDecoded}`).join(', ')}; broadcasts once each way`;
      } catch (err) {
        throw withDiag(err, parts);
      } finally {
        await closeAll(parts);
      }
    },
  },
  {
    name: "Chromium's TURN client, sent to node 1 (full: max_allocations 1), follows 300 Try Alternate and allocates on node 2",
    async run(browser) {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const ctx = await browser.newContext();
      try {
        const page = await ctx.newPage();
        await page.goto(`${base(HTTP2)}/tools/ice`);
        // REST credentials of the shared secret (valid on every node).
        const user = `${Math.floor(Date.now() / 1000) + 3600}:chromium`;
        const pass = crypto.createHmac('sha1', env.IB_SECRET).update(user).digest('base64');
        // Each call keeps its RTCPeerConnection open (its allocation stays) and returns the
        // relay candidates gathered with node 1 as the only TURN server.
        const relayVia = () =>
          page.evaluate(
            async ({ port, user, pass }) => {
              const pc = new RTCPeerConnection({
                iceServers: [{ urls: [`turn:127.0.0.1:${port}?transport=udp`], username: user, credential: pass }],
                iceTransportPolicy: 'relay',
              });
              (window.kept ||= []).push(pc);
              const cands = [];
              pc.onicecandidate = (e) => e.candidate && e.candidate.candidate && cands.push(e.candidate.candidate);
              pc.onicecandidateerror = (e) => (window.iceErrors ||= []).push(`${e.errorCode} ${e.errorText} (${e.url})`);
              pc.createDataChannel('x');
              await pc.setLocalDescription(await pc.createOffer());
              const t0 = Date.now();
              while (pc.iceGatheringState !== 'complete' && Date.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 50));
              return cands.filter((c) => / typ relay /.test(c)).map((c) => Number(c.split(' ')[5]));
            },
            { port: TURN1, user, pass },
          );
        const inRange = (port, turn) => port >= turn + 1000 && port <= turn + 1199;
        // Chromium allocates once per local interface (here: lo and a veth): the first
        // allocation fills node 1, the next ones are redirected. Gather until a relay candidate
        // comes from node 2 (at most three times).
        const gathered = [];
        for (let i = 0; i < 3 && !gathered.some((p) => inRange(p, TURN2)); i++) {
          gathered.push(...(await relayVia()));
          await waitFor('node 1 full (1 allocation)', deadline, async () => {
            const m = await metrics(HTTP1);
            return { ok: m.icebreaker_turn_allocations >= 1, info: m.icebreaker_turn_allocations };
          });
        }
        const onNode2 = gathered.filter((p) => inRange(p, TURN2));
        const onNode1 = gathered.filter((p) => inRange(p, TURN1));
        if (!onNode2.length || onNode1.length + onNode2.length !== gathered.length) {
          const errs = await page.evaluate(() => window.iceErrors || []);
          throw new Error(`relay candidates with only node 1 given should include node 2's (ports ${TURN2 + 1000}-${TURN2 + 1199}): got ${JSON.stringify(gathered)}; candidate errors ${JSON.stringify(errs)}`);
        }
        const m1 = await metrics(HTTP1);
        if (m1.icebreaker_turn_allocations !== 1) throw new Error(`node 1 holds ${m1.icebreaker_turn_allocations} allocations (max 1)`);
        return `relay candidates gathered with only node 1 as TURN server: ${onNode1.length} on node 1 (${onNode1}), ${onNode2.length} on node 2 (${onNode2}) after 300 Try Alternate; node 1 holds its 1 allocation`;
      } finally {
        await ctx.close().catch(() => {});
      }
    },
  },
  {
    name: 'behind a TCP load balancer: node 1 killed (SIGKILL), P3 and P4 resume on node 2, call and broadcasts go on',
    async run(browser) {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const room = `clb-${nonce()}`;
      const proxy = await startProxy(PROXY_PORT, [HTTP1, HTTP2]);
      const parts = [];
      try {
        parts.push(await participant(browser, base(PROXY_PORT), room, 'P3'));
        parts.push(await participant(browser, base(PROXY_PORT), room, 'P4'));
        const [p3, p4] = parts;
        let snaps = await waitForVideo(parts, deadline);
        const ids = snaps.map((s) => s.peer);
        const lb0 = proxy.snapshot();
        if (lb0.accepted[1] !== 0 || lb0.accepted[0] < 2 || lb0.open[0] < 2) throw new Error(`before the kill, everything must be on node 1: ${JSON.stringify(lb0)}`);
        await Promise.all(parts.map(record));
        const attached0 = (await metrics(HTTP2)).icebreaker_signal_sessions_attached;
        const framesBefore = snaps.map((s) => s.peers[0].framesRendered);

        // Node 1 dies without a word; its connections (through the proxy) drop.
        process.kill(N1_PID, 'SIGKILL');
        const tKill = Date.now();
        await waitFor('node 1 gone', deadline, async () => ({ ok: await refused(HTTP1), info: N1_PID }), 50);
        // P3 broadcasts once it has noticed (queued while reconnecting, or sent on the new link).
        await waitFor('P3 noticed the drop', deadline, async () => {
          const r = await recorded(p3);
          return { ok: r.states.includes('reconnecting'), info: r };
        }, 20);
        const token = `kill-${nonce()}`;
        await p3.page.evaluate((t) => window.icebreaker.client.broadcast({ token: t }), token);
        const r1 = await waitFor('both pages resumed, P4 got the broadcast', deadline, async () => {
          const r = await Promise.all(parts.map(recorded));
          const ok = r.every((x, i) => x.state === 'open' && x.events.includes(`resumed:${ids[i]}`)) && countToken(r[1], token) >= 1;
          return { ok, info: r };
        }, 100);
        const tResumed = Date.now() - tKill;
        // And back, on node 2 only.
        const back = `back-${nonce()}`;
        await p4.page.evaluate((t) => window.icebreaker.client.broadcast({ token: t }), back);
        await waitFor('P3 got the broadcast from P4', deadline, async () => {
          const r = await recorded(p3);
          return { ok: countToken(r, back) >= 1, info: r.got };
        });
        // Give a duplicate every chance to show up (replay, ack races), then count.
        await sleep(2000);
        const r = await Promise.all(parts.map(recorded));
        const counts = [countToken(r[1], token), countToken(r[0], back)];
        if (counts.some((c) => c !== 1)) throw new Error(`broadcasts delivered ${counts} times: ${JSON.stringify(r.map((x) => x.got))}`);
        for (const [i, x] of r.entries()) {
          const who = parts[i].name;
          // Resumed, not joined again: same peer id, no `joined`, and the other never left.
          if (x.peer !== ids[i]) throw new Error(`${who} is now ${x.peer}, was ${ids[i]}: joined again instead of resuming`);
          const bad = x.events.filter((e) => e.startsWith('joined') || e.startsWith('peer-left') || e.startsWith('peer-joined'));
          if (bad.length || x.removed.length) throw new Error(`${who}: unexpected events ${JSON.stringify(x.events)}, tiles removed ${JSON.stringify(x.removed)}`);
          if (x.transport !== 'websocket') throw new Error(`${who} resumed on ${x.transport}`);
        }
        // The signaling now goes through node 2: both WebSockets, nothing left on node 1.
        const lb1 = proxy.snapshot();
        if (lb1.open[0] !== 0 || lb1.open[1] < 2 || lb1.refused[0] < 2) throw new Error(`after the kill: ${JSON.stringify(lb1)}`);
        // ... and node 2 holds both sessions now.
        const m2 = await metrics(HTTP2);
        if (m2.icebreaker_signal_sessions_attached !== attached0 + 2) throw new Error(`node 2 has ${m2.icebreaker_signal_sessions_attached} attached sessions, had ${attached0} before the kill`);
        // The call never stopped: more frames on both pages, still connected to the same peer.
        snaps = await waitForVideo(parts, deadline, (i) => framesBefore[i] + 30);
        for (const [i, s] of snaps.entries()) {
          if (s.peers[0].id !== ids[1 - i]) throw new Error(`${parts[i].name} now sees ${s.peers[0].id}`);
        }
        const frames = snaps.map((s, i) => `${parts[i].name} ${framesBefore[i]}→${s.peers[0].framesRendered}`).join(', ');
        return `resumed on node 2 ${tResumed} ms after the kill (states ${r1.info.map((x, i) => `${parts[i].name}: ${x.states.join('→')}`).join('; ')}); proxy: ${JSON.stringify(lb1)}; node 2 attached sessions ${attached0}→${m2.icebreaker_signal_sessions_attached}; broadcasts once each way; frames rendered ${frames}`;
      } catch (err) {
        throw withDiag(err, parts);
      } finally {
        await closeAll(parts);
        proxy.close();
      }
    },
  },
];

async function main() {
  const args = chromiumArgs();
  const t0 = Date.now();
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args, timeout: 30_000 });
  console.log(`chromium ${browser.version()} launched in ${Date.now() - t0} ms; nodes ${base(HTTP1)} (pid ${N1_PID}), ${base(HTTP2)}; proxy on :${PROXY_PORT}`);
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
  console.log(`cluster scenarios: ${ran - failed}/${ran} passed`);
  process.exit(failed || !ran ? 1 : 0);
}

main().catch((err) => {
  console.error(`FAIL cluster: ${err.stack || err}`);
  process.exit(1);
});
