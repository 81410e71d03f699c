// The SIP gateway end to end: JsSIP (npm `jssip`) in headless Chromium registers and calls
// over SIP over WebSocket at the server's /sip, and the far end is a real SIP phone played by
// sipp (Debian sip-tester; the scenarios of tests/sip/). Icebreaker is the edge proxy
// (--sip-upstream = sipp) and the media gateway: the browser's ICE/DTLS-SRTP ends at the
// server, which speaks plain RTP to sipp. sipp -rtp_echo sends every RTP packet back, so the
// browser's own (fake, beeping) microphone audio coming back proves both directions.
//
//   1. register: JsSIP.UA with a WebSocketInterface on ws://127.0.0.1:<http>/sip → registered
//      (sipp, tests/sip/uas.xml, is the registrar);
//   2. call sip:phone@…, audio only → confirmed; the answer the browser got is WebRTC SDP
//      (ICE credentials and candidates, a DTLS fingerprint) and the offer sipp got is plain
//      RTP/AVP (no ICE, no fingerprint); inbound-rtp audio packetsReceived >= 50 and growing,
//      outbound-rtp audio packetsSent growing, and what came back decodes to sound (the fake
//      microphone's beep: totalAudioEnergy > 0, played by an <audio> element); RTP packets with
//      PT 0 (PCMU, what sipp answered) counted at sipp's media port (an iptables counter in this
//      network namespace), each 200 bytes (a 12-byte RTP header, 20 ms of PCMU: not SRTP);
//   3. DTMF '1' as RFC 4733 (RTCDTMFSender): RTP packets with sipp's telephone-event PT (101)
//      counted at sipp's media port;
//   4. hang up from the browser → ended; sipp ends its scenario (register + call) with status 0;
//      the server closed the call's RTP socket (its UDP sockets, counted with `ss`, as before);
//   5. a second call to a phone that hangs up itself (tests/sip/uas-hangs-up.xml, a BYE one
//      second after the ACK) → ended, originator remote, cause BYE; audio came back before
//      that; sipp exits 0; the RTP socket closed again.
//
// JsSIP's npm package ships CommonJS only (lib/, no browser bundle): this test bundles it and
// its three dependencies (debug, events, sdp-transform) into one script itself (cjsBundle).
// The page is a document the server served (/healthz) with our content, so that the /sip
// WebSocket passes the server's Origin check and Chromium's Local Network Access checks.
//
// Run by tests/browser/run.sh (own network namespace, its own server). Environment:
// IB_SIP_HTTP_PORT (the server's HTTP listener on 127.0.0.1), IB_SIP_SIPP_PORT (sipp's SIP
// port: the server's --sip-upstream), IB_SIP_MEDIA_PORT (sipp's RTP echo port), IB_SIP_DIR
// (where sipp's logs go), CHROMIUM_PATH (default /usr/bin/chromium).

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { chromiumArgs, sleep, waitFor } from './lib.mjs';

const env = process.env;
const HTTP_PORT = env.IB_SIP_HTTP_PORT;
const SIPP_PORT = env.IB_SIP_SIPP_PORT;
const MEDIA_PORT = env.IB_SIP_MEDIA_PORT;
const DIR = env.IB_SIP_DIR;
if (!HTTP_PORT || !SIPP_PORT || !MEDIA_PORT || !DIR) {
  console.error('FAIL sip: IB_SIP_HTTP_PORT, IB_SIP_SIPP_PORT, IB_SIP_MEDIA_PORT and IB_SIP_DIR must be set (run tests/browser/run.sh)');
  process.exit(2);
}
const BASE = `http://127.0.0.1:${HTTP_PORT}`;
const CHROMIUM = env.CHROMIUM_PATH || '/usr/bin/chromium';
const HERE = dirname(fileURLToPath(import.meta.url));
const SCENARIOS = join(HERE, '..', 'sip');
const DOMAIN = 'example.org';
const TOTAL_TIMEOUT_MS = 80_000;

const children = new Set();
const killer = setTimeout(() => {
  console.error(`FAIL sip: overall timeout of ${TOTAL_TIMEOUT_MS / 1000}s exceeded`);
  stopChildren();
  process.exit(1);
}, TOTAL_TIMEOUT_MS);
killer.unref();

/**
 * One script that defines `window.JsSIP` from the CommonJS files of npm `jssip` and its
 * dependencies: every module a function in a table, a small `require` that resolves relative
 * paths, package names (their `browser` or `main` entry) and JSON.
 */
