// @ts-check
/**
 * Icebreaker browser SDK: a signaling client for `icebreaker serve` (docs/PROTOCOL.md) and a
 * call helper on top of it that works the same in mesh rooms and in SFU rooms. One ES module,
 * no dependencies, no build step.
 *
 * ```js
 * import { SignalingClient, Call } from '/sdk/icebreaker.js';
 * const client = new SignalingClient();                 // same origin by default
 * const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
 * const call = new Call(client, { localStream: stream }); // subscribes before the join
 * call.on('stream', ({ peer, stream }) => {               // one stream per remote peer
 *   video.srcObject = stream;
 *   call.observe(peer, video);                            // SFU: send the layer that fits
 * });
 * call.on('stats', (s) => { ... });                       // s.path: 'direct' | 'turn'
 * call.on('speaker', ({ peer }) => { ... });              // the active speaker
 * call.on('data', ({ peer, data }) => { ... });           // call.sendData('hi') from peer
 * await client.join('demo', { name: 'Ada', topology: 'auto' }); // 'auto' | 'mesh' | 'sfu'
 * const { id, phone } = await call.dial('tel:+15550100'); // a phone joins the room (sip_dial)
 * ```
 *
 * Signaling client
 * - Transports, in order of preference: WebSocket (`/ws`), Server-Sent Events
 *   (`/signal/events` + `POST /signal/send`), long-poll (`/signal/poll` + `POST /signal/send`).
 *   A transport that cannot be opened is skipped for the next one; the one that worked is tried
 *   first on every reconnect.
 * - Every server message carries `seq`; the client remembers the last one, never hands a message
 *   to the application twice (dedupe by `seq`), acknowledges at most 500 ms after a message
 *   arrives (so at least once a second while messages arrive), and after a dropped connection
 *   resumes the session (token + last `seq`) on any transport, with exponential backoff and
 *   jitter. When the server no longer knows the session (`resume_failed`), it joins again: the
 *   application sees a new `joined` (with a new peer id). When an operator removed the member
 *   (`error` `removed`, on the live stream or in answer to a resume), the client closes for
 *   good: an `error` event with code `removed`, state `closed`, no rejoin.
 * - Messages sent while disconnected are queued and sent after the resume.
 * - `join(room, {topology})` chooses the topology of a room the join creates; `joined`/`resumed`
 *   carry `topology` (`'mesh'` | `'sfu'`, also `client.topology`), the `topology` event says the
 *   room switched to the SFU. `sendSfu(data)` / the `sfu` event carry the SFU's messages (the
 *   Call does that itself).
 *
 * Call: hides the topology. The same events either way: `peer-added`/`peer-removed` (members),
 * `stream`/`track` (one MediaStream per remote peer with its audio and video), `connection-state`,
 * `path`, `stats`, `speaker`, `data`, `message`, `topology`, `error`.
 *
 * Call in a mesh room
 * - One RTCPeerConnection per remote peer, "perfect negotiation": the peer whose id sorts first
 *   (string comparison of the 8-hex-digit ids, i.e. the smaller id) is the **polite** one and
 *   yields on an offer collision; the other is impolite and ignores the colliding offer.
 * - The peer that joins offers to everyone already in the room; the members already there
 *   create their connection when the newcomer's first signal arrives (so there is no glare in
 *   the common case), or after `offerTimeout` ms if none arrives.
 * - Trickle ICE, SDP as `{sdp: {type, sdp}}` signals; the candidates gathered within 25 ms go
 *   together as one `{candidates: [...]}` signal (`{candidate}` when alone), and the
 *   connection is `max-bundle` (candidates gathered once, not per m-line).
 * - Signaling over the data channel (`signalingChannel`, default on): a second negotiated
 *   channel `icebreaker-signal` (id 1). Once both ends said hello on it and ICE is connected,
 *   each new negotiation (renegotiation, an ICE restart the application asks for) and its
 *   candidates, and `send`/`broadcast` messages, go over it instead of through the server: the
 *   offerer picks the path, the answer and candidates follow it. Through the server again
 *   when the channel closes (an offer waiting for its answer is sent again there), when ICE
 *   is in trouble (restarts for `failed`, `disconnected`, timeouts, network changes and
 *   resumes go through the server) and when an answer over the channel does not come within
 *   `channelAnswerTimeout` ms. `call.signalingCounts` counts what went each way.
 * - `send(peer, data)` / `broadcast(data)`: application messages (any JSON value) on the
 *   same path, as `{app: data}`; received as `message` events `{peer, data, via}`.
 * - ICE restart when ICE `failed`, when it stays `disconnected` for `disconnectTimeout` ms,
 *   when it does not connect within `connectTimeout` ms, on a network change (`online`,
 *   `navigator.connection` `change`) and after a signaling resume for links that are not
 *   connected.
 * - `sendData` goes over a data channel `icebreaker` on each connection (negotiated, id 0,
 *   created with the local tracks so it is part of the first offer).
 * - Active speaker (`speaker`): computed from the inbound audio levels (and our microphone's)
 *   of each stats interval: the loudest voice, switching only when another one has been the
 *   loudest for 1 s.
 *
 * Call in an SFU room (from `joined`/`resumed`, or when the `topology` event arrives: the mesh
 * connections are closed and the call moves to the SFU; `stream` comes again per peer)
 * - One RTCPeerConnection to the server's SFU (PROTOCOL.md "The SFU"); the same `iceServers`
 *   and `iceTransportPolicy`. It publishes the local stream: audio as is, video as simulcast
 *   ({@link SIMULCAST}: `q` ¼, `h` ½, `f` full resolution, lowest first), trimmed to the top
 *   layers the capture size can carry in Chromium (2 below 960×540, 1 below 480×270), and a
 *   data channel `icebreaker`. The client is impolite: it ignores an SFU `offer` while its own
 *   is outstanding (the SFU offers again after answering). No candidates are sent (the SFU is
 *   ICE-lite); ICE restart = a new offer with new credentials, on the same triggers as a mesh
 *   link. An offer the SFU refuses (`error`) is tried again with backoff, one without an answer
 *   within `answerTimeout` at once: the first offer as it was, a later one rolled back and
 *   made anew.
 * - Received tracks are given to their publisher by the `tracks` list of the SFU's `answer`/
 *   `offer` (`transceiver.mid` → peer), whichever comes first; a peer that leaves loses its
 *   tracks (its stream ends: `peer-removed`).
 * - `observe(peer, videoElement)`: the element's size in device pixels (0 × 0 when off screen or
 *   the page is hidden) is sent as `view` for that peer's video, debounced (200 ms), only when
 *   it changed and once the mid is known, so that the SFU sends the layer that fits.
 * - `sendData`: over the SFU's channel; text arrives as `{from, data}`, binary with the
 *   8-byte sender id in front: both become `data` events `{peer, data}`.
 * - `speaker` comes from the SFU. `connection-state` and `path` describe the connection to the
 *   SFU and are announced for every peer; `stats` per peer have that connection's path, rtt and
 *   bitrate out, and the peer's own bitrate in, frames decoded, frame size and audio level
 *   (its inbound RTP streams, by `mid`, or by track id where `mid` is missing).
 *
 * Phones (PROTOCOL.md "Phones in a room"; the server needs `sip_dial`)
 * - `call.dial(uri)` has the server call a phone (`tel:`, `sip:`): `dial` events for each state
 *   (`calling`, `ringing`, `answered`, `failed`, `ended`); the promise resolves with
 *   `{id, phone, uri}` when it answers, rejects with a {@link DialError} (`code`, `reason`).
 *   `call.hangup(idOrPeer)` ends it.
 * - The phone is then a member (`info.phone` true, from its `meta.phone`): every page offers to
 *   it at once (it never offers), audio only, without data channels (it never says hello, so
 *   signaling stays on the server) and without sending candidates (it is ICE-lite).
 *
 * - `iceServers` come from `joined`/`resumed`; `iceTransportPolicy: 'relay'` forces TURN.
 * - Every `statsInterval` ms, a `stats` event per peer: the selected candidate pair (`path` is
 *   `'turn'` when the local or the remote candidate is a relay candidate, else `'direct'`),
 *   bitrates in and out (bits/s), video frames decoded and size, audio level, round-trip time.
 *
 * @module icebreaker
 */

/** @typedef {'websocket' | 'sse' | 'poll'} TransportName */
/** @typedef {'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'} ClientState */
/**
 * A member of the room. `phone` is set by the SDK (never sent): true for a phone the server
 * dialed into the room (`meta.phone`, PROTOCOL.md "Phones in a room"), which has audio only.
 * @typedef {{ id: string, name?: string, meta?: Record<string, unknown>, phone?: boolean }} PeerInfo
 */
/** @typedef {'mesh' | 'sfu'} Topology */

/**
 * A server → client message (see PROTOCOL.md).
 * @typedef {{ type: string, seq?: number, [key: string]: any }} ServerMessage
 */

/**
 * @typedef {object} JoinOptions
 * @property {string} [name] display name (≤ 64 characters)
 * @property {Record<string, unknown>} [meta] free-form metadata shown to the others (≤ 1 KiB)
 * @property {string} [token] room token (JWT), when the server requires one
 * @property {number} [capacity] room capacity, when this join creates the room
 * @property {Topology | 'auto'} [topology] the room's topology, when this join creates the room:
 *   `'auto'` (the server's default: a mesh that becomes an SFU room past `--sfu-mesh-max`
 *   members), `'mesh'` or `'sfu'`
 */

/**
 * @typedef {object} JoinedInfo
 * @property {string} peer your peer id
 * @property {string} room
 * @property {boolean} initiator
 * @property {number} capacity
 * @property {PeerInfo[]} peers the others
 * @property {RTCIceServer[]} iceServers
 * @property {number} grace seconds the server keeps a disconnected session
 * @property {Topology} topology `'sfu'`: media goes through the server's SFU (see {@link Call})
 */

/**
 * @typedef {object} ClientOptions
 * @property {string} [url] base URL of the server (default: this page's origin)
 * @property {TransportName[]} [transports] allowed transports, in order of preference
 * @property {number} [backoffInitial] first reconnect delay in ms (default 500)
 * @property {number} [backoffMax] longest reconnect delay in ms (default 15000)
 * @property {number} [connectTimeout] ms to open a transport and get `joined`/`resumed` (default 10000)
 * @property {number} [pingInterval] ms between keepalive pings on WebSocket (default 25000)
 */

export const VERSION = '0.1.0';

/** Messages kept for sending while disconnected. */
const MAX_QUEUE = 1000;

/** Server message types that carry application-visible events. */
const EVENT_TYPES = ['joined', 'peer-joined', 'peer-left', 'signal', 'broadcast', 'resumed', 'topology', 'sfu', 'sip', 'pong', 'error'];

/** Error codes after which retrying the same request cannot help. */
const FATAL_CODES = new Set(['invalid_room', 'room_full', 'server_full', 'unauthorized', 'forbidden', 'bad_message', 'too_large', 'removed']);

/**
 * Codes that end a live session for good: the client closes (state `closed`, an `error` event)
 * instead of resuming or joining again. `removed`: an operator removed this member (`/admin`).
 */
const ENDING_CODES = new Set(['removed']);

/** An error from the server (`error` message) or from the SDK. */
export class SignalingError extends Error {
  /**
   * @param {string} code stable code (PROTOCOL.md "Errors", or `network` / `timeout` / `closed`)
   * @param {string} message
   * @param {string} [ref]
   */
  constructor(code, message, ref) {
    super(message);
    this.name = 'SignalingError';
    this.code = code;
    this.ref = ref;
  }
}

/**
 * Minimal typed event emitter.
 * @template {Record<string, any>} E
 */
class Emitter {
  constructor() {
    /** @type {Map<keyof E, Set<(ev: any) => void>>} */
    this._handlers = new Map();
  }

  /**
   * Subscribe; returns a function that unsubscribes.
   * @template {keyof E} K
   * @param {K} type
   * @param {(ev: E[K]) => void} fn
   * @returns {() => void}
   */
  on(type, fn) {
    let set = this._handlers.get(type);
    if (!set) this._handlers.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  /**
   * @template {keyof E} K
   * @param {K} type
   * @param {(ev: E[K]) => void} fn
   */
  off(type, fn) {
    this._handlers.get(type)?.delete(fn);
  }

  /**
   * @template {keyof E} K
   * @param {K} type
   * @param {E[K]} ev
   * (internal: used by the SDK's own classes)
   */
  _emit(type, ev) {
    const set = this._handlers.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(ev);
      } catch (err) {
        // A failing handler must not break the SDK; surface it without swallowing it.
        setTimeout(() => {
          throw err;
        });
      }
    }
  }
}

/** @param {number} ms */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Exponential backoff with jitter: attempt n waits a random time in [d/2, d] with
 * d = min(max, initial * 2^n).
 * @param {number} attempt
 * @param {number} initial
 * @param {number} max
 */
export function backoffDelay(attempt, initial, max) {
  const d = Math.min(max, initial * 2 ** Math.min(attempt, 20));
  return Math.round(d / 2 + (Math.random() * d) / 2);
}

/**
 * @typedef {object} ClientEvents
 * @property {JoinedInfo} joined the session started (again, after a failed resume: new peer id)
 * @property {JoinedInfo} resumed the session was resumed after a dropped connection
 * @property {{ peer: PeerInfo }} peer-joined
 * @property {{ peer: string, reason: string }} peer-left
 * @property {{ from: string, data: any, seq: number }} signal
 * @property {{ from: string, data: any, seq: number }} broadcast
 * @property {{ topology: Topology, seq: number }} topology the room switched topology (to `'sfu'`)
 * @property {{ data: any, seq: number }} sfu a message from the SFU (SFU rooms; see {@link Call})
 * @property {{ data: any, seq: number }} sip a message from the SIP gateway: the state of a call
 *   this member dialed (see {@link Call#dial})
 * @property {{ state: ClientState, transport: TransportName | null }} state
 * @property {SignalingError} error
 */

/**
 * One live transport. `send` takes one message; `close` detaches it without a `leave`.
 * @typedef {object} Link
 * @property {TransportName} name
 * @property {(msg: object) => void} send
 * @property {() => void} close
 */

/**
 * Signaling client (see the module documentation).
 * @extends {Emitter<ClientEvents>}
 */
