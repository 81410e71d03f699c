// @ts-check
// Start page: join a room by name, or create one with a random name.

const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const NAME_KEY = 'icebreaker.name';

/** @param {string} id */
const $ = (id) => /** @type {HTMLInputElement} */ (document.getElementById(id));

/** A random, readable room name: `room-` + 10 base32 characters (50 bits). */
function randomRoom() {
  const alphabet = 'abcdefghijkmnpqrstuvwxyz23456789';
  const bytes = crypto.getRandomValues(new Uint8Array(10));
  return 'room-' + Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('');
}

/** @param {string} room */
function go(room) {
  const name = $('name').value.trim();
  try {
    if (name) localStorage.setItem(NAME_KEY, name);
    else localStorage.removeItem(NAME_KEY);
  } catch {
    /* storage disabled: the room page asks nothing, it uses no name */
  }
  location.assign('/r/' + encodeURIComponent(room));
}

function init() {
  try {
    $('name').value = localStorage.getItem(NAME_KEY) ?? '';
  } catch {
    /* storage disabled */
  }
  const form = /** @type {HTMLFormElement} */ (document.getElementById('join-form'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const room = $('room').value.trim();
    const err = $('room-error');
    if (!ROOM_RE.test(room)) {
      err.textContent = room ? 'That room name has characters that are not allowed.' : 'Enter a room name, or create a new room.';
      $('room').setAttribute('aria-invalid', 'true');
      $('room').focus();
      return;
    }
    err.textContent = '';
    $('room').removeAttribute('aria-invalid');
    go(room);
  });
  $('create').addEventListener('click', () => go(randomRoom()));
}

init();