function cjsBundle(pkg, globalName) {
  const req = createRequire(import.meta.url);
  const root = dirname(req.resolve(`${pkg}/package.json`));
  const nodeModules = dirname(root);
  const modules = new Map(); // absolute path → { id, deps: {specifier: id}, code }
  const entryOf = (dir) => {
    const meta = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    const entry = typeof meta.browser === 'string' ? meta.browser : meta.main || 'index.js';
    return fileOf(join(dir, entry));
  };
  const fileOf = (p) => {
    for (const c of [p, `${p}.js`, `${p}.json`, join(p, 'index.js')]) {
      if (existsSync(c) && statSync(c).isFile()) return c;
    }
    throw new Error(`cjsBundle: cannot resolve ${p}`);
  };
  const add = (file) => {
    if (modules.has(file)) return modules.get(file).id;
    const m = { id: modules.size, deps: {}, code: readFileSync(file, 'utf8') };
    modules.set(file, m);
    if (file.endsWith('.json')) return m.id;
    for (const [, spec] of m.code.matchAll(/\brequire\(\s*['"]([^'"]+)['"]\s*\)/g)) {
      const target = spec.startsWith('.') ? fileOf(join(dirname(file), spec)) : entryOf(join(nodeModules, spec));
      m.deps[spec] = add(target);
    }
    return m.id;
  };
  const entry = add(entryOf(root));
  const defs = [...modules.entries()].map(([file, m]) => {
    const body = file.endsWith('.json') ? `module.exports = ${m.code};` : m.code;
    return `/* ${relative(nodeModules, file)} */ [${JSON.stringify(m.deps)}, function (require, module, exports) {\n${body}\n}]`;
  });
  return `(function () {
  var defs = [${defs.join(',\n')}];
  var cache = {};
  function load(id) {
    if (cache[id]) return cache[id].exports;
    var module = (cache[id] = { exports: {} });
    defs[id][1].call(module.exports, function (spec) {
      if (!(spec in defs[id][0])) throw new Error('cjsBundle: ' + spec + ' not bundled');
      return load(defs[id][0][spec]);
    }, module, module.exports);
    return module.exports;
  }
  window[${JSON.stringify(globalName)}] = load(${entry});
})();`;
}
function readFileSyncSafe(p) {
  try {
    return readFileSync(p);
  } catch {
    return null;
  }
}

/** sipp as the far end on SIPP_PORT, media (RTP echo) on MEDIA_PORT. Resolves its exit status with `.exited`. */
function startSipp(scenario, calls, tag) {
  const log = join(DIR, `sipp-${tag}`);
  const args = ['-sf', join(SCENARIOS, scenario), '-i', '127.0.0.1', '-p', SIPP_PORT, '-t', 'u1',
    '-mi', '127.0.0.1', '-mp', MEDIA_PORT, '-rtp_echo', '-m', String(calls), '-nostdin', '-timeout', '60s',
    '-trace_msg', '-message_file', `${log}.messages`, '-trace_err', '-error_file', `${log}.errors`];
  const child = spawn('sipp', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(child);
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      children.delete(child);
      resolve({ code, signal, stderr });
    });
    child.on('error', (e) => {
      children.delete(child);
      resolve({ code: null, signal: null, stderr: String(e) });
    });
  });
  let status = null;
  exited.then((s) => (status = s));
  return { child, exited, log, status: () => status, messages: () => readFileSyncSafe(`${log}.messages`)?.toString() || '', errors: () => readFileSyncSafe(`${log}.errors`)?.toString() || '' };
}

function stopChildren() {
  for (const c of children) {
    try {
      process.kill(c.pid, 'SIGTERM');
    } catch {}
  }
}

async function sippExit(sipp, ms) {
  const s = await Promise.race([sipp.exited, sleep(ms).then(() => null)]);
  if (!s) throw new Error(`sipp (${sipp.log}) still running after ${ms} ms; errors: ${sipp.errors().slice(-2000)}`);
  if (s.code !== 0) throw new Error(`sipp exited with ${s.code ?? s.signal}; stderr: ${s.stderr.slice(-1000)}; errors: ${sipp.errors().slice(-2000)}`);
}

