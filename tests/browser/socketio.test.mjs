// The classic WebRTC codelab (a socket.io page: its main.js logic, unchanged protocol) against
// `icebreaker serve`'s /socket.io/, in headless Chromium.
//
// The page's main.js and, but for the last scenario, the socket.io client script (npm
// socket.io-client's dist file) are served by this test through Playwright
// routes on the server's own origin, so that the page is a secure context (getUserMedia) and
// its socket.io connection passes the server's same-origin check. The page itself is written
// into a document the server served (/healthz): Chromium's Local Network Access checks block
// the WebSocket of a document Playwright made up (it has no network address), which would leave
// socket.io on long-polling. The page takes its iceServers from the server's /api/ice-servers.
// Both tabs must be on the WebSocket transport after the upgrade. Scenarios:
//   - two tabs in one room: created / joined, the codelab's offer/answer/candidate messages
//     relayed, each tab decodes the other's video (videoWidth > 0, inbound-rtp framesDecoded
//     growing);
//   - one tab is closed without its beforeunload 'bye' (as a crash): the other gets 'bye'
//     from the server and hangs up; a new tab takes the freed place and the call starts again;
//   - a third tab in a full room gets 'full';
//   - the page as the codelab has it, `<script src="/socket.io/socket.io.js">` loaded from the
//     server (Icebreaker's own socket.io client, web/sdk/socket.io.js): two tabs call.
//
// Run by tests/browser/run.sh (own network namespace, server started). Environment:
// IB_HTTP_PORT, CHROMIUM_PATH.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { chromium } from 'playwright-core';
import { chromiumArgs, nonce as nonceOf, sleep, waitFor } from './lib.mjs';

const env = process.env;
const HTTP_PORT = env.IB_HTTP_PORT;
if (!HTTP_PORT) {
  console.error('FAIL socketio: environment variable IB_HTTP_PORT is not set (run tests/browser/run.sh)');
  process.exit(2);
}
const BASE = `http://127.0.0.1:${HTTP_PORT}`;
const CHROMIUM = env.CHROMIUM_PATH || '/usr/bin/chromium';
const SCENARIO_TIMEOUT_MS = 40_000;
const TOTAL_TIMEOUT_MS = 150_000;

const killer = setTimeout(() => {
  console.error(`FAIL socketio: overall timeout of ${TOTAL_TIMEOUT_MS / 1000}s exceeded`);
  process.exit(1);
}, TOTAL_TIMEOUT_MS);
killer.unref();

const require = createRequire(import.meta.url);
const SOCKET_IO_JS = readFileSync(join(dirname(require.resolve('socket.io-client/package.json')), 'dist/socket.io.min.js'));

const nonce = () => nonceOf(6);


const INDEX_HTML = `<!DOCTYPE html>
<html>
<head><title>Realtime communication with WebRTC</title></head>
<body>
  <h1>Realtime communication with WebRTC</h1>
  <div id="videos">
    <video id="localVideo" autoplay muted playsinline></video>
    <video id="remoteVideo" autoplay playsinline></video>
  </div>
  <script src="/codelab/socket.io.js"></script>
  <script src="/codelab/main.js"></script>
</body>
</html>`;

