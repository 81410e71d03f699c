// @ts-check
// Room page: camera + microphone, one tile per participant with its connection type (direct /
// via TURN) and live bitrate, the active speaker highlighted, and the room's topology (mesh or
// SFU) in the header. Query options: ?relay=1 forces TURN (iceTransportPolicy 'relay'),
// ?transports=sse,poll limits the signaling transports, ?name=Ada sets the display name,
// ?topology=auto|mesh|sfu chooses the topology when this join creates the room.
// Test hook: window.icebreaker = { client, call, localStream, data, stats() }.

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
 * @param {string} id
 * @param {string} [name]
 * @returns {Tile}
 */
function addTile(id, name) {
  const existing = tiles.get(id);
  if (existing) return existing;
  const root = document.createElement('figure');
  root.className = 'tile';
  root.dataset.peer = id;
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.setAttribute('aria-label', `Video of ${name || 'participant ' + id}`);
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
  root.append(video, caption);
  el('tiles').append(root);
  /** @type {Tile} */
  const tile = { root, video, state, path, rate, media, frames: 0, stats: null, conn: 'new' };
  tiles.set(id, tile);
  if (speaker === id) root.classList.add('speaking');
  // The SFU sends the simulcast layer that fits the tile (nothing while it is off screen).
  call?.observe(id, video);
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
  call.on('peer-added', ({ peer, info }) => addTile(peer, info.name));
  call.on('peer-removed', ({ peer }) => removeTile(peer));
  call.on('stream', ({ peer, stream }) => {
    const t = addTile(peer, client.peers.get(peer)?.name);
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
        })),
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