/**
 * Counters of RTP packets arriving at sipp's media port by payload type: iptables rules in this
 * network namespace (only `lo`: the namespace run.sh made) matching the RTP header's PT (second
 * byte & 0x7f, behind a 20-byte IPv4 and the 8-byte UDP header). `null` when iptables is not usable.
 */
function rtpCounters(pts) {
  const rule = (pt) => ['INPUT', '-p', 'udp', '-d', '127.0.0.1', '--dport', MEDIA_PORT, '-m', 'u32', '--u32', `28&0x007F0000=0x${(pt << 16).toString(16).padStart(8, '0')}`];
  const run = (args) => spawnSync('iptables', ['-w', ...args], { encoding: 'utf8' });
  for (const pt of pts) {
    const r = run(['-I', ...rule(pt)]);
    if (r.status !== 0) {
      console.log(`  (iptables not usable, RTP at sipp not counted: ${(r.stderr || r.error || '').toString().trim()})`);
      return null;
    }
  }
  return {
    /** {pt: {packets, bytes}} */
    read() {
      const out = run(['-nvxL', 'INPUT']).stdout || '';
      const counts = {};
      for (const pt of pts) {
        const want = `0x${(pt << 16).toString(16)}`;
        const line = out.split('\n').find((l) => l.includes(`dpt:${MEDIA_PORT}`) && l.includes(`=${want}"`));
        const [packets, bytes] = line ? line.trim().split(/\s+/).map(Number) : [NaN, NaN];
        counts[pt] = { packets, bytes };
      }
      return counts;
    },
    remove() {
      for (const pt of pts) run(['-D', ...rule(pt)]);
    },
  };
}

/**
 * The server's UDP sockets (`ss -p` in this network namespace, where the only icebreaker is the
 * server under test), to see each call's RTP socket (and the RTCP port held beside it) open and
 * go away again. `null` without `ss`.
 */
function serverUdpSockets() {
  const r = spawnSync('ss', ['-Huanp'], { encoding: 'utf8' });
  if (r.status !== 0) return null;
  return r.stdout.split('\n').filter((l) => l.includes('(("icebreaker",')).length;
}

async function mediaReleased(baseline, what) {
  if (baseline === null) return '';
  const r = await waitFor(`${what}: the call's RTP socket closed (server UDP sockets back to ${baseline})`, Date.now() + 5_000, async () => {
    const n = serverUdpSockets();
    return { ok: n === baseline, info: n };
  });
  return `; the server's RTP socket closed (${r.info} UDP sockets, as before the call)`;
}

// ---- in the page ------------------------------------------------------------------------------

/** Page side: JsSIP UA on /sip, registered. */
function pageRegister({ wsUrl, uri }) {
  const T = (window.sipTest = { events: [], sessions: [] });
  const socket = new JsSIP.WebSocketInterface(wsUrl);
  const ua = new JsSIP.UA({ sockets: [socket], uri, register: true, session_timers: false, user_agent: 'icebreaker-browser-test JsSIP' });
  T.ua = ua;
  for (const ev of ['connected', 'disconnected', 'registered', 'unregistered', 'registrationFailed']) {
    ua.on(ev, (e) => T.events.push({ ev, cause: e && e.cause, status: e && e.response && e.response.status_code }));
  }
  ua.start();
}

