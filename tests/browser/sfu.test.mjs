// SFU rooms: the room page and the browser SDK against the server's SFU, in headless Chromium.
//
// Every page is /r/<room> from `icebreaker serve`; the test only opens pages, changes the size of
// a video element, sends data through the SDK, and reads window.icebreaker.stats() (the room
// page's test hook). Scenarios:
//   1. six participants in a room created with ?topology=sfu: each decodes video from all five
//      others (framesDecoded > 0 from getStats and >= 10 frames rendered by
//      requestVideoFrameCallback), over one connection each to the SFU;
//   2. (same room) a data message, text and binary, sent by one reaches all five others with
//      the sender's id as `from`;
//   3. (same room) one participant closes its page and comes back: the others see it leave, then
//      decode its video again (and it decodes theirs);
//   4. three participants (a room of its own, so that the machine's load does not hold the
//      bandwidth estimates down): one subscriber hides one tile (view 0×0: the SFU pauses it, no
//      frames decoded for 2 s), shows one publisher's video at 640×480 CSS px (the top simulcast
//      layer), then at 160×90 (its received videoWidth drops to at most half), then at 640×480
//      again (it rises again), then shows the hidden one again (it resumes): the SDK's `view`
//      messages choose the layer;
//   5. three participants with ?relay=1: the same through TURN (the selected pair's local
//      candidate is a relay candidate on every page);
//   6. an auto room: four participants in a mesh (video everywhere), the fifth one's join turns it
//      into an SFU room and all five then decode each other's video through the SFU;
//   7. an SFU call of two: one's signaling is cut for 2 s while a third joins; it resumes its
//      session (the SFU's offer with the newcomer's tracks is replayed) and all three decode each
//      other; then a network change (`online`) restarts ICE towards the SFU (new ufrag) and
//      video keeps coming;
//   8. ICE-TCP: with UDP to the SFU's port dropped (iptables, in this test's own namespace), two
//      participants still reach the SFU, over TCP to its passive ICE-TCP candidate.
//
// Run by tests/browser/run.sh (own network namespace; a server with its SFU on). Configuration
// from the environment: IB_HTTP_PORT (the server's HTTP listener on 127.0.0.1), IB_SFU_PORT (its
// SFU port, for scenario 8), CHROMIUM_PATH
// (default /usr/bin/chromium), and optionally IB_ONLY (comma-separated scenario numbers; 2 and
// 3 need 1).

import { chromium } from 'playwright-core';
import { chromiumArgs, nonce, sleep, waitFor } from './lib.mjs';

const env = process.env;
const HTTP_PORT = env.IB_HTTP_PORT;
if (!HTTP_PORT) {
  console.error('FAIL sfu: environment variable IB_HTTP_PORT is not set (run tests/browser/run.sh)');
  process.exit(2);
}
const BASE = `http://127.0.0.1:${HTTP_PORT}`;
const CHROMIUM = env.CHROMIUM_PATH || '/usr/bin/chromium';
const SCENARIO_TIMEOUT_MS = 45_000;
const TOTAL_TIMEOUT_MS = 170_000;
// 1024 px wide: three 320-px tiles per row (the page's grid minimum), two rows fit in 900 px,
// so every tile is on screen (an off-screen tile is paused by the SFU).
const VIEWPORT = { width: 1024, height: 900 };

const killer = setTimeout(() => {
  console.error(`FAIL sfu: overall timeout of ${TOTAL_TIMEOUT_MS / 1000}s exceeded`);
  process.exit(1);
}, TOTAL_TIMEOUT_MS);
killer.unref();



/**
 * Opens one participant: a new browser context (a new user) on /r/ROOM?QUERY.
 * @returns {Promise<{page, ctx, name, diag, id}>}
 */
