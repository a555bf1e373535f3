// Benchmark of the admin UI (scripts/ui.sh bench):
//  1. production bundle: initial JS (what index.html loads) raw and gzip, plus lazy chunks and CSS;
//  2. time from navigation to the first rendered plugin card, against a real local `bkg up`,
//     in headless Debian Chromium: cold (new browser context, empty cache) and warm (reload).
// Prints a Markdown report and writes it to artifacts/admin-ui/bench.md.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { CHROMIUM, launch } from './browser.mjs';
import { DIST, REPO, gatewayFeatures, startStack } from './stack.mjs';

const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const API_KEY = 'bkg_benchAdminKey0123456789abcdefghijklmnopq';

const kb = (n) => `${(n / 1024).toFixed(1)} kB`;
const gz = (buf) => zlib.gzipSync(buf, { level: 9 }).length;
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

// --- 1. bundle ----------------------------------------------------------------------------------
const html = readFileSync(path.join(DIST, 'index.html'), 'utf8');
const initial = [...html.matchAll(/<(?:script|link)[^>]+(?:src|href)="([^"]+\.js)"/g)].map((m) => m[1]);
const initialSet = new Set(initial);
let initialRaw = 0;
let initialGz = 0;
let lazyRaw = 0;
let lazyGz = 0;
let cssRaw = 0;
let cssGz = 0;
for (const f of readdirSync(DIST)) {
  const buf = readFileSync(path.join(DIST, f));
  if (f.endsWith('.js')) {
    if (initialSet.has(f)) {
      initialRaw += buf.length;
      initialGz += gz(buf);
    } else {
      lazyRaw += buf.length;
      lazyGz += gz(buf);
    }
  } else if (f.endsWith('.css')) {
    cssRaw += buf.length;
    cssGz += gz(buf);
  }
}

// --- 2. time to first plugin card ---------------------------------------------------------------
const { uiDir } = gatewayFeatures();
const stack = await startStack({ apiKey: API_KEY, staticServer: !uiDir });
const browser = await launch();
const cold = [];
const warm = [];
try {
  // Signed in already (the key in sessionStorage): measures loading the app and the plugins, not typing.
  const init = (key) => {
    sessionStorage.setItem('bkg.apiKey', key);
    new MutationObserver((_, obs) => {
      if (document.querySelector('[data-testid=plugin-card]')) {
        window.__firstCard = performance.now();
        obs.disconnect();
      }
    }).observe(document, { childList: true, subtree: true });
  };
  for (let i = 0; i < RUNS; i++) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    await context.addInitScript(init, API_KEY);
    const page = await context.newPage();
    await page.goto(`${stack.base}/`);
    await page.waitForFunction(() => window.__firstCard !== undefined, null, { timeout: 30_000 });
    cold.push(await page.evaluate(() => window.__firstCard));
    await page.reload();
    await page.waitForFunction(() => window.__firstCard !== undefined, null, { timeout: 30_000 });
    warm.push(await page.evaluate(() => window.__firstCard));
    await context.close();
  }
} finally {
  await browser.close();
  await stack.stop();
}

// --- report ---------------------------------------------------------------------------------------
const cpu = (readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/) ?? [])[1] ?? os.cpus()[0]?.model;
let chromiumVersion = '?';
try {
  chromiumVersion = execFileSync(CHROMIUM, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
} catch {
  // keep '?'
}
const fmtMs = (xs) => `median ${median(xs).toFixed(0)} ms (min ${Math.min(...xs).toFixed(0)}, max ${Math.max(...xs).toFixed(0)})`;
const report = `## Results (${new Date().toISOString().slice(0, 10)})

Command: \`scripts/ui.sh bench\` (= \`cd admin-ui && npx ng build && node e2e/bench.mjs\`, ${RUNS} runs)

Machine: ${os.cpus().length} cores, ${cpu}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, ${os.type()} ${os.release()};
Node ${process.version}; ${chromiumVersion} headless; gateway: \`target/debug/bkg up --port 0 --plugins config/plugins\`
${uiDir ? 'with `--ui-dir admin-ui/dist/admin-ui/browser` (UI and API on one origin)' : '(no `--ui-dir` in this bkg: the UI was served by the e2e static server proxying to it)'}.

| Production bundle (\`ng build\`) | raw | gzip -9 |
| --- | ---: | ---: |
| Initial JS (${initial.length} files loaded by index.html) | ${kb(initialRaw)} | **${kb(initialGz)}** |
| Lazy JS chunks (sign-in, dashboard, details with chart.js, playground) | ${kb(lazyRaw)} | ${kb(lazyGz)} |
| CSS (Tailwind, purged) | ${kb(cssRaw)} | ${kb(cssGz)} |

| Navigation → first plugin card rendered | time |
| --- | --- |
| Cold (new browser context, empty cache) | **${fmtMs(cold)}** |
| Warm (reload, HTTP cache) | ${fmtMs(warm)} |

Measured in the page: \`performance.now()\` (0 = navigation start) when a MutationObserver first sees a
\`[data-testid=plugin-card]\`; the key is put in sessionStorage before navigation, so the time includes
loading the app, the whoami check, \`GET /api/plugins\` and rendering, but no typing.
`;
console.log(report);
const out = path.join(REPO, 'artifacts', 'admin-ui');
mkdirSync(out, { recursive: true });
writeFileSync(path.join(out, 'bench.md'), report);
