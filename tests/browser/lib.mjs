// What the browser test files share: Chromium's flags, waiting, names.

/**
 * Headless Chromium flags of every suite: fake camera and microphone without a prompt, WebRTC on
 * loopback, autoplay, and name resolution limited to loopback (no traffic leaves the machine).
 * No --disable-features: Chromium honours only the last one (Playwright passes its own).
 */
export function chromiumArgs() {
  return [
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    '--allow-loopback-in-peer-connection',
    '--autoplay-policy=no-user-gesture-required',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1',
  ];
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A random suffix for room names. */
export const nonce = (len = 8) => Math.random().toString(36).slice(2, 2 + len);

/** Polls `fn` (→ `{ok, info}`) until ok or `deadline` (ms since the epoch); throws with the last `info`. */
export async function waitFor(what, deadline, fn, interval = 200) {
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last.ok) return last;
    await sleep(interval);
  }
  throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last && last.info)}`);
}
