// Dialing a phone into a room (PROTOCOL.md "Phones in a room"), in headless Chromium, against a
// server started with --sip-upstream (sipp, the phone) and --sip-dial true.
//
// The room page's "Call a phone" form calls `call.dial(uri)`; the server (a B2BUA) calls sipp,
// and once sipp answers, the phone joins the room as a participant: a phone tile (no video, its
// number, "Hang up"), a WebRTC connection from each page to it (ICE-lite on the SFU's port),
// and audio both ways: the pages' audio is mixed for the phone, sipp echoes it back (-rtp_echo),
// and every page receives it on its connection to the phone (inbound-rtp audio, read through the
// SDK's stats: `audioPacketsReceived`). Scenarios:
//   A. one page: a bad URI fails with the server's reason; then the form dials +1 555 0100 →
//      calling/ringing/answered, the phone tile, ≥ 50 audio packets from the phone and growing;
//      "Hang up" → the tile goes, the status says ended, sipp ends its scenario (exit 0);
//   B. two pages in the same room: the first dials, both get the phone's tile and its audio
//      (the mixer: the phone hears both, both hear it); a third page that joins while the
//      phone is in the room (`joined.peers`) gets it too; the dialer hangs up;
//   C. the phone hangs up by itself (tests/sip/uas-hangs-up.xml): its tile goes away, the
//      dialer's status says the call ended;
//   D. a server without --sip-dial: the dial fails with its `bad_message`, the status line
//      gives the server's reason.
//
// sipp is started here, once per scenario (`-m 1`: it exits after one call, status 0 when the
// call went as its scenario says), on IB_DIAL_SIPP_PORT (the server's --sip-upstream) with RTP
// on IB_DIAL_SIPP_MEDIA_PORT.
//
// Run by tests/browser/run.sh (own network namespace, its own server). Configuration from the
// environment: IB_DIAL_HTTP_PORT, IB_DIAL_OFF_HTTP_PORT (a server without --sip-dial), IB_DIAL_SIPP_PORT, IB_DIAL_SIPP_MEDIA_PORT, IB_DIAL_SIP_DIR
// (tests/sip), CHROMIUM_PATH (default /usr/bin/chromium), IB_ONLY (scenario letters, e.g. A,C).

import { spawn } from 'node:child_process';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { chromiumArgs, nonce, sleep, waitFor } from './lib.mjs';

const env = process.env;
const HTTP_PORT = env.IB_DIAL_HTTP_PORT;
const SIPP_PORT = env.IB_DIAL_SIPP_PORT;
const MEDIA_PORT = env.IB_DIAL_SIPP_MEDIA_PORT;
const SIP_DIR = env.IB_DIAL_SIP_DIR;
if (!HTTP_PORT || !SIPP_PORT || !MEDIA_PORT || !SIP_DIR) {
  console.error('FAIL dial: IB_DIAL_HTTP_PORT, IB_DIAL_SIPP_PORT, IB_DIAL_SIPP_MEDIA_PORT and IB_DIAL_SIP_DIR must be set (run tests/browser/run.sh)');
  process.exit(2);
}
const BASE = `http://127.0.0.1:${HTTP_PORT}`;
const OFF_BASE = env.IB_DIAL_OFF_HTTP_PORT ? `http://127.0.0.1:${env.IB_DIAL_OFF_HTTP_PORT}` : null;
const CHROMIUM = env.CHROMIUM_PATH || '/usr/bin/chromium';
const SCENARIO_TIMEOUT_MS = 30_000;
const TOTAL_TIMEOUT_MS = 85_000;
/** Audio packets a page must have received from the phone (20 ms each: 1 s of audio). */
const MIN_PACKETS = 50;

/** @type {Set<import('node:child_process').ChildProcess>} sipp processes still running */
const sipps = new Set();
function stopSipps() {
  for (const c of sipps) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}

const killer = setTimeout(() => {
  console.error(`FAIL dial: overall timeout of ${TOTAL_TIMEOUT_MS / 1000}s exceeded`);
  stopSipps();
  process.exit(1);
}, TOTAL_TIMEOUT_MS);
killer.unref();

/**
 * sipp as the phone for one call: answers (PCMU), echoes RTP, exits after the call.
 * @param {string} scenario file in tests/sip
 */