export class SignalingClient extends Emitter {
  /** @param {ClientOptions} [options] */
  constructor(options = {}) {
    super();
    const base = options.url ?? (typeof location !== 'undefined' ? location.origin : '');
    /** @type {URL} */
    this.baseUrl = new URL(base);
    /** @type {TransportName[]} */
    this.transports = (options.transports ?? ['websocket', 'sse', 'poll']).filter((t) =>
      ['websocket', 'sse', 'poll'].includes(t),
    );
    if (this.transports.length === 0) throw new TypeError('no usable transport');
    this.backoffInitial = options.backoffInitial ?? 500;
    this.backoffMax = options.backoffMax ?? 15000;
    this.connectTimeout = options.connectTimeout ?? 10000;
    this.pingInterval = options.pingInterval ?? 25000;

    /** @type {ClientState} */
    this.state = 'idle';
    /** @type {TransportName | null} current transport */
    this.transport = null;
    /** @type {string | null} your peer id */
    this.peerId = null;
    /** @type {string | null} */
    this.room = null;
    /** @type {Map<string, PeerInfo>} the other members of the room */
    this.peers = new Map();
    /** @type {RTCIceServer[]} */
    this.iceServers = [];
    /** @type {JoinedInfo | null} */
    this.info = null;
    /** @type {Topology | null} the room's topology (null before the join) */
    this.topology = null;

    /** @type {Set<string>} our own peer ids of earlier sessions (after a failed resume) */
    this._formerIds = new Set();
    /** @type {string | null} session token (secret) */
    this._session = null;
    this._lastSeq = 0;
    this._ackedSeq = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._ackTimer = null;
    /** @type {object | null} the join message, kept to join again after a failed resume */
    this._joinMsg = null;
    /** @type {Link | null} */
    this._link = null;
    /** @type {object[]} messages waiting for a transport */
    this._queue = [];
    this._attempt = 0;
    this._generation = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._reconnectTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._stableTimer = null;
    /** @type {ReturnType<typeof setInterval> | null} */
    this._pingTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._pongTimer = null;
    this._pingId = 0;
    /** @type {Promise<void> | null} a connect attempt in progress */
    this._connecting = null;
    /** @type {((info: JoinedInfo) => void) | null} */
    this._onFirstJoin = null;
    /** @type {((err: SignalingError) => void) | null} */
    this._onFirstJoinFail = null;

    this._onOnline = () => {
      if (this.state === 'reconnecting') this._reconnectNow();
      else if (this.state === 'open') this._checkAlive();
    };
    if (typeof window !== 'undefined') window.addEventListener('online', this._onOnline);
  }

  /** @returns {boolean} true while a transport is attached and the session is live */
  get connected() {
    return this.state === 'open';
  }

  /**
   * Connect and join `room`. Resolves with the `joined` information; rejects with a
   * {@link SignalingError} when the server refuses the join (e.g. `room_full`) or no transport
   * works within `connectTimeout` (then it keeps no retry running).
   * @param {string} room
   * @param {JoinOptions} [opts]
   * @returns {Promise<JoinedInfo>}
   */
  join(room, opts = {}) {
    if (this.state !== 'idle' && this.state !== 'closed') {
      return Promise.reject(new SignalingError('already_joined', 'this client has already joined a room'));
    }
    /** @type {Record<string, unknown>} */
    const msg = { type: 'join', room };
    if (opts.name !== undefined) msg.name = opts.name;
    if (opts.meta !== undefined) msg.meta = opts.meta;
    if (opts.token !== undefined) msg.token = opts.token;
    if (opts.capacity !== undefined) msg.capacity = opts.capacity;
    if (opts.topology !== undefined) msg.topology = opts.topology;
    this._joinMsg = msg;
    this._session = null;
    this._lastSeq = 0;
    this._ackedSeq = 0;
    this._attempt = 0;
    this._setState('connecting');
    return new Promise((resolve, reject) => {
      this._onFirstJoin = resolve;
      this._onFirstJoinFail = reject;
      this._connect();
    });
  }

  /**
   * Send `data` (any JSON value) to one peer of the room.
   * @param {string} to peer id
   * @param {unknown} data
   */
  send(to, data) {
    this._sendMsg({ type: 'signal', to, data });
  }

  /**
   * Send `data` to every other peer of the room.
   * @param {unknown} data
   */
  broadcast(data) {
    this._sendMsg({ type: 'broadcast', data });
  }

  /**
   * Send `data` (an object with a `kind`, PROTOCOL.md "The SFU") to the SFU of an SFU room.
   * {@link Call} does this itself; this is for applications that drive the SFU on their own.
   * @param {Record<string, unknown>} data
   */
  sendSfu(data) {
    this._sendMsg({ type: 'sfu', data });
  }

  /**
   * Send `data` (an object with a `kind`, PROTOCOL.md "Phones in a room") to the server's SIP
   * gateway. {@link Call#dial} and {@link Call#hangup} do this; `id` is echoed as the `ref` of
   * an `error` the server answers it with.
   * @param {Record<string, unknown>} data
   * @param {string} [id]
   */
  sendSip(data, id) {
    /** @type {Record<string, unknown>} */
    const msg = { type: 'sip', data };
    if (id !== undefined) msg.id = id;
    this._sendMsg(msg);
  }

  /** Leave the room now (the others see `peer-left` `left`) and close the client. */
  leave() {
    if (this.state === 'closed' || this.state === 'idle') return;
    const link = this._link;
    if (link && this._session) {
      if (link.name === 'websocket') {
        link.send({ type: 'leave' });
      } else {
        this._post([{ type: 'leave' }], true).catch(() => {});
      }
    } else if (this._session) {
      this._post([{ type: 'leave' }], true).catch(() => {});
    }
    this._shutdown();
  }

  /** Close the client without leaving (the session ends after the server's grace period). */
  close() {
    this._shutdown();
  }

  /**
   * Test hook: drop the current transport abruptly, as a network failure would (no `leave`).
   * The client then resumes by itself, after `holdMs` ms when given (to simulate an outage).
   * @param {number} [holdMs]
   */
  _debugDropConnection(holdMs = 0) {
    const link = this._link;
    if (!link) return;
    this._dropLink(link, new SignalingError('network', 'connection dropped (debug)'));
    if (holdMs > 0 && this._reconnectTimer) {
      clearTimeout(this._reconnectTimer);
      this._reconnectTimer = setTimeout(() => {
        this._reconnectTimer = null;
        this._connect();
      }, holdMs);
    }
  }

  // ---------------------------------------------------------------------------------------
  // connection management

