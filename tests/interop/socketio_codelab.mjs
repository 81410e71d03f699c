// The classic WebRTC codelab's socket.io client logic (npm socket.io-client 4, unchanged
// protocol) against `icebreaker serve`'s /socket.io/.
//
// Scenarios:
//   1. two clients in room A (one on the websocket transport, one on the default
//      polling → websocket upgrade): created / join + ready / joined + ready, then an
//      offer/answer/candidates-shaped conversation: each gets exactly the other's messages,
//      in order, and 'ipaddr' answers the announced address;
//   2. a third client in room A gets 'full'; its messages (it is in no room) are not relayed;
//   3. two clients in room B talk; A never sees B's messages, B never sees A's;
//   4. a member of A disconnects: the other gets 'bye'; a new client joins A and the call goes on;
//   5. malformed input (oversized message, binary attachment, unknown event, missing
//      arguments, an unknown namespace, raw engine.io/socket.io garbage, an over-limit frame)
//      is refused, and the server keeps serving room A;
//   6. the Origin check (a foreign page is refused at connect) and, on a second server with
//      room tokens, the token in `auth` or the query: none → connect_error, the room's
//      (claim `socket.io/<room>`) → created, another room's → error `forbidden`.
//
// Run by tests/interop/socketio.sh (own network namespace, servers started; the first with
// --signal-max-message 8192). Environment: IB_HTTP_PORT, IB_TOKEN_HTTP_PORT and
// IB_TOKEN_SECRET (the second server's HTTP port and room-token secret).

import { createHmac } from 'node:crypto';
import { createRequire } from 'node:module';

const require = createRequire(new URL('../browser/package.json', import.meta.url));
const { io } = require('socket.io-client');
const WebSocket = require('ws');

const PORT = process.env.IB_HTTP_PORT;
if (!PORT) {
  console.error('FAIL socketio: IB_HTTP_PORT is not set (run tests/interop/socketio.sh)');
  process.exit(2);
}
const URL_ = `http://127.0.0.1:${PORT}`;
const MAX_MESSAGE = Number(process.env.IB_MAX_MESSAGE || 8192);
const TOTAL_TIMEOUT_MS = 60_000;
const killer = setTimeout(() => {
  console.error(`FAIL socketio: overall timeout of ${TOTAL_TIMEOUT_MS / 1000}s exceeded`);
  process.exit(1);
}, TOTAL_TIMEOUT_MS);
killer.unref();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const nonce = () => Math.random().toString(36).slice(2, 8);

/**
 * A codelab client: records every event it gets, in order.
 * @param {string} name
 * @param {object} opts socket.io-client options
 * @param {string} url the server
 */
function client(name, opts = {}, url = URL_) {
  const socket = io(url, { forceNew: true, reconnection: false, ...opts });
  const c = { name, socket, events: [], messages: [], logs: [] };
  socket.onAny((event, ...args) => {
    c.events.push([event, ...args]);
    if (event === 'message') c.messages.push(args[0]);
    if (event === 'log') c.logs.push(args[0]);
  });
  return c;
}