async function startSipp(scenario) {
  const args = ['-sf', path.join(SIP_DIR, scenario), '-i', '127.0.0.1', '-p', SIPP_PORT, '-mp', MEDIA_PORT,
    '-rtp_echo', '-t', 'u1', '-nostdin', '-m', '1', '-timeout', '40s'];
  const child = spawn('sipp', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  sipps.add(child);
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-2000);
  });
  /** @type {Promise<{ code: number | null, signal: string | null }>} */
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      sipps.delete(child);
      resolve({ code, signal });
    });
    child.on('error', (err) => {
      sipps.delete(child);
      stderr += String(err);
      resolve({ code: -1, signal: null });
    });
  });
  // sipp binds its ports at once; give it a moment.
  await sleep(300);
  if (child.exitCode !== null) throw new Error(`sipp exited at once (${child.exitCode}): ${stderr}`);
  return {
    child,
    exited,
    stderr: () => stderr,
    /** Waits for sipp to end its scenario; throws unless it exits with status 0. */
    async ok(ms = 8000) {
      const r = await Promise.race([exited, sleep(ms).then(() => null)]);
      if (!r) throw new Error(`sipp did not end its scenario within ${ms} ms`);
      if (r.code !== 0) throw new Error(`sipp exited with ${r.code ?? r.signal}: ${stderr}`);
      return r;
    },
    stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

/** One participant: a new browser context (a new user) on /r/ROOM (a mesh room). */
async function participant(browser, room, name, base = BASE) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  const diag = [];
  page.on('console', (m) => {
    if (m.type() === 'error') diag.push(`${name} console.error: ${m.text()}`);
  });
  page.on('pageerror', (e) => diag.push(`${name} pageerror: ${e}`));
  await page.goto(`${base}/r/${room}?topology=mesh&name=${encodeURIComponent(name)}`);
  await page.waitForFunction(() => window.icebreaker?.client?.peerId && window.icebreaker.client.state === 'open', null, { timeout: 15_000 });
  // Every member event the SDK sees, to check a tile that comes and goes quickly.
  await page.evaluate(() => {
    window.__members = [];
    const c = window.icebreaker.client;
    c.on('peer-joined', ({ peer }) => window.__members.push({ ev: 'joined', id: peer.id, name: peer.name, phone: !!peer.phone }));
    c.on('peer-left', ({ peer, reason }) => window.__members.push({ ev: 'left', id: peer, reason }));
  });
  return { page, ctx, name, diag };
}

const snapshot = (p) => p.page.evaluate(() => window.icebreaker.stats());
const dials = (p) => p.page.evaluate(() => window.icebreaker.dials.map((d) => ({ ...d })));
const phonePeers = (s) => s.peers.filter((p) => p.phone);

/** Dials `text` with the page's form (typed, then "Call"). */
async function dialWithForm(p, text) {
  await p.page.fill('#dial-uri', text);
  await p.page.click('#dial-button');
}

/** Waits until the page has the phone's tile and a connection to it, and returns its id. */
async function waitForPhoneTile(p, deadline) {
  const r = await waitFor(`${p.name}: a phone tile`, deadline, async () => {
    const s = await snapshot(p);
    const ph = phonePeers(s);
    return { ok: ph.length === 1, info: { peers: s.peers.map((x) => `${x.name}:${x.phone}:${x.connectionState}`), dialStatus: s.dialStatus }, id: ph[0]?.id };
  });
  return r.id;
}

/**
 * Waits until the page's connection to the phone has received ≥ MIN_PACKETS audio packets and
 * the count still grows; returns the counts.
 */