async function participant(browser, room, name, query) {
  const ctx = await browser.newContext({ viewport: VIEWPORT });
  const page = await ctx.newPage();
  const diag = [];
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') diag.push(`${name} console.${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => diag.push(`${name} pageerror: ${e}`));
  await page.goto(`${BASE}/r/${room}?${query ? query + '&' : ''}name=${encodeURIComponent(name)}`);
  await page.waitForFunction(() => window.icebreaker?.client?.peerId, null, { timeout: 15_000 });
  const id = await page.evaluate(() => window.icebreaker.client.peerId);
  return { page, ctx, name, diag, id };
}

const snapshot = (p) => p.page.evaluate(() => window.icebreaker.stats());

/**
 * Waits until every page has exactly the others as peers and decodes video from each of them
 * (framesDecoded > 0, >= `frames` frames rendered, plus `extra(peerEntry, pageIndex)`), with
 * the given topology on every page.
 */
async function waitForVideo(parts, deadline, { topology = 'sfu', frames = () => 10, extra = () => true } = {}) {
  const n = parts.length;
  const res = await waitFor(`video from all ${n - 1} other(s) on each of ${n} pages (${topology})`, deadline, async () => {
    const snaps = await Promise.all(parts.map(snapshot));
    const info = snaps.map((s, i) => ({
      who: `${parts[i].name}/${s.topology}`,
      peers: s.peers.map((p) => `${p.name}:${p.connectionState}/dec=${p.framesDecoded}/rvfc=${p.framesRendered}/w=${p.videoWidth}`),
    }));
    const ids = new Set(parts.map((p) => p.id));
    const ok = snaps.every(
      (s, i) =>
        s.topology === topology &&
        s.peers.length === n - 1 &&
        s.peers.every((p) => ids.has(p.id) && p.framesDecoded > 0 && p.framesRendered >= frames(p, i) && extra(p, i)),
    );
    return { ok, info, snaps };
  }, 400);
  return res.snaps;
}

async function closeAll(parts) {
  await Promise.all(parts.map((p) => p.ctx.close().catch(() => {})));
}

function withDiag(err, parts) {
  const d = parts.flatMap((p) => p.diag);
  if (d.length) err.message += `; page diagnostics: ${JSON.stringify(d.slice(0, 10))}`;
  return err;
}

/** Joins participants one by one (the first creates the room with `query`). */
async function joinAll(browser, room, names, query) {
  const parts = [];
  try {
    for (const name of names) parts.push(await participant(browser, room, name, query));
  } catch (err) {
    await closeAll(parts);
    throw err;
  }
  return parts;
}

/** Total SFU connections on the pages: one RTCPeerConnection each, none in the mesh map. */
async function connectionsPerPage(parts) {
  return Promise.all(
    parts.map((p) => p.page.evaluate(() => ({ sfu: !!window.icebreaker.call.sfu, mesh: window.icebreaker.call.links.size }))),
  );
}

/** State shared by scenarios 1-4 (one six-participant room). */
const six = { parts: /** @type {any[]} */ ([]), room: '' };

const needSix = () => {
  if (six.parts.length !== 6) throw new Error('needs scenario 1 (the six-participant room)');
};

/** The size of subscriber S's video element showing peer `id` (CSS px), via inline style. */
const setVideoSize = (p, id, size) =>
  p.page.evaluate(
    ({ id, size }) => {
      const v = document.querySelector(`.tile[data-peer="${id}"] video`);
      if (!v) throw new Error(`no tile for ${id}`);
      v.style.width = size ? `${size[0]}px` : '';
      v.style.height = size ? `${size[1]}px` : '';
    },
    { id, size },
  );

/** Diagnostics: what a page publishes to the SFU (per simulcast layer) and its send estimate. */
const publishDiag = (p) =>
  p.page.evaluate(async () => {
    const pc = window.icebreaker.call.sfu?.pc;
    if (!pc) return 'no SFU connection';
    const report = await pc.getStats();
    const out = [];
    report.forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video') {
        out.push(`${s.rid ?? '-'}: ${s.frameWidth ?? 0}x${s.frameHeight ?? 0} ${Math.round(s.framesPerSecond ?? 0)}fps target ${Math.round((s.targetBitrate ?? 0) / 1000)}k limit ${s.qualityLimitationReason}`);
      }
      if (s.type === 'candidate-pair' && s.nominated && s.availableOutgoingBitrate) out.push(`estimate out ${Math.round(s.availableOutgoingBitrate / 1000)}k`);
    });
    return out.join('; ');
  });