/** Page side: a call; its events in sipTest.sessions[i].events. Returns the index. */
function pageCall({ target }) {
  const T = window.sipTest;
  const rec = { events: [], maxIn: 0, maxOut: 0, maxEnergy: 0, maxSamples: 0, codec: null, remoteSdp: null, localSdp: null };
  const i = T.sessions.length;
  T.sessions.push(rec);
  const session = T.ua.call(target, { mediaConstraints: { audio: true, video: false }, pcConfig: { iceServers: [] } });
  rec.session = session;
  // Play what comes back (Chromium decodes remote audio only for a sink): the fake microphone's
  // beep, echoed by sipp, shows in inbound-rtp's totalAudioEnergy.
  // (JsSIP made the connection inside ua.call; its remote track comes with the answer.)
  session.connection.addEventListener('track', (e) => {
    const audio = document.createElement('audio');
    audio.autoplay = true;
    audio.srcObject = new MediaStream([e.track]);
    document.body.append(audio);
    audio.play().catch((err) => (rec.playError = String(err)));
  });
  const push = (ev) => (e) => rec.events.push({ ev, originator: e && e.originator, cause: e && e.cause, status: e && e.response && e.response.status_code, t: Date.now() });
  for (const ev of ['progress', 'accepted', 'confirmed', 'ended', 'failed']) session.on(ev, push(ev));
  session.on('confirmed', () => {
    rec.remoteSdp = session.connection.remoteDescription && session.connection.remoteDescription.sdp;
    rec.localSdp = session.connection.localDescription && session.connection.localDescription.sdp;
  });
  // Stats while the call lasts (getStats on a closed connection fails): the highest counts seen.
  rec.poll = setInterval(async () => {
    const pc = session.connection;
    if (!pc || pc.connectionState === 'closed') return;
    try {
      const stats = await pc.getStats();
      stats.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') {
          rec.maxIn = Math.max(rec.maxIn, s.packetsReceived || 0);
          rec.maxEnergy = Math.max(rec.maxEnergy, s.totalAudioEnergy || 0);
          rec.maxSamples = Math.max(rec.maxSamples, s.totalSamplesReceived || 0);
          const c = s.codecId && stats.get(s.codecId);
          if (c) rec.codec = `${c.mimeType}/${c.clockRate} pt ${c.payloadType}`;
        }
        if (s.type === 'outbound-rtp' && s.kind === 'audio') rec.maxOut = Math.max(rec.maxOut, s.packetsSent || 0);
        if (s.type === 'transport') rec.dtls = s.dtlsState;
      });
      rec.ice = pc.iceConnectionState;
    } catch (e) {
      rec.statsError = String(e);
    }
  }, 100);
  session.on('ended', () => clearInterval(rec.poll));
  session.on('failed', () => clearInterval(rec.poll));
  return i;
}

/** Page side: a JSON-able view of call i. */
function pageCallState(i) {
  const r = window.sipTest.sessions[i];
  const { session, poll, ...plain } = r;
  return JSON.parse(JSON.stringify(plain));
}

// ---- checks -----------------------------------------------------------------------------------

/** The SDP body of the first INVITE in sipp's message log (messages are separated by lines of dashes). */
function inviteSdpAtSipp(sipp) {
  const msg = sipp.messages().split(/\n-{10,}[^\n]*\n/).find((m) => /^\s*(?:[^\n]*\n\s*)?INVITE sip:/.test(m)) || '';
  const v = msg.indexOf('\nv=0');
  return v < 0 ? '' : msg.slice(v + 1).trim();
}

function checkWebRtcSdp(sdp) {
  const missing = ['a=fingerprint:', 'a=ice-ufrag:', 'a=ice-pwd:', 'a=candidate:', 'UDP/TLS/RTP/SAVPF'].filter((x) => !sdp.includes(x));
  if (missing.length) throw new Error(`the answer the browser got is not WebRTC SDP (missing ${missing.join(', ')}):\n${sdp}`);
}

function checkPlainSdp(sdp) {
  if (!/^m=audio \d+ RTP\/AVP /m.test(sdp)) throw new Error(`the offer sipp got has no plain m=audio … RTP/AVP line:\n${sdp}`);
  const webrtc = ['a=fingerprint', 'a=ice-', 'a=candidate', 'a=crypto', 'SAVP'].filter((x) => sdp.includes(x));
  if (webrtc.length) throw new Error(`the offer sipp got still has WebRTC attributes (${webrtc.join(', ')}):\n${sdp}`);
}

async function waitEvent(page, i, names, ms) {
  const deadline = Date.now() + ms;
  return waitFor(`call ${i}: ${names.join('/')}`, deadline, async () => {
    const s = await page.evaluate(pageCallState, i);
    const hit = s.events.find((e) => names.includes(e.ev));
    return { ok: !!hit, info: s, hit };
  }, 100);
}

