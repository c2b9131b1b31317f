// A load balancer without session affinity, for scale-out tests: an HTTP and WebSocket proxy
// on loopback that sends negotiate to one server and every other request to another.
import { connect as tcpConnect } from "node:net";
import { createServer as createHttpServer, request as httpRequest } from "node:http";

/** A server's port: `{port}` as startServer gives, or `{base: "http://host:port"}`. */
const portOf = (server) => server.port ?? Number(new URL(server.base).port);

/** A load balancer without session affinity at its worst: negotiate goes to one process and
 *  every request carrying a connection id to another (as hashing on `id` may do). */
export async function splitProxy(negotiateServer, transportServer, path = "/hub") {
  const target = (url) => (url.includes("/negotiate") ? negotiateServer : transportServer);
  const proxy = createHttpServer((req, res) => {
    const upstream = httpRequest({ host: "127.0.0.1", port: portOf(target(req.url)), path: req.url, method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode, answer.headers);
      answer.pipe(res);
    });
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
  });
  const upgraded = new Set();
  proxy.on("upgrade", (req, socket, head) => {
    upgraded.add(socket);
    socket.on("close", () => upgraded.delete(socket));
    const upstream = tcpConnect(portOf(target(req.url)), "127.0.0.1", () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      upstream.write(lines.join("\r\n") + "\r\n\r\n");
      upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    upstream.on("error", () => socket.destroy());
    socket.on("error", () => upstream.destroy());
  });
  await new Promise((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  const port = proxy.address().port;
  return { port, url: `http://127.0.0.1:${port}${path}`, base: `http://127.0.0.1:${port}`, close: () => new Promise((r) => {
    // Ends proxied WebSockets too; the server would otherwise wait for them.
    for (const socket of upgraded) socket.destroy();
    proxy.closeAllConnections();
    proxy.close(r);
  }) };
}