const videoWidthOf = async (p, id) => (await snapshot(p)).peers.find((x) => x.id === id)?.videoWidth ?? 0;

/**
 * Frames decoded by `p` from each of `ids`, from the page's per-peer stats as of now: the SDK
 * polls them every second, so this waits for its next `stats` event of each of `ids` (a count
 * read from the last snapshot can be up to a second old, e.g. from before a tile was hidden).
 */
const framesOf = (p, ids) =>
  p.page.evaluate(
    (ids) =>
      new Promise((resolve, reject) => {
        const got = new Map();
        const off = window.icebreaker.call.on('stats', (s) => {
          if (!ids.includes(s.peer)) return;
          got.set(s.peer, s.framesDecoded);
          if (got.size < ids.length) return;
          off();
          clearTimeout(timer);
          resolve(ids.map((id) => got.get(id)));
        });
        const timer = setTimeout(() => {
          off();
          reject(new Error(`no stats within 5 s for ${ids.filter((id) => !got.has(id)).join(',')}`));
        }, 5000);
      }),
    ids,
  );

/**
 * Diagnostics: what the SFU forwards to `p` (its admin view, loopback only): per subscription
 * the publisher's name, kind, mid, layer forwarded (`-`: none, paused) and the view it knows;
 * `p`'s bandwidth estimate; the video layers each other participant publishes.
 */
async function sfuSubscriptions(p, parts) {
  try {
    const room = await p.page.evaluate(() => window.icebreaker.client.room);
    const res = await fetch(`${BASE}/admin/sfu?room=${encodeURIComponent(room)}`);
    const body = await res.json();
    const me = body.participants?.find((x) => x.peer === p.id);
    if (!me) return `not in the SFU's room ${room}`;
    const name = (id) => parts.find((x) => x.id === id)?.name ?? id;
    const subs = me.receiving
      .map((r) => `${name(r.publisher)}/${r.kind}/${r.mid ?? '-'}:${r.layer ?? '-'}@${r.view ? r.view.join('x') : '?'}`)
      .join(', ');
    const layers = body.participants
      .filter((x) => x.peer !== p.id)
      .map((x) => `${name(x.peer)} ${x.publishing.filter((t) => t.kind === 'video').map((t) => t.layers.map(([rid, w, h, bps]) => `${rid || '-'}:${w}x${h}/${Math.round(bps / 1000)}k`).join(' ')).join('; ')}`)
      .join(', ');
    const est = me.bandwidth_estimate == null ? '?' : `${Math.round(me.bandwidth_estimate / 1000)}k`;
    return `${subs}; its estimate ${est}, ${Math.round(me.bitrate_out / 1000)}k sent to it; video layers arriving: ${layers}`;
  } catch (err) {
    return `admin view unavailable: ${err.message}`;
  }
}

/**
 * Scenario 4 (participants sub, pub, other): `sub` hides `other`'s tile (view 0×0: the SFU
 * pauses it), shows `pub` big, small, big again, then shows `other` again (it resumes).
 */
