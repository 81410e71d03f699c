// Real WebRTC through the TURN server under test, in headless Chromium.
//
// For each scenario, two pages in two browser contexts (two users) open an
// RTCPeerConnection with iceTransportPolicy 'relay' and the TURN server as
// their only ICE server. This script does the signaling itself (SDP and
// trickled candidates passed with page.evaluate), then asserts that:
//   - both selected candidate pairs are relay/relay, and the local candidate's
//     relayProtocol is the scenario's transport (udp / tcp / tls);
//   - video from the fake camera is decoded on both sides (inbound-rtp
//     framesDecoded > 0 and >= 10 frames seen by requestVideoFrameCallback);
//   - a DataChannel message arrives in each direction.
//
// Run by tests/browser/run.sh (inside its own network namespace, with the
// server started). Configuration from the environment:
//   IB_TURN_PORT, IB_SECRET_PORT, IB_TLS_PORT, IB_USER, IB_PASS, IB_SECRET,
//   IB_CERT_SPKI, CHROMIUM_PATH (default /usr/bin/chromium), IB_SERVER (label).
// See shared/docs/browser-testing.md for why each Chromium flag is needed.

import { createServer } from 'node:http';
import { createHmac } from 'node:crypto';
import { chromium } from 'playwright-core';

const env = process.env;
const need = (k) => {
  if (!env[k]) {
    console.error(`FAIL browser: environment variable ${k} is not set (run tests/browser/run.sh)`);
    process.exit(2);
  }
  return env[k];
};
const TURN_PORT = need('IB_TURN_PORT');
const SECRET_PORT = env.IB_SECRET_PORT || TURN_PORT;
const TLS_PORT = need('IB_TLS_PORT');
const USER = need('IB_USER');
const PASS = need('IB_PASS');
const SECRET = need('IB_SECRET');
const SPKI = need('IB_CERT_SPKI');
const CHROMIUM = env.CHROMIUM_PATH || '/usr/bin/chromium';
const SCENARIO_TIMEOUT_MS = 45_000;
const TOTAL_TIMEOUT_MS = 170_000;

// Hard stop: whatever happens, this process ends (Playwright closes Chromium
// with it).
const killer = setTimeout(() => {
  console.error(`FAIL browser: overall timeout of ${TOTAL_TIMEOUT_MS / 1000}s exceeded`);
  process.exit(1);
}, TOTAL_TIMEOUT_MS);
killer.unref();

function restCredentials(user, ttlSeconds = 600) {
  const username = `${Math.floor(Date.now() / 1000) + ttlSeconds}:${user}`;
  const credential = createHmac('sha1', SECRET).update(username).digest('base64');
  return { username, credential };
}

const SCENARIOS = [
  {
    name: 'TURN/UDP, static user',
    iceServers: [{ urls: `turn:127.0.0.1:${TURN_PORT}?transport=udp`, username: USER, credential: PASS }],
    relayProtocol: 'udp',
  },
  {
    name: 'TURN/TCP, REST secret',
    iceServers: () => [{ urls: `turn:127.0.0.1:${SECRET_PORT}?transport=tcp`, ...restCredentials('browser-user') }],
    relayProtocol: 'tcp',
  },
  {
    name: 'TURNS (TLS), static user',
    iceServers: [{ urls: `turns:localhost:${TLS_PORT}?transport=tcp`, username: USER, credential: PASS }],
    relayProtocol: 'tls',
  },
];