// The codelab's main.js (step 5), as close to the original as a current browser allows:
// addTrack/ontrack instead of the removed addStream/onaddstream, promise-style offers, and the
// iceServers fetched from the server. `window.codelab` is the test's view into it.
const MAIN_JS = `'use strict';
var isChannelReady = false;
var isInitiator = false;
var isStarted = false;
var localStream;
var pc;
var remoteStream;
var pcConfig = { iceServers: [] };
var events = [];
window.codelab = {
  events: events,
  get pc() { return pc; },
  get started() { return isStarted; },
};

var room = new URLSearchParams(location.search).get('room') || 'foo';
var socket = io.connect();

if (room !== '') {
  socket.emit('create or join', room);
  console.log('Attempted to create or  join room', room);
}

socket.on('created', function(room) { events.push('created'); console.log('Created room ' + room); isInitiator = true; });
socket.on('full', function(room) { events.push('full'); console.log('Room ' + room + ' is full'); });
socket.on('join', function(room) { events.push('join'); console.log('Another peer made a request to join room ' + room); isChannelReady = true; });
socket.on('joined', function(room) { events.push('joined'); console.log('joined: ' + room); isChannelReady = true; });
socket.on('ready', function() { events.push('ready'); });
socket.on('log', function(array) { console.log.apply(console, array); });

function sendMessage(message) {
  console.log('Client sending message: ', message);
  socket.emit('message', message);
}

socket.on('message', function(message) {
  console.log('Client received message:', message);
  events.push(typeof message === 'string' ? message : message.type);
  if (message === 'got user media') {
    maybeStart();
  } else if (message.type === 'offer') {
    if (!isInitiator && !isStarted) {
      maybeStart();
    }
    pc.setRemoteDescription(new RTCSessionDescription(message));
    doAnswer();
  } else if (message.type === 'answer' && isStarted) {
    pc.setRemoteDescription(new RTCSessionDescription(message));
  } else if (message.type === 'candidate' && isStarted) {
    var candidate = new RTCIceCandidate({ sdpMLineIndex: message.label, candidate: message.candidate });
    pc.addIceCandidate(candidate);
  } else if (message === 'bye' && isStarted) {
    handleRemoteHangup();
  }
});

var localVideo = document.querySelector('#localVideo');
var remoteVideo = document.querySelector('#remoteVideo');

fetch('/api/ice-servers').then(function(r) { return r.json(); }).then(function(ice) {
  pcConfig = { iceServers: ice.iceServers };
  return navigator.mediaDevices.getUserMedia({ audio: false, video: true });
}).then(gotStream).catch(function(e) { alert('getUserMedia() error: ' + e.name); });

function gotStream(stream) {
  console.log('Adding local stream.');
  localStream = stream;
  localVideo.srcObject = stream;
  sendMessage('got user media');
  if (isInitiator) {
    maybeStart();
  }
}

function maybeStart() {
  console.log('>>>>>>> maybeStart() ', isStarted, localStream, isChannelReady);
  if (!isStarted && typeof localStream !== 'undefined' && isChannelReady) {
    createPeerConnection();
    localStream.getTracks().forEach(function(t) { pc.addTrack(t, localStream); });
    isStarted = true;
    if (isInitiator) {
      doCall();
    }
  }
}

window.onbeforeunload = function() { sendMessage('bye'); };

function createPeerConnection() {
  pc = new RTCPeerConnection(pcConfig);
  pc.onicecandidate = handleIceCandidate;
  pc.ontrack = function(event) {
    console.log('Remote stream added.');
    remoteStream = event.streams[0];
    remoteVideo.srcObject = remoteStream;
  };
}

function handleIceCandidate(event) {
  if (event.candidate) {
    sendMessage({ type: 'candidate', label: event.candidate.sdpMLineIndex, id: event.candidate.sdpMid, candidate: event.candidate.candidate });
  } else {
    console.log('End of candidates.');
  }
}

function doCall() {
  pc.createOffer().then(setLocalAndSendMessage, function(e) { console.log('createOffer() error: ', e); });
}

function doAnswer() {
  pc.createAnswer().then(setLocalAndSendMessage, function(e) { console.log('createAnswer() error: ', e); });
}

function setLocalAndSendMessage(sessionDescription) {
  pc.setLocalDescription(sessionDescription);
  sendMessage(sessionDescription);
}

function handleRemoteHangup() {
  console.log('Session terminated.');
  stop();
  // The codelab sets false here, which leaves a room that a new peer joins with nobody to
  // make the offer; the member that stays takes the initiator's role instead.
  isInitiator = true;
}

function stop() {
  isStarted = false;
  pc.close();
  pc = null;
}
`;