async function resizeSteps(parts, deadline) {
  const [sub, pub, other] = parts;
  const hidden = parts.filter((p) => p !== sub && p !== pub).map((p) => p.id);
  const tHide = Date.now();
  await sub.page.evaluate(() => window.__views?.push(`hide@${Date.now() - window.__views.t0}`));
  for (const id of hidden) await sub.page.evaluate((id) => (document.querySelector(`.tile[data-peer="${id}"] video`).style.display = 'none'), id);
  await setVideoSize(sub, pub.id, [640, 480]);
  const big = await waitFor('the top layer for a 640×480 view', Math.min(deadline, Date.now() + 15_000), async () => {
    const w = await videoWidthOf(sub, pub.id);
    return { ok: w > 400, info: w, w };
  });
  const w0 = big.w;
  // Paused: no new frames from the hidden tile over (at least) 2 s of fresh stats.
  const tBig = Date.now() - tHide;
  const f0 = await framesOf(sub, hidden);
  await sleep(2000);
  const f1 = await framesOf(sub, hidden);
  if (f1.some((f, i) => f > f0[i] + 2)) {
    throw new Error(
      `hidden videos still decode frames: ${f0} → ${f1} (the top layer came ${tBig} ms after hiding)`,
    );
  }
  await setVideoSize(sub, pub.id, [160, 90]);
  const t1 = Date.now();
  const small = await waitFor(`videoWidth ≤ ${w0 / 2} for a 160×90 view`, Math.min(deadline, t1 + 10_000), async () => {
    const w = await videoWidthOf(sub, pub.id);
    return { ok: w > 0 && w <= w0 / 2, info: w, w };
  });
  const down = Date.now() - t1;
  await setVideoSize(sub, pub.id, [640, 480]);
  const t2 = Date.now();
  // The way back up waits for the subscriber's bandwidth estimate to ramp up (str0m probes), which
  // took from 0.25 s to over 10 s on this 2-core machine under the load of the room.
  const back = await waitFor(`videoWidth > ${small.w} again for a 640×480 view`, Math.min(deadline, t2 + 20_000), async () => {
    const w = await videoWidthOf(sub, pub.id);
    return { ok: w > small.w, info: w, w };
  });
  const up = Date.now() - t2;
  // The other subscriber, with its 320-px tile, meanwhile.
  const otherW = await videoWidthOf(other, pub.id);
  for (const id of hidden) await sub.page.evaluate((id) => (document.querySelector(`.tile[data-peer="${id}"] video`).style.display = ''), id);
  const f2 = await framesOf(sub, hidden);
  await waitFor('the hidden video resumes', Math.min(deadline, Date.now() + 10_000), async () => {
    const f3 = await framesOf(sub, hidden);
    return { ok: f3.every((f, i) => f > f2[i] + 5), info: { before: f2, now: f3 } };
  });
  return `${sub.name} sees ${pub.name} at ${w0} px → ${small.w} px in ${down} ms → ${back.w} px in ${up} ms; ${other.name} (320-px tile) meanwhile at ${otherW} px; the hidden tile paused (${f0} → ${f1} frames in 2 s) and resumed`;
}

