// @ts-check
/**
 * Icebreaker browser SDK: a signaling client for `icebreaker serve` (docs/PROTOCOL.md) and a
 * mesh call helper on top of it. One ES module, no dependencies, no build step.
 *
 * ```js
 * import { SignalingClient, Call } from '/sdk/icebreaker.js';
 * const client = new SignalingClient();                 // same origin by default
 * const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
 * const call = new Call(client, { localStream: stream }); // subscribes before the join
 * call.on('stream', ({ peer, stream }) => { ... });       // attach to a <video>
 * call.on('stats', (s) => { ... });                       // s.path: 'direct' | 'turn'
 * await client.join('demo', { name: 'Ada' });
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
 *   application sees a new `joined` (with a new peer id).
 * - Messages sent while disconnected are queued and sent after the resume.
 *
 * Call (mesh)
 * - One RTCPeerConnection per remote peer, "perfect negotiation": the peer whose id sorts first
 *   (string comparison of the 8-hex-digit ids, i.e. the smaller id) is the **polite** one and
 *   yields on an offer collision; the other is impolite and ignores the colliding offer.
 * - The peer that joins offers to everyone already in the room; the members already there
 *   create their connection when the newcomer's first signal arrives (so there is no glare in
 *   the common case), or after `offerTimeout` ms if none arrives.
 * - Trickle ICE (`{candidate}` signals), SDP as `{sdp: {type, sdp}}` signals.
 * - ICE restart when ICE `failed`, when it stays `disconnected` for `disconnectTimeout` ms,
 *   when it does not connect within `connectTimeout` ms, on a network change (`online`,
 *   `navigator.connection` `change`) and after a signaling resume for links that are not
 *   connected.
 * - `iceServers` come from `joined`/`resumed`; `iceTransportPolicy: 'relay'` forces TURN.
 * - Every `statsInterval` ms, a `stats` event per peer: the selected candidate pair (`path` is
 *   `'turn'` when the local or the remote candidate is a relay candidate, else `'direct'`),
 *   bitrates in and out (bits/s), video frames decoded, round-trip time.
 *
 * @module icebreaker
 */

/** @typedef {'websocket' | 'sse' | 'poll'} TransportName */
/** @typedef {'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'} ClientState */
/** @typedef {{ id: string, name?: string, meta?: Record<string, unknown> }} PeerInfo */

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
const EVENT_TYPES = ['joined', 'peer-joined', 'peer-left', 'signal', 'broadcast', 'resumed', 'pong', 'error'];

