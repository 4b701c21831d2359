// Load generator for the livenotify benchmarks (node + the `ws` package).
//
// Usage: node loadgen.js '<json config>'   (started by `python -m benchmarks`)
//
// mode "fanout": open `subscribers` connections (WebSocket, or NDJSON over TCP),
//   then one publisher WebSocket sends `messages` messages of `size` bytes,
//   as fast as the socket takes them (rate 0) or at `rate` messages/s. Every
//   message carries its sequence number and its send time, so each delivery
//   gives a latency (same process, same clock) and per-subscriber loss,
//   duplicate and reordering counts. Prints one JSON result line on stdout.
//   `transport` "sse": the subscribers are Server-Sent Events streams
//   (`sse_url`). `pub_transport` "http": instead of the publisher WebSocket,
//   `publishers` keep-alive HTTP connections POST the messages to `http_pub_url`
//   (each waits for its answer before the next; the result adds publishes_per_s).
// mode "idle": open `connections` WebSockets, print {"phase":"open",...}, hold
//   them until a line arrives on stdin, close them, print {"phase":"closed"}.
//
// Node is single-threaded: this process is pinned to its own core by the
// runner and reports its own CPU use (cpu_pct) so a saturated generator shows.
'use strict';

const http = require('http');
const net = require('net');
const { performance } = require('perf_hooks');
const WebSocket = require('ws');

const cfg = JSON.parse(process.argv[2]);
const now = () => performance.timeOrigin + performance.now(); // ms, wall clock

function log(msg) {
  process.stderr.write(`[loadgen] ${msg}\n`);
}

// Loopback source addresses 127.0.0.2..127.0.0.251, round-robin: spreads the
// connections over many (ip, port) pairs so 10,000s of connections never run
// out of ephemeral ports nor hit a per-IP connection cap.
const SRC_COUNT = 250;
function srcAddr(i) {
  return `127.0.0.${2 + ((i + (cfg.src_base || 0)) % SRC_COUNT)}`;
}

const SEQ_KEY = Buffer.from('"seq":');
const TS_KEY = Buffer.from('"ts":');

// Parse the unsigned integer after `key` in buf[start, end); -1 if absent.
function intAfter(buf, key, start, end) {
  const at = buf.indexOf(key, start);
  if (at < 0 || at >= end) return -1;
  let i = at + key.length;
  let v = 0;
  let c = buf[i];
  if (c < 48 || c > 57) return -1;
  while (i < end && (c = buf[i]) >= 48 && c <= 57) {
    v = v * 10 + (c - 48);
    i++;
  }
  return v;
}

function floatAfter(buf, key, start, end) {
  const at = buf.indexOf(key, start);
  if (at < 0 || at >= end) return NaN;
  let i = at + key.length;
  let j = i;
  while (j < end && ((buf[j] >= 48 && buf[j] <= 57) || buf[j] === 46)) j++;
  return parseFloat(buf.toString('latin1', i, j));
}

function makePayload(seq, size) {
  const head = `{"type":"${cfg.event}","seq":${seq},"ts":${now().toFixed(3)},"pad":"`;
  const tail = '"}';
  const pad = Math.max(0, size - head.length - tail.length);
  return head + 'x'.repeat(pad) + tail;
}

// Run `n` async openers with at most `limit` in flight.
async function pool(n, limit, open) {
  let next = 0;
  let failed = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      try {
        await open(i);
      } catch (e) {
        failed++;
        if (failed <= 3) log(`connect ${i} failed: ${e.message}`);
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
  return failed;
}

const WS_OPTS = { perMessageDeflate: false, skipUTF8Validation: true, handshakeTimeout: 30000 };

// Open a WebSocket; resolve once it is usable (after the welcome if the server
// sends one, so the subscription is in place before anything is published).
function openWs(url, i, onMessage, onClose) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { ...WS_OPTS, localAddress: srcAddr(i) });
    let ready = false;
    ws.on('open', () => {
      if (!cfg.expect_welcome) {
        ready = true;
        resolve(ws);
      }
    });
    ws.on('message', (data) => {
      if (!ready) {
        ready = true;
        resolve(ws);
        return;
      }
      if (onMessage) onMessage(data);
    });
    ws.on('error', (e) => {
      if (!ready) reject(e);
    });
    ws.on('close', (code) => {
      if (!ready) reject(new Error(`closed ${code} before ready`));
      else if (onClose) onClose(code);
    });
  });
}

