// @ts-check
// The admin view (/admin): polls the token-protected /admin/* JSON endpoints every 2 s and
// shows the node, TURN, signaling, a bandwidth chart (drawn on a canvas from /admin/history),
// the live rooms with their members (remove one, close a room), the SFU's rooms and, in a
// cluster, every node. No dependencies, no build step.
//
// Test hook: window.icebreakerAdmin = { refresh(), state } (state: the last answers).

const POLL_MS = 2000;
const TOKEN_KEY = 'icebreaker.adminToken';
const COLORS = ['#4cc2ff', '#3fb950', '#d2a8ff', '#d29922'];
const SERIES = [
  { key: 'turn_in', label: 'TURN client → peer' },
  { key: 'turn_out', label: 'TURN peer → client' },
  { key: 'sfu_in', label: 'SFU in' },
  { key: 'sfu_out', label: 'SFU out' },
];

/** @param {string} id */
const el = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** @type {{ status: any, rooms: any, history: any, sfu: any, error: string | null, drawn: number }} */
const state = { status: null, rooms: null, history: null, sfu: null, error: null, drawn: 0 };
let token = sessionStorage.getItem(TOKEN_KEY) ?? '';
/** @type {ReturnType<typeof setTimeout> | null} */
let timer = null;
let busy = false;

class AuthError extends Error {}

/**
 * @param {string} path
 * @param {RequestInit} [init]
 */
async function api(path, init = {}) {
  /** @type {Record<string, string>} */
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(path, { ...init, headers, cache: 'no-store', credentials: 'same-origin' });
  if (res.status === 401 || res.status === 403) {
    throw new AuthError((await res.text()).trim() || `HTTP ${res.status}`);
  }
  const body = await res.json().catch(() => null);
  return { ok: res.ok, status: res.status, body };
}

/** @param {string} text */
function notice(text) {
  const n = el('notice');
  n.textContent = text;
  n.hidden = !text;
}

/**
 * @param {HTMLElement} node
 * @param {string} text
 * @param {'ok' | 'warn' | 'bad' | ''} kind
 */
function pill(node, text, kind) {
  node.textContent = text;
  node.className = `pill ${kind}`.trim();
}