async function waitForPhoneAudio(p, phone, deadline) {
  const first = await waitFor(`${p.name}: ≥ ${MIN_PACKETS} audio packets from the phone`, deadline, async () => {
    const s = await snapshot(p);
    const ph = s.peers.find((x) => x.id === phone);
    return { ok: !!ph && ph.audioPacketsReceived >= MIN_PACKETS, info: ph && { conn: ph.connectionState, ice: ph.iceState, packets: ph.audioPacketsReceived, level: ph.audioLevel, frames: ph.framesDecoded }, n: ph?.audioPacketsReceived ?? 0 };
  }, 250);
  const second = await waitFor(`${p.name}: audio from the phone keeps coming`, deadline, async () => {
    const s = await snapshot(p);
    const ph = s.peers.find((x) => x.id === phone);
    const n = ph?.audioPacketsReceived ?? 0;
    return { ok: n >= first.n + 25, info: { before: first.n, now: n }, n, level: ph?.audioLevel ?? null, video: ph?.framesDecoded ?? 0 };
  }, 250);
  if (second.video !== 0) throw new Error(`${p.name}: video frames decoded from the phone (${second.video})`);
  // Not silence: the phone echoes the pages' beeps (fake microphone) back through the mix.
  const heard = await waitFor(`${p.name}: the phone's audio is not silence`, deadline, async () => {
    const s = await snapshot(p);
    const level = s.peers.find((x) => x.id === phone)?.audioLevel ?? null;
    return { ok: level !== null && level > 0.01, info: level, level };
  }, 250);
  return { first: first.n, second: second.n, level: heard.level };
}

/** What the phone's tile looks like on the page: number, no video shown, the hang-up button. */
async function phoneTile(p, phone) {
  return p.page.evaluate((id) => {
    const t = document.querySelector(`.tile[data-peer="${id}"]`);
    if (!t) return null;
    const v = t.querySelector('video');
    const b = t.querySelector('button.hangup');
    return {
      phoneClass: t.classList.contains('phone'),
      name: t.querySelector('.label .name')?.textContent ?? null,
      placeholder: t.querySelector('.placeholder')?.textContent ?? null,
      videoShown: !!v && getComputedStyle(v).display !== 'none',
      hangupShown: !!b && !b.hidden && getComputedStyle(b).display !== 'none',
    };
  }, phone);
}

const dialStatus = (p) => p.page.evaluate(() => (document.getElementById('dial-status').hidden ? '' : document.getElementById('dial-status').textContent));

async function closeAll(parts) {
  for (const p of parts) await p.ctx.close().catch(() => {});
}

function withDiag(err, parts, sipp) {
  const d = parts.flatMap((p) => p.diag);
  if (d.length) err.message += `; page diagnostics: ${JSON.stringify(d.slice(0, 10))}`;
  if (sipp && sipp.stderr()) err.message += `; sipp stderr: ${sipp.stderr().slice(-500)}`;
  return err;
}