async function main() {
  const t0 = Date.now();
  const step = (text) => console.log(`  PASS ${text} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
  const bundle = cjsBundle('jssip', 'JsSIP');
  const sipp1 = startSipp('uas.xml', 2, 'uas');
  await sleep(300);
  if (sipp1.status()) throw new Error(`sipp did not start: ${JSON.stringify(sipp1.status())}`);
  const counters = rtpCounters([0, 101]);
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: chromiumArgs(), timeout: 30_000 });
  console.log(`chromium ${browser.version()} launched in ${Date.now() - t0} ms; /sip at ${BASE}, sipp on 127.0.0.1:${SIPP_PORT} (RTP echo :${MEDIA_PORT})`);
  const diag = [];
  try {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    page.on('pageerror', (e) => diag.push(`pageerror: ${e}`));
    page.on('console', (m) => {
      if (m.type() === 'error') diag.push(`console.error: ${m.text()}`);
    });
    await page.goto(`${BASE}/healthz`);
    await page.setContent('<!DOCTYPE html><html><head><title>JsSIP</title></head><body><h1>JsSIP → Icebreaker /sip → sipp</h1></body></html>');
    await page.addScriptTag({ content: bundle });
    const version = await page.evaluate(() => JsSIP.version);

    // 1. Register.
    await page.evaluate(pageRegister, { wsUrl: `ws://127.0.0.1:${HTTP_PORT}/sip`, uri: `sip:alice@${DOMAIN}` });
    await waitFor('JsSIP registered', Date.now() + 10_000, async () => {
      const ev = await page.evaluate(() => window.sipTest.events);
      const bad = ev.find((e) => e.ev === 'registrationFailed');
      if (bad) throw new Error(`registration failed: ${JSON.stringify(bad)}`);
      return { ok: ev.some((e) => e.ev === 'registered'), info: ev };
    });
    step(`JsSIP ${version} connected to /sip and registered sip:alice@${DOMAIN} (sipp the registrar)`);

    const udpBaseline = serverUdpSockets();

    // 2. Call the phone; media both ways through the gateway.
    const c1 = await page.evaluate(pageCall, { target: `sip:phone@${DOMAIN}` });
    const first = await waitEvent(page, c1, ['confirmed', 'failed', 'ended'], 15_000);
    if (first.hit.ev !== 'confirmed') {
      const s = first.info;
      throw new Error(`the call did not get confirmed: ${JSON.stringify(s.events)} (JsSIP fails a call whose answer is not WebRTC SDP: the gateway must translate the phone's plain answer)\n` +
        `offer sipp got:\n${inviteSdpAtSipp(sipp1) || '(none in its log)'}`);
    }
    let s = await page.evaluate(pageCallState, c1);
    checkWebRtcSdp(s.remoteSdp || '');
    const atSipp = inviteSdpAtSipp(sipp1);
    checkPlainSdp(atSipp);
    const sippM = atSipp.match(/^m=audio .*/m)[0].trim();
    const sippC = (atSipp.match(/^c=.*/m) || ['?'])[0].trim();
    const browserM = s.remoteSdp.match(/^m=audio .*/m)[0].trim();
    step(`call confirmed (${s.events.map((e) => e.ev + (e.status ? ` ${e.status}` : '')).join(', ')}); the browser got WebRTC SDP ("${browserM}"${s.remoteSdp.includes('a=ice-lite') ? ', ICE-lite' : ''}), sipp got plain RTP ("${sippC}" "${sippM}")`);

    const m0 = await waitFor('audio both ways (inbound-rtp >= 50 packets, outbound growing)', Date.now() + 15_000, async () => {
      const s = await page.evaluate(pageCallState, c1);
      if (s.events.some((e) => e.ev === 'ended' || e.ev === 'failed')) throw new Error(`the call ended early: ${JSON.stringify(s.events)}`);
      return { ok: s.maxIn >= 50 && s.maxOut >= 50, info: s };
    });
    await sleep(600);
    s = await page.evaluate(pageCallState, c1);
    if (!(s.maxIn > m0.info.maxIn && s.maxOut > m0.info.maxOut)) {
      throw new Error(`RTP stopped: in ${m0.info.maxIn} → ${s.maxIn}, out ${m0.info.maxOut} → ${s.maxOut}`);
    }
    if (!(s.maxEnergy > 0)) throw new Error(`the audio that came back decodes to silence (inbound-rtp totalAudioEnergy ${s.maxEnergy}, samples ${s.maxSamples}${s.playError ? `, play(): ${s.playError}` : ''})`);
    const rtp = counters && counters.read();
    if (counters && !(rtp[0].packets >= 50)) throw new Error(`sipp's media port got ${rtp[0].packets} RTP packets with PT 0 (PCMU)`);
    // 20 + 8 (IPv4, UDP) + 12 (RTP header, no extensions) + 160 (20 ms of PCMU): plain RTP, no
    // SRTP authentication tag, the browser's header extensions dropped.
    if (counters && rtp[0].bytes !== rtp[0].packets * 200) {
      throw new Error(`PCMU packets at sipp's media port are not 200 bytes (IP+UDP+12-byte RTP header+160): ${rtp[0].bytes} bytes in ${rtp[0].packets} packets`);
    }
    const perPacket = rtp ? ` (${rtp[0].packets} PT-0 packets at sipp's port, ${(rtp[0].bytes / rtp[0].packets).toFixed(0)} bytes each with IP+UDP)` : '';
    const udpInCall = serverUdpSockets();
    if (udpBaseline !== null && !(udpInCall > udpBaseline)) throw new Error(`no RTP socket seen for the call (server UDP sockets ${udpBaseline} → ${udpInCall})`);
    step(`audio both ways: browser sent ${s.maxOut}, got ${s.maxIn} back from sipp's echo (${s.codec}, energy ${s.maxEnergy.toFixed(3)}, samples ${s.maxSamples}, ICE ${s.ice}, DTLS ${s.dtls})${perPacket}${udpBaseline === null ? '' : `; server UDP sockets ${udpBaseline} → ${udpInCall}`}`);

    // 3. DTMF as RFC 4733 events in the RTP stream.
    if (counters) {
      const before = counters.read()[101].packets;
      await page.evaluate((i) => window.sipTest.sessions[i].session.sendDTMF('1', { transportType: 'RFC2833', duration: 200 }), c1);
      const d = await waitFor("DTMF '1' at sipp's media port (PT 101)", Date.now() + 5_000, async () => {
        const n = counters.read()[101].packets;
        return { ok: n - before >= 3, info: { before, now: n } };
      });
      step(`DTMF '1' (RFC 4733 via RTCDTMFSender): ${d.info.now - before} telephone-event packets (PT 101) reached sipp`);
    }

    // 4. Hang up from the browser; sipp's scenario (register + call) ends with status 0.
    await page.evaluate((i) => window.sipTest.sessions[i].session.terminate(), c1);
    const end1 = await waitEvent(page, c1, ['ended', 'failed'], 10_000);
    if (end1.hit.ev !== 'ended' || end1.hit.originator !== 'local') throw new Error(`hang-up: ${JSON.stringify(end1.hit)}`);
    await sippExit(sipp1, 5_000);
    const released1 = await mediaReleased(udpBaseline, 'after the browser hung up');
    step(`browser hung up: ended (local, ${end1.hit.cause}); sipp got the BYE and exited 0${released1}`);

    // 5. The phone hangs up (a BYE one second after the ACK).
    const sipp2 = startSipp('uas-hangs-up.xml', 1, 'hangs-up');
    await sleep(300);
    if (sipp2.status()) throw new Error(`sipp did not start: ${JSON.stringify(sipp2.status())}`);
    const c2 = await page.evaluate(pageCall, { target: `sip:phone@${DOMAIN}` });
    const conf2 = await waitEvent(page, c2, ['confirmed', 'failed', 'ended'], 15_000);
    if (conf2.hit.ev !== 'confirmed') throw new Error(`second call not confirmed: ${JSON.stringify(conf2.info.events)}`);
    const end2 = await waitEvent(page, c2, ['ended', 'failed'], 10_000);
    s = end2.info;
    const byeCause = await page.evaluate(() => JsSIP.C.causes.BYE);
    if (end2.hit.ev !== 'ended' || end2.hit.originator !== 'remote' || end2.hit.cause !== byeCause) {
      throw new Error(`the phone's hang-up: ${JSON.stringify(s.events)}`);
    }
    if (!(s.maxIn >= 10)) throw new Error(`no audio came back before the phone hung up: in ${s.maxIn}, out ${s.maxOut}`);
    await sippExit(sipp2, 5_000);
    const released2 = await mediaReleased(udpBaseline, 'after the phone hung up');
    const talk = ((end2.hit.t - conf2.hit.t) / 1000).toFixed(1);
    step(`the phone hung up after ${talk}s: ended (remote, ${end2.hit.cause}); ${s.maxIn} audio packets came back before; sipp exited 0${released2}`);

    const bad = diag.filter((d) => !/Failed to load resource/.test(d));
    if (bad.length) throw new Error(`page errors: ${bad.join(' | ')}`);
    console.log('sip: all checks passed');
  } finally {
    counters && counters.remove();
    await browser.close().catch(() => {});
    stopChildren();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`FAIL sip: ${err.stack || err}`);
    stopChildren();
    process.exit(1);
  },
);
