// The reference signaling server of bench/compare-signal: the WebRTC codelab's socket.io room
// relay, done right. Stock socket.io 4, one process, default settings.
//
//   'create or join' ROOM -> 'created' ROOM ID (first member), 'joined' ROOM ID (second member;
//                            the first one gets 'join' ROOM), 'full' ROOM (a third one)
//   'message' DATA        -> relayed as 'message' DATA to the other member of the room only
//
// Capacity 2 per room; a socket is in at most one room; rooms empty themselves on disconnect.
//
// Usage: node server.js [--host 127.0.0.1] [--port 40680]   (prints "listening HOST:PORT")
'use strict';

const http = require('node:http');
const { Server } = require('socket.io');

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const host = arg('--host', '127.0.0.1');
const port = Number(arg('--port', '40680'));
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`invalid --port ${arg('--port', '')}`);
  process.exit(2);
}

const CAPACITY = 2;
const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;

const httpServer = http.createServer((req, res) => {
  res.writeHead(404).end();
});
const io = new Server(httpServer, {
  // The benchmark speaks WebSocket directly (as browsers do after the upgrade).
  transports: ['websocket'],
  serveClient: false,
});

io.on('connection', (socket) => {
  socket.on('create or join', (room) => {
    if (typeof room !== 'string' || !ROOM_RE.test(room) || socket.data.room !== undefined) {
      socket.emit('error', 'bad room');
      return;
    }
    const members = io.sockets.adapter.rooms.get(room);
    const n = members ? members.size : 0;
    if (n === 0) {
      socket.join(room);
      socket.data.room = room;
      socket.emit('created', room, socket.id);
    } else if (n < CAPACITY) {
      socket.to(room).emit('join', room);
      socket.join(room);
      socket.data.room = room;
      socket.emit('joined', room, socket.id);
    } else {
      socket.emit('full', room);
    }
  });

  socket.on('message', (message) => {
    const room = socket.data.room;
    if (room === undefined) return;
    // To the other member only (not back to the sender, not to other rooms).
    socket.to(room).emit('message', message);
  });
});

httpServer.listen(port, host, () => {
  const a = httpServer.address();
  console.log(`listening ${a.address}:${a.port} (socket.io ${require('socket.io/package.json').version}, node ${process.version})`);
});

function stop() {
  io.close();
  httpServer.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