  /** @param {ClientState} state */
  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit('state', { state, transport: this.transport });
  }

  _shutdown() {
    this._generation++;
    if (this._reconnectTimer) clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._stopPing();
    if (this._ackTimer) clearTimeout(this._ackTimer);
    this._ackTimer = null;
    const link = this._link;
    this._link = null;
    link?.close();
    this._queue = [];
    this._session = null;
    this.transport = null;
    if (typeof window !== 'undefined') window.removeEventListener('online', this._onOnline);
    if (this._onFirstJoinFail) {
      this._onFirstJoinFail(new SignalingError('closed', 'the client was closed'));
      this._onFirstJoin = this._onFirstJoinFail = null;
    }
    this._setState('closed');
  }

  /**
   * Try every transport once (the last one that worked first).
   * @returns {Promise<void>}
   */
  async _connect() {
    const gen = ++this._generation;
    /** @type {SignalingError | null} */
    let lastErr = null;
    for (const name of this.transports) {
      if (gen !== this._generation) return;
      try {
        const link = await this._open(name, gen);
        if (gen !== this._generation) {
          link.close();
          return;
        }
        // This transport works: prefer it from now on. The backoff starts over once the
        // connection has held for a while (a server that drops every connection at once
        // must not be hammered).
        this.transports = [name, ...this.transports.filter((t) => t !== name)];
        if (this._stableTimer) clearTimeout(this._stableTimer);
        this._stableTimer = setTimeout(() => {
          this._stableTimer = null;
          if (this._link === link) this._attempt = 0;
        }, 10000);
        return;
      } catch (err) {
        lastErr = err instanceof SignalingError ? err : new SignalingError('network', String(err));
        if (gen !== this._generation) return;
        if (lastErr.code === 'resume_failed') {
          // The server forgot the session (or no longer holds what we missed): start over
          // with a fresh join, at once. End the old session in case it still exists, and
          // never treat our old peer id as somebody else (it may linger until its grace
          // period ends).
          const old = this._session;
          if (old) {
            fetch(this._url('/signal/send', { session: old }), {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ type: 'leave' }),
              keepalive: true,
            }).catch(() => {});
          }
          if (this.peerId) this._formerIds.add(this.peerId);
          this._session = null;
          this._lastSeq = 0;
          this._ackedSeq = 0;
          return this._connect();
        }
        if (FATAL_CODES.has(lastErr.code)) {
          this._fail(lastErr);
          return;
        }
      }
    }
    if (gen !== this._generation) return;
    // Nothing worked. Before the first join: give up and reject. Afterwards: retry.
    if (this._onFirstJoinFail) {
      this._fail(lastErr ?? new SignalingError('network', 'no transport could connect'));
      return;
    }
    this._scheduleReconnect();
  }

  /** @param {SignalingError} err */
  _fail(err) {
    const reject = this._onFirstJoinFail;
    this._onFirstJoin = this._onFirstJoinFail = null;
    this._emit('error', err);
    this._shutdown();
    if (reject) reject(err);
  }

  _scheduleReconnect() {
    if (this.state === 'closed') return;
    this._setState('reconnecting');
    if (this._reconnectTimer) clearTimeout(this._reconnectTimer);
    const delay = backoffDelay(this._attempt++, this.backoffInitial, this.backoffMax);
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      this._connect();
    }, delay);
  }

  _reconnectNow() {
    if (this._reconnectTimer) clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._attempt = 0;
    this._connect();
  }

  /**
   * The transport died (or was dropped on purpose): resume.
   * @param {Link} link
   * @param {SignalingError} err
   */
  _dropLink(link, err) {
    if (this._link !== link) return;
    if (ENDING_CODES.has(err.code)) {
      this._fail(err);
      return;
    }
    this._link = null;
    this.transport = null;
    this._stopPing();
    if (this._stableTimer) clearTimeout(this._stableTimer);
    this._stableTimer = null;
    link.close();
    if (this.state === 'closed') return;
    this._generation++;
    this._setState('reconnecting');
    // First retry fast (a blip), then back off.
    if (this._attempt === 0) {
      this._attempt = 1;
      this._reconnectTimer = setTimeout(() => {
        this._reconnectTimer = null;
        this._connect();
      }, Math.round(50 + Math.random() * 200));
    } else {
      this._scheduleReconnect();
    }
  }

  /**
   * Open one transport and wait until the session is live on it (`joined` or `resumed`).
   * @param {TransportName} name
   * @param {number} gen
   * @returns {Promise<Link>}
   */
  _open(name, gen) {
    return new Promise((resolve, reject) => {
      /** @type {Link | null} */
      let link = null;
      let settled = false;
      const timer = setTimeout(() => fail(new SignalingError('timeout', `${name}: no answer within ${this.connectTimeout} ms`)), this.connectTimeout);
      /** @param {SignalingError} err */
      const fail = (err) => {
        if (settled) {
          if (link) this._dropLink(link, err);
          return;
        }
        settled = true;
        clearTimeout(timer);
        link?.close();
        reject(err);
      };
      const live = () => {
        if (settled || !link) return;
        settled = true;
        clearTimeout(timer);
        this._link = link;
        this.transport = name;
        this._setState('open');
        if (name === 'websocket') this._startPing();
        this._flushQueue();
        resolve(link);
      };
      /** @param {ServerMessage} msg */
      const onMessage = (msg) => {
        if (gen !== this._generation && this._link !== link) return;
        if (!settled && msg.type === 'error' && msg.seq === undefined) {
          // A refused join/resume: no session came out of it.
          fail(new SignalingError(msg.code ?? 'internal', msg.message ?? 'refused', msg.ref));
          return;
        }
        this._receive(msg);
        if (!settled && (msg.type === 'joined' || msg.type === 'resumed')) live();
      };
      try {
        if (name === 'websocket') link = this._openWebSocket(onMessage, fail);
        else if (name === 'sse') link = this._openSse(onMessage, fail, live);
        else link = this._openPoll(onMessage, fail, live);
      } catch (err) {
        fail(new SignalingError('network', `${name}: ${err instanceof Error ? err.message : err}`));
      }
    });
  }

  /**
   * @param {(msg: ServerMessage) => void} onMessage
   * @param {(err: SignalingError) => void} onFail
   * @returns {Link}
   */
  _openWebSocket(onMessage, onFail) {
    const url = new URL('/ws', this.baseUrl);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(url);
    let closed = false;
    /** @type {Link} */
    const link = {
      name: 'websocket',
      send: (msg) => {
        if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
        else this._queue.push(msg);
      },
      close: () => {
        if (closed) return;
        closed = true;
        ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
        try {
          ws.close();
        } catch {
          /* already closing */
        }
      },
    };
    // Some blocked connections neither open nor fail for a long time (e.g. a silent proxy):
    // give up on the socket after half the connect timeout, to leave time for the fallback.
    const openTimer = setTimeout(() => {
      if (closed || ws.readyState !== WebSocket.CONNECTING) return;
      link.close();
      onFail(new SignalingError('timeout', 'WebSocket did not open'));
    }, Math.round(this.connectTimeout / 2));
    ws.onopen = () => {
      clearTimeout(openTimer);
      if (this._session) ws.send(JSON.stringify({ type: 'resume', session: this._session, last_seq: this._lastSeq }));
      else ws.send(JSON.stringify(this._joinMsg));
    };
    ws.onmessage = (ev) => {
      const msg = parse(ev.data);
      if (msg) onMessage(msg);
    };
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      clearTimeout(openTimer);
      if (closed) return;
      closed = true;
      onFail(new SignalingError('network', `WebSocket closed (${ev.code}${ev.reason ? ' ' + ev.reason : ''})`));
    };
    return link;
  }

  /**
   * Start an HTTP session (`POST /signal/join`) when there is none yet.
   * @returns {Promise<void>}
   */
  async _httpJoin() {
    if (this._session) return;
    const res = await this._fetch('/signal/join', { method: 'POST', body: JSON.stringify(this._joinMsg) });
    const body = await res.json().catch(() => null);
    if (!res.ok) throw errorFromBody(body, res.status);
    if (!body || typeof body.session !== 'string') throw new SignalingError('internal', 'join answer without a session');
    this._session = body.session;
    this._lastSeq = 0;
    this._ackedSeq = 0;
  }

  /**
   * @param {(msg: ServerMessage) => void} onMessage
   * @param {(err: SignalingError) => void} onFail
   * @param {() => void} onOpen the stream is attached (the session is live on it)
   * @returns {Link}
   */
  _openSse(onMessage, onFail, onOpen) {
    /** @type {EventSource | null} */
    let es = null;
    let closed = false;
    /** @type {Link} */
    const link = {
      name: 'sse',
      send: (msg) => this._postQueued(msg),
      close: () => {
        closed = true;
        es?.close();
      },
    };
    this._httpJoin().then(
      () => {
        if (closed) return;
        if (typeof EventSource === 'undefined') throw new SignalingError('network', 'EventSource is not available');
        const url = this._url('/signal/events', { session: this._session ?? '', last_seq: String(this._lastSeq) });
        es = new EventSource(url);
        /** @param {MessageEvent} ev */
        const handler = (ev) => {
          if (typeof ev.data !== 'string' || ev.data === '') return;
          const msg = parse(ev.data);
          if (msg) onMessage(msg);
        };
        let openedOnce = false;
        es.onmessage = handler;
        es.onopen = () => {
          openedOnce = true;
          onOpen();
        };
        for (const t of EVENT_TYPES) {
          if (t !== 'error') es.addEventListener(t, /** @type {EventListener} */ (handler));
        }
        es.addEventListener('error', (ev) => {
          if (ev instanceof MessageEvent && typeof ev.data === 'string' && ev.data) {
            handler(ev);
            return;
          }
          // EventSource would reconnect by itself, but without our backoff or the
          // transport fallback; take over instead (the resume is the same).
          if (closed) return;
          closed = true;
          es?.close();
          if (openedOnce) {
            onFail(new SignalingError('network', 'event stream failed'));
            return;
          }
          // It never opened: EventSource hides why. Ask once with fetch, which can read a
          // refusal such as resume_failed (then the client joins again).
          this._probe(url).then(onFail, () => onFail(new SignalingError('network', 'event stream failed')));
        });
      },
      (err) => {
        if (!closed) onFail(toSignalingError(err));
      },
    ).catch((err) => {
      if (!closed) onFail(toSignalingError(err));
    });
    return link;
  }

  /**
   * @param {(msg: ServerMessage) => void} onMessage
   * @param {(err: SignalingError) => void} onFail
   * @param {() => void} onOpen the first poll succeeded (the session is live)
   * @returns {Link}
   */
  _openPoll(onMessage, onFail, onOpen) {
    let closed = false;
    const abort = new AbortController();
    /** @type {Link} */
    const link = {
      name: 'poll',
      send: (msg) => this._postQueued(msg),
      close: () => {
        closed = true;
        abort.abort();
      },
    };
    const loop = async () => {
      await this._httpJoin();
      let first = true;
      while (!closed) {
        // The first poll answers at once, so that a resume is confirmed quickly.
        const url = this._url('/signal/poll', { session: this._session ?? '', last_seq: String(this._lastSeq), timeout: first ? '1' : '25' });
        const res = await fetch(url, { signal: abort.signal, cache: 'no-store', credentials: 'same-origin' });
        const body = await res.json().catch(() => null);
        if (!res.ok) throw errorFromBody(body, res.status);
        if (!Array.isArray(body)) throw new SignalingError('internal', 'poll answer is not an array');
        for (const msg of body) {
          if (closed) return;
          if (msg && typeof msg === 'object') onMessage(msg);
        }
        if (first) {
          first = false;
          onOpen();
        }
      }
    };
    loop().catch((err) => {
      if (!closed) {
        closed = true;
        onFail(toSignalingError(err));
      }
    });
    return link;
  }

  /**
   * Why a stream URL cannot be opened: the server's `error` (e.g. `resume_failed`), or
   * `network`. Aborts at once when the stream would open.
   * @param {string} url
   * @returns {Promise<SignalingError>}
   */
  async _probe(url) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 5000);
    try {
      const res = await fetch(url, { signal: abort.signal, cache: 'no-store', credentials: 'same-origin' });
      if (res.ok) {
        abort.abort();
        return new SignalingError('network', 'event stream failed');
      }
      return errorFromBody(await res.json().catch(() => null), res.status);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * @param {string} path
   * @param {Record<string, string>} params
   */
  _url(path, params) {
    const url = new URL(path, this.baseUrl);
    for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
    return url.toString();
  }

  /**
   * @param {string} path
   * @param {RequestInit} init
   */
  _fetch(path, init) {
    return fetch(new URL(path, this.baseUrl), {
      ...init,
      headers: { 'content-type': 'application/json' },
      cache: 'no-store',
      credentials: 'same-origin',
    });
  }

  // HTTP sends: one POST in flight at a time, batching what queues meanwhile (keeps order).
  /** @type {object[]} */
  _outbox = [];
  _posting = false;

  /** @param {object} msg */
  _postQueued(msg) {
    this._outbox.push(msg);
    if (!this._posting) this._drainOutbox();
  }

  async _drainOutbox() {
    this._posting = true;
    try {
      while (this._outbox.length && this._session) {
        const batch = this._outbox.splice(0, 100);
        try {
          await this._post(batch, false);
        } catch (err) {
          const e = toSignalingError(err);
          if (e.code === 'network') {
            // Not sent: keep for after the resume, and let the stream notice the drop.
            this._queue.unshift(...batch);
            if (this._link && this._link.name !== 'websocket') this._dropLink(this._link, e);
            return;
          }
          if (ENDING_CODES.has(e.code)) {
            this._fail(e);
            return;
          }
          if (e.code === 'resume_failed' && this._link) {
            this._queue.unshift(...batch.filter((m) => /** @type {any} */ (m).type !== 'ack'));
            this._dropLink(this._link, e);
            return;
          }
          this._emit('error', e);
        }
      }
    } finally {
      this._posting = false;
    }
  }

  /**
   * @param {object[]} batch
   * @param {boolean} keepalive
   */
  async _post(batch, keepalive) {
    let res;
    try {
      res = await fetch(this._url('/signal/send', { session: this._session ?? '' }), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(batch.length === 1 ? batch[0] : batch),
        cache: 'no-store',
        credentials: 'same-origin',
        keepalive,
      });
    } catch (err) {
      throw new SignalingError('network', `send failed: ${err instanceof Error ? err.message : err}`);
    }
    if (!res.ok) throw errorFromBody(await res.json().catch(() => null), res.status);
  }

  /** @param {object} msg */
  _sendMsg(msg) {
    if (this.state === 'closed' || this.state === 'idle') {
      throw new SignalingError('not_joined', 'join a room first');
    }
    if (this._link && this.state === 'open') this._link.send(msg);
    else {
      this._queue.push(msg);
      // Bounded while disconnected: the oldest go first (stale ICE candidates, mostly).
      if (this._queue.length > MAX_QUEUE) this._queue.splice(0, this._queue.length - MAX_QUEUE);
    }
  }

  _flushQueue() {
    const link = this._link;
    if (!link) return;
    const q = this._queue.filter((m) => /** @type {any} */ (m).type !== 'ack');
    this._queue = [];
    for (const m of q) link.send(m);
  }

  // keepalive on WebSocket: the browser hides the server's ping frames, so check with `ping`.
  _startPing() {
    this._stopPing();
    this._pingTimer = setInterval(() => this._checkAlive(), this.pingInterval);
  }

  _stopPing() {
    if (this._pingTimer) clearInterval(this._pingTimer);
    if (this._pongTimer) clearTimeout(this._pongTimer);
    this._pingTimer = this._pongTimer = null;
  }

  /** Send a `ping` on WebSocket; drop the link when nothing comes back within 10 s. */
  _checkAlive() {
    const link = this._link;
    if (!link || link.name !== 'websocket' || this._pongTimer) return;
    link.send({ type: 'ping', id: `k${++this._pingId}` });
    this._pongTimer = setTimeout(() => {
      this._pongTimer = null;
      this._dropLink(link, new SignalingError('timeout', 'no answer to ping'));
    }, 10000);
  }

  // ---------------------------------------------------------------------------------------
  // receiving

  /** @param {ServerMessage} msg */
  _receive(msg) {
    // Anything from the server proves the link is alive.
    if (this._pongTimer) {
      clearTimeout(this._pongTimer);
      this._pongTimer = null;
    }
    if (typeof msg.seq === 'number') {
      if (msg.type === 'joined') {
        // A new session starts at seq 1.
        this._lastSeq = 0;
        this._ackedSeq = 0;
      }
      if (msg.seq <= this._lastSeq) return; // replayed: already delivered
      this._lastSeq = msg.seq;
      this._scheduleAck();
    }
    switch (msg.type) {
      case 'joined': {
        this._session = msg.session;
        const info = this._setRoom(msg);
        info.initiator = !!msg.initiator;
        info.capacity = msg.capacity;
        info.grace = msg.grace;
        this.info = info;
        this._emit('joined', info);
        if (this._onFirstJoin) {
          const resolve = this._onFirstJoin;
          this._onFirstJoin = this._onFirstJoinFail = null;
          resolve(info);
        }
        break;
      }
      case 'resumed': {
        const info = this._setRoom(msg);
        if (this.info) {
          info.initiator = this.info.initiator;
          info.capacity = this.info.capacity;
          info.grace = this.info.grace;
        }
        this.info = info;
        this._emit('resumed', info);
        break;
      }
      case 'peer-joined':
        if (msg.peer && typeof msg.peer.id === 'string' && !this._formerIds.has(msg.peer.id)) {
          markPhone(msg.peer);
          this.peers.set(msg.peer.id, msg.peer);
          this._emit('peer-joined', { peer: msg.peer });
        }
        break;
      case 'peer-left':
        if (this._formerIds.has(msg.peer)) break;
        this.peers.delete(msg.peer);
        this._emit('peer-left', { peer: msg.peer, reason: msg.reason });
        break;
      case 'signal':
        this._emit('signal', { from: msg.from, data: msg.data, seq: msg.seq ?? 0 });
        break;
      case 'broadcast':
        this._emit('broadcast', { from: msg.from, data: msg.data, seq: msg.seq ?? 0 });
        break;
      case 'topology':
        if (msg.topology === 'sfu' || msg.topology === 'mesh') {
          this.topology = msg.topology;
          if (this.info) this.info.topology = msg.topology;
          this._emit('topology', { topology: msg.topology, seq: msg.seq ?? 0 });
        }
        break;
      case 'sfu':
        this._emit('sfu', { data: msg.data, seq: msg.seq ?? 0 });
        break;
      case 'sip':
        this._emit('sip', { data: msg.data, seq: msg.seq ?? 0 });
        break;
      case 'error': {
        const err = new SignalingError(msg.code ?? 'internal', msg.message ?? '', msg.ref);
        if (ENDING_CODES.has(err.code)) {
          this._fail(err);
          break;
        }
        this._emit('error', err);
        break;
      }
      default:
        break; // pong and unknown types
    }
  }

  /**
   * @param {ServerMessage} msg
   * @returns {JoinedInfo}
   */
  _setRoom(msg) {
    this.peerId = msg.peer;
    this.room = msg.room;
    this.peers = new Map();
    for (const p of Array.isArray(msg.peers) ? msg.peers : []) {
      if (p && typeof p.id === 'string' && !this._formerIds.has(p.id)) this.peers.set(p.id, markPhone(p));
    }
    if (Array.isArray(msg.iceServers)) this.iceServers = msg.iceServers;
    this.topology = msg.topology === 'sfu' ? 'sfu' : 'mesh';
    return {
      peer: msg.peer,
      room: msg.room,
      peers: [...this.peers.values()],
      iceServers: this.iceServers,
      initiator: false,
      capacity: 0,
      grace: 0,
      topology: this.topology,
    };
  }

  _scheduleAck() {
    if (this._ackTimer) return;
    this._ackTimer = setTimeout(() => {
      this._ackTimer = null;
      if (this._lastSeq > this._ackedSeq && this._link && this.state === 'open') {
        this._ackedSeq = this._lastSeq;
        this._link.send({ type: 'ack', seq: this._lastSeq });
      } else if (this._lastSeq > this._ackedSeq) {
        this._scheduleAck();
      }
    }, 500);
  }
}

/**
 * Sets `phone` on a member the server dialed (its `meta.phone`).
 * @param {PeerInfo} p
 * @returns {PeerInfo}
 */
function markPhone(p) {
  if (p.meta && typeof p.meta === 'object' && p.meta.phone === true) p.phone = true;
  return p;
}

/** @param {unknown} data */
function parse(data) {
  if (typeof data !== 'string') return null;
  try {
    const v = JSON.parse(data);
    return v && typeof v === 'object' && typeof v.type === 'string' ? /** @type {ServerMessage} */ (v) : null;
  } catch {
    return null;
  }
}

/**
 * @param {any} body
 * @param {number} status
 */
function errorFromBody(body, status) {
  if (body && typeof body === 'object' && typeof body.code === 'string') {
    return new SignalingError(body.code, body.message ?? `HTTP ${status}`, body.ref);
  }
  return new SignalingError(status >= 500 || status === 0 ? 'network' : 'internal', `HTTP ${status}`);
}

/** @param {unknown} err */
function toSignalingError(err) {
  if (err instanceof SignalingError) return err;
  return new SignalingError('network', err instanceof Error ? err.message : String(err));
}

// ===========================================================================================
// Call