// Subscriber WebSocket on a raw socket with a minimal frame parser. At
// 100,000+ deliveries/s the `ws` package's per-message work (a Buffer and an
// event per frame) saturates one core; this parser reads the unmasked server
// frames in place, so the generator stays well below the servers' cost.
// Handles text/binary frames, ping (answered with pong) and close.
const CRLF2 = Buffer.from('\r\n\r\n');
// A pong must echo the ping's payload (RFC 6455 5.5.3); clients must mask,
// and a zero mask leaves the payload as it is.
function pong(payload) {
  return Buffer.concat([Buffer.from([0x8a, 0x80 | payload.length, 0, 0, 0, 0]), payload]);
}

function openRawWs(url, i, onFrame, onClose) {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: u.hostname, port: +u.port, localAddress: srcAddr(i) });
    sock.setNoDelay(true);
    let ready = false;
    let upgraded = false;
    let rest = null;
    const key = Buffer.from(Array.from({ length: 16 }, () => (Math.random() * 256) | 0)).toString('base64');
    sock.write(
      `GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\n` +
        `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
    const timer = setTimeout(() => {
      if (!ready) sock.destroy(new Error('handshake timeout'));
    }, 30000);
    function markReady() {
      ready = true;
      clearTimeout(timer);
      resolve(sock);
    }
    function frames(buf) {
      let i = 0;
      const n = buf.length;
      while (n - i >= 2) {
        const b0 = buf[i];
        const b1 = buf[i + 1];
        let len = b1 & 0x7f;
        let hdr = 2;
        if (len === 126) {
          if (n - i < 4) break;
          len = buf.readUInt16BE(i + 2);
          hdr = 4;
        } else if (len === 127) {
          if (n - i < 10) break;
          len = Number(buf.readBigUInt64BE(i + 2));
          hdr = 10;
        }
        if (b1 & 0x80) hdr += 4; // servers do not mask; tolerate it anyway
        if (n - i < hdr + len) break;
        const op = b0 & 0x0f;
        const a = i + hdr;
        if (op <= 2) {
          if (!ready) markReady(); // the welcome
          else if (onFrame) onFrame(buf, a, a + len);
        } else if (op === 9 && len <= 125) {
          sock.write(pong(Buffer.from(buf.subarray(a, a + len))));
        } else if (op === 8) {
          sock.end();
        }
        i = a + len;
      }
      rest = i < n ? Buffer.from(buf.subarray(i)) : null;
    }
    sock.on('data', (chunk) => {
      let buf = rest ? Buffer.concat([rest, chunk]) : chunk;
      rest = null;
      if (!upgraded) {
        const end = buf.indexOf(CRLF2);
        if (end < 0) {
          rest = Buffer.from(buf);
          return;
        }
        const status = buf.toString('latin1', 0, buf.indexOf(13));
        if (!/ 101 /.test(status)) {
          sock.destroy(new Error(status));
          return;
        }
        upgraded = true;
        if (!cfg.expect_welcome) markReady();
        buf = buf.subarray(end + 4);
      }
      if (buf.length) frames(buf);
    });
    sock.on('error', (e) => {
      if (!ready) reject(e);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      if (!ready) reject(new Error('closed before ready'));
      else if (onClose) onClose(1006);
    });
  });
}

// NDJSON over TCP: read the welcome, subscribe, wait for `subscribed`.
function openTcp(i, onLine, onClose) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: cfg.host, port: cfg.tcp_port, localAddress: srcAddr(i) });
    sock.setNoDelay(true);
    let state = 0; // 0 welcome, 1 subscribing, 2 ready
    let rest = null;
    sock.on('data', (chunk) => {
      let buf = rest ? Buffer.concat([rest, chunk]) : chunk;
      let start = 0;
      let nl;
      while ((nl = buf.indexOf(10, start)) >= 0) {
        if (state === 2) onLine(buf, start, nl);
        else if (state === 0) {
          state = 1;
          sock.write(`{"type":"subscribe","events":["${cfg.event}"]}\n`);
        } else if (buf.indexOf('"subscribed"', start) >= 0 && buf.indexOf('"subscribed"', start) < nl) {
          state = 2;
          resolve(sock);
        }
        start = nl + 1;
      }
      rest = start < buf.length ? buf.subarray(start) : null;
      if (rest) rest = Buffer.from(rest); // detach from the big chunk
    });
    sock.on('error', (e) => {
      if (state < 2) reject(e);
    });
    sock.on('close', () => {
      if (state < 2) reject(new Error('closed before subscribed'));
      else onClose(0);
    });
  });
}

// Server-Sent Events on a raw socket: the response head, then lines; the
// first data line (the welcome) marks it ready, later lines go to onLine.
function openSse(url, i, onLine, onClose) {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: u.hostname, port: +u.port, localAddress: srcAddr(i) });
    sock.setNoDelay(true);
    let ready = false;
    let headDone = false;
    let rest = null;
    sock.write(`GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nAccept: text/event-stream\r\n\r\n`);
    sock.on('data', (chunk) => {
      let buf = rest ? Buffer.concat([rest, chunk]) : chunk;
      rest = null;
      let start = 0;
      if (!headDone) {
        const end = buf.indexOf(CRLF2);
        if (end < 0) {
          rest = Buffer.from(buf);
          return;
        }
        const status = buf.toString('latin1', 0, buf.indexOf(13));
        if (!/ 200 /.test(status)) {
          sock.destroy(new Error(status));
          return;
        }
        headDone = true;
        start = end + 4;
      }
      let nl;
      while ((nl = buf.indexOf(10, start)) >= 0) {
        if (ready) onLine(buf, start, nl);
        else if (buf[start] === 100 /* d: the welcome's data line */) {
          ready = true;
          resolve(sock);
        }
        start = nl + 1;
      }
      rest = start < buf.length ? Buffer.from(buf.subarray(start)) : null;
    });
    sock.on('error', (e) => {
      if (!ready) reject(e);
    });
    sock.on('close', () => {
      if (!ready) reject(new Error('closed before ready'));
      else onClose(0);
    });
  });
}

// POST `messages` payloads over `publishers` keep-alive HTTP connections.
async function httpPublish(M, onError) {
  const u = new URL(cfg.http_pub_url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: cfg.publishers || 4 });
  let next = 0;
  function post(body) {
    return new Promise((resolve) => {
      const req = http.request(
        {
          host: u.hostname, port: +u.port, path: u.pathname, method: 'POST', agent,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        },
        (res) => {
          const parts = [];
          res.on('data', (d) => parts.push(d));
          res.on('end', () => {
            if (res.statusCode !== 200) onError(`${res.statusCode} ${Buffer.concat(parts).toString().slice(0, 200)}`);
            resolve();
          });
        },
      );
      req.on('error', (e) => {
        onError(e.message);
        resolve();
      });
      req.end(body);
    });
  }
  async function worker() {
    while (next < M) {
      const seq = next++;
      await post(makePayload(seq, cfg.size));
    }
  }
  await Promise.all(Array.from({ length: cfg.publishers || 4 }, worker));
  agent.destroy();
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const k = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[k];
}

async function fanout() {
  const S = cfg.subscribers;
  const M = cfg.messages;
  const counts = new Int32Array(S);
  const lastSeq = new Int32Array(S).fill(-1);
  const seen = new Uint8Array(S * M);
  let dups = 0;
  let reorders = 0;
  let total = 0;
  let closed = 0;
  const closeCodes = {};
  let lat = new Float64Array(Math.min(S * M, 20_000_000));
  let latN = 0;
  let lastRecv = 0;

  function record(s, buf, start, end) {
    const seq = intAfter(buf, SEQ_KEY, start, end);
    if (seq < 0 || seq >= M) return; // control message (welcome, ping, error)
    const t = now();
    const ts = floatAfter(buf, TS_KEY, start, end);
    total++;
    counts[s]++;
    const k = s * M + seq;
    if (seen[k]) dups++;
    else seen[k] = 1;
    if (seq < lastSeq[s]) reorders++;
    else lastSeq[s] = seq;
    if (latN < lat.length) lat[latN++] = t - ts;
    lastRecv = t;
  }
  function onClose(code) {
    closed++;
    closeCodes[code] = (closeCodes[code] || 0) + 1;
  }

  const conns = new Array(S);
  const t0 = now();
  const failed = await pool(S, cfg.concurrency || 100, async (i) => {
    if (cfg.transport === 'tcp') {
      conns[i] = await openTcp(i, (buf, a, b) => record(i, buf, a, b), onClose);
    } else if (cfg.transport === 'sse') {
      conns[i] = await openSse(cfg.sse_url, i, (buf, a, b) => record(i, buf, a, b), onClose);
    } else {
      conns[i] = await openRawWs(cfg.sub_url, i, (buf, a, b) => record(i, buf, a, b), onClose);
    }
  });
  const connectS = (now() - t0) / 1000;
  log(`${S - failed}/${S} subscribers connected in ${connectS.toFixed(2)}s`);

  let pubErrors = 0;
  let firstPubError = null;
  const viaHttp = cfg.pub_transport === 'http';
  const pub = viaHttp
    ? null
    : await openWs(cfg.pub_url, S + 1, (d) => {
        const text = d.toString();
        if (text.includes('"error"')) {
          pubErrors++;
          if (!firstPubError) firstPubError = text.slice(0, 200);
        }
      });

  process.stdout.write(JSON.stringify({ phase: 'publishing' }) + '\n');
  const cpu0 = process.cpuUsage();
  const start = now();
  let lastActivity = start;
  // Publish. At max rate, keep the socket's buffer bounded instead of queueing
  // all messages in node's memory at once; at a fixed rate, follow a schedule.
  const rate = cfg.rate || 0;
  if (viaHttp) {
    await httpPublish(M, (why) => {
      pubErrors++;
      if (!firstPubError) firstPubError = why;
    });
  }
  for (let seq = 0; !viaHttp && seq < M; seq++) {
    if (rate > 0) {
      const due = start + (seq * 1000) / rate;
      const wait = due - now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    } else {
      while (pub.bufferedAmount > 256 * 1024) await new Promise((r) => setImmediate(r));
    }
    pub.send(makePayload(seq, cfg.size));
  }
  const pubEnd = now();
  const expected = (S - failed) * M;
  let timedOut = false;
  let lastTotal = -1;
  for (;;) {
    await new Promise((r) => setTimeout(r, 50));
    if (total !== lastTotal) {
      lastTotal = total;
      lastActivity = now();
    }
    if (total >= expected) break;
    if (now() - lastActivity > cfg.quiet_s * 1000) break;
    if (now() - start > cfg.timeout_s * 1000) {
      timedOut = true;
      break;
    }
  }
  const cpu = process.cpuUsage(cpu0);
  const end = lastRecv || now();
  const wall = (end - start) / 1000;

  let lost = 0;
  let subsWithLoss = 0;
  for (let s = 0; s < S; s++) {
    if (!conns[s]) continue;
    let distinct = 0;
    for (let q = 0; q < M; q++) distinct += seen[s * M + q];
    if (distinct < M) {
      lost += M - distinct;
      subsWithLoss++;
    }
  }
  const sorted = lat.subarray(0, latN).sort();
  const result = {
    mode: 'fanout',
    transport: cfg.transport || 'ws',
    subscribers: S,
    connected: S - failed,
    connect_s: connectS,
    messages: M,
    rate: rate,
    expected_deliveries: expected,
    deliveries: total,
    lost,
    subscribers_with_loss: subsWithLoss,
    duplicates: dups,
    reordered: reorders,
    closed_by_server: closed,
    close_codes: closeCodes,
    publish_s: (pubEnd - start) / 1000,
    wall_s: wall,
    deliveries_per_s: wall > 0 ? total / wall : 0,
    latency_ms: {
      p50: percentile(sorted, 50),
      p99: percentile(sorted, 99),
      max: sorted.length ? sorted[sorted.length - 1] : null,
    },
    cpu_pct: (100 * (cpu.user + cpu.system)) / 1e6 / Math.max(wall, 1e-9),
    pub_errors: pubErrors,
    first_pub_error: firstPubError,
    pub_transport: viaHttp ? 'http' : 'ws',
    publishes_per_s: (M - pubErrors) / Math.max((pubEnd - start) / 1000, 1e-9),
    timed_out: timedOut,
  };
  lat = null;
  process.stdout.write(JSON.stringify(result) + '\n');
  for (const c of conns) if (c) c.destroy();
  if (pub) pub.terminate();
}

async function idle() {
  const N = cfg.connections;
  const conns = new Array(N);
  let closed = 0;
  const t0 = now();
  const cpu0 = process.cpuUsage();
  const failed = await pool(N, cfg.concurrency || 100, async (i) => {
    conns[i] = await openRawWs(cfg.sub_url, i, null, () => closed++);
  });
  const secs = (now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  process.stdout.write(
    JSON.stringify({
      phase: 'open',
      connections: N,
      connected: N - failed,
      connect_s: secs,
      connections_per_s: (N - failed) / secs,
      cpu_pct: (100 * (cpu.user + cpu.system)) / 1e6 / secs,
    }) + '\n',
  );
  // Hold until the runner has measured the server, then close.
  await new Promise((r) => process.stdin.once('data', r));
  for (const c of conns) if (c) c.destroy();
  process.stdout.write(JSON.stringify({ phase: 'closed', closed_by_server: closed }) + '\n');
}

(cfg.mode === 'idle' ? idle() : fanout())
  .then(() => process.exit(0))
  .catch((e) => {
    log(`fatal: ${e.stack}`);
    process.exit(1);
  });
