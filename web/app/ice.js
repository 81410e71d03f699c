// @ts-check
// ICE/TURN tester: gathers candidates with the configured servers and says whether TURN works.
// Prefilled from GET /api/ice-servers?service=turn&username=ice-tester (fresh TURN REST
// credentials). Query options: ?policy=relay, ?media=1 (ask for camera/mic first), ?auto=1
// (gather at once when the servers are loaded).

/** @param {string} id */
const el = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const params = new URLSearchParams(location.search);

/** @type {RTCIceServer[]} */
let servers = [];
/** @type {RTCIceServer[]} */
let defaults = [];
/** @type {RTCPeerConnection | null} */
let pc = null;

/** @type {{ result: any }} exposed for tests as window.iceTester */
const state = { result: null };
/** @type {any} */ (window).iceTester = state;

/** @param {RTCIceServer} s */
const urlsOf = (s) => (Array.isArray(s.urls) ? s.urls : [s.urls]);

function renderServers() {
  const ul = el('servers');
  ul.replaceChildren();
  servers.forEach((s, i) => {
    for (const url of urlsOf(s)) {
      const li = document.createElement('li');
      const code = document.createElement('code');
      code.textContent = url + (s.username ? `  [${s.username}]` : '');
      const rm = document.createElement('button');
      rm.type = 'button';
      rm.textContent = 'Remove';
      rm.setAttribute('aria-label', `Remove ${url}`);
      rm.addEventListener('click', () => {
        const rest = urlsOf(servers[i]).filter((u) => u !== url);
        if (rest.length) servers[i] = { ...servers[i], urls: rest };
        else servers.splice(i, 1);
        renderServers();
      });
      li.append(code, rm);
      ul.append(li);
    }
  });
  if (!servers.length) {
    const li = document.createElement('li');
    li.className = 'muted';
    li.textContent = 'No server: only host candidates will be gathered.';
    ul.append(li);
  }
}

/** @param {string} [key] */
async function loadDefaults(key) {
  const status = el('fetch-status');
  const url = new URL('/api/ice-servers', location.origin);
  url.searchParams.set('service', 'turn');
  url.searchParams.set('username', 'ice-tester');
  /** @type {Record<string, string>} */
  const headers = {};
  if (key) headers.authorization = `Bearer ${key}`;
  let res;
  try {
    res = await fetch(url, { headers, cache: 'no-store' });
  } catch (err) {
    status.textContent = `Could not reach this server's API (${err instanceof Error ? err.message : err}). Add servers by hand.`;
    return;
  }
  if (res.status === 401) {
    el('key-box').hidden = false;
    status.textContent = key ? 'That API key was refused.' : 'This server needs an API key to hand out TURN credentials.';
    /** @type {HTMLInputElement} */ (el('api-key')).focus();
    return;
  }
  if (!res.ok) {
    const err = await res.json().catch(() => null);
    const why = err && typeof err.message === 'string' ? `: ${err.message}` : '';
    status.textContent = `This server's API answered HTTP ${res.status}${why}. Add servers by hand.`;
    return;
  }
  const body = await res.json().catch(() => null);
  if (!body) {
    status.textContent = 'The API answer was not JSON. Add servers by hand.';
    return;
  }
  /** @type {RTCIceServer[]} */
  let list = Array.isArray(body.iceServers) ? body.iceServers : [];
  if (!list.length && Array.isArray(body.uris)) {
    const stun = body.uris.filter((/** @type {string} */ u) => u.startsWith('stun'));
    const turn = body.uris.filter((/** @type {string} */ u) => u.startsWith('turn'));
    if (stun.length) list.push({ urls: stun });
    if (turn.length) list.push({ urls: turn, username: body.username, credential: body.password });
  }
  el('key-box').hidden = true;
  defaults = list;
  servers = structuredClone(list);
  renderServers();
  const ttl = typeof body.ttl === 'number' ? `, valid ${Math.round(body.ttl / 60)} min` : '';
  status.textContent = `Loaded this server's STUN/TURN URIs with fresh credentials (user ${body.username ?? '?'}${ttl}).`;
  if (params.get('auto') === '1') gather();
}