/**
 * @typedef {object} CallOptions
 * @property {MediaStream | null} [localStream] tracks to send to every peer (mesh) or to publish to the SFU
 * @property {RTCIceTransportPolicy} [iceTransportPolicy] `'relay'` forces TURN
 * @property {RTCIceServer[]} [iceServers] override the servers from `joined`
 * @property {number} [statsInterval] ms between `stats` events (default 1000; 0 disables, and with it the mesh's active speaker)
 * @property {number} [disconnectTimeout] ms in `disconnected` before an ICE restart (default 3000)
 * @property {number} [connectTimeout] ms to reach `connected` before an ICE restart (default 15000)
 * @property {number} [offerTimeout] ms a member waits for a newcomer's offer before offering itself (default 3000)
 * @property {number} [answerTimeout] ms the SFU connection waits for the SFU's `answer` before offering again (default 10000)
 * @property {RTCRtpEncodingParameters[] | null} [simulcast] the video encodings published to the SFU,
 *   lowest first (default {@link SIMULCAST}; `null` or `[]`: one encoding)
 * @property {boolean} [signalingChannel] mesh: once connected, signal (renegotiation, ICE restarts,
 *   {@link Call#send} messages) over a data channel to the peer instead of through the server
 *   (default true; both peers must have it on, else the server is used)
 * @property {number} [channelAnswerTimeout] ms an offer sent over the signaling channel waits for
 *   its answer before it is sent again through the server (default 4000)
 */

/**
 * Signaling messages a Call sent (mesh), by path.
 * @typedef {{ server: { messages: number, bytes: number }, channel: { messages: number, bytes: number } }} SignalingCounts
 */

/**
 * The simulcast layers a Call publishes to the SFU by default: a quarter, half and full
 * resolution, lowest first (`rid` `q`, `h`, `f`).
 * @type {ReadonlyArray<Readonly<RTCRtpEncodingParameters>>}
 */
export const SIMULCAST = Object.freeze([
  Object.freeze({ rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 }),
  Object.freeze({ rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 }),
  Object.freeze({ rid: 'f', maxBitrate: 1_500_000 }),
]);

/** Label of the data channel of `sendData` (mesh: one per peer, negotiated id 0; SFU: to the SFU). */
const DATA_LABEL = 'icebreaker';
/** Label of the mesh signaling channel (negotiated id 1). */
const SIGNAL_LABEL = 'icebreaker-signal';
/** ms the mesh gathers local candidates before signaling them together (`{candidates}`). */
const CANDIDATE_BATCH_MS = 25;
/** ICE states in which the signaling channel is used. */
const ICE_UP = ['connected', 'completed'];
/** Data messages kept per channel while it is not open yet. */
const MAX_DATA_QUEUE = 256;
/** ms between the last size/visibility change of an observed element and the `view` sent for it. */
const VIEW_DEBOUNCE = 200;
/** Mesh active speaker: the RMS level (0..1) a voice must exceed to count. */
const SPEAKER_THRESHOLD = 0.01;
/** Mesh active speaker: ms another voice must have been the loudest before it takes over. */
const SPEAKER_HOLD = 1000;

/**
 * @typedef {object} CandidateInfo
 * @property {string} type host / srflx / prflx / relay
 * @property {string} [protocol] udp / tcp
 * @property {string} [relayProtocol] udp / tcp / tls (relay candidates)
 * @property {string} [address]
 * @property {number} [port]
 */

/**
 * Stats of one remote peer. In an SFU room the connection (`path`, `local`, `remote`, `rtt`,
 * `bitrateOut`) is the one to the SFU, shared by every peer; `bitrateIn`, `framesDecoded`,
 * `frameWidth`/`frameHeight` and `audioLevel` are this peer's own (the inbound RTP streams
 * whose `mid` the SFU's `tracks` give to this peer).
 * @typedef {object} PeerStats
 * @property {string} peer
 * @property {Topology} topology
 * @property {'direct' | 'turn' | null} path null until a candidate pair is selected
 * @property {CandidateInfo | null} local
 * @property {CandidateInfo | null} remote
 * @property {number} bitrateIn bits/s received from this peer (mesh: all media and data of the
 *   selected pair; SFU: this peer's audio and video RTP)
 * @property {number} bitrateOut bits/s sent (mesh: to this peer; SFU: to the SFU, all of it)
 * @property {number} framesDecoded video frames of this peer decoded so far
 * @property {number | null} frameWidth width of this peer's video as last decoded (null: none yet)
 * @property {number | null} frameHeight
 * @property {number | null} audioLevel RMS level (0..1) of this peer's audio over the last interval
 * @property {number} audioPacketsReceived audio RTP packets received from this peer so far (on
 *   this connection: it starts over with a new one)
 * @property {number | null} rtt seconds (current round-trip time of the pair)
 */

/**
 * @typedef {object} CallEvents
 * @property {{ peer: string, info: PeerInfo }} peer-added
 * @property {{ peer: string, reason: string }} peer-removed the peer left; its stream ends
 * @property {{ peer: string, track: MediaStreamTrack, stream: MediaStream }} track
 * @property {{ peer: string, stream: MediaStream }} stream a peer's remote stream (once per
 *   peer and connection: again after a switch to the SFU)
 * @property {{ peer: string, state: RTCPeerConnectionState, ice: RTCIceConnectionState }} connection-state
 *   (SFU: the state of the connection to the SFU, announced for every peer)
 * @property {{ peer: string, path: 'direct' | 'turn', local: CandidateInfo | null, remote: CandidateInfo | null }} path selected path changed
 * @property {PeerStats} stats
 * @property {{ topology: Topology }} topology the call's topology (first known, or switched to `'sfu'`)
 * @property {{ peer: string | null }} speaker the active speaker changed (may be your own id)
 * @property {{ peer: string, data: string | ArrayBuffer }} data a message of `sendData` from `peer`
 * @property {{ peer: string, data: unknown, via: 'channel' | 'server' }} message a message of
 *   {@link Call#send} / {@link Call#broadcast} from `peer`
 * @property {DialEvent} dial a call this member dialed ({@link Call#dial}) changed state
 * @property {{ peer: string | null, error: Error }} error (`peer` null: about the SFU connection)
 */

/**
 * The state of a call to a phone ({@link Call#dial}; PROTOCOL.md "Phones in a room").
 * @typedef {object} DialEvent
 * @property {string | null} id the call's id (null when the server refused the dial at once)
 * @property {string} uri the number or SIP URI dialed (as the server calls it, once known)
 * @property {'calling' | 'ringing' | 'answered' | 'failed' | 'ended'} state
 * @property {string} [phone] `answered`: the phone's peer id (it joins the room as a member)
 * @property {number | string} [code] `ringing`: 180/183; `failed`: the SIP status (0: nothing
 *   was sent), or the server's error code (e.g. `bad_message` when dialing is off)
 * @property {string} [reason] `failed`/`ended`: why, in words
 */

/**
 * A dial that failed (the promise of {@link Call#dial} rejects with it).
 */
export class DialError extends Error {
  /**
   * @param {string} message
   * @param {number | string} code SIP status (486 busy, 603 declined, 408 no answer, 0 refused
   *   before anything was sent) or the server's error code (`bad_message`, `forbidden`), or
   *   `closed` / `ended`
   * @param {string} reason
   * @param {string | null} id the call's id, when it got one
   * @param {string} uri
   */
  constructor(message, code, reason, id, uri) {
    super(message);
    this.name = 'DialError';
    this.code = code;
    this.reason = reason;
    this.id = id;
    this.uri = uri;
  }
}

/**
 * A dial in progress (before `answered`/`failed`).
 * @typedef {object} PendingDial
 * @property {string} ref our reference (the `ref` of the `sip` message and the `id` of the message)
 * @property {string} uri
 * @property {string | null} id the call's id, from its first state
 * @property {string | null} self our peer id when it was sent (null: before the join)
 * @property {(v: { id: string, phone: string, uri: string }) => void} resolve
 * @property {(e: DialError) => void} reject
 */

/**
 * An element whose size the Call reports to the SFU (`observe`).
 * @typedef {object} ViewWatch
 * @property {string} peer
 * @property {Element} element
 * @property {number} width CSS pixels (content box)
 * @property {number} height
 * @property {boolean} visible intersects the viewport
 * @property {ResizeObserver | null} ro
 * @property {IntersectionObserver | null} io
 * @property {ReturnType<typeof setTimeout> | null} timer
 */

/**
 * A call: mesh or SFU, whichever the room is (see the module documentation).
 * @extends {Emitter<CallEvents>}
 */
export class Call extends Emitter {
  /**
   * @param {SignalingClient} client
   * @param {CallOptions} [options]
   */
  constructor(client, options = {}) {
    super();
    this.client = client;
    /** @type {MediaStream | null} */
    this.localStream = options.localStream ?? null;
    this.iceTransportPolicy = options.iceTransportPolicy ?? 'all';
    this.iceServersOverride = options.iceServers ?? null;
    this.statsInterval = options.statsInterval ?? 1000;
    this.disconnectTimeout = options.disconnectTimeout ?? 3000;
    this.connectTimeout = options.connectTimeout ?? 15000;
    this.offerTimeout = options.offerTimeout ?? 3000;
    this.answerTimeout = options.answerTimeout ?? 10000;
    this.signalingChannel = options.signalingChannel ?? true;
    this.channelAnswerTimeout = options.channelAnswerTimeout ?? 4000;
    /** @type {SignalingCounts} what this call sent, through the server and over the channel */
    this.signalingCounts = { server: { messages: 0, bytes: 0 }, channel: { messages: 0, bytes: 0 } };
    /** @type {RTCRtpEncodingParameters[]} */
    this.simulcast = (options.simulcast === undefined ? SIMULCAST : options.simulcast ?? []).map((e) => ({ ...e }));
    /** @type {Topology | null} null until joined */
    this.topology = null;
    /** @type {Map<string, PeerInfo>} the other members of the room (as `peer-added` announced them) */
    this.members = new Map();
    /** @type {Map<string, PeerLink>} mesh: one connection per member */
    this.links = new Map();
    /** @type {SfuLink | null} SFU room: the connection to the SFU */
    this.sfu = null;
    /** @type {string | null} the active speaker */
    this.speaker = null;
    /** @type {Map<string, ViewWatch>} */
    this.views = new Map();
    this.closed = false;
    /** @type {string | null} mesh active speaker: the voice that is taking over */
    this._speakerNext = null;
    this._speakerSince = 0;
    /** @type {Map<string, DialEvent>} calls this member dialed, by id: their last state */
    this.dials = new Map();
    /** @type {Map<string, PendingDial>} dials not answered yet, by our `ref` */
    this._pendingDials = new Map();
    /** @type {Map<string, string>} phone peer id → id of the call that brought it */
    this._phoneCalls = new Map();
    this._dialSeq = 0;

    /** @type {(() => void)[]} */
    this._unsubs = [
      client.on('joined', (info) => this._onJoined(info)),
      client.on('resumed', (info) => this._onResumed(info)),
      client.on('topology', ({ topology }) => this._onTopology(topology)),
      client.on('peer-joined', ({ peer }) => this._onPeerJoined(peer)),
      client.on('peer-left', ({ peer, reason }) => this._removePeer(peer, reason)),
      client.on('signal', ({ from, data }) => this._onSignal(from, data)),
      client.on('broadcast', ({ from, data }) => this._onServerBroadcast(from, data)),
      client.on('sfu', ({ data }) => this.sfu?.onMessage(data)),
      client.on('sip', ({ data }) => this._onSip(data)),
      client.on('error', (err) => this._onClientError(err)),
      // The session is over: nothing will answer the dials in progress.
      client.on('state', ({ state }) => state === 'closed' && this._failDials('closed', 'the session ended')),
    ];
    this._onNetworkChange = () => this._restartIce('network');
    if (typeof window !== 'undefined') window.addEventListener('online', this._onNetworkChange);
    /** @type {any} */
    const conn = typeof navigator !== 'undefined' ? /** @type {any} */ (navigator).connection : null;
    this._connection = conn && typeof conn.addEventListener === 'function' ? conn : null;
    this._connection?.addEventListener('change', this._onNetworkChange);
    this._onVisibility = () => {
      for (const w of this.views.values()) this._scheduleView(w);
    };
    if (typeof document !== 'undefined') document.addEventListener('visibilitychange', this._onVisibility);
    /** @type {ReturnType<typeof setInterval> | null} */
    this._statsTimer = this.statsInterval > 0 ? setInterval(() => this._pollStats(), this.statsInterval) : null;

    // Joined already (the call was created after the join): start now.
    if (client.info && client.state === 'open') this._onJoined(client.info);
  }

  /** @returns {RTCIceServer[]} */
  get iceServers() {
    return this.iceServersOverride ?? this.client.iceServers;
  }

  /**
   * The RTCPeerConnection that carries `peer`'s media: its own (mesh) or the one to the SFU.
   * @param {string} peer
   * @returns {RTCPeerConnection | null}
   */
  peerConnection(peer) {
    if (this.sfu) return this.members.has(peer) ? this.sfu.pc : null;
    return this.links.get(peer)?.pc ?? null;
  }

  /**
   * Replace the local stream (e.g. after getUserMedia succeeded late): tracks are replaced in
   * place where a sender of the same kind exists, added otherwise.
   * @param {MediaStream | null} stream
   */
  setLocalStream(stream) {
    this.localStream = stream;
    for (const link of this.links.values()) link.attachLocal();
    this.sfu?.attachLocal();
  }

  /** Restart ICE on every connection (e.g. after a network change). */
  restartIce() {
    this._restartIce('requested');
  }

  /** @param {string} why */
  _restartIce(why) {
    for (const link of this.links.values()) link.restartIce(why);
    this.sfu?.restartIce(why);
  }

  /**
   * Send an application message (any JSON value) to one peer: in a mesh room over the
   * signaling channel to that peer once it is up, else through the server (as a `signal`
   * `{app: data}`). The peer gets a `message` event `{peer, data, via}` (`via`: `'channel'` or
   * `'server'`). In order per path; while the path changes (the channel opens or closes) a
   * message may overtake one sent just before.
   * @param {string} peer
   * @param {unknown} data
   */
  send(peer, data) {
    if (this.closed) throw new SignalingError('closed', 'the call is closed');
    const link = this.links.get(peer);
    if (link) link.sendApp(data);
    else this._serverSignal(peer, { app: data });
  }

  /**
   * {@link Call#send} to every other member: over each peer's signaling channel where it is
   * up; the others through the server (one `broadcast` when none has a channel).
   * @param {unknown} data
   */
  broadcast(data) {
    if (this.closed) throw new SignalingError('closed', 'the call is closed');
    const rest = [...this.members.keys()].filter((id) => !this.links.get(id)?.channelUsable());
    if (rest.length === this.members.size) {
      this._count('server', JSON.stringify({ type: 'broadcast', data: { app: data } }).length);
      this.client.broadcast({ app: data });
      return;
    }
    for (const link of this.links.values()) if (link.channelUsable()) link.sendApp(data);
    for (const id of rest) this._serverSignal(id, { app: data });
  }

