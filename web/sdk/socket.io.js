// Icebreaker's socket.io client for pages built on the classic WebRTC codelab: served at
// /socket.io/socket.io.js (where a Node socket.io server serves its own client), so that a
// codelab page's `<script src="/socket.io/socket.io.js">` and `io.connect()` run unchanged
// against Icebreaker (docs/PROTOCOL.md, "socket.io compatibility").
//
// It speaks socket.io v5 / engine.io v4 over WebSocket only (no long-polling, no binary
// attachments, namespace "/" only): `io(url?, {query, auth, reconnection, timeout})` (also
// `io.connect`) returns a socket with `on`, `once`, `off`, `emit` (with an acknowledgement
// callback as the last argument), `connect`, `disconnect`, `id` and `connected`. Emits made
// before the connection is up are sent once it is. Reserved events: `connect`, `disconnect`
// (reason), `connect_error` (Error). It reconnects after a lost connection (1 s doubling to
// 5 s, with jitter) unless `disconnect()` was called or `reconnection: false` was given. For
// everything else (polling, binary, other namespaces) use the official socket.io client: the
// server speaks the full protocol.
(function (global) {
  'use strict';

  function Emitter() {
    this._handlers = {};
  }
  Emitter.prototype.on = function (ev, fn) {
    (this._handlers[ev] = this._handlers[ev] || []).push(fn);
    return this;
  };
  Emitter.prototype.once = function (ev, fn) {
    var self = this;
    function once() {
      self.off(ev, once);
      fn.apply(self, arguments);
    }
    once.fn = fn;
    return this.on(ev, once);
  };
  Emitter.prototype.off = function (ev, fn) {
    if (ev === undefined) {
      this._handlers = {};
      return this;
    }
    var list = this._handlers[ev];
    if (!list) return this;
    if (fn === undefined) delete this._handlers[ev];
    else this._handlers[ev] = list.filter(function (h) { return h !== fn && h.fn !== fn; });
    return this;
  };
  Emitter.prototype.removeListener = Emitter.prototype.off;
  Emitter.prototype.removeAllListeners = function (ev) { return this.off(ev); };
  Emitter.prototype._fire = function (ev, args) {
    var list = (this._handlers[ev] || []).slice();
    for (var i = 0; i < list.length; i++) {
      try {
        list[i].apply(this, args);
      } catch (e) {
        setTimeout(function () { throw e; });
      }
    }
  };

  var RESERVED = { connect: 1, connect_error: 1, disconnect: 1, disconnecting: 1, newListener: 1, removeListener: 1 };

  /** The WebSocket URL of the engine.io endpoint for `url` (default: this page's origin). */
  function endpoint(url, query) {
    var base = new URL(url || global.location.href, global.location.href);
    var u = new URL('/socket.io/', base);
    u.protocol = base.protocol === 'https:' || base.protocol === 'wss:' ? 'wss:' : 'ws:';
    u.searchParams.set('EIO', '4');
    u.searchParams.set('transport', 'websocket');
    if (query) {
      for (var k in query) if (Object.prototype.hasOwnProperty.call(query, k)) u.searchParams.set(k, String(query[k]));
    }
    return u.toString();
  }

  function Socket(url, opts) {
    Emitter.call(this);
    opts = opts || {};
    this.io = { opts: opts };
    this.id = undefined;
    this.connected = false;
    this.disconnected = true;
    this._url = url;
    this._query = typeof opts.query === 'string' ? Object.fromEntries(new URLSearchParams(opts.query)) : opts.query;
    this._auth = opts.auth;
    this._reconnect = opts.reconnection !== false;
    this._timeout = opts.timeout || 20000;
    this._queue = [];
    this._acks = {};
    this._ackId = 0;
    this._attempt = 0;
    this._ws = null;
    this._timer = null;
    this._pingTimer = null;
    this._closedByUser = false;
    if (opts.autoConnect !== false) this.connect();
  }
  Socket.prototype = Object.create(Emitter.prototype);
  Socket.prototype.constructor = Socket;

  Socket.prototype.connect = function () {
    if (this._ws || this.connected) return this;
    this._closedByUser = false;
    var self = this;
    var ws;
    try {
      ws = new WebSocket(endpoint(this._url, this._query));
    } catch (e) {
      this._failed(e);
      return this;
    }
    this._ws = ws;
    clearTimeout(this._timer);
    this._timer = setTimeout(function () {
      if (!self.connected && self._ws === ws) {
        ws.close();
        self._failed(new Error('timeout'));
      }
    }, this._timeout);
    ws.onmessage = function (ev) {
      if (self._ws === ws && typeof ev.data === 'string') self._packet(ev.data);
    };
    ws.onclose = function () {
      if (self._ws !== ws) return;
      self._ws = null;
      if (self.connected) self._lost('transport close');
      else self._failed(new Error('websocket error'));
    };
    return this;
  };
  Socket.prototype.open = Socket.prototype.connect;

  /** One engine.io packet. */
  Socket.prototype._packet = function (text) {
    var type = text.charAt(0);
    if (type === '0') {
      // open: namespace "/" connect, with the auth payload.
      var open = {};
      try {
        open = JSON.parse(text.slice(1));
      } catch (e) {}
      this._pingWindow = (open.pingInterval || 25000) + (open.pingTimeout || 20000);
      this._armPing();
      var auth = typeof this._auth === 'function' ? null : this._auth;
      var self = this;
      if (typeof this._auth === 'function') {
        this._auth(function (a) { self._send('40' + (a ? JSON.stringify(a) : '')); });
      } else {
        this._send('40' + (auth ? JSON.stringify(auth) : ''));
      }
    } else if (type === '2') {
      this._send('3');
      this._armPing();
    } else if (type === '1') {
      if (this._ws) this._ws.close();
    } else if (type === '4') {
      this._socketPacket(text.slice(1));
    }
  };

  /** One socket.io packet (`4` stripped). */
  Socket.prototype._socketPacket = function (text) {
    var type = text.charAt(0);
    var rest = text.slice(1);
    if (rest.charAt(0) === '/') return; // another namespace: not ours
    if (type === '0') {
      var data = {};
      try {
        data = JSON.parse(rest || '{}');
      } catch (e) {}
      clearTimeout(this._timer);
      this.id = data.sid;
      this.connected = true;
      this.disconnected = false;
      this._attempt = 0;
      var q = this._queue;
      this._queue = [];
      for (var i = 0; i < q.length; i++) this._send(q[i]);
      this._fire('connect', []);
    } else if (type === '4') {
      var err = new Error('connect_error');
      try {
        var d = JSON.parse(rest);
        err = new Error(d.message || String(d));
        err.data = d.data;
      } catch (e) {}
      this._closedByUser = true; // the server refused us: as socket.io, no automatic retry
      if (this._ws) this._ws.close();
      this._ws = null;
      this._fire('connect_error', [err]);
    } else if (type === '1') {
      this._closedByUser = true;
      this._lost('io server disconnect');
    } else if (type === '2' || type === '3') {
      var m = /^(\d*)([\s\S]*)$/.exec(rest);
      var id = m[1];
      var args;
      try {
        args = JSON.parse(m[2]);
      } catch (e) {
        return;
      }
      if (!Array.isArray(args)) return;
      if (type === '3') {
        var cb = this._acks[id];
        delete this._acks[id];
        if (cb) cb.apply(this, args);
        return;
      }
      if (id !== '') {
        var self = this;
        args.push(function () {
          self._send('43' + id + JSON.stringify(Array.prototype.slice.call(arguments)));
        });
      }
      this._fire(String(args[0]), args.slice(1));
    }
  };

  Socket.prototype.emit = function (ev) {
    var args = Array.prototype.slice.call(arguments);
    if (RESERVED[ev]) throw new Error('"' + ev + '" is a reserved event name');
    var id = '';
    if (typeof args[args.length - 1] === 'function') {
      id = String(this._ackId++);
      this._acks[id] = args.pop();
    }
    var text = '42' + id + JSON.stringify(args);
    if (this.connected) this._send(text);
    else this._queue.push(text);
    return this;
  };

  Socket.prototype.send = function () {
    return this.emit.apply(this, ['message'].concat(Array.prototype.slice.call(arguments)));
  };

  Socket.prototype.disconnect = function () {
    this._closedByUser = true;
    clearTimeout(this._timer);
    if (this._ws && this.connected) this._send('41');
    var ws = this._ws;
    this._ws = null;
    if (ws) ws.close();
    if (this.connected) this._lost('io client disconnect');
    return this;
  };
  Socket.prototype.close = Socket.prototype.disconnect;

  Socket.prototype._send = function (text) {
    if (this._ws && this._ws.readyState === 1) this._ws.send(text);
  };

  /** The server pings every pingInterval; silence past pingInterval + pingTimeout: gone. */
  Socket.prototype._armPing = function () {
    var self = this;
    var ws = this._ws;
    clearTimeout(this._pingTimer);
    this._pingTimer = setTimeout(function () {
      if (self._ws === ws && ws) ws.close();
    }, this._pingWindow || 45000);
  };

  Socket.prototype._lost = function (reason) {
    clearTimeout(this._pingTimer);
    var was = this.connected;
    this.connected = false;
    this.disconnected = true;
    this.id = undefined;
    if (was) this._fire('disconnect', [reason]);
    this._scheduleReconnect();
  };

  Socket.prototype._failed = function (err) {
    clearTimeout(this._pingTimer);
    this._ws = null;
    this._fire('connect_error', [err]);
    this._scheduleReconnect();
  };

  Socket.prototype._scheduleReconnect = function () {
    if (!this._reconnect || this._closedByUser) return;
    var self = this;
    var delay = Math.min(5000, 1000 * Math.pow(2, this._attempt++)) * (0.5 + Math.random() / 2);
    clearTimeout(this._timer);
    this._timer = setTimeout(function () {
      if (!self._closedByUser) self.connect();
    }, delay);
  };

  /** `io(url?, opts?)`: a connected socket on namespace "/". */
  function io(url, opts) {
    if (typeof url === 'object' && url !== null) {
      opts = url;
      url = undefined;
    }
    return new Socket(url, opts);
  }
  io.connect = io;
  io.io = io;
  io.protocol = 5;
  io.Socket = Socket;
  global.io = io;
})(typeof self !== 'undefined' ? self : this);