/**
 * What a relay candidate is relayed over: the candidate's relayProtocol when the browser tells,
 * else the server URL (turns: → tls, ?transport=tcp → tcp, else udp).
 * @param {any} cand
 * @param {string | undefined} url
 */
function relayOver(cand, url) {
  if (cand.relayProtocol) return cand.relayProtocol;
  if (!url) return '';
  if (url.startsWith('turns:')) return 'tls';
  return /transport=tcp/i.test(url) ? 'tcp' : 'udp';
}

/** @param {number} p */
function formatPriority(p) {
  // type preference | local preference | (256 - component)
  return `${p} (${p >>> 24} | ${(p >>> 8) & 0xffff} | ${256 - (p & 0xff)})`;
}

async function gather() {
  const button = /** @type {HTMLButtonElement} */ (el('gather'));
  const tbody = el('candidates');
  const errors = el('errors');
  const verdict = el('verdict');
  const gstate = el('gather-state');
  pc?.close();
  tbody.replaceChildren();
  errors.replaceChildren();
  verdict.className = 'verdict';
  verdict.textContent = 'Gathering…';
  button.disabled = true;
  /** @type {{type: string, protocol: string, relayProtocol: string, address: string, port: number, priority: number, ms: number, url: string}[]} */
  const found = [];
  /** @type {{url: string, code: number, text: string, address: string}[]} */
  const errs = [];

  /** @type {MediaStream | null} */
  let media = null;
  if (/** @type {HTMLInputElement} */ (el('use-media')).checked) {
    try {
      media = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
    } catch (err) {
      const li = document.createElement('li');
      li.textContent = `getUserMedia: ${err instanceof Error ? err.message : err} (continuing without)`;
      errors.append(li);
    }
  }
  const policy = /** @type {RTCIceTransportPolicy} */ (/** @type {HTMLSelectElement} */ (el('policy')).value);
  try {
    pc = new RTCPeerConnection({ iceServers: servers, iceTransportPolicy: policy });
  } catch (err) {
    verdict.className = 'verdict bad';
    verdict.textContent = `Invalid server list: ${err instanceof Error ? err.message : err}`;
    button.disabled = false;
    media?.getTracks().forEach((t) => t.stop());
    return;
  }
  const mine = pc;
  const t0 = performance.now();
  const finished = new Promise((resolve) => {
    const timer = setTimeout(resolve, 20000);
    mine.onicegatheringstatechange = () => {
      gstate.textContent = `gathering: ${mine.iceGatheringState}`;
      if (mine.iceGatheringState === 'complete') {
        clearTimeout(timer);
        resolve(undefined);
      }
    };
  });
  mine.onicecandidate = (ev) => {
    const c = /** @type {any} */ (ev.candidate);
    if (!c || !c.candidate) return;
    const row = {
      type: c.type ?? '',
      protocol: c.protocol ?? '',
      relayProtocol: c.type === 'relay' ? relayOver(c, /** @type {any} */ (ev).url ?? c.url) : '',
      address: c.address ?? '',
      port: c.port ?? 0,
      priority: c.priority ?? 0,
      ms: Math.round(performance.now() - t0),
      url: /** @type {any} */ (ev).url ?? c.url ?? '',
    };
    found.push(row);
    const tr = document.createElement('tr');
    for (const [v, num] of /** @type {[string | number, boolean][]} */ ([
      [row.ms, true], [row.type, false], [row.protocol, false], [row.relayProtocol, false],
      [row.address, false], [row.port, true], [formatPriority(row.priority), true], [row.url, false],
    ])) {
      const td = document.createElement('td');
      td.textContent = String(v);
      if (num) td.className = 'num';
      tr.append(td);
    }
    tbody.append(tr);
  };
  mine.onicecandidateerror = (ev) => {
    const e = /** @type {RTCPeerConnectionIceErrorEvent} */ (ev);
    const item = { url: e.url, code: e.errorCode, text: e.errorText, address: e.address ? `${e.address}:${e.port}` : '' };
    errs.push(item);
    const li = document.createElement('li');
    li.textContent = `${item.url}: ${item.code} ${item.text}${item.address ? ' (from ' + item.address + ')' : ''}`;
    errors.append(li);
  };
  for (const t of media?.getTracks() ?? []) mine.addTrack(t);
  if (!media) mine.addTransceiver('audio');
  try {
    await mine.setLocalDescription(await mine.createOffer());
  } catch (err) {
    verdict.className = 'verdict bad';
    verdict.textContent = `Could not start gathering: ${err instanceof Error ? err.message : err}`;
    button.disabled = false;
    return;
  }
  await finished;
  const elapsed = Math.round(performance.now() - t0);
  gstate.textContent = `done in ${elapsed} ms, ${found.length} candidate(s)`;
  media?.getTracks().forEach((t) => t.stop());
  mine.close();
  if (pc === mine) pc = null;
  button.disabled = false;

  const relays = [...new Set(found.filter((c) => c.type === 'relay').map((c) => c.relayProtocol || '?'))].sort();
  const turnConfigured = servers.some((s) => urlsOf(s).some((u) => u.startsWith('turn')));
  const srflx = found.some((c) => c.type === 'srflx');
  let ok = false;
  let text;
  if (relays.length) {
    ok = true;
    text = `TURN works (relay candidate over ${relays.join('/')})`;
  } else if (!turnConfigured) {
    text = srflx ? 'No TURN server configured; STUN works (server-reflexive candidate).' : 'No TURN server configured, and no server-reflexive candidate.';
  } else if (errs.length) {
    const codes = [...new Set(errs.map((e) => `${e.code} ${e.text}`.trim()))];
    const auth = errs.some((e) => e.code === 401);
    text = `TURN does not work: ${auth ? 'the server refused the credentials (401); ' : ''}${codes.join('; ')}`;
  } else {
    text = 'TURN does not work: no relay candidate and no error (is the server reachable? UDP/TCP blocked?)';
  }
  verdict.className = 'verdict ' + (ok ? 'ok' : 'bad');
  verdict.textContent = text;
  state.result = { ok, verdict: text, candidates: found, errors: errs, relayProtocols: relays, elapsed };
}