  /**
   * @param {string} peer
   * @param {unknown} data
   */
  _serverSignal(peer, data) {
    this._count('server', JSON.stringify({ type: 'signal', to: peer, data }).length);
    this.client.send(peer, data);
  }

  /**
   * @param {'server' | 'channel'} path
   * @param {number} bytes
   */
  _count(path, bytes) {
    const c = this.signalingCounts[path];
    c.messages += 1;
    c.bytes += bytes;
  }

  /**
   * Have the server call a phone and bring it into the room (PROTOCOL.md "Phones in a room"; the
   * server needs `sip_dial`). `uri`: `tel:+15550100`, `sip:alice@example.org` or `sips:…`. The
   * call goes through `dial` events (`{id, uri, state, phone?, code?, reason?}`, `state`
   * `calling` → `ringing` → `answered`, or `failed`; `ended` once an answered call is over).
   * When the phone answers it joins the room as a member (`peer-added` with `info.phone` true;
   * audio only) and this call connects to it like to any member (so does everyone else's).
   * Resolves with `{id, phone, uri}` when it answers; rejects with a {@link DialError} (`code`,
   * `reason`) when it fails, when the server refuses the message (dialing not enabled:
   * `bad_message`; `forbidden`) or when this member's session ends first.
   * @param {string} uri
   * @returns {Promise<{ id: string, phone: string, uri: string }>}
   */
  dial(uri) {
    if (this.closed) return Promise.reject(new DialError('the call is closed', 'closed', 'the call is closed', null, uri));
    const ref = `dial-${++this._dialSeq}-${Math.random().toString(36).slice(2, 10)}`;
    return new Promise((resolve, reject) => {
      this._pendingDials.set(ref, { ref, uri, id: null, self: this.client.peerId, resolve, reject });
      try {
        this.client.sendSip({ kind: 'dial', uri, ref }, ref);
      } catch (err) {
        this._pendingDials.delete(ref);
        const why = err instanceof Error ? err.message : String(err);
        reject(new DialError(why, err instanceof SignalingError ? err.code : 'closed', why, null, uri));
      }
    });
  }

  /**
   * End a call to a phone: `idOrPeer` is the call's id (from {@link Call#dial} or a `dial`
   * event) or the phone's peer id. The server cancels it while it rings, hangs up once
   * answered (the phone leaves the room: `peer-removed`); any member of the room may. Throws
   * when `idOrPeer` is a phone whose call id this member does not know ({@link Call#canHangup}).
   * @param {string} idOrPeer
   */
  hangup(idOrPeer) {
    if (this.closed) throw new SignalingError('closed', 'the call is closed');
    const id = this.callOf(idOrPeer) ?? (this.members.has(idOrPeer) ? null : idOrPeer);
    if (!id) throw new DialError(`no known call for peer ${idOrPeer}`, 'unknown', 'only the member that dialed it knows its call', null, '');
    this.client.sendSip({ kind: 'hangup', id });
  }

  /**
   * The id of the call that brought phone `peer` into the room, when known: a call this member
   * dialed, or the one the phone's `meta.call` names.
   * @param {string} peer
   * @returns {string | null}
   */
  callOf(peer) {
    const mine = this._phoneCalls.get(peer);
    if (mine) return mine;
    const call = this.members.get(peer)?.meta?.call;
    return typeof call === 'string' ? call : null;
  }

  /**
   * Whether {@link Call#hangup} can end phone `peer`'s call from here.
   * @param {string} peer
   */
  canHangup(peer) {
    return this.callOf(peer) !== null;
  }

  /** @param {any} data a `sip` message's data */
  _onSip(data) {
    if (this.closed || !data || typeof data !== 'object') return;
    if (data.kind === 'error') {
      this._emit('error', { peer: null, error: new Error(`SIP gateway: ${data.reason ?? 'error'}`) });
      return;
    }
    if (data.kind !== 'dial' || typeof data.state !== 'string') return;
    const id = typeof data.id === 'string' ? data.id : null;
    let pending = typeof data.ref === 'string' ? this._pendingDials.get(data.ref) : undefined;
    if (!pending && id) pending = [...this._pendingDials.values()].find((p) => p.id === id);
    if (pending && id) pending.id = id;
    /** @type {DialEvent} */
    const ev = { id, uri: typeof data.uri === 'string' ? data.uri : (pending?.uri ?? this.dials.get(id ?? '')?.uri ?? ''), state: data.state };
    if (typeof data.phone === 'string') ev.phone = data.phone;
    if (data.code !== undefined) ev.code = data.code;
    if (typeof data.reason === 'string') ev.reason = data.reason;
    if (id) {
      const last = this.dials.get(id);
      if (!ev.phone && last?.phone) ev.phone = last.phone;
      if (ev.state === 'failed' || ev.state === 'ended') this.dials.delete(id);
      else this.dials.set(id, ev);
    }
    if (ev.state === 'answered' && ev.phone && id) this._phoneCalls.set(ev.phone, id);
    if ((ev.state === 'ended' || ev.state === 'failed') && ev.phone) this._phoneCalls.delete(ev.phone);
    this._emit('dial', ev);
    if (!pending) return;
    if (ev.state === 'answered' && id && ev.phone) {
      this._pendingDials.delete(pending.ref);
      pending.resolve({ id, phone: ev.phone, uri: ev.uri });
    } else if (ev.state === 'failed' || ev.state === 'ended') {
      this._pendingDials.delete(pending.ref);
      const reason = ev.reason ?? ev.state;
      const code = ev.code ?? (ev.state === 'ended' ? 'ended' : 0);
      pending.reject(new DialError(`calling ${ev.uri} failed: ${reason}${typeof code === 'number' && code ? ` (${code})` : ''}`, code, reason, id, ev.uri));
    }
  }

  /**
   * The server refused a message: a `dial` of ours (its `ref`) fails with the server's code.
   * @param {SignalingError} err
   */
  _onClientError(err) {
    if (this.closed) return;
    const pending = err.ref ? this._pendingDials.get(err.ref) : undefined;
    if (pending) {
      this._pendingDials.delete(pending.ref);
      /** @type {DialEvent} */
      const ev = { id: null, uri: pending.uri, state: 'failed', code: err.code, reason: err.message };
      this._emit('dial', ev);
      pending.reject(new DialError(`calling ${pending.uri} failed: ${err.message}`, err.code, err.message, null, pending.uri));
    }
  }

  /**
   * Rejects the dials in progress (all, or those sent from an earlier session).
   * @param {string} code
   * @param {string} reason
   * @param {string | null} [keepSelf] keep the ones sent as this peer id (or before any join)
   */
  _failDials(code, reason, keepSelf) {
    for (const p of [...this._pendingDials.values()]) {
      if (keepSelf !== undefined && (p.self === null || p.self === keepSelf)) continue;
      this._pendingDials.delete(p.ref);
      /** @type {DialEvent} */
      const ev = { id: p.id, uri: p.uri, state: 'failed', code, reason };
      if (p.id) this.dials.delete(p.id);
      this._emit('dial', ev);
      p.reject(new DialError(`calling ${p.uri} failed: ${reason}`, code, reason, p.id, p.uri));
    }
  }

  /**
   * Send a message to every other member over the data channel `icebreaker`: in a mesh room on
   * the channel to each peer, in an SFU room to the SFU, which relays it. The others get a
   * `data` event `{peer, data}` (text as a string, binary as an ArrayBuffer). Messages sent
   * before a channel is open wait for it (at most 256 per channel; older ones are dropped).
   * @param {string | ArrayBuffer | ArrayBufferView} data
   */
  sendData(data) {
    if (this.closed) throw new SignalingError('closed', 'the call is closed');
    if (this.sfu) this.sfu.data.send(data);
    else for (const link of this.links.values()) if (!link.phone) link.data.send(data);
  }

  /**
   * Tell the SFU at what size `peer`'s video is shown in `element` (usually its `<video>`), so
   * that it sends the simulcast layer that fits: the SDK watches the element (ResizeObserver,
   * IntersectionObserver, page visibility) and sends `{kind: 'view', mid, width, height}`
   * (device pixels; 0 × 0 while the element is off screen, not rendered or the page hidden,
   * which pauses that video) at most every 200 ms and only when it changed. In a mesh room
   * nothing is sent (the watch stays, and takes effect if the room switches to the SFU).
   * @param {string} peer
   * @param {Element} element
   */
  observe(peer, element) {
    this.unobserve(peer);
    if (this.closed) return;
    const rect = element.getBoundingClientRect();
    /** @type {ViewWatch} */
    const w = { peer, element, width: rect.width, height: rect.height, visible: true, ro: null, io: null, timer: null };
    if (typeof ResizeObserver !== 'undefined') {
      w.ro = new ResizeObserver((entries) => {
        const box = entries[entries.length - 1].contentRect;
        w.width = box.width;
        w.height = box.height;
        this._scheduleView(w);
      });
      w.ro.observe(element);
    }
    if (typeof IntersectionObserver !== 'undefined') {
      w.io = new IntersectionObserver((entries) => {
        w.visible = entries[entries.length - 1].isIntersecting;
        this._scheduleView(w);
      });
      w.io.observe(element);
    }
    this.views.set(peer, w);
    this._scheduleView(w);
  }

  /**
   * Stop watching `peer`'s element (the SFU keeps the last size it was told).
   * @param {string} peer
   */
  unobserve(peer) {
    const w = this.views.get(peer);
    if (!w) return;
    this.views.delete(peer);
    w.ro?.disconnect();
    w.io?.disconnect();
    if (w.timer) clearTimeout(w.timer);
  }

  /** Close every connection and stop listening to the client (does not leave the room). */
  close() {
    if (this.closed) return;
    this.closed = true;
    for (const u of this._unsubs) u();
    if (typeof window !== 'undefined') window.removeEventListener('online', this._onNetworkChange);
    if (typeof document !== 'undefined') document.removeEventListener('visibilitychange', this._onVisibility);
    this._connection?.removeEventListener('change', this._onNetworkChange);
    if (this._statsTimer) clearInterval(this._statsTimer);
    for (const peer of [...this.views.keys()]) this.unobserve(peer);
    for (const id of [...this.members.keys()]) this._removePeer(id, 'closed');
    this._closeSfu();
    this._failDials('closed', 'the call was closed');
  }

  /** @param {JoinedInfo} info */
  _onJoined(info) {
    // A (re)join: any old connection belongs to a previous peer id; so do dials sent before.
    this._failDials('rejoined', 'the session was lost (joined again)', info.peer);
    this.dials.clear();
    this._phoneCalls.clear();
    for (const id of [...this.members.keys()]) this._removePeer(id, 'rejoined');
    this._closeSfu();
    this._setTopology(info.topology === 'sfu' ? 'sfu' : 'mesh');
    for (const p of info.peers) this._addPeer(p, true);
    if (this.topology === 'sfu') this._startSfu();
  }

  /** @param {JoinedInfo} info */
  _onResumed(info) {
    // `topology` is replayed before `resumed`; this only covers a server that skipped it.
    if (info.topology === 'sfu' && this.topology !== 'sfu') this._onTopology('sfu');
    const present = new Set(info.peers.map((p) => p.id));
    for (const id of [...this.members.keys()]) if (!present.has(id)) this._removePeer(id, 'left');
    for (const p of info.peers) if (!this.members.has(p.id)) this._addPeer(p, true);
    if (this.sfu) {
      this.sfu.onResumed();
      return;
    }
    // Signals may have been lost while the connection was down (client → server side).
    for (const link of this.links.values()) {
      const ice = link.pc.iceConnectionState;
      if (ice !== 'connected' && ice !== 'completed') link.restartIce('resumed');
    }
  }

  /** @param {Topology} topology */
  _onTopology(topology) {
    if (this.closed || topology !== 'sfu' || this.topology === 'sfu') return;
    // The room became an SFU room: the mesh connections go, one connection to the SFU comes.
    for (const link of this.links.values()) link.close();
    this.links.clear();
    this._setTopology('sfu');
    this._startSfu();
  }

  /** @param {Topology} topology */
  _setTopology(topology) {
    if (this.topology === topology) return;
    this.topology = topology;
    this._emit('topology', { topology });
  }

  _startSfu() {
    if (this.closed || this.sfu || !this.client.peerId) return;
    this.sfu = new SfuLink(this);
  }

  _closeSfu() {
    const sfu = this.sfu;
    this.sfu = null;
    sfu?.close();
  }

  /** @param {PeerInfo} peer */
  _onPeerJoined(peer) {
    if (this.members.has(peer.id)) return;
    // Mesh: the newcomer offers; wait for it (no glare), offer ourselves if it stays silent.
    // A phone never offers: offer to it at once.
    this._addPeer(peer, !!peer.phone);
  }

  /**
   * A member (peer-added once); in a mesh room also its connection.
   * @param {PeerInfo} info
   * @param {boolean} offer
   */
  _addPeer(info, offer) {
    if (this.closed || !this.client.peerId || info.id === this.client.peerId) return undefined;
    if (!this.members.has(info.id)) {
      this.members.set(info.id, info);
      this._emit('peer-added', { peer: info.id, info });
      this.sfu?.onMember(info.id);
    }
    if (this.topology === 'sfu' || this.closed) return undefined;
    let link = this.links.get(info.id);
    if (!link) {
      link = new PeerLink(this, info, offer);
      this.links.set(info.id, link);
    }
    return link;
  }

  /**
   * @param {string} id
   * @param {string} reason
   */
  _removePeer(id, reason) {
    const link = this.links.get(id);
    if (link) {
      this.links.delete(id);
      link.close();
    }
    this.sfu?.removePeer(id);
    this._phoneCalls.delete(id);
    if (!this.members.delete(id)) return;
    this._emit('peer-removed', { peer: id, reason });
    if (this.speaker === id) this._setSpeaker(null);
  }