// The page both users load. Everything WebRTC happens in here; the test
// drives it through window.ib.
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>icebreaker browser test</title></head>
<body>
<video id="remote" autoplay playsinline muted width="320" height="240"></video>
<script>
window.ib = {
  async start(iceServers) {
    const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: 'relay' });
    this.pc = pc;
    this.cands = [];
    this.gatheringDone = false;
    this.errors = [];
    this.msgs = [];
    this.frames = 0;
    pc.onicecandidate = (e) => {
      if (e.candidate) this.cands.push(e.candidate.toJSON());
      else this.gatheringDone = true;
    };
    pc.onicecandidateerror = (e) =>
      this.errors.push(e.errorCode + ' ' + e.errorText + ' ' + (e.url || ''));
    const stream = await navigator.mediaDevices.getUserMedia({
      video: { width: 320, height: 240, frameRate: 30 }, audio: false });
    for (const t of stream.getTracks()) pc.addTrack(t, stream);
    this.dc = pc.createDataChannel('chat', { negotiated: true, id: 0 });
    this.dc.onmessage = (e) => this.msgs.push(e.data);
    pc.ontrack = (e) => {
      const v = document.getElementById('remote');
      if (v.srcObject) return;
      v.srcObject = e.streams[0] || new MediaStream([e.track]);
      v.play().catch((err) => this.errors.push('play: ' + err));
      const onFrame = () => { this.frames++; v.requestVideoFrameCallback(onFrame); };
      v.requestVideoFrameCallback(onFrame);
    };
  },
  async offer() {
    await this.pc.setLocalDescription(await this.pc.createOffer());
    return this.pc.localDescription.toJSON();
  },
  async answer(offer) {
    await this.pc.setRemoteDescription(offer);
    await this.pc.setLocalDescription(await this.pc.createAnswer());
    return this.pc.localDescription.toJSON();
  },
  async accept(answer) { await this.pc.setRemoteDescription(answer); },
  takeCandidates() {
    const cands = this.cands;
    this.cands = [];
    return { cands, done: this.gatheringDone };
  },
  async addCandidates(list) { for (const c of list) await this.pc.addIceCandidate(c); },
  send(text) { this.dc.send(text); },
  state() {
    return { ice: this.pc.iceConnectionState, conn: this.pc.connectionState,
      gathering: this.pc.iceGatheringState, dc: this.dc.readyState,
      frames: this.frames, msgs: this.msgs, errors: this.errors };
  },
  async report() {
    const stats = await this.pc.getStats();
    let transport = null, framesDecoded = 0;
    stats.forEach((s) => {
      if (s.type === 'transport') transport = s;
      if (s.type === 'inbound-rtp' && s.kind === 'video') framesDecoded += s.framesDecoded || 0;
    });
    const out = { framesDecoded, pair: null, local: null, remote: null };
    if (!transport || !transport.selectedCandidatePairId) return out;
    const pair = stats.get(transport.selectedCandidatePairId);
    if (!pair) return out;
    out.pair = { state: pair.state, bytesSent: pair.bytesSent, bytesReceived: pair.bytesReceived };
    const cand = (id) => {
      const c = id && stats.get(id);
      return c ? { type: c.candidateType, relayProtocol: c.relayProtocol, protocol: c.protocol,
        address: c.address, port: c.port, url: c.url } : null;
    };
    out.local = cand(pair.localCandidateId);
    out.remote = cand(pair.remoteCandidateId);
    return out;
  },
  close() { this.pc.close(); },
};
</script></body></html>`;

function startPageServer() {
  const server = createServer((req, res) => {
    if (req.url === '/' || req.url.startsWith('/?')) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(PAGE);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, deadline, fn, interval = 100) {
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last.ok) return last;
    await sleep(interval);
  }
  throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last && last.info)}`);
}