/** @param {number} n bytes per second */
function rate(n) {
  if (!Number.isFinite(n)) return '–';
  const units = ['B/s', 'kB/s', 'MB/s', 'GB/s'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

/** @param {number | null | undefined} s seconds */
function age(s) {
  if (s === null || s === undefined) return '–';
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/**
 * @param {HTMLElement} dl
 * @param {[string, string][]} rows
 */
function kv(dl, rows) {
  dl.replaceChildren();
  for (const [k, v] of rows) {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = v;
    dd.dataset.key = k;
    dl.append(dt, dd);
  }
}

/**
 * @param {string} tag
 * @param {string} [text]
 * @param {string} [cls]
 */
function cell(tag, text = '', cls = '') {
  const c = document.createElement(tag);
  c.textContent = text;
  if (cls) c.className = cls;
  return c;
}

/** The last sample's value of `key`, or 0. */
function last(key) {
  const s = state.history?.samples;
  return s && s.length ? s[s.length - 1][key] ?? 0 : 0;
}

function renderStatus() {
  const st = state.status;
  if (!st) return;
  const cl = st.cluster;
  pill(el('node-pill'), cl ? `node ${cl.node}` : 'single node', '');
  pill(el('conn-pill'), st.draining ? `draining (${st.drain_remaining_secs} s left)` : 'live', st.draining ? 'warn' : 'ok');
  /** @type {HTMLButtonElement} */ (el('drain')).disabled = !!st.draining;
  kv(el('node-info'), [
    ['id', cl ? cl.node : '(no cluster)'],
    ['version', st.version ?? '?'],
    ['uptime', age(st.uptime_secs)],
    ['state', st.draining ? 'draining' : 'serving'],
    ['connections', String(st.open_connections)],
  ]);
  el('node-info').dataset.draining = String(!!st.draining);
  kv(el('turn-info'), [
    ['allocations', String(st.allocations)],
    ['client → peer', rate(last('turn_in'))],
    ['peer → client', rate(last('turn_out'))],
    ['SFU', st.sfu ? `${st.sfu.participants} participant(s), ${st.sfu.address}` : 'off'],
  ]);
  kv(el('signal-info'), [
    ['rooms', String(st.signal_rooms)],
    ['sessions', String(st.signal_sessions)],
    ['attached', String(st.signal_sessions_attached)],
    ['messages in', `${last('msgs_in').toFixed(1)} /s`],
    ['messages out', `${last('msgs_out').toFixed(1)} /s`],
  ]);
  const card = el('cluster-card');
  card.hidden = !cl;
  if (cl) {
    const tb = /** @type {HTMLTableSectionElement} */ (el('nodes').querySelector('tbody'));
    tb.replaceChildren();
    for (const n of cl.nodes ?? []) {
      const tr = document.createElement('tr');
      tr.dataset.node = n.id;
      const load = n.max_allocations > 0 ? `${Math.round((100 * n.allocations) / n.max_allocations)} %` : '–';
      tr.append(
        cell('td', n.id + (n.id === cl.node ? ' (this node)' : '')),
        cell('td', n.http || '–'),
        cell('td', (n.turn ?? []).join(', ') || '–'),
        cell('td', `${n.allocations}${n.max_allocations ? ` / ${n.max_allocations}` : ''}`, 'num'),
        cell('td', load, 'num'),
        cell('td', String(n.sessions), 'num'),
        cell('td', n.sfu ? 'yes' : 'no'),
        cell('td', n.draining ? 'draining' : 'serving'),
        cell('td', n.started ? new Date(n.started * 1000).toLocaleString() : '–'),
      );
      tb.append(tr);
    }
  }
}

/** @param {any} m */
function transportText(m) {
  const t = m.transport ?? (m.node && state.status?.cluster && m.node !== state.status.cluster.node ? 'other node' : '–');
  return `${t} · ${m.attached ? 'attached' : 'in grace'}`;
}

/** @param {any} s */
function signalingText(s) {
  if (!s || typeof s !== 'object') return '–';
  return `${s.messages ?? 0} msgs · ${rate(s.bytes ?? 0).replace('/s', '')}`;
}

function renderRooms() {
  const r = state.rooms;
  if (!r) return;
  const tb = /** @type {HTMLTableSectionElement} */ (el('rooms').querySelector('tbody'));
  tb.replaceChildren();
  const rooms = r.rooms ?? [];
  el('rooms-empty').hidden = rooms.length > 0;
  el('rooms-count').textContent = `(${rooms.length}${r.truncated ? '+, first by name' : ''})`;
  for (const room of rooms) {
    const tr = document.createElement('tr');
    tr.className = 'room-row';
    tr.dataset.room = room.room;
    const close = document.createElement('button');
    close.type = 'button';
    close.className = 'small danger close-room';
    close.textContent = 'Close room';
    close.dataset.room = room.room;
    close.addEventListener('click', () => closeRoom(room.room));
    const act = cell('td');
    act.append(close);
    tr.append(
      cell('td', room.room),
      cell('td', `${room.members.length} / ${room.capacity}`),
      cell('td', room.topology + (room.sfu_node ? ` (SFU on ${room.sfu_node})` : '')),
      cell('td', ''),
      cell('td', ''),
      cell('td', age(room.age_secs)),
      cell('td', signalingText(room.signaling)),
      act,
    );
    tb.append(tr);
    for (const m of room.members) {
      const pr = document.createElement('tr');
      pr.className = 'peer-row';
      pr.dataset.room = room.room;
      pr.dataset.peer = m.peer;
      const rm = document.createElement('button');
      rm.type = 'button';
      rm.className = 'small remove';
      rm.textContent = 'Remove';
      rm.dataset.peer = m.peer;
      rm.addEventListener('click', () => removePeer(room.room, m.peer));
      const act2 = cell('td');
      act2.append(rm);
      pr.append(
        cell('td', m.peer),
        cell('td', m.name ?? ''),
        cell('td', ''),
        cell('td', m.node ?? 'this node'),
        cell('td', transportText(m)),
        cell('td', age(m.age_secs)),
        cell('td', ''),
        act2,
      );
      tb.append(pr);
    }
  }
}

function renderSfu() {
  const tb = /** @type {HTMLTableSectionElement} */ (el('sfu-rooms').querySelector('tbody'));
  tb.replaceChildren();
  const s = state.sfu;
  if (!s) {
    el('sfu-note').textContent = 'This server has no SFU (sfu_listen is off).';
    return;
  }
  const rooms = s.rooms ?? [];
  el('sfu-note').textContent = rooms.length ? '' : 'No SFU rooms on this node.';
  for (const r of rooms) {
    const tr = document.createElement('tr');
    tr.append(
      cell('td', r.room),
      cell('td', String(r.participants), 'num'),
      cell('td', String(r.tracks), 'num'),
      cell('td', rate((r.bitrate_in ?? 0) / 8), 'num'),
      cell('td', rate((r.bitrate_out ?? 0) / 8), 'num'),
      cell('td', r.speaker ?? '–'),
    );
    tb.append(tr);
  }
}

function renderLegend() {
  const lg = el('legend');
  if (lg.childElementCount) return;
  SERIES.forEach((s, i) => {
    const item = document.createElement('span');
    const sw = document.createElement('span');
    sw.className = `swatch s${i}`;
    item.append(sw, document.createTextNode(s.label));
    lg.append(item);
  });
}

/** Draws the bandwidth chart by hand: one line per series over the last 10 minutes. */
function drawChart() {
  const canvas = /** @type {HTMLCanvasElement} */ (el('chart'));
  const h = state.history;
  const dpr = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || 960;
  const cssH = canvas.clientHeight || 240;
  if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
  }
  const ctx = canvas.getContext('2d');
  if (!ctx || !h) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  const samples = h.samples ?? [];
  const keep = (h.keep_secs ?? 600) * 1000;
  const now = samples.length ? samples[samples.length - 1].t : Date.now();
  const left = 64;
  const right = 10;
  const top = 10;
  const bottom = 24;
  const w = cssW - left - right;
  const ht = cssH - top - bottom;
  let max = 1000;
  for (const s of samples) for (const { key } of SERIES) max = Math.max(max, s[key] ?? 0);
  // A round top: 1, 2 or 5 times a power of ten.
  const p = Math.pow(10, Math.floor(Math.log10(max)));
  const top1 = [1, 2, 5, 10].map((m) => m * p).find((v) => v >= max) ?? max;
  ctx.font = '11px system-ui, sans-serif';
  ctx.fillStyle = '#8b98a5';
  ctx.strokeStyle = '#2d3743';
  ctx.lineWidth = 1;
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (let i = 0; i <= 4; i++) {
    const y = top + ht - (ht * i) / 4;
    ctx.beginPath();
    ctx.moveTo(left, Math.round(y) + 0.5);
    ctx.lineTo(left + w, Math.round(y) + 0.5);
    ctx.stroke();
    ctx.fillText(rate((top1 * i) / 4), left - 6, y);
  }
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  for (let m = 0; m <= keep / 60000; m += 2) {
    const x = left + w - (w * m * 60000) / keep;
    ctx.fillText(m === 0 ? 'now' : `-${m} min`, x, top + ht + 6);
  }
  let drawn = 0;
  SERIES.forEach(({ key }, i) => {
    ctx.strokeStyle = COLORS[i];
    ctx.lineWidth = 2;
    ctx.beginPath();
    let started = false;
    for (const s of samples) {
      const x = left + w - (w * (now - s.t)) / keep;
      if (x < left) continue;
      const y = top + ht - (ht * (s[key] ?? 0)) / top1;
      if (started) ctx.lineTo(x, y);
      else ctx.moveTo(x, y);
      started = true;
      drawn++;
    }
    ctx.stroke();
  });
  state.drawn = drawn;
  canvas.dataset.points = String(samples.length);
  canvas.dataset.drawn = String(drawn);
  el('chart-note').textContent = samples.length
    ? `${samples.length} samples, one every ${h.interval_secs} s (kept on the server, so the chart starts with its history).`
    : 'The first sample comes a few seconds after start.';
}

async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const [status, rooms, history, sfu] = await Promise.all([
      api('/admin/status'),
      api('/admin/rooms'),
      api('/admin/history'),
      api('/admin/sfu'),
    ]);
    state.status = status.ok ? status.body : null;
    state.rooms = rooms.ok ? rooms.body : state.rooms;
    state.history = history.ok ? history.body : state.history;
    state.sfu = sfu.ok ? sfu.body : null;
    state.error = rooms.ok ? null : (rooms.body?.message ?? `HTTP ${rooms.status}`);
    el('token-form').hidden = true;
    el('dashboard').hidden = false;
    el('forget-token').hidden = !token;
    renderLegend();
    renderStatus();
    renderRooms();
    renderSfu();
    drawChart();
    notice(state.error ? `Rooms: ${state.error}` : '');
  } catch (err) {
    if (err instanceof AuthError) {
      showTokenForm(token ? `The token was refused: ${err.message}` : '');
    } else {
      pill(el('conn-pill'), 'server unreachable', 'bad');
    }
  } finally {
    busy = false;
  }
}