async function waitFor(what, fn, ms = 5000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (fn()) return;
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${what}`);
}

const connected = (c) => waitFor(`${c.name} connected`, () => c.socket.connected);
const got = (c, event, n = 1) =>
  waitFor(`${c.name} to get ${n}× '${event}' (has ${JSON.stringify(c.events.map((e) => e[0]))})`, () => c.events.filter((e) => e[0] === event).length >= n);
const names = (c) => c.events.map((e) => e[0]).filter((e) => e !== 'log');
const eq = (a, b) => JSON.stringify(a) === JSON.stringify(b);
function expect(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function createOrJoin(c, room) {
  await connected(c);
  c.socket.emit('create or join', room);
}

/** The codelab's conversation from one side: strings and offer/answer/candidate objects. */
function conversation(side, n) {
  const sdp = `v=0\r\no=- ${side}${n} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n`;
  const msgs = ['got user media', { type: side === 'a' ? 'offer' : 'answer', sdp }];
  for (let i = 0; i < 3; i++) {
    msgs.push({ type: 'candidate', label: 0, id: '0', candidate: `candidate:${i} 1 udp 2122260223 127.0.0.1 ${50000 + i} typ host generation 0 ufrag ${side}${n} network-id 1` });
  }
  msgs.push({ unicode: 'é€😀', nested: { arr: [1, 2.5, null, true, 'x'] }, big: 12345678901 });
  return msgs;
}

const all = [];
const track = (c) => (all.push(c), c);

const SCENARIOS = [];
const state = {};
const roomA = `a-${nonce()}`;
const roomB = `b-${nonce()}`;

SCENARIOS.push({
  name: 'two clients in room A (websocket + polling→websocket): created/join/joined/ready, conversation relayed exactly, ipaddr',
  async run() {
    const a1 = track(client('a1', { transports: ['websocket'] }));
    const a2 = track(client('a2')); // the default: polling, then the upgrade to websocket
    let upgraded = false;
    a2.socket.io.on('open', () => a2.socket.io.engine.on('upgrade', (t) => { upgraded = t.name === 'websocket'; }));
    await createOrJoin(a1, roomA);
    await got(a1, 'created');
    const created = a1.events.find((e) => e[0] === 'created');
    expect(eq(created, ['created', roomA, a1.socket.id]), `created: ${JSON.stringify(created)}`);
    expect(a1.logs.length >= 2 && a1.logs.every((l) => Array.isArray(l) && l[0] === 'Message from server:'), `logs: ${JSON.stringify(a1.logs)}`);
    expect(a1.logs.some((l) => l[1] === `Received request to create or join room ${roomA}`), `log lines: ${JSON.stringify(a1.logs)}`);
    await createOrJoin(a2, roomA);
    await got(a2, 'ready');
    await got(a1, 'ready');
    expect(eq(names(a1), ['created', 'join', 'ready']), `a1 events: ${names(a1)}`);
    expect(eq(names(a2), ['joined', 'ready']), `a2 events: ${names(a2)}`);
    expect(eq(a1.events.find((e) => e[0] === 'join'), ['join', roomA]), 'join (room)');
    expect(eq(a2.events.find((e) => e[0] === 'joined'), ['joined', roomA, a2.socket.id]), 'joined (room, id)');
    expect(eq(a2.events.find((e) => e[0] === 'ready'), ['ready']), 'ready has no arguments');
    await waitFor('a2 upgraded to websocket', () => upgraded && a2.socket.io.engine.transport.name === 'websocket');

    const fromA1 = conversation('a', 1);
    const fromA2 = conversation('b', 2);
    // Interleaved like a real negotiation; the room argument of the codelab's variant too.
    for (let i = 0; i < fromA1.length; i++) {
      a1.socket.emit('message', fromA1[i]);
      a2.socket.emit('message', fromA2[i], roomA);
    }
    await waitFor('both conversations relayed', () => a1.messages.length >= fromA2.length && a2.messages.length >= fromA1.length);
    await sleep(300);
    expect(eq(a2.messages, fromA1), `a2 got ${JSON.stringify(a2.messages)}`);
    expect(eq(a1.messages, fromA2), `a1 got ${JSON.stringify(a1.messages)}`);
    // The codelab's server echoes each message to its sender as a log line.
    expect(a1.logs.some((l) => l[1] === 'Client said: ' && eq(l[2], fromA1[1])), 'Client said: log');

    a1.socket.emit('ipaddr');
    await got(a1, 'ipaddr');
    const ip = a1.events.find((e) => e[0] === 'ipaddr');
    expect(eq(ip, ['ipaddr', '127.0.0.1']), `ipaddr: ${JSON.stringify(ip)}`);
    // 'bye' as an event is only logged by the server (the codelab's client also sends it as a message).
    a1.socket.emit('bye');
    Object.assign(state, { a1, a2 });
    return `${fromA1.length} + ${fromA2.length} messages relayed exactly; a2 on ${a2.socket.io.engine.transport.name} after the upgrade; ipaddr ${ip[1]}`;
  },
});

SCENARIOS.push({
  name: 'a third client in room A gets full; it is in no room, so nothing it sends is relayed',
  async run() {
    const { a1, a2 } = state;
    const a3 = track(client('a3'));
    await createOrJoin(a3, roomA);
    await got(a3, 'full');
    expect(eq(a3.events.find((e) => e[0] === 'full'), ['full', roomA]), 'full (room)');
    expect(eq(names(a3), ['full']), `a3 events: ${names(a3)}`);
    const before = [a1.messages.length, a2.messages.length];
    a3.socket.emit('message', 'from the third');
    await waitFor('a3 told it is in no room', () => a3.logs.some((l) => /not in a room/.test(l[1])));
    await sleep(200);
    expect(eq([a1.messages.length, a2.messages.length], before), 'a third client reached room A');
    state.a3 = a3;
    return `a3 logs: ${JSON.stringify(a3.logs[a3.logs.length - 1])}`;
  },
});

SCENARIOS.push({
  name: 'room B is separate: messages never cross rooms',
  async run() {
    const { a1, a2 } = state;
    const b1 = track(client('b1', { transports: ['websocket'] }));
    const b2 = track(client('b2', { transports: ['polling'] })); // polling only, never upgraded
    await createOrJoin(b1, roomB);
    await got(b1, 'created');
    await createOrJoin(b2, roomB);
    await got(b1, 'ready');
    await got(b2, 'ready');
    const aBefore = [a1.messages.length, a2.messages.length];
    b1.socket.emit('message', { type: 'offer', sdp: 'room B offer' });
    b2.socket.emit('message', { type: 'answer', sdp: 'room B answer' });
    a1.socket.emit('message', 'room A only');
    await waitFor('room B relayed', () => b1.messages.length === 1 && b2.messages.length === 1);
    await waitFor('room A relayed', () => a2.messages.length === aBefore[1] + 1);
    await sleep(300);
    expect(eq(b2.messages, [{ type: 'offer', sdp: 'room B offer' }]), `b2: ${JSON.stringify(b2.messages)}`);
    expect(eq(b1.messages, [{ type: 'answer', sdp: 'room B answer' }]), `b1: ${JSON.stringify(b1.messages)}`);
    expect(a1.messages.length === aBefore[0], 'a1 got something from room B');
    expect(!a2.messages.some((m) => JSON.stringify(m).includes('room B')), 'a2 got room B messages');
    expect(!b1.messages.concat(b2.messages).includes('room A only'), 'room B got room A messages');
    Object.assign(state, { b1, b2 });
    return `b2 on ${b2.socket.io.engine.transport.name}`;
  },
});

SCENARIOS.push({
  name: 'a member disconnects: the other gets bye, a new client joins A and the call goes on',
  async run() {
    const { a1, a2 } = state;
    const n = a2.messages.length;
    a1.socket.disconnect();
    await waitFor("a2 gets 'bye'", () => a2.messages.length > n && a2.messages[a2.messages.length - 1] === 'bye');
    const a4 = track(client('a4'));
    await createOrJoin(a4, roomA);
    await got(a4, 'ready');
    expect(eq(names(a4), ['joined', 'ready']), `a4 events: ${names(a4)}`);
    // a2 had joined a1's room (joined + ready); now a4 joins a2's: join + ready.
    await got(a2, 'join', 1);
    await got(a2, 'ready', 2);
    expect(eq(a2.events.find((e) => e[0] === 'join'), ['join', roomA]), 'join (room)');
    a4.socket.emit('message', { type: 'offer', sdp: 'again' });
    a2.socket.emit('message', { type: 'answer', sdp: 'again' });
    await waitFor('the new pair talks', () => a4.messages.length === 1 && eq(a2.messages[a2.messages.length - 1], { type: 'offer', sdp: 'again' }));
    state.a4 = a4;
    return 'bye delivered; the freed place was taken';
  },
});

SCENARIOS.push({
  name: 'malformed and oversized input is refused; the server keeps serving room A',
  async run() {
    const { a2, a4 } = state;
    const m = track(client('m', { transports: ['websocket'] }));
    const room = `m-${nonce()}`;
    await createOrJoin(m, room);
    await got(m, 'created');
    const mp = track(client('mp'));
    await createOrJoin(mp, room);
    await got(mp, 'ready');
    const logs = () => m.logs.map((l) => l.slice(1).join(' '));
    const expectLog = (re, what) => waitFor(`a log about ${what} (logs: ${JSON.stringify(logs())})`, () => logs().some((l) => re.test(l)));
    // Over signal_max_message, under the transport's limit: a log, nothing relayed.
    m.socket.emit('message', 'x'.repeat(MAX_MESSAGE + 100));
    await expectLog(/too_large/, 'an oversized message');
    m.socket.emit('message', { blob: Buffer.from([1, 2, 3]) });
    await expectLog(/binary/, 'a binary attachment');
    m.socket.emit('no such event', 1, 2);
    await expectLog(/unknown event 'no such event'/, 'an unknown event');
    m.socket.emit('message');
    await expectLog(/needs an argument/, "'message' without argument");
    m.socket.emit('create or join', { not: 'a string' });
    await expectLog(/needs a room name/, 'a room that is not a string');
    m.socket.emit('create or join', 'other-room');
    await expectLog(/already in room/, 'a second create or join');
    const bad = track(client('bad'));
    await createOrJoin(bad, 'bad/room');
    await got(bad, 'error');
    expect(bad.events.find((e) => e[0] === 'error')[1].code === 'invalid_room', 'invalid room name refused');
    await sleep(200);
    expect(mp.messages.length === 0, `mp got ${JSON.stringify(mp.messages).slice(0, 200)}`);
    // Another namespace: refused at connect.
    const other = io(`${URL_}/other`, { forceNew: true, reconnection: false, transports: ['websocket'] });
    const nsErr = await new Promise((resolve) => {
      other.on('connect_error', (e) => resolve(e.message));
      other.on('connect', () => resolve('connected'));
    });
    other.close();
    expect(nsErr !== 'connected', 'a namespace other than / was accepted');
    // Raw engine.io/socket.io garbage on a WebSocket of its own, then a frame over the limit.
    const raw = new WebSocket(`ws://127.0.0.1:${PORT}/socket.io/?EIO=4&transport=websocket`);
    await new Promise((resolve, reject) => { raw.on('open', resolve); raw.on('error', reject); });
    for (const f of ['40', '42[', '42["message"', '4{}', '42{"a":1}', '451-["message",{"_placeholder":true,"num":0}]', '42[null]', '42[1,2]', '99', '', '6', '42["create or join","' + 'r'.repeat(200) + '"]', '43', '41/nope,']) raw.send(f);
    raw.send(Buffer.from([0xff, 0x00, 0x42]));
    raw.send('42["message","' + 'y'.repeat(MAX_MESSAGE * 3) + '"]');
    await new Promise((resolve) => { raw.on('close', resolve); setTimeout(resolve, 2000); });
    raw.terminate();
    // The room A pair still talks.
    const n2 = a2.messages.length;
    a4.socket.emit('message', 'still here');
    await waitFor('room A still relays', () => a2.messages.length === n2 + 1 && a2.messages[n2] === 'still here');
    const health = await fetch(`${URL_}/healthz`);
    expect(health.ok, `healthz ${health.status}`);
    return `refusals logged (${logs().length} log lines); /other: ${nsErr}; room A still relays`;
  },
});