const SCENARIOS = [
  {
    key: 'A',
    name: 'one page dials a phone: tile, audio from the phone, "Hang up"',
    async run(browser) {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const parts = [];
      const sipp = await startSipp('uas.xml');
      try {
        const a = await participant(browser, `dial-${nonce()}`, 'Ada');
        parts.push(a);
        // The form refuses what is neither a number nor a SIP address, without asking the server.
        await dialWithForm(a, 'hello there');
        const refused = await dialStatus(a);
        if (!/Enter a phone number/.test(refused)) throw new Error(`the form took "hello there": status "${refused}"`);
        // The server refuses a URI it cannot call: the SDK's promise rejects with its reason.
        const bad = await a.page.evaluate(() =>
          window.icebreaker.call.dial('mailto:nobody@example.org').then(
            (v) => ({ ok: true, v }),
            (e) => ({ ok: false, name: e.name, code: e.code, reason: e.reason }),
          ),
        );
        if (bad.ok || bad.name !== 'DialError' || !bad.reason) throw new Error(`dialing mailto: did not fail with a reason: ${JSON.stringify(bad)}`);
        // The same through the form: the status line gives the server's reason.
        await dialWithForm(a, 'tel:abc');
        const badForm = await waitFor('the form shows why tel:abc failed', deadline, async () => {
          const t = await dialStatus(a);
          return { ok: /^Could not call .+: .+/.test(t), info: t, t };
        });

        await dialWithForm(a, '+1 555 0100');
        const phone = await waitForPhoneTile(a, deadline);
        const audio = await waitForPhoneAudio(a, phone, deadline);
        const all = await dials(a);
        const callId = all.find((d) => d.state === 'answered')?.id;
        const states = all.filter((d) => d.id && d.id === callId).map((d) => d.state);
        const tile = await waitFor('the phone tile: number, no video, "Hang up"', deadline, async () => {
          const t = await phoneTile(a, phone);
          return { ok: !!t && t.phoneClass && t.name === '+15550100' && !t.videoShown && t.hangupShown, info: t, t };
        });
        const answeredStatus = await dialStatus(a);
        for (const s of ['calling', 'ringing', 'answered']) {
          if (!states.includes(s)) throw new Error(`dial states ${JSON.stringify(states)}: no ${s}`);
        }
        const conn = (await snapshot(a)).peers.find((x) => x.id === phone);

        await a.page.click(`.tile[data-peer="${phone}"] button.hangup`);
        await waitFor('the phone tile gone and the call ended', deadline, async () => {
          const s = await snapshot(a);
          const d = await dials(a);
          return { ok: phonePeers(s).length === 0 && d.some((x) => x.state === 'ended'), info: { peers: s.peers.map((x) => x.name), dials: d.map((x) => x.state), status: s.dialStatus } };
        });
        const endedStatus = await dialStatus(a);
        if (!/ended/.test(endedStatus)) throw new Error(`status after hanging up: "${endedStatus}"`);
        await sipp.ok();
        return `bad URI refused (${bad.code}: ${bad.reason}), form: "${badForm.t}"; states ${states.join('→')}; "${answeredStatus}"; tile ${JSON.stringify(tile.t)}; connection ${conn?.connectionState} ${conn?.path}; audio packets ${audio.first}→${audio.second} (level ${audio.level?.toFixed(3)}); after "Hang up": "${endedStatus}", sipp exited 0`;
      } catch (err) {
        throw withDiag(err, parts, sipp);
      } finally {
        sipp.stop();
        await closeAll(parts);
      }
    },
  },
  {
    key: 'B',
    name: 'two pages in the room, one dials: both get the phone and its audio (mixer); a third joins later',
    async run(browser) {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const parts = [];
      const sipp = await startSipp('uas.xml');
      try {
        const room = `dial2-${nonce()}`;
        const a = await participant(browser, room, 'Ada');
        parts.push(a);
        const b = await participant(browser, room, 'Bob');
        parts.push(b);
        await waitFor('the two pages connected to each other', deadline, async () => {
          const snaps = await Promise.all(parts.map(snapshot));
          return { ok: snaps.every((s) => s.peers.length === 1 && s.peers[0].connectionState === 'connected'), info: snaps.map((s) => s.peers.map((p) => p.connectionState)) };
        });
        await dialWithForm(a, 'tel:+15550101');
        const phone = await waitForPhoneTile(a, deadline);
        const phoneB = await waitForPhoneTile(b, deadline);
        if (phoneB !== phone) throw new Error(`different phones: ${phone} / ${phoneB}`);
        const [audioA, audioB] = await Promise.all([waitForPhoneAudio(a, phone, deadline), waitForPhoneAudio(b, phone, deadline)]);
        const tileB = await phoneTile(b, phone);
        // Any member may hang the phone up (its meta names the call), not only the one who dialed.
        if (!tileB || !tileB.phoneClass || tileB.videoShown || !tileB.hangupShown) throw new Error(`Bob's phone tile: ${JSON.stringify(tileB)}`);
        // The page-to-page call still has its video.
        const sb = await snapshot(b);
        const ada = sb.peers.find((x) => !x.phone);
        // A newcomer finds the phone among the members already there, and offers to it.
        const c = await participant(browser, room, 'Cy');
        parts.push(c);
        const phoneC = await waitForPhoneTile(c, deadline);
        if (phoneC !== phone) throw new Error(`Cy sees another phone: ${phoneC}`);
        const audioC = await waitForPhoneAudio(c, phone, deadline);
        await b.page.click(`.tile[data-peer="${phone}"] button.hangup`);
        await waitFor('the phone tile gone on every page', deadline, async () => {
          const snaps = await Promise.all(parts.map(snapshot));
          return { ok: snaps.every((s) => phonePeers(s).length === 0 && s.peers.length === 2), info: snaps.map((s) => s.peers.map((x) => x.name)) };
        });
        await sipp.ok();
        return `Ada: ${audioA.first}→${audioA.second} packets, Bob: ${audioB.first}→${audioB.second} packets from the phone; Bob's tile ${JSON.stringify(tileB)}; Bob↔Ada video ${ada?.framesDecoded} frames; Cy (joined later): ${audioC.first}→${audioC.second} packets; Bob hung up: gone on all three, sipp exited 0`;
      } catch (err) {
        throw withDiag(err, parts, sipp);
      } finally {
        sipp.stop();
        await closeAll(parts);
      }
    },
  },
  {
    key: 'C',
    name: 'the phone hangs up: its tile goes away, the dialer sees "ended"',
    async run(browser) {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const parts = [];
      const sipp = await startSipp('uas-hangs-up.xml');
      try {
        const a = await participant(browser, `dial3-${nonce()}`, 'Ada');
        parts.push(a);
        await dialWithForm(a, '+1 555 0102');
        const r = await waitFor('the phone joined, left by itself, and the call ended', deadline, async () => {
          const s = await snapshot(a);
          const d = await dials(a);
          const members = await a.page.evaluate(() => window.__members);
          const joined = members.find((m) => m.ev === 'joined' && m.phone);
          const left = joined && members.find((m) => m.ev === 'left' && m.id === joined.id);
          const ended = d.find((x) => x.state === 'ended');
          return { ok: !!left && !!ended && phonePeers(s).length === 0, info: { members, dials: d.map((x) => `${x.state}:${x.reason ?? ''}`), status: s.dialStatus }, ended, joined };
        });
        const status = await waitFor('the status says the call ended', deadline, async () => {
          const t = await dialStatus(a);
          return { ok: /ended/.test(t), info: t, t };
        });
        await sipp.ok();
        return `phone ${r.joined.name} (${r.joined.id}) joined and left; dial ended: "${r.ended.reason}"; status "${status.t}"; sipp exited 0`;
      } catch (err) {
        throw withDiag(err, parts, sipp);
      } finally {
        sipp.stop();
        await closeAll(parts);
      }
    },
  },
  {
    key: 'D',
    name: 'dialing not enabled on the server: the page says why',
    async run(browser) {
      if (!OFF_BASE) return 'skipped (IB_DIAL_OFF_HTTP_PORT not set)';
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const parts = [];
      try {
        const a = await participant(browser, `dial4-${nonce()}`, 'Ada', OFF_BASE);
        parts.push(a);
        await dialWithForm(a, '+1 555 0103');
        const r = await waitFor('the refusal on the status line', deadline, async () => {
          const t = await dialStatus(a);
          const d = await dials(a);
          return { ok: /^Could not call \+15550103: .+/.test(t) && d.some((x) => x.state === 'failed' && x.code === 'bad_message'), info: { t, d }, t };
        });
        return `"${r.t}"`;
      } catch (err) {
        throw withDiag(err, parts);
      } finally {
        await closeAll(parts);
      }
    },
  },
];