  /**
   * @param {string} from
   * @param {any} data
   */
  _onSignal(from, data) {
    if (this.closed || !data || typeof data !== 'object') return;
    if ('app' in data) {
      this._emit('message', { peer: from, data: data.app, via: 'server' });
      return;
    }
    if (this.topology === 'sfu') return;
    if (!('sdp' in data) && !('candidate' in data) && !('candidates' in data)) return; // not ours
    let link = this.links.get(from);
    if (!link) {
      const info = this.client.peers.get(from) ?? { id: from };
      link = this._addPeer(info, false);
      if (!link) return;
    }
    link.onSignal(data);
  }

  /**
   * @param {string} from
   * @param {any} data
   */
  _onServerBroadcast(from, data) {
    if (this.closed || !data || typeof data !== 'object' || !('app' in data)) return;
    this._emit('message', { peer: from, data: data.app, via: 'server' });
  }

  /** @param {string | null} peer */
  _setSpeaker(peer) {
    this._speakerNext = null;
    if (peer === this.speaker) return;
    this.speaker = peer;
    this._emit('speaker', { peer });
  }

  /**
   * Mesh active speaker, from the audio levels of the last stats interval: the loudest voice,
   * changing only when another one has been the loudest for SPEAKER_HOLD ms.
   * @param {Map<string, number>} levels
   */
  _meshSpeaker(levels) {
    /** @type {string | null} */
    let best = null;
    let loudest = SPEAKER_THRESHOLD;
    for (const [peer, level] of levels) {
      if (level > loudest) {
        best = peer;
        loudest = level;
      }
    }
    if (best === null || best === this.speaker) {
      this._speakerNext = null;
      return;
    }
    const now = Date.now();
    if (this._speakerNext !== best) {
      this._speakerNext = best;
      this._speakerSince = now;
    }
    if (this.speaker === null || now - this._speakerSince >= SPEAKER_HOLD) this._setSpeaker(best);
  }

  /** @param {ViewWatch} w */
  _scheduleView(w) {
    if (w.timer) clearTimeout(w.timer);
    w.timer = setTimeout(() => {
      w.timer = null;
      this._sendView(w);
    }, VIEW_DEBOUNCE);
  }

  /** @param {ViewWatch} w */
  _sendView(w) {
    if (this.views.get(w.peer) !== w || !this.sfu) return;
    const hidden = typeof document !== 'undefined' && document.visibilityState === 'hidden';
    const shown = w.visible && !hidden && w.element.isConnected && w.width > 0 && w.height > 0;
    const dpr = (typeof window !== 'undefined' && window.devicePixelRatio) || 1;
    this.sfu.setView(w.peer, shown ? Math.round(w.width * dpr) : 0, shown ? Math.round(w.height * dpr) : 0);
  }

  /**
   * Send the views of `peer` (or of everyone) now, e.g. once its mid is known.
   * @param {string} [peer]
   */
  _flushViews(peer) {
    for (const w of this.views.values()) if (peer === undefined || w.peer === peer) this._sendView(w);
  }

  async _pollStats() {
    if (this.sfu) {
      try {
        for (const s of await this.sfu.stats()) this._emit('stats', s);
      } catch {
        /* the connection closed meanwhile */
      }
      return;
    }
    /** @type {Map<string, number>} */
    const levels = new Map();
    /** @type {number | null} */
    let own = null;
    for (const link of [...this.links.values()]) {
      try {
        const s = await link.stats();
        if (!s) continue;
        this._emit('stats', s);
        if (s.audioLevel !== null) levels.set(s.peer, s.audioLevel);
        if (own === null) own = link.localAudioLevel;
      } catch {
        /* the connection closed meanwhile */
      }
    }
    const speaking = this.localStream?.getAudioTracks().some((t) => t.enabled && t.readyState === 'live');
    if (own !== null && speaking && this.client.peerId) levels.set(this.client.peerId, own);
    if (!this.closed && this.topology === 'mesh') this._meshSpeaker(levels);
  }
}

/** A data channel, with a bounded queue for what is sent before it opens. */
class DataPipe {
  /** @param {(data: string | ArrayBuffer) => void} onMessage */
  constructor(onMessage) {
    /** @type {RTCDataChannel | null} */
    this.dc = null;
    /** @type {(string | ArrayBuffer | ArrayBufferView)[]} */
    this.queue = [];
    this.onMessage = onMessage;
  }

  /** @param {RTCDataChannel} dc */
  attach(dc) {
    this.dc = dc;
    dc.binaryType = 'arraybuffer';
    dc.onopen = () => this.flush();
    dc.onmessage = (ev) => {
      if (typeof ev.data === 'string' || ev.data instanceof ArrayBuffer) this.onMessage(ev.data);
    };
  }

  /** @param {string | ArrayBuffer | ArrayBufferView} data */
  send(data) {
    if (this.dc && this.dc.readyState === 'open') {
      this.dc.send(/** @type {any} */ (data));
      return;
    }
    this.queue.push(data);
    if (this.queue.length > MAX_DATA_QUEUE) this.queue.shift();
  }

  flush() {
    const dc = this.dc;
    if (!dc) return;
    const q = this.queue;
    this.queue = [];
    for (const d of q) dc.send(/** @type {any} */ (d));
  }

  close() {
    if (this.dc) this.dc.onopen = this.dc.onmessage = null;
    this.queue = [];
  }
}

/**
 * The encodings to publish for a video capture of the given size. Chromium encodes at most 3
 * simulcast layers from 960×540 up, 2 from 480×270 up (by pixel count) and 1 below, and simply
 * never sends the encodings past that count — the top ones. So that the full resolution is
 * always sent (and every advertised layer really flows), this keeps the top layers of `list`
 * that the size can carry: for a 640×480 camera `h` and `f` of {@link SIMULCAST}. One layer:
 * a single encoding without `rid` (no simulcast).
 * @param {RTCRtpEncodingParameters[]} list lowest first
 * @param {MediaTrackSettings} settings
 * @returns {RTCRtpEncodingParameters[]}
 */
function simulcastLayers(list, settings) {
  if (list.length === 0) return [];
  const px = (settings.width ?? 0) * (settings.height ?? 0);
  const fit = !px ? list.length : px >= 960 * 540 ? 3 : px >= 480 * 270 ? 2 : 1;
  const layers = list.slice(Math.max(0, list.length - fit)).map((e) => ({ ...e }));
  if (layers.length > 1) return layers;
  const { rid: _rid, scaleResolutionDownBy: _scale, ...single } = layers[0];
  return [single];
}

/**
 * The candidate pair a connection uses, from its stats.
 * @param {RTCStatsReport} report
 */
function selectedPath(report) {
  /** @type {any} */
  let pair = null;
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId) ?? pair;
  });
  if (!pair) {
    report.forEach((s) => {
      if (s.type === 'candidate-pair' && s.state === 'succeeded' && (s.nominated || s.selected)) pair = s;
    });
  }
  /** @param {string | undefined} id @returns {CandidateInfo | null} */
  const cand = (id) => {
    const c = id ? report.get(id) : null;
    return c
      ? { type: c.candidateType, protocol: c.protocol, relayProtocol: c.relayProtocol, address: c.address ?? c.ip, port: c.port }
      : null;
  };
  const local = pair ? cand(pair.localCandidateId) : null;
  const remote = pair ? cand(pair.remoteCandidateId) : null;
  /** @type {'direct' | 'turn' | null} */
  const path = local && remote ? (local.type === 'relay' || remote.type === 'relay' ? 'turn' : 'direct') : null;
  return {
    path,
    local,
    remote,
    rx: /** @type {number} */ (pair?.bytesReceived ?? 0),
    tx: /** @type {number} */ (pair?.bytesSent ?? 0),
    /** @type {number | null} */
    rtt: pair?.currentRoundTripTime ?? null,
  };
}

/**
 * Audio level (RMS, 0..1) over the interval since the last call, from a stats entry's
 * cumulative `totalAudioEnergy`/`totalSamplesDuration` (`audioLevel` when those are missing).
 * @param {Map<string, { e: number, d: number }>} last per stats id
 * @param {any} s an inbound-rtp or media-source entry of kind audio
 * @returns {number | null}
 */
function audioLevel(last, s) {
  if (typeof s.totalAudioEnergy !== 'number' || typeof s.totalSamplesDuration !== 'number') {
    return typeof s.audioLevel === 'number' ? s.audioLevel : null;
  }
  const prev = last.get(s.id);
  last.set(s.id, { e: s.totalAudioEnergy, d: s.totalSamplesDuration });
  if (!prev || s.totalSamplesDuration <= prev.d) return typeof s.audioLevel === 'number' ? s.audioLevel : null;
  return Math.sqrt(Math.max(0, s.totalAudioEnergy - prev.e) / (s.totalSamplesDuration - prev.d));
}

/** Mesh: one RTCPeerConnection to one remote peer, with perfect negotiation. */
/**
 * ICE recovery shared by a mesh link and the SFU link: an ICE restart on `failed`, after
 * `disconnectTimeout` in `disconnected`, and when `connectTimeout` passes without connecting.
 * A subclass sets `pc` and implements `restartIce(why)`.
 */
class IceRecovery {
  /** @param {Call} call */
  constructor(call) {
    this.call = call;
    /** @type {RTCPeerConnection} */
    this.pc = /** @type {any} */ (null);
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.restartTimer = null;
  }

  /** @param {string} _why */
  restartIce(_why) {}

  /** Call on every `iceconnectionstatechange`. */
  recoverIce() {
    const ice = this.pc.iceConnectionState;
    if (ice === 'connected' || ice === 'completed') {
      this.clearRestartTimer();
    } else if (ice === 'failed') {
      this.restartIce('failed');
    } else if (ice === 'disconnected') {
      this.clearRestartTimer();
      this.restartTimer = setTimeout(() => {
        this.restartTimer = null;
        if (this.pc.iceConnectionState === 'disconnected') this.restartIce('disconnected');
      }, this.call.disconnectTimeout);
    }
  }

  armConnectTimer() {
    this.clearRestartTimer();
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      const ice = this.pc.iceConnectionState;
      if (ice !== 'connected' && ice !== 'completed') this.restartIce('timeout');
    }, this.call.connectTimeout);
  }

  clearRestartTimer() {
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
  }
}

class PeerLink extends IceRecovery {
  /**
   * @param {Call} call
   * @param {PeerInfo} info
   * @param {boolean} offer whether to add local tracks (and so offer) at once
   */
  constructor(call, info, offer) {
    super(call);
    this.id = info.id;
    this.info = info;
    /**
     * A phone the server dialed (PROTOCOL.md "Phones in a room"): it never offers, ignores
     * candidates, has audio only and no data channels (it never says hello: signaling stays on
     * the server). So: offer to it at once, audio only, no data channels, no candidates.
     */
    this.phone = !!info.phone || info.meta?.phone === true;
    /** @type {RTCRtpTransceiver | null} phone: the audio transceiver */
    this.audio = null;
    // The smaller id is polite (yields on collisions).
    this.polite = /** @type {string} */ (call.client.peerId) < info.id;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.settingRemoteAnswer = false;
    this.closed = false;
    this.localAttached = false;
    /** @type {Promise<void>} signals are handled one after the other */
    this.chain = Promise.resolve();
    /** @type {MediaStream | null} */
    this.remoteStream = null;
    /** @type {'direct' | 'turn' | null} */
    this.path = null;
    /** @type {{ t: number, rx: number, tx: number } | null} */
    this.lastBytes = null;
    /** @type {Map<string, { e: number, d: number }>} */
    this.lastEnergy = new Map();
    /** @type {number | null} our own microphone's level, from this connection's stats */
    this.localAudioLevel = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.offerTimer = null;
    /** The `icebreaker` channel: created with the local tracks, so it is in the first offer. */
    this.data = new DataPipe((data) => call._emit('data', { peer: this.id, data }));
    /** @type {RTCDataChannel | null} the signaling channel (negotiated id 1) */
    this.sig = null;
    /** The peer said hello on the signaling channel: it reads it. */
    this.sigReady = false;
    /** The path may be broken (network change, ICE trouble, an answer that did not come): use the server until ICE is up again. */
    this.suspect = false;
    /** @type {'server' | 'channel'} the path of the current negotiation (its offer, answer and candidates) */
    this.negPath = 'server';
    /** @type {ReturnType<typeof setTimeout> | null} an offer sent over the channel waits for its answer */
    this.channelAnswerTimer = null;

    /** @type {RTCIceCandidateInit[]} local candidates not signaled yet */
    this.pendingCandidates = [];
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.candidateTimer = null;

    // max-bundle: one transport for audio, video and data from the first offer, so candidates
    // are gathered (and signaled) once rather than once per m-line.
    const pc = new RTCPeerConnection({
      iceServers: call.iceServers,
      iceTransportPolicy: call.iceTransportPolicy,
      bundlePolicy: 'max-bundle',
    });
    this.pc = pc;
    pc.onnegotiationneeded = () => this.negotiate();
    pc.onicecandidate = ({ candidate }) => {
      // A phone is ICE-lite and learns our addresses from our checks.
      if (!candidate || this.phone) return;
      this.pendingCandidates.push(candidate.toJSON());
      this.candidateTimer ??= setTimeout(() => this.flushCandidates(), CANDIDATE_BATCH_MS);
    };
    pc.ontrack = (ev) => {
      if (!this.remoteStream) {
        this.remoteStream = ev.streams[0] ?? new MediaStream();
        call._emit('stream', { peer: this.id, stream: this.remoteStream });
      }
      if (!this.remoteStream.getTracks().includes(ev.track)) this.remoteStream.addTrack(ev.track);
      call._emit('track', { peer: this.id, track: ev.track, stream: this.remoteStream });
    };
    pc.oniceconnectionstatechange = () => this.onIceState();
    pc.onconnectionstatechange = () => {
      call._emit('connection-state', { peer: this.id, state: pc.connectionState, ice: pc.iceConnectionState });
    };
    this.armConnectTimer();
    if (offer) this.attachLocal();
    else {
      this.offerTimer = setTimeout(() => {
        this.offerTimer = null;
        this.attachLocal();
        // Nothing to send: still connect (receive only) by offering.
        if (!this.closed && pc.signalingState === 'stable' && !pc.remoteDescription) this.negotiate();
      }, call.offerTimeout);
    }
  }

