// Starts the local bkg stack for the e2e test and the benchmark.
//
// The real path: `bkg up --port 0 --plugins config/plugins --ui-dir admin-ui/dist/admin-ui/browser`
// with BKG_API_KEY set; the gateway serves the UI and the API on one origin.
// For development against a gateway without --ui-dir, `startStack({ staticServer: true })` serves
// the built UI from a tiny Node server that proxies /api, /v1, /ws and /healthz to the gateway.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const UI_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = path.resolve(UI_ROOT, '..');
export const DIST = path.join(UI_ROOT, 'dist/admin-ui/browser');

export function bkgBin() {
  return process.env.BKG_BIN ?? path.join(REPO, 'target/debug/bkg');
}

/** What the gateway binary supports: `--ui-dir` (serves the UI). */
export function gatewayFeatures() {
  const bin = bkgBin();
  if (!existsSync(bin)) return { bin, exists: false, uiDir: false };
  const help = spawnSync(bin, ['up', '--help'], { encoding: 'utf8' });
  return { bin, exists: true, uiDir: /--ui-dir\b/.test(help.stdout ?? '') };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts `bkg up` on a free port. Resolves when the gateway listens and the echo plugin runs.
 * Returns { base, gateway, stop, logs }.
 */
export async function startStack({ apiKey, staticServer = false, plugins = 'config/plugins', keysFile } = {}) {
  const { bin, exists, uiDir } = gatewayFeatures();
  if (!exists) throw new Error(`${bin} not found: run cargo build -p bkg -p bkg-plugin-runtime first`);
  const args = ['up', '--port', '0', '--plugins', plugins];
  // The Keys page writes the key file: a test's own, never the checkout's .bkg/keys.yaml.
  if (keysFile) args.push('--keys-file', keysFile);
  if (!staticServer) {
    if (!uiDir) throw new Error('this bkg has no `up --ui-dir` yet');
    args.push('--ui-dir', DIST);
  }
  const env = { ...process.env, BKG_API_KEY: apiKey };
  const child = spawn(bin, args, { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'], detached: false });
  let output = '';
  const gateway = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`bkg up did not report its address in 60 s:\n${output}`)), 60_000);
    const onData = (chunk) => {
      output += chunk;
      const m = /listening on (http:\/\/[\d.:[\]a-z]+)/i.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (c) => {
      output += c;
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`bkg up exited with ${code}:\n${output}`));
    });
  });
  child.stdout.on('data', (c) => (output += c));

  let server = null;
  let base = gateway;
  if (staticServer) {
    server = await serveStatic(gateway);
    base = `http://127.0.0.1:${server.address().port}`;
  }
  const stop = async () => {
    server?.close();
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      const exited = new Promise((r) => child.once('exit', r));
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
  };
  try {
    await waitFor(async () => {
      const r = await fetch(`${gateway}/api/plugins/echo`, { headers: { authorization: `Bearer ${apiKey}` } });
      if (!r.ok) return false;
      const p = await r.json();
      return p.status === 'running';
    }, 60_000, 'echo plugin running');
  } catch (e) {
    await stop();
    throw new Error(`${e.message}\n--- bkg output ---\n${output}`);
  }
  return { base, gateway, stop, logs: () => output };
}

export async function waitFor(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (e) {
      last = e;
    }
    await sleep(200);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.txt': 'text/plain',
};

/** Serves DIST with SPA fallback; proxies /api, /v1 (OpenAI routes), /ws, /healthz and /metrics to the gateway. */
export function serveStatic(gateway, port = 0) {
  const target = new URL(gateway);
  const proxied = (url) => /^\/(api|v1|ws|healthz|metrics)(\/|$|\?)/.test(url);
  const server = http.createServer((req, res) => {
    if (proxied(req.url)) {
      const upstream = http.request(
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
        (up) => {
          res.writeHead(up.statusCode, up.headers);
          up.pipe(res);
        },
      );
      upstream.on('error', (e) => {
        res.writeHead(502, { 'content-type': 'application/problem+json' });
        res.end(JSON.stringify({ type: 'about:blank', title: 'Bad gateway', status: 502, detail: e.message }));
      });
      req.pipe(upstream);
      return;
    }
    const clean = decodeURIComponent(new URL(req.url, 'http://x').pathname).replace(/\.\.+/g, '.');
    let file = path.join(DIST, clean);
    if (!file.startsWith(DIST) || !existsSync(file) || statSync(file).isDirectory()) file = path.join(DIST, 'index.html');
    const ext = path.extname(file);
    res.writeHead(200, {
      'content-type': TYPES[ext] ?? 'application/octet-stream',
      'cache-control': ext === '.html' ? 'no-cache' : 'public, max-age=31536000, immutable',
    });
    res.end(readFileSync(file));
  });
  server.on('upgrade', (req, socket, head) => {
    const up = net.connect(Number(target.port), target.hostname, () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      up.write(lines.join('\r\n') + '\r\n\r\n');
      if (head?.length) up.write(head);
      up.pipe(socket);
      socket.pipe(up);
    });
    up.on('error', () => socket.destroy());
    socket.on('error', () => up.destroy());
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

// `node e2e/stack.mjs [--static]`: run the stack by hand for development.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const apiKey = process.env.BKG_API_KEY ?? 'bkg_devLocalOnlyKey0123456789abcdefghijklmno';
  const stack = await startStack({ apiKey, staticServer: process.argv.includes('--static') });
  console.log(`UI: ${stack.base}   gateway: ${stack.gateway}   key: ${apiKey}`);
  process.on('SIGINT', async () => {
    await stack.stop();
    process.exit(0);
  });
  process.on('SIGTERM', async () => {
    await stack.stop();
    process.exit(0);
  });
}

/** Whether the gateway answers a WebSocket upgrade on /ws/plugins (101), using the bearer subprotocol. */
export function wsAvailable(gateway, apiKey) {
  const u = new URL(gateway);
  return new Promise((resolve) => {
    const req = http.request({
      host: u.hostname,
      port: u.port,
      path: '/ws/plugins',
      headers: {
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-version': '13',
        'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
        'sec-websocket-protocol': `bkg.v1, bkg.bearer.${apiKey}`,
      },
    });
    req.on('upgrade', (_res, socket) => {
      socket.destroy();
      resolve(true);
    });
    req.on('response', (res) => {
      res.resume();
      resolve(false);
    });
    req.on('error', () => resolve(false));
    req.setTimeout(5000, () => {
      req.destroy();
      resolve(false);
    });
    req.end();
  });
}