async function runScenario(browser, url, sc) {
  const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
  const iceServers = typeof sc.iceServers === 'function' ? sc.iceServers() : sc.iceServers;
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  const diag = {};
  try {
    const [a, b] = [await ctxA.newPage(), await ctxB.newPage()];
    for (const [n, p] of [['A', a], ['B', b]]) {
      p.on('console', (m) => { if (m.type() === 'error') (diag[n] ||= []).push(m.text()); });
      p.on('pageerror', (e) => (diag[n] ||= []).push(String(e)));
      await p.goto(url);
      await p.evaluate((s) => window.ib.start(s), iceServers);
    }
    // Signaling: offer/answer, then trickle candidates both ways until both
    // sides are connected.
    const offer = await a.evaluate(() => window.ib.offer());
    const answer = await b.evaluate((o) => window.ib.answer(o), offer);
    await a.evaluate((ans) => window.ib.accept(ans), answer);
    const counts = { A: 0, B: 0 };
    const gathered = { A: false, B: false };
    await waitFor('ICE/DTLS connected on both sides', deadline, async () => {
      for (const [from, to, n] of [[a, b, 'A'], [b, a, 'B']]) {
        const { cands, done } = await from.evaluate(() => window.ib.takeCandidates());
        if (cands.length) await to.evaluate((l) => window.ib.addCandidates(l), cands);
        counts[n] += cands.length;
        gathered[n] = done;
      }
      const [sa, sb] = [await a.evaluate(() => window.ib.state()), await b.evaluate(() => window.ib.state())];
      for (const [n, st] of [['A', sa], ['B', sb]]) {
        // Fail fast with the reason when a side finished gathering without a
        // single relay candidate (e.g. the TURN server refused it).
        if (gathered[n] && counts[n] === 0) {
          throw new Error(`${n} gathered no relay candidate; icecandidateerror: ${JSON.stringify(st.errors)}`);
        }
        if (st.conn === 'failed') throw new Error(`${n}: connectionState failed; ${JSON.stringify(st)}`);
      }
      return { ok: sa.conn === 'connected' && sb.conn === 'connected', info: { A: sa, B: sb, candidates: counts } };
    });

    // Selected pairs: relay/relay with the expected relay protocol. A
    // peer-reflexive remote candidate can show up first: poll.
    const pairs = {};
    for (const [n, p] of [['A', a], ['B', b]]) {
      const r = await waitFor(`${n}: selected pair relay/relay (${sc.relayProtocol})`, deadline, async () => {
        const rep = await p.evaluate(() => window.ib.report());
        const ok = rep.local?.type === 'relay' && rep.remote?.type === 'relay' &&
          rep.local?.relayProtocol === sc.relayProtocol;
        return { ok, info: rep };
      }, 200);
      pairs[n] = r.info;
    }

    // DataChannel, one message each way.
    await waitFor('DataChannel open on both sides', deadline, async () => {
      const [sa, sb] = [await a.evaluate(() => window.ib.state()), await b.evaluate(() => window.ib.state())];
      return { ok: sa.dc === 'open' && sb.dc === 'open', info: { A: sa.dc, B: sb.dc } };
    });
    await a.evaluate(() => window.ib.send('hello from A'));
    await b.evaluate(() => window.ib.send('hello from B'));
    await waitFor('DataChannel messages both ways', deadline, async () => {
      const [sa, sb] = [await a.evaluate(() => window.ib.state()), await b.evaluate(() => window.ib.state())];
      return { ok: sb.msgs.includes('hello from A') && sa.msgs.includes('hello from B'), info: { A: sa.msgs, B: sb.msgs } };
    });

    // Video decoded on both sides.
    const video = {};
    for (const [n, p] of [['A', a], ['B', b]]) {
      const r = await waitFor(`${n}: video frames decoded`, deadline, async () => {
        const rep = await p.evaluate(() => window.ib.report());
        const st = await p.evaluate(() => window.ib.state());
        return { ok: rep.framesDecoded > 0 && st.frames >= 10, info: { framesDecoded: rep.framesDecoded, rvfc: st.frames } };
      }, 200);
      video[n] = r.info;
    }

    await a.evaluate(() => window.ib.close());
    await b.evaluate(() => window.ib.close());
    const fmt = (c) => `${c.type}/${c.relayProtocol || c.protocol} ${c.address}:${c.port}`;
    return `A ${fmt(pairs.A.local)} -> ${fmt(pairs.A.remote)}; B ${fmt(pairs.B.local)} -> ${fmt(pairs.B.remote)}; ` +
      `frames decoded A=${video.A.framesDecoded} B=${video.B.framesDecoded}; candidates A=${counts.A} B=${counts.B}; DataChannel both ways`;
  } catch (err) {
    if (Object.keys(diag).length) err.message += `; page errors: ${JSON.stringify(diag)}`;
    throw err;
  } finally {
    await ctxA.close().catch(() => {});
    await ctxB.close().catch(() => {});
  }
}

async function main() {
  const server = await startPageServer();
  const url = `http://127.0.0.1:${server.address().port}/`;
  const args = [
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    '--allow-loopback-in-peer-connection',
    '--autoplay-policy=no-user-gesture-required',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1',
    `--ignore-certificate-errors-spki-list=${SPKI}`,
    // No --disable-features here on purpose: Chromium honours only the last
    // one, which would silently drop Playwright's own list.
  ];
  const t0 = Date.now();
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args, timeout: 30_000 });
  console.log(`chromium ${browser.version()} launched in ${Date.now() - t0} ms; pages from ${url}`);
  let failed = 0;
  try {
    for (const sc of SCENARIOS) {
      const s0 = Date.now();
      try {
        const detail = await runScenario(browser, url, sc);
        console.log(`  ok   ${sc.name} (${((Date.now() - s0) / 1000).toFixed(1)}s): ${detail}`);
      } catch (err) {
        failed++;
        console.log(`  FAIL ${sc.name} (${((Date.now() - s0) / 1000).toFixed(1)}s): ${err.message}`);
      }
    }
  } finally {
    await browser.close().catch(() => {});
    server.close();
  }
  console.log(`browser scenarios: ${SCENARIOS.length - failed}/${SCENARIOS.length} ok`);
  process.exit(failed ? 1 : 0);
}

main().catch((err) => {
  console.error(`FAIL browser: ${err.stack || err}`);
  process.exit(1);
});