/** Error codes after which retrying the same request cannot help. */
const FATAL_CODES = new Set(['invalid_room', 'room_full', 'server_full', 'unauthorized', 'forbidden', 'bad_message', 'too_large']);

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
   * @param {SignalingError} _err
   */
  _dropLink(link, _err) {
    if (this._link !== link) return;
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
      case 'error':
        this._emit('error', new SignalingError(msg.code ?? 'internal', msg.message ?? '', msg.ref));
        break;
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
      if (p && typeof p.id === 'string' && !this._formerIds.has(p.id)) this.peers.set(p.id, p);
    }
    if (Array.isArray(msg.iceServers)) this.iceServers = msg.iceServers;
    return {
      peer: msg.peer,
      room: msg.room,
      peers: [...this.peers.values()],
      iceServers: this.iceServers,
      initiator: false,
      capacity: 0,
      grace: 0,
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
 * @property {MediaStream | null} [localStream] tracks to send to every peer
 * @property {RTCIceTransportPolicy} [iceTransportPolicy] `'relay'` forces TURN
 * @property {RTCIceServer[]} [iceServers] override the servers from `joined`
 * @property {number} [statsInterval] ms between `stats` events (default 1000; 0 disables)
 * @property {number} [disconnectTimeout] ms in `disconnected` before an ICE restart (default 3000)
 * @property {number} [connectTimeout] ms to reach `connected` before an ICE restart (default 15000)
 * @property {number} [offerTimeout] ms a member waits for a newcomer's offer before offering itself (default 3000)
 */

/**
 * @typedef {object} CandidateInfo
 * @property {string} type host / srflx / prflx / relay
 * @property {string} [protocol] udp / tcp
 * @property {string} [relayProtocol] udp / tcp / tls (relay candidates)
 * @property {string} [address]
 * @property {number} [port]
 */

/**
 * @typedef {object} PeerStats
 * @property {string} peer
 * @property {'direct' | 'turn' | null} path null until a candidate pair is selected
 * @property {CandidateInfo | null} local
 * @property {CandidateInfo | null} remote
 * @property {number} bitrateIn bits/s received (all media and data, from the selected pair)
 * @property {number} bitrateOut bits/s sent
 * @property {number} framesDecoded video frames decoded so far (all inbound video)
 * @property {number | null} rtt seconds (current round-trip time of the pair)
 */

/**
 * @typedef {object} CallEvents
 * @property {{ peer: string, info: PeerInfo }} peer-added
 * @property {{ peer: string, reason: string }} peer-removed
 * @property {{ peer: string, track: MediaStreamTrack, stream: MediaStream }} track
 * @property {{ peer: string, stream: MediaStream }} stream a peer's remote stream (once per peer connection)
 * @property {{ peer: string, state: RTCPeerConnectionState, ice: RTCIceConnectionState }} connection-state
 * @property {{ peer: string, path: 'direct' | 'turn', local: CandidateInfo | null, remote: CandidateInfo | null }} path selected path changed
 * @property {PeerStats} stats
 * @property {{ peer: string, error: Error }} error
 */

/**
 * Mesh call: one RTCPeerConnection per remote peer (see the module documentation).
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
    /** @type {Map<string, PeerLink>} */
    this.links = new Map();
    this.closed = false;

    /** @type {(() => void)[]} */
    this._unsubs = [
      client.on('joined', (info) => this._onJoined(info)),
      client.on('resumed', (info) => this._onResumed(info)),
      client.on('peer-joined', ({ peer }) => this._onPeerJoined(peer)),
      client.on('peer-left', ({ peer, reason }) => this._removePeer(peer, reason)),
      client.on('signal', ({ from, data }) => this._onSignal(from, data)),
    ];
    this._onNetworkChange = () => this.restartIce();
    if (typeof window !== 'undefined') window.addEventListener('online', this._onNetworkChange);
    /** @type {any} */
    const conn = typeof navigator !== 'undefined' ? /** @type {any} */ (navigator).connection : null;
    this._connection = conn && typeof conn.addEventListener === 'function' ? conn : null;
    this._connection?.addEventListener('change', this._onNetworkChange);
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
   * Replace the local stream (e.g. after getUserMedia succeeded late): tracks are replaced in
   * place where a sender of the same kind exists, added otherwise.
   * @param {MediaStream | null} stream
   */
  setLocalStream(stream) {
    this.localStream = stream;
    for (const link of this.links.values()) link.attachLocal();
  }

  /** Restart ICE on every connection (e.g. after a network change). */
  restartIce() {
    for (const link of this.links.values()) link.restartIce('requested');
  }

  /** Close every connection and stop listening to the client (does not leave the room). */
  close() {
    if (this.closed) return;
    this.closed = true;
    for (const u of this._unsubs) u();
    if (typeof window !== 'undefined') window.removeEventListener('online', this._onNetworkChange);
    this._connection?.removeEventListener('change', this._onNetworkChange);
    if (this._statsTimer) clearInterval(this._statsTimer);
    for (const id of [...this.links.keys()]) this._removePeer(id, 'closed');
  }

  /** @param {JoinedInfo} info */
  _onJoined(info) {
    // A (re)join: any old connection belongs to a previous peer id.
    for (const id of [...this.links.keys()]) this._removePeer(id, 'rejoined');
    for (const p of info.peers) this._addPeer(p, true);
  }

  /** @param {JoinedInfo} info */
  _onResumed(info) {
    const present = new Set(info.peers.map((p) => p.id));
    for (const id of [...this.links.keys()]) if (!present.has(id)) this._removePeer(id, 'left');
    for (const p of info.peers) if (!this.links.has(p.id)) this._addPeer(p, true);
    // Signals may have been lost while the connection was down (client → server side).
    for (const link of this.links.values()) {
      const ice = link.pc.iceConnectionState;
      if (ice !== 'connected' && ice !== 'completed') link.restartIce('resumed');
    }
  }

  /** @param {PeerInfo} peer */
  _onPeerJoined(peer) {
    if (this.links.has(peer.id)) return;
    // The newcomer offers; wait for it (no glare), offer ourselves if it stays silent.
    this._addPeer(peer, false);
  }

  /**
   * @param {PeerInfo} info
   * @param {boolean} offer
   */
  _addPeer(info, offer) {
    if (this.closed || !this.client.peerId || info.id === this.client.peerId) return undefined;
    const link = new PeerLink(this, info, offer);
    this.links.set(info.id, link);
    this._emit('peer-added', { peer: info.id, info });
    return link;
  }

  /**
   * @param {string} id
   * @param {string} reason
   */
  _removePeer(id, reason) {
    const link = this.links.get(id);
    if (!link) return;
    this.links.delete(id);
    link.close();
    this._emit('peer-removed', { peer: id, reason });
  }

  /**
   * @param {string} from
   * @param {any} data
   */
  _onSignal(from, data) {
    if (this.closed || !data || typeof data !== 'object') return;
    if (!('sdp' in data) && !('candidate' in data)) return; // not ours
    let link = this.links.get(from);
    if (!link) {
      const info = this.client.peers.get(from) ?? { id: from };
      link = this._addPeer(info, false);
      if (!link) return;
    }
    link.onSignal(data);
  }

  async _pollStats() {
    for (const link of [...this.links.values()]) {
      try {
        const s = await link.stats();
        if (s) this._emit('stats', s);
      } catch {
        /* the connection closed meanwhile */
      }
    }
  }
}