async function main() {
  const t0 = Date.now();
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: chromiumArgs(), timeout: 30_000 });
  console.log(`chromium ${browser.version()} launched in ${Date.now() - t0} ms; pages from ${BASE}; sipp on 127.0.0.1:${SIPP_PORT}`);
  const only = env.IB_ONLY ? new Set(env.IB_ONLY.split(',').map((s) => s.trim().toUpperCase())) : null;
  let failed = 0;
  let ran = 0;
  try {
    for (const sc of SCENARIOS) {
      if (only && !only.has(sc.key)) continue;
      ran++;
      const s0 = Date.now();
      try {
        const detail = await Promise.race([
          sc.run(browser),
          sleep(SCENARIO_TIMEOUT_MS + 5_000).then(() => {
            throw new Error('scenario timeout');
          }),
        ]);
        console.log(`  PASS ${sc.key}. ${sc.name} (${((Date.now() - s0) / 1000).toFixed(1)}s): ${detail}`);
      } catch (err) {
        failed++;
        console.log(`  FAIL ${sc.key}. ${sc.name} (${((Date.now() - s0) / 1000).toFixed(1)}s): ${err.message}`);
      }
    }
  } finally {
    stopSipps();
    await browser.close().catch(() => {});
  }
  console.log(`dial scenarios: ${ran - failed}/${ran} passed`);
  process.exit(failed || !ran ? 1 : 0);
}

main().catch((err) => {
  console.error(`FAIL dial: ${err.stack || err}`);
  stopSipps();
  process.exit(1);
});
