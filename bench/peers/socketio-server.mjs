// The Socket.IO peer for signalr-bench: echo, broadcast and rooms, mirroring our bench hub.
// Run by the generator as `node socketio-server.mjs` with NODE_PATH pointing at the scratch
// install; it prints "LISTENING <port>" once bound.
import { createServer } from "node:http";
import { createRequire } from "node:module";
import path from "node:path";

// socket.io lives in the scratch directory, not in the repository.
const require = createRequire(path.join(process.env.SIGNALR_BENCH_PEERS, "package.json"));
const { Server } = require("socket.io");

const http = createServer();
// Pings every minute: the generator's connections live shorter than that, so none is needed.
const io = new Server(http, {
  transports: ["websocket"],
  perMessageDeflate: false,
  pingInterval: 60000,
  pingTimeout: 60000,
});

io.on("connection", (socket) => {
  socket.on("Echo", (value) => socket.emit("Echo", value));
  socket.on("Broadcast", (value) => io.emit("Msg", value));
  // Acknowledged, so the generator knows the membership is in place before it sends.
  socket.on("JoinGroup", (group, ack) => {
    socket.join(group);
    if (typeof ack === "function") ack();
  });
  socket.on("SendToGroup", (group, value) => io.to(group).emit("Msg", value));
});

http.listen(0, "127.0.0.1", () => {
  console.log(`LISTENING ${http.address().port}`);
});