async function route(ctx) {
  await ctx.route(`${BASE}/codelab/**`, (r) => {
    const path = new URL(r.request().url()).pathname;
    if (path === '/codelab/main.js') return r.fulfill({ contentType: 'text/javascript', body: MAIN_JS });
    if (path === '/codelab/socket.io.js') return r.fulfill({ contentType: 'text/javascript', body: SOCKET_IO_JS });
    return r.fulfill({ status: 404, body: 'not found' });
  });
}

async function tab(ctx, room, name, html = INDEX_HTML) {
  const page = await ctx.newPage();
  const diag = [];
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') diag.push(`${name} console.${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => diag.push(`${name} pageerror: ${e}`));
  page.on('dialog', (d) => { diag.push(`${name} dialog: ${d.message()}`); d.dismiss().catch(() => {}); });
  await page.goto(`${BASE}/healthz?room=${room}`);
  await page.setContent(html);
  return { page, name, diag };
}

/** What a tab sees: its events, the remote video's size, inbound video frames decoded. */
const view = (t) =>
  t.page.evaluate(async () => {
    const c = window.codelab;
    const v = document.querySelector('#remoteVideo');
    let framesDecoded = 0;
    let pair = '';
    if (c.pc) {
      const stats = await c.pc.getStats();
      stats.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') framesDecoded = s.framesDecoded || 0;
        if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = `${s.localCandidateId}/${s.remoteCandidateId}`;
      });
    }
    const transport = window.socket && window.socket.io.engine ? window.socket.io.engine.transport.name : 'none';
    return { events: c.events.slice(), started: c.started, transport, width: v.videoWidth, height: v.videoHeight, framesDecoded, pair, conn: c.pc ? c.pc.connectionState : 'none' };
  });

/** Both tabs decode each other's video, and the decoded frame count keeps growing. */
async function bothDecode(tabs, deadline) {
  const first = await waitFor('video decoded on both tabs', deadline, async () => {
    const v = await Promise.all(tabs.map(view));
    return { ok: v.every((x) => x.width > 0 && x.framesDecoded > 0), info: v, v };
  });
  await sleep(1000);
  const later = await Promise.all(tabs.map(view));
  for (const [i, x] of later.entries()) {
    if (!(x.framesDecoded > first.v[i].framesDecoded)) throw new Error(`${tabs[i].name}: framesDecoded stuck at ${x.framesDecoded}`);
  }
  return later;
}

function withDiag(err, tabs) {
  const d = tabs.flatMap((t) => t.diag);
  if (d.length) err.message += `; page diagnostics: ${JSON.stringify(d.slice(0, 10))}`;
  return err;
}

const state = {};

