// @ts-check
// Room page: camera + microphone, one tile per participant with its connection type (direct /
// via TURN) and live bitrate, the active speaker highlighted, and the room's topology (mesh or
// SFU) in the header. Query options: ?relay=1 forces TURN (iceTransportPolicy 'relay'),
// ?transports=sse,poll limits the signaling transports, ?name=Ada sets the display name,
// ?topology=auto|mesh|sfu chooses the topology when this join creates the room.
// "Call a phone": the server dials a number or SIP URI (call.dial) and the phone joins the
// room as a participant (an audio-only tile with its number and a "Hang up" button).
// Test hook: window.icebreaker = { client, call, localStream, data, dials, stats() }.

import { SignalingClient, Call, SignalingError } from '/sdk/icebreaker.js';

const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const NAME_KEY = 'icebreaker.name';

/** @param {string} id */
const el = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const params = new URLSearchParams(location.search);
const room = decodeURIComponent(location.pathname.replace(/^\/r\//, '').replace(/\/$/, ''));
const relay = params.get('relay') === '1';
/** `?dcsignal=0`: keep all signaling on the server (no signaling data channel). */
const signalingChannel = params.get('dcsignal') !== '0';
const topologyParam = params.get('topology');
/** @type {'auto' | 'mesh' | 'sfu' | undefined} */
const topology = topologyParam === 'auto' || topologyParam === 'mesh' || topologyParam === 'sfu' ? topologyParam : undefined;
const transports = /** @type {any} */ (params.get('transports')?.split(',').map((t) => t.trim()).filter(Boolean));
let displayName = params.get('name') ?? '';
if (!displayName) {
  try {
    displayName = localStorage.getItem(NAME_KEY) ?? '';
  } catch {
    /* storage disabled */
  }
}

/**
 * @typedef {object} Tile
 * @property {HTMLElement} root
 * @property {HTMLVideoElement} video
 * @property {HTMLElement} state
 * @property {HTMLElement} path
 * @property {HTMLElement} rate
 * @property {HTMLElement} media the peer's own mute state, as it announced it
 * @property {number} frames video frames rendered (requestVideoFrameCallback)
 * @property {import('/sdk/icebreaker.js').PeerStats | null} stats
 * @property {string} conn
 * @property {boolean} phone a phone the server dialed into the room (audio only)
 * @property {HTMLButtonElement | null} hangup phone: its "Hang up" button
 */

/** @type {Map<string, Tile>} */
const tiles = new Map();
/** @type {MediaStream | null} */
let localStream = null;
let joined = false;
/** An operator removed us from the room (`error` `removed`). */
let removed = false;
/** @type {import('/sdk/icebreaker.js').Call | null} */
let call = null;
/** @type {string | null} the active speaker (a peer id, ours included) */
let speaker = null;
/** Data messages received (`call.on('data')`), newest last, for the test hook. */
/** @type {{ from: string, data: string | { binary: number }, at: number }[]} */
const received = [];
/** `dial` events of the calls this page made, oldest first, for the test hook. */
/** @type {(import('/sdk/icebreaker.js').DialEvent & { at: number })[]} */
const dialEvents = [];

/** @param {string} text */
function notice(text) {
  const n = el('notice');
  n.textContent = text;
  n.hidden = !text;
}

/** @param {number} bps */
function formatRate(bps) {
  if (bps >= 1e6) return (bps / 1e6).toFixed(1) + ' Mbit/s';
  return Math.round(bps / 1e3) + ' kbit/s';
}

/**
 * @param {HTMLElement} pill
 * @param {string} text
 * @param {'' | 'ok' | 'warn' | 'bad'} kind
 */
function setPill(pill, text, kind) {
  pill.textContent = text;
  pill.className = 'pill' + (kind ? ' ' + kind : '');
}

/**
 * How a dialed number or SIP URI reads: `tel:+15550100` → `+15550100`, `sip:+1555@pbx` →
 * `+1555`, `sip:alice@example.org` stays as it is without `sip:`.
 * @param {string} uri
 */
function prettyUri(uri) {
  const m = /^(?:tel:|sips?:)?([^@;?]*)(@[^;?]*)?/i.exec(uri.trim());
  if (!m) return uri;
  if (/^\+?[0-9*#]+$/.test(m[1])) return m[1];
  return m[1] + (m[2] ?? '');
}

/**
 * What the "Call a phone" field holds as a URI to dial: `tel:`, `sip:` and `sips:` as they are,
 * a number (digits, spaces, `-`, `.`, parentheses, a leading `+`) as `tel:`, `user@host` as
 * `sip:`. Null when it is none of these.
 * @param {string} text
 * @returns {string | null}
 */
function dialTarget(text) {
  const t = text.trim();
  if (/^(tel|sips?):\S+$/i.test(t)) return t;
  if (/^\+?[0-9][0-9 ().\-]*$/.test(t)) {
    const digits = t.replace(/[ ().\-]/g, '');
    return digits.length >= 2 ? `tel:${digits}` : null;
  }
  if (/^[^\s@:]+@[^\s@]+$/.test(t)) return `sip:${t}`;
  return null;
}

/**
 * The "Call a phone" status line.
 * @param {string} text
 * @param {'' | 'ok' | 'warn' | 'bad'} [kind]
 */
function dialStatus(text, kind = '') {
  const p = el('dial-status');
  p.textContent = text;
  p.className = 'dial-status small' + (kind ? ' ' + kind : '');
  p.hidden = !text;
}

/**
 * @param {string} id
 * @param {string} [name]
 * @param {boolean} [phone] a phone the server dialed into the room: no video, its number, a
 *   phone glyph and a "Hang up" button
 * @returns {Tile}
 */
function addTile(id, name, phone = false) {
  const existing = tiles.get(id);
  if (existing) return existing;
  const root = document.createElement('figure');
  root.className = phone ? 'tile phone' : 'tile';
  root.dataset.peer = id;
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.setAttribute('aria-label', phone ? `Audio of phone ${name || id}` : `Video of ${name || 'participant ' + id}`);
  const caption = document.createElement('figcaption');
  caption.className = 'label';
  const nameEl = document.createElement('span');
  nameEl.className = 'name';
  nameEl.textContent = name || id;
  const state = document.createElement('span');
  state.className = 'pill';
  state.textContent = 'connecting…';
  const path = document.createElement('span');
  path.className = 'pill';
  path.hidden = true;
  const rate = document.createElement('span');
  rate.className = 'pill';
  rate.hidden = true;
  const media = document.createElement('span');
  media.className = 'pill warn';
  media.hidden = true;
  caption.append(nameEl, media, state, path, rate);
  /** @type {HTMLButtonElement | null} */
  let hangup = null;
  if (phone) {
    // No video: the phone's number under a phone glyph; its audio plays from the (hidden) <video>.
    const ph = document.createElement('div');
    ph.className = 'placeholder';
    const icon = document.createElement('span');
    icon.className = 'phone-icon';
    icon.setAttribute('aria-hidden', 'true');
    icon.textContent = '\u260E';
    const num = document.createElement('span');
    num.className = 'phone-number';
    num.textContent = name || id;
    const what = document.createElement('span');
    what.className = 'muted small';
    what.textContent = 'phone (audio only)';
    ph.append(icon, num, what);
    hangup = document.createElement('button');
    hangup.type = 'button';
    hangup.className = 'danger hangup';
    hangup.textContent = 'Hang up';
    hangup.setAttribute('aria-label', `Hang up ${name || id}`);
    hangup.hidden = !call?.canHangup(id);
    hangup.addEventListener('click', () => {
      try {
        call?.hangup(id);
        /** @type {HTMLButtonElement} */ (hangup).disabled = true;
        dialStatus(`Hanging up ${name || id}…`, 'warn');
      } catch (err) {
        dialStatus(`Cannot hang up: ${err instanceof Error ? err.message : String(err)}`, 'bad');
      }
    });
    caption.append(hangup);
    root.append(video, ph, caption);
  } else {
    root.append(video, caption);
  }
  el('tiles').append(root);
  /** @type {Tile} */
  const tile = { root, video, state, path, rate, media, frames: 0, stats: null, conn: 'new', phone, hangup };
  tiles.set(id, tile);
  if (speaker === id) root.classList.add('speaking');
  // The SFU sends the simulcast layer that fits the tile (nothing while it is off screen).
  if (!phone) call?.observe(id, video);
  updateAlone();
  if ('requestVideoFrameCallback' in video) {
    const onFrame = () => {
      if (tiles.get(id) !== tile) return;
      tile.frames++;
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }
  return tile;
}

/** @param {string} id */
function removeTile(id) {
  const t = tiles.get(id);
  if (!t) return;
  tiles.delete(id);
  call?.unobserve(id);
  t.video.srcObject = null;
  t.root.remove();
  updateAlone();
}

/** @param {string | null} peer */
function showSpeaker(peer) {
  speaker = peer;
  for (const [id, t] of tiles) t.root.classList.toggle('speaking', id === peer);
  el('tile-local').classList.toggle('speaking', peer !== null && peer === call?.client.peerId);
}

/** @param {'mesh' | 'sfu'} t */
function showTopology(t) {
  const pill = el('topology');
  pill.hidden = false;
  pill.textContent = t === 'sfu' ? 'SFU' : 'mesh';
  pill.title = t === 'sfu' ? 'Media goes through the server (SFU)' : 'Media goes directly between participants (mesh)';
}

/** Says so when nobody else is in the room yet. */
function updateAlone() {
  const waiting = el('waiting');
  waiting.hidden = tiles.size > 0 || !joined;
}

/** Camera and microphone; falls back to one of them, then to receive only. */
async function getMedia() {
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    notice('Camera and microphone need a secure page (https://, or http://localhost). You can still see and hear the others.');
    return null;
  }
  const tries = [
    { video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: true },
    { video: true, audio: false },
    { video: false, audio: true },
  ];
  /** @type {unknown} */
  let lastErr = null;
  for (const c of tries) {
    try {
      return await navigator.mediaDevices.getUserMedia(c);
    } catch (err) {
      lastErr = err;
      if (err instanceof DOMException && err.name === 'NotAllowedError') break;
    }
  }
  const why = lastErr instanceof DOMException ? lastErr.message || lastErr.name : String(lastErr);
  notice(`No camera or microphone (${why}). You can still see and hear the others.`);
  return null;
}

function updateMediaButtons() {
  const a = localStream?.getAudioTracks()[0];
  const v = localStream?.getVideoTracks()[0];
  const ba = /** @type {HTMLButtonElement} */ (el('toggle-audio'));
  const bv = /** @type {HTMLButtonElement} */ (el('toggle-video'));
  ba.disabled = !a;
  bv.disabled = !v;
  ba.setAttribute('aria-pressed', String(!!a && !a.enabled));
  ba.textContent = a && !a.enabled ? 'Unmute microphone' : 'Mute microphone';
  bv.setAttribute('aria-pressed', String(!!v && !v.enabled));
  bv.textContent = v && !v.enabled ? 'Turn camera on' : 'Turn camera off';
  const parts = [];
  if (!a) parts.push('no mic');
  else if (!a.enabled) parts.push('muted');
  if (!v) parts.push('no camera');
  else if (!v.enabled) parts.push('camera off');
  setPill(el('local-info'), parts.join(', ') || 'live', parts.length ? 'warn' : 'ok');
}

async function main() {
  document.title = `${room} · Icebreaker`;
  el('room-name').textContent = room;
  el('copy-link').addEventListener('click', async () => {
    const url = location.origin + location.pathname;
    try {
      await navigator.clipboard.writeText(url);
      el('copy-link').textContent = 'Link copied';
    } catch {
      notice(`Copy this address to invite others: ${url}`);
    }
  });
  if (!ROOM_RE.test(room)) {
    setPill(el('signal-state'), 'invalid room', 'bad');
    notice('This room name is not valid: use 1–64 letters, digits, "_", "." or "-".');
    return;
  }

  localStream = await getMedia();
  if (localStream) /** @type {HTMLVideoElement} */ (el('local-video')).srcObject = localStream;
  updateMediaButtons();
  const client = new SignalingClient(transports ? { transports } : {});
  /** What we tell the others about our microphone and camera (shown on their tiles). */
  const mediaState = () => ({
    audio: !!localStream?.getAudioTracks().some((t) => t.enabled),
    video: !!localStream?.getVideoTracks().some((t) => t.enabled),
  });
  const announce = () => {
    if (client.state === 'open' || client.state === 'reconnecting') client.broadcast({ media: mediaState() });
  };
  el('toggle-audio').addEventListener('click', () => {
    for (const t of localStream?.getAudioTracks() ?? []) t.enabled = !t.enabled;
    updateMediaButtons();
    announce();
  });
  el('toggle-video').addEventListener('click', () => {
    for (const t of localStream?.getVideoTracks() ?? []) t.enabled = !t.enabled;
    updateMediaButtons();
    announce();
  });
  /**
   * @param {string} from
   * @param {any} data
   */
  const onMedia = (from, data) => {
    const m = data && typeof data === 'object' ? data.media : null;
    const t = tiles.get(from);
    if (!m || typeof m !== 'object' || !t) return;
    const parts = [];
    if (m.audio === false) parts.push('muted');
    if (m.video === false) parts.push('camera off');
    t.media.textContent = parts.join(', ');
    t.media.hidden = parts.length === 0;
  };
  client.on('broadcast', ({ from, data }) => onMedia(from, data));
  client.on('signal', ({ from, data }) => onMedia(from, data));
  // A newcomer learns our state from us directly.
  client.on('peer-joined', ({ peer }) => {
    const m = mediaState();
    if (!m.audio || !m.video) client.send(peer.id, { media: m });
  });
  call = new Call(client, { localStream, iceTransportPolicy: relay ? 'relay' : 'all', signalingChannel });
  call.on('topology', ({ topology: t }) => showTopology(t));
  call.on('speaker', ({ peer }) => showSpeaker(peer));
  call.on('data', ({ peer, data }) => {
    received.push({ from: peer, data: typeof data === 'string' ? data : { binary: data.byteLength }, at: Date.now() });
    if (received.length > 200) received.shift();
  });

  client.on('state', ({ state, transport }) => {
    const text = {
      idle: 'idle',
      connecting: 'connecting…',
      open: `connected (${transport})`,
      reconnecting: 'reconnecting…',
      closed: 'disconnected',
    }[state];
    setPill(el('signal-state'), text, state === 'open' ? 'ok' : state === 'closed' ? 'bad' : 'warn');
  });
  client.on('error', (err) => {
    if (['room_full', 'server_full', 'unauthorized', 'forbidden', 'invalid_room'].includes(err.code)) {
      notice(`Cannot join: ${err.message}`);
    }
    if (err.code === 'removed') {
      // An operator removed us (/admin): the SDK has closed the client; do not rejoin.
      removed = true;
      leave();
      notice('You were removed from this room by an operator.');
      const again = document.createElement('a');
      again.href = location.pathname + location.search;
      again.textContent = ' Join again';
      el('notice').append(again);
      /** @type {HTMLButtonElement} */ (el('leave')).disabled = true;
    }
  });

  const theCall = call;
  call.on('peer-added', ({ peer, info }) => addTile(peer, info.name, !!info.phone));
  // "Call a phone": the server dials, the phone joins as a participant.
  const dialForm = /** @type {HTMLFormElement} */ (el('dial-form'));
  const dialInput = /** @type {HTMLInputElement} */ (el('dial-uri'));
  dialForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const uri = dialTarget(dialInput.value);
    if (!uri) {
      dialStatus('Enter a phone number (+1 555 0100) or a SIP address (sip:alice@example.org).', 'bad');
      dialInput.focus();
      return;
    }
    const label = prettyUri(uri);
    dialStatus(`Calling ${label}…`, 'warn');
    theCall.dial(uri).then(
      () => {
        dialInput.value = '';
      },
      (err) => {
        const reason = err && typeof err === 'object' && 'reason' in err ? String(err.reason) : String(err);
        const code = err && typeof err === 'object' && 'code' in err ? err.code : null;
        const why = typeof code === 'number' && code > 0 ? `${reason} (${code})` : reason;
        dialStatus(`Could not call ${label}: ${why}`, 'bad');
      },
    );
  });
  call.on('dial', (ev) => {
    dialEvents.push({ ...ev, at: Date.now() });
    if (dialEvents.length > 100) dialEvents.shift();
    const label = prettyUri(ev.uri);
    if (ev.state === 'calling') dialStatus(`Calling ${label}…`, 'warn');
    else if (ev.state === 'ringing') dialStatus(`Ringing ${label}…`, 'warn');
    else if (ev.state === 'answered') dialStatus(`${label} answered: on the call.`, 'ok');
    else if (ev.state === 'ended') dialStatus(`Call with ${label} ended${ev.reason ? ': ' + ev.reason : ''}.`, '');
    // `failed`: the dial's promise says why (above).
    for (const [id, t] of tiles) if (t.hangup) t.hangup.hidden = !theCall.canHangup(id);
  });
  call.on('peer-removed', ({ peer }) => removeTile(peer));
  call.on('stream', ({ peer, stream }) => {
    const info = client.peers.get(peer);
    const t = addTile(peer, info?.name, !!info?.phone);
    t.video.srcObject = stream;
    t.video.play().catch(() => {
      // Autoplay with sound blocked: play muted until the user interacts.
      t.video.muted = true;
      t.video.play().catch(() => {});
      notice('Click anywhere to hear the others.');
      document.addEventListener(
        'click',
        () => {
          for (const tile of tiles.values()) tile.video.muted = false;
          notice('');
        },
        { once: true },
      );
    });
  });
  call.on('connection-state', ({ peer, state }) => {
    const t = tiles.get(peer);
    if (!t) return;
    t.conn = state;
    const label = { new: 'connecting…', connecting: 'connecting…', connected: 'connected', disconnected: 'reconnecting…', failed: 'failed, retrying…', closed: 'closed' }[state];
    setPill(t.state, label, state === 'connected' ? 'ok' : state === 'failed' ? 'bad' : 'warn');
  });
  call.on('stats', (s) => {
    const t = tiles.get(s.peer);
    if (!t) return;
    t.stats = s;
    if (s.path) {
      const proto = s.path === 'turn' ? (s.local?.type === 'relay' ? s.local.relayProtocol : s.remote?.protocol) : s.local?.protocol;
      t.path.hidden = false;
      setPill(t.path, s.path === 'turn' ? `via TURN${proto ? ' (' + proto + ')' : ''}` : `direct${proto ? ' (' + proto + ')' : ''}`, s.path === 'turn' ? 'warn' : 'ok');
      t.path.title = `local ${s.local?.type ?? '?'} ${s.local?.address ?? ''}:${s.local?.port ?? ''}, remote ${s.remote?.type ?? '?'} ${s.remote?.address ?? ''}:${s.remote?.port ?? ''}`;
    }
    t.rate.hidden = false;
    t.rate.textContent = `↓ ${formatRate(s.bitrateIn)} ↑ ${formatRate(s.bitrateOut)}`;
  });

  let left = false;
  // Declared before the handlers above can run (they fire after the join starts).
  function leave() {
    if (left) return;
    left = true;
    theCall.close();
    client.leave();
    for (const t of localStream?.getTracks() ?? []) t.stop();
    for (const id of [...tiles.keys()]) removeTile(id);
    joined = false;
    updateAlone();
  }
  el('leave').addEventListener('click', () => {
    leave();
    notice('You left the room.');
    const again = document.createElement('a');
    again.href = location.pathname + location.search;
    again.textContent = ' Join again';
    el('notice').append(again);
    /** @type {HTMLButtonElement} */ (el('leave')).disabled = true;
  });
  window.addEventListener('pagehide', leave);

  /** @type {any} */ (window).icebreaker = {
    client,
    call,
    localStream,
    /** Data messages received, newest last: `{from, data, at}` (binary as `{binary: bytes}`). */
    data: received,
    /** `dial` events of the calls made here (the "Call a phone" form), oldest first. */
    dials: dialEvents,
    /** Snapshot for tests and debugging. */
    stats() {
      return {
        peer: client.peerId,
        room: client.room,
        state: client.state,
        transport: client.transport,
        removed,
        relay,
        topology: theCall.topology,
        speaker,
        dataReceived: received.length,
        signaling: theCall.signalingCounts,
        peers: [...tiles.entries()].map(([id, t]) => ({
          id,
          name: client.peers.get(id)?.name ?? null,
          phone: t.phone,
          canHangup: theCall.canHangup(id),
          connectionState: theCall.peerConnection(id)?.connectionState ?? null,
          iceState: theCall.peerConnection(id)?.iceConnectionState ?? null,
          speaking: speaker === id,
          videoWidth: t.video.videoWidth,
          videoHeight: t.video.videoHeight,
          frameWidth: t.stats?.frameWidth ?? null,
          statsTopology: t.stats?.topology ?? null,
          path: t.stats?.path ?? null,
          local: t.stats?.local ?? null,
          remote: t.stats?.remote ?? null,
          bitrateIn: t.stats?.bitrateIn ?? 0,
          bitrateOut: t.stats?.bitrateOut ?? 0,
          framesDecoded: t.stats?.framesDecoded ?? 0,
          framesRendered: t.frames,
          audioLevel: t.stats?.audioLevel ?? null,
          audioPacketsReceived: t.stats?.audioPacketsReceived ?? 0,
        })),
        dialStatus: el('dial-status').hidden ? '' : el('dial-status').textContent,
      };
    },
  };

  try {
    /** @type {import('/sdk/icebreaker.js').JoinOptions} */
    const opts = {};
    if (displayName) opts.name = displayName;
    if (topology) opts.topology = topology;
    await client.join(room, opts);
    joined = true;
    updateAlone();
  } catch (err) {
    const e = err instanceof SignalingError ? err : null;
    setPill(el('signal-state'), 'not connected', 'bad');
    notice(`Could not join the room: ${e ? e.message : String(err)}`);
  }
}

main().catch((err) => notice(`Something went wrong: ${err instanceof Error ? err.message : String(err)}`));