  /** Add (or replace) the local tracks; triggers negotiation when something was added. */
  attachLocal() {
    if (this.closed) return;
    if (this.offerTimer) {
      clearTimeout(this.offerTimer);
      this.offerTimer = null;
    }
    this.localAttached = true;
    if (this.phone) {
      this.attachPhone();
      return;
    }
    // Both ends create the channel as negotiated id 0: no glare, no DCEP round trip. The
    // answerer creates it after applying the offer, which already has the data section.
    if (!this.data.dc) this.data.attach(this.pc.createDataChannel(DATA_LABEL, { negotiated: true, id: 0 }));
    if (!this.sig && this.call.signalingChannel) this.setupChannel(this.pc.createDataChannel(SIGNAL_LABEL, { negotiated: true, id: 1 }));
    const stream = this.call.localStream;
    if (!stream) return;
    const tracks = stream.getTracks();
    const senders = this.pc.getSenders();
    for (const track of tracks) {
      if (senders.some((s) => s.track === track)) continue;
      // A sender of the same kind whose track is no longer ours: swap in place (no renegotiation).
      const old = senders.find((s) => s.track && s.track.kind === track.kind && !tracks.includes(s.track));
      if (old) {
        old.replaceTrack(track).catch((err) => this.call._emit('error', { peer: this.id, error: err }));
        continue;
      }
      this.pc.addTrack(track, stream);
    }
  }

  /**
   * A phone's connection: one audio transceiver, sending our microphone when there is one
   * (receive only otherwise: the offer still goes out). Adding it fires negotiationneeded: we
   * offer whether polite or not, the phone never does.
   */
  attachPhone() {
    const stream = this.call.localStream;
    const track = stream?.getAudioTracks()[0] ?? null;
    if (!this.audio) {
      this.audio = this.pc.addTransceiver(track ?? 'audio', {
        direction: track ? 'sendrecv' : 'recvonly',
        streams: stream ? [stream] : [],
      });
      return;
    }
    const tr = this.audio;
    if (tr.sender.track !== track) tr.sender.replaceTrack(track).catch((err) => this.call._emit('error', { peer: this.id, error: err }));
    if (track && stream) tr.sender.setStreams(stream);
    // A microphone that came late: start sending (renegotiates).
    if (track && tr.direction === 'recvonly') tr.direction = 'sendrecv';
  }

  /**
   * The signaling channel: each end says hello when it opens; only after the peer's hello (it
   * reads the channel) is it used. When it closes, signaling goes back to the server and an
   * offer still waiting for its answer is sent again there.
   * @param {RTCDataChannel} dc
   */
  setupChannel(dc) {
    this.sig = dc;
    dc.onopen = () => {
      try {
        dc.send('{"hello":1}');
      } catch {
        // closed meanwhile: onclose follows
      }
    };
    dc.onmessage = (ev) => {
      if (typeof ev.data === 'string') this.onChannelMessage(ev.data);
    };
    dc.onclose = () => {
      this.sigReady = false;
      if (this.closed) return;
      this.negPath = 'server';
      if (this.channelAnswerTimer) this.resendOffer();
    };
  }

  /** Whether a new negotiation or message may go over the signaling channel now. */
  channelUsable() {
    return (
      this.call.signalingChannel &&
      this.sigReady &&
      !this.suspect &&
      this.sig?.readyState === 'open' &&
      ICE_UP.includes(this.pc.iceConnectionState)
    );
  }

  /** @param {string} text */
  onChannelMessage(text) {
    if (this.closed) return;
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    if (msg.hello) {
      this.sigReady = true;
    } else if ('app' in msg) {
      this.call._emit('message', { peer: this.id, data: msg.app, via: 'channel' });
    } else if (msg.sdp || msg.candidate || msg.candidates) {
      this.onSignal(msg, 'channel');
    }
  }

  /** @param {unknown} data */
  sendApp(data) {
    if (this.channelUsable() && this.sendOnChannel({ app: data })) return;
    this.call._serverSignal(this.id, { app: data });
  }

  /**
   * @param {unknown} data
   * @returns {boolean} whether it went
   */
  sendOnChannel(data) {
    const dc = this.sig;
    if (!dc || dc.readyState !== 'open' || !this.sigReady) return false;
    const text = JSON.stringify(data);
    try {
      dc.send(text);
    } catch {
      return false;
    }
    this.call._count('channel', text.length);
    return true;
  }

  /**
   * Signal the peer on `via` (default: the path of the current negotiation); the server when
   * the channel is not open.
   * @param {unknown} data
   * @param {'server' | 'channel'} [via]
   */
  signal(data, via = this.negPath) {
    if (this.closed) return;
    // Candidates of the previous description go before a new one.
    if (/** @type {any} */ (data).sdp) this.flushCandidates();
    if (via === 'channel' && this.sendOnChannel(data)) return;
    try {
      this.call._serverSignal(this.id, data);
    } catch (err) {
      this.call._emit('error', { peer: this.id, error: /** @type {Error} */ (err) });
    }
  }

  /** Signal the candidates gathered in the last {@link CANDIDATE_BATCH_MS} ms: one message. */
  flushCandidates() {
    if (this.candidateTimer) clearTimeout(this.candidateTimer);
    this.candidateTimer = null;
    const list = this.pendingCandidates;
    if (list.length === 0) return;
    this.pendingCandidates = [];
    this.signal(list.length === 1 ? { candidate: list[0] } : { candidates: list });
  }

  /** The offer sent over the channel got no answer: send it again through the server. */
  resendOffer() {
    if (this.channelAnswerTimer) clearTimeout(this.channelAnswerTimer);
    this.channelAnswerTimer = null;
    const desc = this.pc.localDescription;
    if (this.closed || this.pc.signalingState !== 'have-local-offer' || !desc) return;
    this.suspect = true;
    this.negPath = 'server';
    this.signal({ sdp: { type: desc.type, sdp: desc.sdp } }, 'server');
  }

  async negotiate() {
    if (this.closed) return;
    try {
      this.makingOffer = true;
      const via = this.channelUsable() ? 'channel' : 'server';
      await this.pc.setLocalDescription();
      const desc = this.pc.localDescription;
      if (desc) {
        this.negPath = via;
        this.signal({ sdp: { type: desc.type, sdp: desc.sdp } }, via);
        if (via === 'channel' && desc.type === 'offer') {
          if (this.channelAnswerTimer) clearTimeout(this.channelAnswerTimer);
          this.channelAnswerTimer = setTimeout(() => this.resendOffer(), this.call.channelAnswerTimeout);
        }
      }
    } catch (err) {
      if (!this.closed) this.call._emit('error', { peer: this.id, error: /** @type {Error} */ (err) });
    } finally {
      this.makingOffer = false;
    }
  }

  /**
   * @param {any} data
   * @param {'server' | 'channel'} [via] the path it came on
   */
  onSignal(data, via = 'server') {
    this.chain = this.chain.then(() => this.handleSignal(data, via)).catch((err) => {
      if (!this.closed) this.call._emit('error', { peer: this.id, error: err });
    });
  }

  /**
   * @param {any} data
   * @param {'server' | 'channel'} via
   */
  async handleSignal(data, via) {
    if (this.closed) return;
    const pc = this.pc;
    if (data.sdp) {
      const description = /** @type {RTCSessionDescriptionInit} */ (data.sdp);
      // An answer that comes after the same offer was answered (sent again through the
      // server when the channel's answer was late).
      if (description.type === 'answer' && pc.signalingState === 'stable') return;
      const readyForOffer = !this.makingOffer && (pc.signalingState === 'stable' || this.settingRemoteAnswer);
      const collision = description.type === 'offer' && !readyForOffer;
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      this.settingRemoteAnswer = description.type === 'answer';
      try {
        await pc.setRemoteDescription(description);
      } finally {
        this.settingRemoteAnswer = false;
      }
      if (description.type === 'offer') {
        // Answer with our media too (reuses the transceivers the offer created), on the path
        // the offer came: the offerer chose it.
        this.negPath = via;
        if (!this.localAttached) this.attachLocal();
        await pc.setLocalDescription();
        const desc = pc.localDescription;
        if (desc) this.signal({ sdp: { type: desc.type, sdp: desc.sdp } }, via);
      } else {
        if (this.channelAnswerTimer) clearTimeout(this.channelAnswerTimer);
        this.channelAnswerTimer = null;
        if (ICE_UP.includes(pc.iceConnectionState)) this.suspect = false;
      }
    } else if (data.candidate || Array.isArray(data.candidates)) {
      for (const c of data.candidates ?? [data.candidate]) {
        try {
          await pc.addIceCandidate(c);
        } catch (err) {
          if (!this.ignoreOffer) throw err;
        }
      }
    }
  }

  onIceState() {
    const ice = this.pc.iceConnectionState;
    this.call._emit('connection-state', { peer: this.id, state: this.pc.connectionState, ice });
    if (ICE_UP.includes(ice)) this.suspect = false;
    this.recoverIce();
  }

  /** @param {string} why */
  restartIce(why) {
    if (this.closed || this.pc.signalingState === 'closed') return;
    // A restart asked for by the application goes over the channel when it is up; one for
    // trouble (network change, failed, timeout, resume) through the server.
    if (why !== 'requested') this.suspect = true;
    if (!this.localAttached) this.attachLocal();
    this.pc.setConfiguration({
      ...this.pc.getConfiguration(),
      iceServers: this.call.iceServers,
      iceTransportPolicy: this.call.iceTransportPolicy,
    });
    this.pc.restartIce();
    if (!this.pc.localDescription && !this.pc.remoteDescription && this.pc.signalingState === 'stable') this.negotiate();
    this.armConnectTimer();
  }

  /** @returns {Promise<PeerStats | null>} */
  async stats() {
    if (this.closed) return null;
    const report = await this.pc.getStats();
    let framesDecoded = 0;
    /** @type {number | null} */
    let frameWidth = null;
    /** @type {number | null} */
    let frameHeight = null;
    /** @type {number | null} */
    let level = null;
    /** @type {number | null} */
    let own = null;
    let audioPackets = 0;
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        framesDecoded += s.framesDecoded ?? 0;
        if (s.frameWidth) {
          frameWidth = s.frameWidth;
          frameHeight = s.frameHeight ?? null;
        }
      } else if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        audioPackets += s.packetsReceived ?? 0;
        const l = audioLevel(this.lastEnergy, s);
        if (l !== null) level = Math.max(level ?? 0, l);
      } else if (s.type === 'media-source' && s.kind === 'audio') {
        const l = audioLevel(this.lastEnergy, s);
        if (l !== null) own = Math.max(own ?? 0, l);
      }
    });
    this.localAudioLevel = own;
    const { path, local, remote, rx, tx, rtt } = selectedPath(report);
    const now = performance.now();
    let bitrateIn = 0;
    let bitrateOut = 0;
    if (this.lastBytes && now > this.lastBytes.t) {
      const dt = (now - this.lastBytes.t) / 1000;
      bitrateIn = Math.max(0, Math.round(((rx - this.lastBytes.rx) * 8) / dt));
      bitrateOut = Math.max(0, Math.round(((tx - this.lastBytes.tx) * 8) / dt));
    }
    this.lastBytes = { t: now, rx, tx };
    if (path && path !== this.path) {
      this.path = path;
      this.call._emit('path', { peer: this.id, path, local, remote });
    }
    return {
      peer: this.id,
      topology: 'mesh',
      path,
      local,
      remote,
      bitrateIn,
      bitrateOut,
      framesDecoded,
      frameWidth,
      frameHeight,
      audioLevel: level,
      audioPacketsReceived: audioPackets,
      rtt,
    };
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.clearRestartTimer();
    if (this.offerTimer) clearTimeout(this.offerTimer);
    if (this.channelAnswerTimer) clearTimeout(this.channelAnswerTimer);
    if (this.candidateTimer) clearTimeout(this.candidateTimer);
    this.data.close();
    if (this.sig) this.sig.onopen = this.sig.onmessage = this.sig.onclose = null;
    this.pc.onnegotiationneeded = this.pc.onicecandidate = this.pc.ontrack = null;
    this.pc.oniceconnectionstatechange = this.pc.onconnectionstatechange = null;
    this.pc.close();
  }
}

/**
 * SFU room: the one RTCPeerConnection to the server's SFU (PROTOCOL.md "The SFU"). It publishes
 * the local stream (video as simulcast), receives every other member's tracks on m-lines the
 * SFU offers, and hands them out per publisher (`tracks`: mid → peer) as one MediaStream per
 * peer, so that the application sees the same events as in a mesh.
 */
class SfuLink extends IceRecovery {
  /** @param {Call} call */
  constructor(call) {
    super(call);
    this.closed = false;
    this.makingOffer = false;
    /** @type {Promise<void>} SFU messages are handled one after the other */
    this.chain = Promise.resolve();
    /** @type {Map<string, { peer: string, kind: string }>} mid → publisher (the SFU's latest `tracks`) */
    this.tracks = new Map();
    /** @type {Map<string, MediaStreamTrack>} mid → the track `ontrack` gave for it */
    this.received = new Map();
    /** @type {Map<string, { peer: string, track: MediaStreamTrack }>} mid → the stream its track is in now */
    this.placed = new Map();
    /** @type {Map<string, MediaStream>} one stream per publisher */
    this.streams = new Map();
    /** @type {Map<string, string>} mid → the last `view` sent for it ("WxH") */
    this.sentViews = new Map();
    /** @type {Map<string, RTCRtpTransceiver>} kind → our publishing transceiver */
    this.senders = new Map();
    /** @type {'direct' | 'turn' | null} the path to the SFU, once known */
    this.path = null;
    /** @type {Map<string, 'direct' | 'turn'>} peer → path announced with `path` */
    this.pathShown = new Map();
    /** @type {{ t: number, rx: number, tx: number } | null} */
    this.lastBytes = null;
    /** @type {Map<string, number>} inbound-rtp id → bytes received at the last stats */
    this.lastRtp = new Map();
    /** @type {Map<string, { e: number, d: number }>} */
    this.lastEnergy = new Map();
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.answerTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.retryTimer = null;
    this.refused = 0;
    this.data = new DataPipe((d) => this.onData(d));

    const pc = new RTCPeerConnection({
      iceServers: call.iceServers,
      iceTransportPolicy: call.iceTransportPolicy,
    });
    this.pc = pc;
    // The SFU is ICE-lite and learns our addresses from our checks: no candidates to send.
    pc.onnegotiationneeded = () => this.negotiate();
    pc.ontrack = (ev) => {
      const mid = ev.transceiver.mid;
      if (!mid) return;
      this.received.set(mid, ev.track);
      this.place();
    };
    pc.oniceconnectionstatechange = () => this.onIceState();
    pc.onconnectionstatechange = () => this.announceState();
    this.data.attach(pc.createDataChannel(DATA_LABEL));
    this.attachLocal();
    this.armConnectTimer();
  }