/** @param {string} error */
function showTokenForm(error) {
  stop();
  el('dashboard').hidden = true;
  el('token-form').hidden = false;
  pill(el('conn-pill'), 'token needed', 'warn');
  const e = el('token-error');
  e.textContent = error;
  e.hidden = !error;
  el('token').focus();
}

function schedule() {
  stop();
  timer = setTimeout(async () => {
    await refresh();
    if (!el('dashboard').hidden) schedule();
  }, POLL_MS);
}

function stop() {
  if (timer) clearTimeout(timer);
  timer = null;
}

/**
 * @param {string} what
 * @param {string} path
 */
async function act(what, path) {
  try {
    const r = await api(path, { method: 'POST' });
    if (!r.ok) {
      notice(`${what}: ${r.body?.message ?? `HTTP ${r.status}`}`);
      return;
    }
    notice('');
  } catch (err) {
    if (err instanceof AuthError) showTokenForm(`The token was refused: ${err.message}`);
    else notice(`${what}: ${err instanceof Error ? err.message : err}`);
    return;
  }
  await refresh();
  schedule();
}

/**
 * @param {string} room
 * @param {string} peer
 */
function removePeer(room, peer) {
  if (!confirm(`Remove ${peer} from ${room}? Its client is told it was removed and does not rejoin.`)) return;
  act(`Remove ${peer}`, `/admin/rooms/${encodeURIComponent(room)}/peers/${encodeURIComponent(peer)}/remove`);
}

/** @param {string} room */
function closeRoom(room) {
  if (!confirm(`Close ${room}? Every member is removed.`)) return;
  act(`Close ${room}`, `/admin/rooms/${encodeURIComponent(room)}/close`);
}

el('drain').addEventListener('click', () => {
  if (!confirm('Start draining this node? It takes no new allocations or joins and stops when the last call ends.')) return;
  act('Drain', '/admin/drain');
});

el('token-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  token = /** @type {HTMLInputElement} */ (el('token')).value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  await refresh();
  if (!el('dashboard').hidden) schedule();
});

el('forget-token').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  token = '';
  showTokenForm('');
});

window.addEventListener('resize', () => drawChart());

// @ts-ignore test hook
window.icebreakerAdmin = { refresh, state };

refresh().then(() => {
  if (!el('dashboard').hidden) schedule();
});