/** One RTCPeerConnection to one remote peer, with perfect negotiation. */
class PeerLink {
  /**
   * @param {Call} call
   * @param {PeerInfo} info
   * @param {boolean} offer whether to add local tracks (and so offer) at once
   */
  constructor(call, info, offer) {
    this.call = call;
    this.id = info.id;
    this.info = info;
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
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.restartTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.offerTimer = null;

    const pc = new RTCPeerConnection({
      iceServers: call.iceServers,
      iceTransportPolicy: call.iceTransportPolicy,
    });
    this.pc = pc;
    pc.onnegotiationneeded = () => this.negotiate();
    pc.onicecandidate = ({ candidate }) => {
      if (candidate) this.signal({ candidate: candidate.toJSON() });
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

  /** @param {unknown} data */
  signal(data) {
    if (this.closed) return;
    try {
      this.call.client.send(this.id, data);
    } catch (err) {
      this.call._emit('error', { peer: this.id, error: /** @type {Error} */ (err) });
    }
  }

  async negotiate() {
    if (this.closed) return;
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      const desc = this.pc.localDescription;
      if (desc) this.signal({ sdp: { type: desc.type, sdp: desc.sdp } });
    } catch (err) {
      if (!this.closed) this.call._emit('error', { peer: this.id, error: /** @type {Error} */ (err) });
    } finally {
      this.makingOffer = false;
    }
  }

  /** @param {any} data */
  onSignal(data) {
    this.chain = this.chain.then(() => this.handleSignal(data)).catch((err) => {
      if (!this.closed) this.call._emit('error', { peer: this.id, error: err });
    });
  }

  /** @param {any} data */
  async handleSignal(data) {
    if (this.closed) return;
    const pc = this.pc;
    if (data.sdp) {
      const description = /** @type {RTCSessionDescriptionInit} */ (data.sdp);
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
        // Answer with our media too (reuses the transceivers the offer created).
        if (!this.localAttached) this.attachLocal();
        await pc.setLocalDescription();
        const desc = pc.localDescription;
        if (desc) this.signal({ sdp: { type: desc.type, sdp: desc.sdp } });
      }
    } else if (data.candidate) {
      try {
        await pc.addIceCandidate(data.candidate);
      } catch (err) {
        if (!this.ignoreOffer) throw err;
      }
    }
  }

  onIceState() {
    const ice = this.pc.iceConnectionState;
    this.call._emit('connection-state', { peer: this.id, state: this.pc.connectionState, ice });
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

  /** @param {string} _why */
  restartIce(_why) {
    if (this.closed || this.pc.signalingState === 'closed') return;
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
    /** @type {any} */
    let pair = null;
    let framesDecoded = 0;
    report.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId) ?? pair;
      if (s.type === 'inbound-rtp' && s.kind === 'video') framesDecoded += s.framesDecoded ?? 0;
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
    const now = performance.now();
    const rx = pair?.bytesReceived ?? 0;
    const tx = pair?.bytesSent ?? 0;
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
      path,
      local,
      remote,
      bitrateIn,
      bitrateOut,
      framesDecoded,
      rtt: pair?.currentRoundTripTime ?? null,
    };
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.clearRestartTimer();
    if (this.offerTimer) clearTimeout(this.offerTimer);
    this.pc.onnegotiationneeded = this.pc.onicecandidate = this.pc.ontrack = null;
    this.pc.oniceconnectionstatechange = this.pc.onconnectionstatechange = null;
    this.pc.close();
  }
}