function init() {
  renderServers();
  if (params.get('policy') === 'relay') /** @type {HTMLSelectElement} */ (el('policy')).value = 'relay';
  if (params.get('media') === '1') /** @type {HTMLInputElement} */ (el('use-media')).checked = true;
  el('gather').addEventListener('click', () => {
    gather().catch((err) => {
      el('verdict').textContent = `Error: ${err instanceof Error ? err.message : err}`;
      /** @type {HTMLButtonElement} */ (el('gather')).disabled = false;
    });
  });
  el('reset').addEventListener('click', () => {
    servers = structuredClone(defaults);
    renderServers();
  });
  el('key-box').addEventListener('submit', (ev) => {
    ev.preventDefault();
    loadDefaults(/** @type {HTMLInputElement} */ (el('api-key')).value.trim());
  });
  el('add-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const url = /** @type {HTMLInputElement} */ (el('add-url')).value.trim();
    const username = /** @type {HTMLInputElement} */ (el('add-user')).value.trim();
    const credential = /** @type {HTMLInputElement} */ (el('add-pass')).value;
    if (!/^(stun|stuns|turn|turns):/.test(url)) {
      el('fetch-status').textContent = 'A server URI starts with stun:, turn: or turns:.';
      return;
    }
    /** @type {RTCIceServer} */
    const s = { urls: url };
    if (username) s.username = username;
    if (credential) s.credential = credential;
    servers.push(s);
    renderServers();
    /** @type {HTMLFormElement} */ (ev.target).reset();
  });
  loadDefaults();
}

init();