const SCENARIOS = [
  {
    name: 'two codelab tabs in one room decode each other\'s video',
    async run(browser) {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const ctx = await browser.newContext();
      await route(ctx);
      const room = `codelab-${nonce()}`;
      const t1 = await tab(ctx, room, 'tab1');
      await waitFor('tab1 created the room', deadline, async () => {
        const v = await view(t1);
        return { ok: v.events.includes('created'), info: v.events };
      });
      const t2 = await tab(ctx, room, 'tab2');
      Object.assign(state, { ctx, room, t1, t2 });
      try {
        const v = await bothDecode([t1, t2], deadline);
        if (!v[1].events.includes('joined') || !v[0].events.includes('join')) throw new Error(`events: ${JSON.stringify(v.map((x) => x.events))}`);
        await waitFor('both tabs on the websocket transport', deadline, async () => {
          const x = await Promise.all([t1, t2].map(view));
          return { ok: x.every((y) => y.transport === 'websocket'), info: x.map((y) => y.transport) };
        });
        return v.map((x, i) => `tab${i + 1} (${x.transport}): ${x.width}x${x.height}, ${x.framesDecoded} frames, events ${x.events.filter((e) => e !== 'candidate').join(',')}`).join('; ');
      } catch (err) {
        throw withDiag(err, [t1, t2]);
      }
    },
  },
  {
    name: 'a tab closed without its bye: the other gets bye from the server; a new tab joins and the call starts again',
    async run() {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const { ctx, room, t1, t2 } = state;
      // No beforeunload: the page's own 'bye' is not sent, as when a tab crashes.
      await t1.page.close({ runBeforeUnload: false });
      await waitFor("tab2 gets 'bye' and hangs up", deadline, async () => {
        const v = await view(t2);
        return { ok: v.events.includes('bye') && !v.started, info: v.events.slice(-5) };
      });
      const t3 = await tab(ctx, room, 'tab3');
      state.t3 = t3;
      try {
        // tab2 stays and becomes the initiator; tab3's 'got user media' starts the new call.
        const v = await bothDecode([t2, t3], deadline);
        return `tab2 hung up on bye; tab3 ${v[1].events.filter((e) => e !== 'candidate').join(',')}; ${v[1].width}x${v[1].height}, ${v[1].framesDecoded} frames`;
      } catch (err) {
        throw withDiag(err, [t2, t3]);
      }
    },
  },
  {
    name: 'a third tab in a full room gets full',
    async run() {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const { ctx, room } = state;
      const t4 = await tab(ctx, room, 'tab4');
      const v = await waitFor("tab4 gets 'full'", deadline, async () => {
        const x = await view(t4);
        return { ok: x.events.includes('full'), info: x.events };
      });
      await ctx.close();
      return `tab4 events: ${v.info.join(',')}`;
    },
  },
  {
    name: "the codelab's own script tag: /socket.io/socket.io.js from the server (Icebreaker's client), two tabs decode each other's video",
    async run(browser) {
      const deadline = Date.now() + SCENARIO_TIMEOUT_MS;
      const ctx = await browser.newContext();
      await route(ctx);
      const html = INDEX_HTML.replace('/codelab/socket.io.js', '/socket.io/socket.io.js');
      const room = `served-${nonce()}`;
      const tabs = [];
      try {
        tabs.push(await tab(ctx, room, 'tab5', html));
        await waitFor('tab5 created the room', deadline, async () => {
          const v = await view(tabs[0]);
          return { ok: v.events.includes('created'), info: v.events };
        });
        tabs.push(await tab(ctx, room, 'tab6', html));
        const v = await bothDecode(tabs, deadline);
        const client = await tabs[0].page.evaluate(() => typeof window.io.Socket === 'function' && !window.socket.io.engine);
        if (!client) throw new Error("the page did not run the server's own client");
        return v.map((x, i) => `tab${i + 5}: ${x.width}x${x.height}, ${x.framesDecoded} frames, events ${x.events.filter((e) => e !== 'candidate').join(',')}`).join('; ');
      } catch (err) {
        throw withDiag(err, tabs);
      } finally {
        await ctx.close().catch(() => {});
      }
    },
  },
];

let failed = 0;
let ran = 0;
try {
  const t0 = Date.now();
  const args = chromiumArgs();
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args, timeout: 30_000 });
  console.log(`chromium ${browser.version()} launched in ${Date.now() - t0} ms; codelab pages on ${BASE}`);
  try {
    for (const sc of SCENARIOS) {
      const s0 = Date.now();
      ran++;
      try {
        const detail = await sc.run(browser);
        console.log(`  PASS ${sc.name} (${((Date.now() - s0) / 1000).toFixed(1)}s): ${detail}`);
      } catch (err) {
        failed++;
        console.log(`  FAIL ${sc.name} (${((Date.now() - s0) / 1000).toFixed(1)}s): ${err.message}`);
        break; // the scenarios build on each other
      }
    }
  } finally {
    await browser.close().catch(() => {});
  }
  console.log(`socketio scenarios: ${ran - failed}/${SCENARIOS.length} passed`);
  process.exit(failed || ran < SCENARIOS.length ? 1 : 0);
} catch (err) {
  console.error(`FAIL socketio: ${err.stack || err}`);
  process.exit(1);
}
