// Peer: Node.js with the `ws` package (optional; `--servers node-ws`).
//
// The same protocol subset as the Python peers: join -> joined; chat -> the
// raw frame relayed to the room's other connections with ws.send(), and an
// ack to the sender; "echo" mode sends every message back.
//
// usage: node ws_node.mjs [serve|echo] [--host 127.0.0.1] [--port 0]
import { WebSocketServer } from 'ws';

const args = process.argv.slice(2);
const mode = args.includes('echo') ? 'echo' : 'serve';
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : dflt; };
const host = opt('--host', '127.0.0.1');
const port = Number(opt('--port', '0'));

const rooms = new Map();
const wss = new WebSocketServer({ host, port, perMessageDeflate: false, maxPayload: 65536, backlog: 4096 });

wss.on('connection', (ws) => {
  const joined = new Set();
  ws.on('message', (data, isBinary) => {
    if (mode === 'echo') { ws.send(data, { binary: isBinary }); return; }
    let frame;
    try { frame = JSON.parse(data); } catch { frame = null; }
    const type = frame && frame.type, room = frame && frame.payload && frame.payload.room;
    if (type === 'join' && typeof room === 'string') {
      if (!rooms.has(room)) rooms.set(room, new Set());
      rooms.get(room).add(ws);
      joined.add(room);
      ws.send(JSON.stringify({ type: 'joined', payload: { room, members: [] } }));
    } else if (type === 'chat' && joined.has(room)) {
      for (const other of rooms.get(room)) if (other !== ws) other.send(data, { binary: false });
      ws.send(JSON.stringify({ type: 'ack', payload: { room } }));
    } else {
      ws.send(JSON.stringify({ type: 'error', payload: { code: frame ? 403 : 400, message: 'refused' } }));
    }
  });
  ws.on('close', () => {
    for (const room of joined) {
      const members = rooms.get(room);
      if (members) { members.delete(ws); if (members.size === 0) rooms.delete(room); }
    }
  });
});

wss.on('listening', () => {
  console.log(`node-ws listening on ws://${host}:${wss.address().port}/ws`);
});