  /** Publish the local stream: the first audio and the first video track (video as simulcast). */
  attachLocal() {
    if (this.closed) return;
    const stream = this.call.localStream;
    for (const kind of ['audio', 'video']) {
      const track = (kind === 'audio' ? stream?.getAudioTracks() : stream?.getVideoTracks())?.[0] ?? null;
      const tr = this.senders.get(kind);
      if (tr) {
        if (tr.sender.track !== track) tr.sender.replaceTrack(track).catch((err) => this.call._emit('error', { peer: null, error: err }));
        continue;
      }
      if (!track || !stream) continue;
      /** @type {RTCRtpTransceiverInit} */
      const init = { direction: 'sendonly', streams: [stream] };
      if (kind === 'video') {
        const layers = simulcastLayers(this.call.simulcast, track.getSettings());
        if (layers.length) init.sendEncodings = layers;
      }
      this.senders.set(kind, this.pc.addTransceiver(track, init));
    }
  }

  async negotiate() {
    if (this.closed || this.makingOffer || this.retryTimer || this.pc.signalingState !== 'stable') return;
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      const desc = this.pc.localDescription;
      if (desc && desc.type === 'offer' && !this.closed) {
        this.call.client.sendSfu({ kind: 'offer', sdp: desc.sdp });
        this.armAnswerTimer();
      }
    } catch (err) {
      if (!this.closed) this.call._emit('error', { peer: null, error: /** @type {Error} */ (err) });
    } finally {
      this.makingOffer = false;
    }
  }

  /** @param {any} data an `sfu` message's data */
  onMessage(data) {
    if (this.closed || !data || typeof data !== 'object') return;
    this.chain = this.chain.then(() => this.handle(data)).catch((err) => {
      if (!this.closed) this.call._emit('error', { peer: null, error: err });
    });
  }

  /** @param {any} data */
  async handle(data) {
    if (this.closed) return;
    const pc = this.pc;
    switch (data.kind) {
      case 'answer': {
        // Not waiting for one: a stale answer (to an offer rolled back since).
        if (pc.signalingState !== 'have-local-offer' || typeof data.sdp !== 'string') return;
        this.setTracks(data.tracks);
        await pc.setRemoteDescription({ type: 'answer', sdp: data.sdp });
        this.clearAnswerTimer();
        this.refused = 0;
        this.place();
        break;
      }
      case 'offer': {
        if (typeof data.sdp !== 'string') return;
        // Impolite: our own offer wins; the SFU answers it and offers again afterwards.
        if (this.makingOffer || pc.signalingState !== 'stable') return;
        this.setTracks(data.tracks);
        await pc.setRemoteDescription({ type: 'offer', sdp: data.sdp });
        await pc.setLocalDescription();
        const desc = pc.localDescription;
        if (desc && !this.closed) this.call.client.sendSfu({ kind: 'answer', sdp: desc.sdp });
        this.place();
        break;
      }
      case 'speaker':
        this.call._setSpeaker(typeof data.peer === 'string' ? data.peer : null);
        break;
      case 'error': {
        // The SFU refused our last offer/answer and kept the connection as it was: try the
        // offer again later (backing off). A later offer is rolled back meanwhile, so that
        // the SFU's own offers get through; the first one cannot be (see reoffer).
        if (pc.signalingState === 'have-local-offer') {
          this.clearAnswerTimer();
          if (pc.currentRemoteDescription) await pc.setLocalDescription({ type: 'rollback' });
          this.retryLater();
        }
        this.call._emit('error', { peer: null, error: new Error(`SFU: ${data.message ?? 'refused'}`) });
        break;
      }
      default:
        break;
    }
  }

  /** @param {unknown} list the SFU's `tracks` (every track it sends us); ignored when absent */
  setTracks(list) {
    if (!Array.isArray(list)) return;
    /** @type {Map<string, { peer: string, kind: string }>} */
    const next = new Map();
    for (const t of list) {
      if (t && typeof t.mid === 'string' && typeof t.peer === 'string') next.set(t.mid, { peer: t.peer, kind: t.kind === 'audio' ? 'audio' : 'video' });
    }
    for (const [mid, t] of this.tracks) {
      const n = next.get(mid);
      if (!n || n.peer !== t.peer) this.sentViews.delete(mid); // a mid given to someone else
    }
    this.tracks = next;
  }

  /**
   * Put every received track into its publisher's stream, as the latest `tracks` say (a track
   * may arrive before or after its mapping; a mid may move to another publisher).
   */
  place() {
    if (this.closed) return;
    /** @type {Set<string>} */
    const touched = new Set();
    for (const [mid, track] of this.received) {
      const map = this.tracks.get(mid);
      const peer = map && this.call.members.has(map.peer) ? map.peer : null;
      const cur = this.placed.get(mid);
      if (cur && cur.peer === peer && cur.track === track) continue;
      if (cur) this.unplace(mid);
      if (!peer) continue;
      let stream = this.streams.get(peer);
      const fresh = !stream;
      if (!stream) {
        stream = new MediaStream();
        this.streams.set(peer, stream);
      }
      if (!stream.getTracks().includes(track)) stream.addTrack(track);
      this.placed.set(mid, { peer, track });
      touched.add(peer);
      if (fresh) this.call._emit('stream', { peer, stream });
      this.call._emit('track', { peer, track, stream });
    }
    for (const mid of [...this.placed.keys()]) if (!this.received.has(mid)) this.unplace(mid);
    // A publisher's video mid is known now: tell the SFU how it is shown.
    for (const peer of touched) this.call._flushViews(peer);
  }

  /** @param {string} mid */
  unplace(mid) {
    const cur = this.placed.get(mid);
    if (!cur) return;
    this.placed.delete(mid);
    const stream = this.streams.get(cur.peer);
    if (stream && ![...this.placed.values()].some((p) => p.peer === cur.peer && p.track === cur.track)) stream.removeTrack(cur.track);
  }

  /** @param {string} peer a member was added: its tracks may be waiting */
  onMember(peer) {
    if (this.closed) return;
    this.place();
    this.call._emit('connection-state', { peer, state: this.pc.connectionState, ice: this.pc.iceConnectionState });
  }

  /** @param {string} peer the member left: its stream ends */
  removePeer(peer) {
    for (const [mid, p] of [...this.placed]) if (p.peer === peer) this.unplace(mid);
    this.streams.delete(peer);
    this.pathShown.delete(peer);
  }

  /**
   * @param {string} peer
   * @param {number} width device pixels
   * @param {number} height
   */
  setView(peer, width, height) {
    if (this.closed) return;
    for (const [mid, t] of this.tracks) {
      if (t.peer !== peer || t.kind !== 'video') continue;
      const key = `${width}x${height}`;
      if (this.sentViews.get(mid) === key) continue;
      this.sentViews.set(mid, key);
      this.call.client.sendSfu({ kind: 'view', mid, width, height });
    }
  }

  /** @param {string | ArrayBuffer} d a message relayed by the SFU */
  onData(d) {
    if (typeof d === 'string') {
      /** @type {any} */
      let m = null;
      try {
        m = JSON.parse(d);
      } catch {
        return;
      }
      if (m && typeof m.from === 'string' && typeof m.data === 'string') this.call._emit('data', { peer: m.from, data: m.data });
    } else if (d.byteLength >= 8) {
      const peer = String.fromCharCode(...new Uint8Array(d, 0, 8));
      this.call._emit('data', { peer, data: d.slice(8) });
    }
  }

  announceState() {
    for (const peer of this.call.members.keys()) {
      this.call._emit('connection-state', { peer, state: this.pc.connectionState, ice: this.pc.iceConnectionState });
    }
  }

  onIceState() {
    this.announceState();
    this.recoverIce();
  }

  /**
   * ICE restart: a new offer with new credentials (sent as soon as no offer is outstanding).
   * @param {string} _why
   */
  restartIce(_why) {
    if (this.closed || this.pc.signalingState === 'closed') return;
    this.pc.setConfiguration({
      ...this.pc.getConfiguration(),
      iceServers: this.call.iceServers,
      iceTransportPolicy: this.call.iceTransportPolicy,
    });
    this.pc.restartIce(); // → negotiationneeded → negotiate()
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.chain = this.chain.then(() => this.reoffer()).catch(() => {});
    }
    this.armConnectTimer();
  }

  /** After a signaling resume: what was sent meanwhile arrived, but ICE may have broken. */
  onResumed() {
    const ice = this.pc.iceConnectionState;
    if (ice !== 'connected' && ice !== 'completed') this.restartIce('resumed');
  }

  /** No answer to our offer within answerTimeout (signaling up): roll back and offer again. */
  armAnswerTimer() {
    this.clearAnswerTimer();
    this.answerTimer = setTimeout(() => {
      this.answerTimer = null;
      if (this.closed || this.pc.signalingState !== 'have-local-offer') return;
      if (this.call.client.state !== 'open') {
        this.armAnswerTimer();
        return;
      }
      this.chain = this.chain
        .then(() => this.reoffer())
        .catch((err) => {
          if (!this.closed) this.call._emit('error', { peer: null, error: err });
        });
    }, this.call.answerTimeout);
  }

  /**
   * The outstanding offer got no answer (or was refused): offer again. The first offer is sent
   * again as it is: Chromium, once the offer that brought the data channel is rolled back,
   * never offers the channel again (and keeps firing negotiationneeded). A later one is rolled
   * back and made anew (with what changed since, e.g. an ICE restart).
   */
  async reoffer() {
    if (this.closed) return;
    const pc = this.pc;
    if (pc.signalingState === 'have-local-offer' && !pc.currentRemoteDescription) {
      const desc = pc.localDescription;
      if (desc) {
        this.call.client.sendSfu({ kind: 'offer', sdp: desc.sdp });
        this.armAnswerTimer();
      }
      return;
    }
    if (pc.signalingState === 'have-local-offer') await pc.setLocalDescription({ type: 'rollback' });
    await this.negotiate();
  }

  clearAnswerTimer() {
    if (this.answerTimer) clearTimeout(this.answerTimer);
    this.answerTimer = null;
  }

  retryLater() {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    const delay = backoffDelay(this.refused++, 1000, 30000);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.chain = this.chain
        .then(() => this.reoffer())
        .catch((err) => {
          if (!this.closed) this.call._emit('error', { peer: null, error: err });
        });
    }, delay);
  }

  /**
   * Stats per member: the connection to the SFU (path, candidates, rtt, bitrate out) plus this
   * member's own inbound RTP streams (matched by `mid`, or by track id where `mid` is missing).
   * @returns {Promise<PeerStats[]>}
   */
  async stats() {
    if (this.closed) return [];
    const report = await this.pc.getStats();
    /** @type {Map<string, string>} receiver track id → mid */
    const midOfTrack = new Map();
    for (const t of this.pc.getTransceivers()) if (t.mid && t.receiver.track) midOfTrack.set(t.receiver.track.id, t.mid);
    /** @type {Map<string, { rx: number, frames: number, w: number | null, h: number | null, level: number | null, packets: number }>} */
    const per = new Map();
    /** @type {Map<string, number>} */
    const rtpNow = new Map();
    report.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      const mid = s.mid ?? midOfTrack.get(s.trackIdentifier);
      const peer = mid ? this.placed.get(mid)?.peer : undefined;
      if (!peer) return;
      let p = per.get(peer);
      if (!p) per.set(peer, (p = { rx: 0, frames: 0, w: null, h: null, level: null, packets: 0 }));
      const bytes = (s.bytesReceived ?? 0) + (s.headerBytesReceived ?? 0);
      rtpNow.set(s.id, bytes);
      p.rx += Math.max(0, bytes - (this.lastRtp.get(s.id) ?? bytes));
      if (s.kind === 'video') {
        p.frames += s.framesDecoded ?? 0;
        if (s.frameWidth) {
          p.w = s.frameWidth;
          p.h = s.frameHeight ?? null;
        }
      } else if (s.kind === 'audio') {
        p.packets += s.packetsReceived ?? 0;
        const l = audioLevel(this.lastEnergy, s);
        if (l !== null) p.level = Math.max(p.level ?? 0, l);
      }
    });
    this.lastRtp = rtpNow;
    const { path, local, remote, rx, tx, rtt } = selectedPath(report);
    const now = performance.now();
    const dt = this.lastBytes && now > this.lastBytes.t ? (now - this.lastBytes.t) / 1000 : 0;
    const bitrateOut = this.lastBytes && dt ? Math.max(0, Math.round(((tx - this.lastBytes.tx) * 8) / dt)) : 0;
    this.lastBytes = { t: now, rx, tx };
    if (path) this.path = path;
    /** @type {PeerStats[]} */
    const out = [];
    for (const peer of this.call.members.keys()) {
      const p = per.get(peer);
      if (path && this.pathShown.get(peer) !== path) {
        this.pathShown.set(peer, path);
        this.call._emit('path', { peer, path, local, remote });
      }
      out.push({
        peer,
        topology: 'sfu',
        path,
        local,
        remote,
        bitrateIn: p && dt ? Math.round((p.rx * 8) / dt) : 0,
        bitrateOut,
        framesDecoded: p?.frames ?? 0,
        frameWidth: p?.w ?? null,
        frameHeight: p?.h ?? null,
        audioLevel: p?.level ?? null,
        audioPacketsReceived: p?.packets ?? 0,
        rtt,
      });
    }
    return out;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.clearRestartTimer();
    this.clearAnswerTimer();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.data.close();
    for (const peer of [...this.streams.keys()]) this.removePeer(peer);
    this.pc.onnegotiationneeded = this.pc.ontrack = null;
    this.pc.oniceconnectionstatechange = this.pc.onconnectionstatechange = null;
    this.pc.close();
  }
}