/** A room token (JWT HS256), as an application backend mints them. */
function roomToken(secret, room) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ room, exp: Math.floor(Date.now() / 1000) + 600 })}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

/** Connects and resolves with 'connected' or the connect_error's message. */
function connectResult(url, opts) {
  const s = io(url, { forceNew: true, reconnection: false, transports: ['websocket'], ...opts });
  return new Promise((resolve) => {
    s.on('connect', () => resolve({ s, r: 'connected' }));
    s.on('connect_error', (e) => resolve({ s, r: e.message }));
  });
}

SCENARIOS.push({
  name: 'Origin check and room tokens (auth or query; claim socket.io/<room>)',
  async run() {
    const foreign = await connectResult(URL_, { extraHeaders: { Origin: 'http://evil.example' } });
    foreign.s.close();
    expect(/^forbidden/.test(foreign.r), `foreign Origin: ${foreign.r}`);
    const own = await connectResult(URL_, { extraHeaders: { Origin: URL_ } });
    own.s.close();
    expect(own.r === 'connected', `own Origin: ${own.r}`);
    const port = process.env.IB_TOKEN_HTTP_PORT;
    const secret = process.env.IB_TOKEN_SECRET;
    if (!port || !secret) throw new Error('IB_TOKEN_HTTP_PORT / IB_TOKEN_SECRET not set');
    const turl = `http://127.0.0.1:${port}`;
    const none = await connectResult(turl, {});
    none.s.close();
    expect(/^unauthorized/.test(none.r), `no token: ${none.r}`);
    const room = `t-${nonce()}`;
    const good = track(client('tok', { transports: ['websocket'], auth: { token: roomToken(secret, `socket.io/${room}`) } }, turl));
    const viaQuery = track(client('tokq', { query: { token: roomToken(secret, `socket.io/${room}`) } }, turl));
    const wrong = track(client('tokw', { transports: ['websocket'], auth: { token: roomToken(secret, room) } }, turl));
    await createOrJoin(good, room);
    await got(good, 'created');
    await createOrJoin(viaQuery, room);
    await got(viaQuery, 'joined');
    await createOrJoin(wrong, room);
    await got(wrong, 'error');
    const err = wrong.events.find((e) => e[0] === 'error')[1];
    expect(err.code === 'forbidden', `token for the bare room name: ${JSON.stringify(err)}`);
    return `foreign Origin: ${foreign.r}; no token: ${none.r}; token in auth and in query accepted; claim '${room}' → ${err.code}`;
  },
});

let failed = 0;
for (const sc of SCENARIOS) {
  const t0 = Date.now();
  try {
    const detail = await sc.run();
    console.log(`  PASS ${sc.name} (${((Date.now() - t0) / 1000).toFixed(1)}s): ${detail}`);
  } catch (err) {
    failed++;
    console.log(`  FAIL ${sc.name} (${((Date.now() - t0) / 1000).toFixed(1)}s): ${err.message}`);
    break; // later scenarios build on earlier ones
  }
}
for (const c of all) c.socket.close();
console.log(`socket.io scenarios: ${SCENARIOS.length - failed}/${SCENARIOS.length} ${failed ? 'did not all pass' : 'passed'}`);
process.exit(failed ? 1 : 0);