const SCENARIOS = [
  {
    name: 'six participants (?topology=sfu): each decodes all five others through the SFU',
    async run(browser) {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      six.room = `sfu6-${nonce()}`;
      six.parts = await joinAll(browser, six.room, ['P1', 'P2', 'P3', 'P4', 'P5', 'P6'], 'topology=sfu');
      try {
        const snaps = await waitForVideo(six.parts, deadline, { extra: (p) => p.connectionState === 'connected' });
        const conns = await connectionsPerPage(six.parts);
        if (!conns.every((c) => c.sfu && c.mesh === 0)) throw new Error(`expected one SFU connection and no mesh link per page: ${JSON.stringify(conns)}`);
        const widths = snaps.flatMap((s) => s.peers.map((p) => p.videoWidth));
        return `30 streams decoded over 6 SFU connections; frames decoded min ${Math.min(...snaps.flatMap((s) => s.peers.map((p) => p.framesDecoded)))}; received widths ${[...new Set(widths)].sort((a, b) => a - b).join('/')}; path ${snaps[0].peers[0].path} ${snaps[0].peers[0].local?.type}/${snaps[0].peers[0].remote?.type} (${snaps[0].peers[0].remote?.protocol} ${snaps[0].peers[0].remote?.port})`;
      } catch (err) {
        const parts = six.parts;
        six.parts = [];
        await closeAll(parts);
        throw withDiag(err, parts);
      }
    },
  },
  {
    name: 'data channel: a text and a binary message from one reach the five others with its id',
    async run() {
      needSix();
      const deadline = Date.now() + 15_000;
      const sender = six.parts[2];
      const others = six.parts.filter((p) => p !== sender);
      const token = `hello-${nonce()}`;
      await sender.page.evaluate((t) => {
        window.icebreaker.call.sendData(t);
        window.icebreaker.call.sendData(new Uint8Array([1, 2, 3, 4, 5]).buffer);
      }, token);
      const r = await waitFor('the message on every other page', deadline, async () => {
        const got = await Promise.all(others.map((p) => p.page.evaluate(() => window.icebreaker.data.slice())));
        const ok = got.every(
          (msgs) =>
            msgs.some((m) => m.data === token && m.from === sender.id) &&
            msgs.some((m) => m.data && m.data.binary === 5 && m.from === sender.id),
        );
        return { ok, info: got.map((msgs, i) => `${others[i].name}: ${JSON.stringify(msgs.slice(-3))}`), got };
      });
      const own = await sender.page.evaluate(() => window.icebreaker.data.length);
      if (own !== 0) throw new Error(`the sender received ${own} message(s) of its own`);
      const dups = r.got.filter((msgs) => msgs.filter((m) => m.data === token).length !== 1).length;
      if (dups) throw new Error(`${dups} page(s) got the text message more than once`);
      const speakers = (await Promise.all(six.parts.map(snapshot))).map((s) => s.speaker);
      return `"${token}" and 5 bytes from ${sender.name} (${sender.id}) on all 5 others, once each; active speaker per page: ${speakers.join(',')}`;
    },
  },
  {
    name: 'one leaves (page closed) and rejoins: the others see it go, then decode it again',
    async run(browser) {
      needSix();
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const leaver = six.parts[5];
      const stay = six.parts.slice(0, 5);
      try {
        await leaver.page.close({ runBeforeUnload: true });
        await leaver.ctx.close().catch(() => {});
        six.parts = stay;
        const t0 = Date.now();
        await waitFor(`${leaver.name} gone on the 5 other pages`, deadline, async () => {
          const snaps = await Promise.all(stay.map(snapshot));
          const ok = snaps.every((s) => s.peers.length === 4 && !s.peers.some((p) => p.id === leaver.id));
          return { ok, info: snaps.map((s) => s.peers.map((p) => p.name)) };
        });
        const gone = Date.now() - t0;
        const back = await participant(browser, six.room, `${leaver.name}b`, 'topology=sfu');
        six.parts = [...stay, back];
        // Frames rendered count from the new tile; the stayers' old tiles keep their counts.
        const snaps = await waitForVideo(six.parts, deadline, { extra: (p) => p.connectionState === 'connected' });
        const seen = snaps.slice(0, 5).map((s) => s.peers.find((p) => p.id === back.id)?.framesDecoded);
        return `gone everywhere ${gone} ms after the page closed; back as ${back.id} (was ${leaver.id}); the others decode it (${seen.join('/')} frames) and it decodes all 5`;
      } catch (err) {
        throw withDiag(err, six.parts);
      } finally {
        await closeAll(six.parts);
        six.parts = [];
      }
    },
  },
  {
    name: 'views: a hidden tile pauses; 640×480 → 160×90 (videoWidth ≤ half) → 640×480 (rises); it resumes',
    async run(browser) {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const parts = await joinAll(browser, `sfuview-${nonce()}`, ['V1', 'V2', 'V3'], 'topology=sfu');
      const sub = parts[0];
      try {
        await waitForVideo(parts, deadline, { extra: (p) => p.connectionState === 'connected' });
        // The `view`s the subscriber sends (ms after this hook), for the diagnostics.
        await sub.page.evaluate(() => {
          const c = window.icebreaker.client;
          window.__views = Object.assign([], { t0: Date.now() });
          const send = c.sendSfu.bind(c);
          c.sendSfu = (d) => {
            if (d.kind === 'view') window.__views.push(`${d.mid}:${d.width}x${d.height}@${Date.now() - window.__views.t0}`);
            send(d);
          };
        });
        return await resizeSteps(parts, deadline);
      } catch (err) {
        const views = await sub.page.evaluate(() => window.__views).catch(() => null);
        err.message += `; views sent by ${sub.name}: ${JSON.stringify(views)}; ${parts[1]?.name} publishes: ${await publishDiag(parts[1]).catch((e) => e.message)}; the SFU forwards to ${sub.name}: ${await sfuSubscriptions(sub, parts)}`;
        throw withDiag(err, parts);
      } finally {
        await closeAll(parts);
      }
    },
  },
  {
    name: '?relay=1: three participants reach the SFU through TURN (local candidate relay)',
    async run(browser) {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const parts = await joinAll(browser, `sfurelay-${nonce()}`, ['R1', 'R2', 'R3'], 'topology=sfu&relay=1');
      try {
        const snaps = await waitForVideo(parts, deadline, {
          extra: (p) => p.path === 'turn' && p.local?.type === 'relay',
        });
        const s = snaps[0].peers[0];
        return `all 6 streams decoded; R1's pair: local relay/${s.local.relayProtocol} ${s.local.address}:${s.local.port} → remote ${s.remote?.type}/${s.remote?.protocol} ${s.remote?.address}:${s.remote?.port}`;
      } catch (err) {
        throw withDiag(err, parts);
      } finally {
        await closeAll(parts);
      }
    },
  },
  {
    name: 'auto room: a mesh of four becomes an SFU room when the fifth joins; all five decode each other',
    async run(browser) {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS + 10_000;
      const room = `sfuauto-${nonce()}`;
      const parts = await joinAll(browser, room, ['A1', 'A2', 'A3', 'A4'], 'topology=auto');
      try {
        await waitForVideo(parts, deadline, { topology: 'mesh' });
        const meshConns = await connectionsPerPage(parts);
        parts.push(await participant(browser, room, 'A5', 'topology=auto'));
        // Frames rendered so far on every tile (mesh); the SFU's must come on top of them.
        await waitFor('topology sfu on all 5 pages', deadline, async () => {
          const snaps = await Promise.all(parts.map(snapshot));
          return { ok: snaps.every((s) => s.topology === 'sfu'), info: snaps.map((s) => s.topology) };
        });
        const base = (await Promise.all(parts.map(snapshot))).map((s) => new Map(s.peers.map((p) => [p.id, p.framesRendered])));
        const snaps = await waitForVideo(parts, deadline, {
          frames: (p, i) => (base[i].get(p.id) ?? 0) + 10,
          extra: (p) => p.statsTopology === 'sfu' && p.connectionState === 'connected',
        });
        const conns = await connectionsPerPage(parts);
        if (!conns.every((c) => c.sfu && c.mesh === 0)) throw new Error(`mesh links left after the switch: ${JSON.stringify(conns)}`);
        return `mesh of 4 (${meshConns.map((c) => c.mesh).join('/')} links per page) → SFU; 20 streams decoded after the switch (min ${Math.min(...snaps.flatMap((s) => s.peers.map((p) => p.framesDecoded)))} frames)`;
      } catch (err) {
        throw withDiag(err, parts);
      } finally {
        await closeAll(parts);
      }
    },
  },
  {
    name: 'SFU call: signaling cut while a third joins → resume, all decode; ICE restart on `online`',
    async run(browser) {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const room = `sfuresume-${nonce()}`;
      const parts = await joinAll(browser, room, ['S1', 'S2'], 'topology=sfu');
      const [a] = parts;
      try {
        await waitForVideo(parts, deadline, { extra: (p) => p.connectionState === 'connected' });
        await a.page.evaluate(() => {
          window.__events = [];
          const c = window.icebreaker.client;
          c.on('resumed', () => window.__events.push('resumed'));
          c.on('joined', () => window.__events.push('joined'));
          c._debugDropConnection(2000);
        });
        parts.push(await participant(browser, room, 'S3', 'topology=sfu'));
        await waitFor('S1 resumed', deadline, async () => {
          const st = await a.page.evaluate(() => ({ state: window.icebreaker.client.state, peer: window.icebreaker.client.peerId, events: window.__events }));
          return { ok: st.state === 'open' && st.events.includes('resumed'), info: st };
        });
        const ev = await a.page.evaluate(() => ({ peer: window.icebreaker.client.peerId, events: window.__events }));
        if (ev.peer !== a.id || ev.events.includes('joined')) throw new Error(`S1 did not resume its session: ${JSON.stringify(ev)}`);
        await waitForVideo(parts, deadline, { extra: (p) => p.connectionState === 'connected' });
        const ufrag = () => a.page.evaluate(() => window.icebreaker.call.sfu.pc.localDescription?.sdp.match(/a=ice-ufrag:(\S+)/)?.[1] ?? null);
        const before = await ufrag();
        const frames = (await snapshot(parts[1])).peers.find((p) => p.id === a.id).framesRendered;
        await a.page.evaluate(() => window.dispatchEvent(new Event('online')));
        await waitFor('a new ufrag and video still flowing after the ICE restart', deadline, async () => {
          const now = await ufrag();
          const s1 = await snapshot(a);
          const s2 = await snapshot(parts[1]);
          const f = s2.peers.find((p) => p.id === a.id)?.framesRendered ?? 0;
          const ok = now !== before && s1.peers.every((p) => p.connectionState === 'connected') && f > frames + 10;
          return { ok, info: { before, now, states: s1.peers.map((p) => p.connectionState), frames, f } };
        });
        return `S1 resumed as ${ev.peer} and decodes S3, which joined during the cut; ICE restarted (ufrag ${before} → ${await ufrag()}), S2 still decodes S1`;
      } catch (err) {
        throw withDiag(err, parts);
      } finally {
        await closeAll(parts);
      }
    },
  },
  {
    name: 'ICE-TCP: UDP to the SFU dropped, two participants connect over TCP',
    async run(browser) {
      const port = env.IB_SFU_PORT;
      if (!port) throw new Error('IB_SFU_PORT is not set');
      const { execFileSync } = await import('node:child_process');
      const rule = ['OUTPUT', '-o', 'lo', '-p', 'udp', '--dport', String(port), '-j', 'DROP'];
      execFileSync('iptables', ['-I', ...rule]);
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      let parts = [];
      try {
        parts = await joinAll(browser, `sfutcp-${nonce()}`, ['T1', 'T2'], 'topology=sfu');
        const snaps = await waitForVideo(parts, deadline, {
          extra: (p) => p.connectionState === 'connected' && p.remote?.protocol === 'tcp',
        });
        const s = snaps[0].peers[0];
        return `both decode each other; T1's pair: local ${s.local?.type}/${s.local?.protocol} → remote ${s.remote?.type}/${s.remote?.protocol} ${s.remote?.address}:${s.remote?.port}`;
      } catch (err) {
        throw withDiag(err, parts);
      } finally {
        await closeAll(parts);
        execFileSync('iptables', ['-D', ...rule]);
      }
    },
  },
];

async function main() {
  const args = chromiumArgs();
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
          sleep(SCENARIO_TIMEOUT_MS + 15_000).then(() => {
            throw new Error('scenario timeout');
          }),
        ]);
        console.log(`  PASS ${i + 1}. ${sc.name} (${((Date.now() - s0) / 1000).toFixed(1)}s): ${detail}`);
      } catch (err) {
        failed++;
        console.log(`  FAIL ${i + 1}. ${sc.name} (${((Date.now() - s0) / 1000).toFixed(1)}s): ${err.message}`);
      }
    }
  } finally {
    await closeAll(six.parts);
    await browser.close().catch(() => {});
  }
  console.log(`sfu scenarios: ${ran - failed}/${ran} passed`);
  process.exit(failed || !ran ? 1 : 0);
}

main().catch((err) => {
  console.error(`FAIL sfu: ${err.stack || err}`);
  process.exit(1);
});
