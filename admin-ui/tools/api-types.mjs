#!/usr/bin/env node
// The UI's API types, generated from the gateway's OpenAPI document:
//
//   `bkg openapi` ──▶ src/app/core/api.schema.json ──openapi-typescript──▶ src/app/core/api.d.ts
//
//   node tools/api-types.mjs           write both files (npm run gen:types, scripts/ui.sh gen-types)
//   node tools/api-types.mjs --check   regenerate into a temporary folder and fail if either committed
//                                      file differs (npm run check:types, scripts/ui.sh check-types,
//                                      scripts/test.d/41-ui-types.sh in `make test`)
//
// The bkg binary is $BKG_BIN, else $CARGO_TARGET_DIR/debug/bkg, else target/debug/bkg (from the
// repository root); build it with `cargo build -p bkg`. api.d.ts is exactly what the
// openapi-typescript CLI (pinned in package.json) writes for api.schema.json, so
// `npx openapi-typescript src/app/core/api.schema.json -o src/app/core/api.d.ts` gives the same file.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ui = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const root = resolve(ui, '..');
const core = join(ui, 'src/app/core');
const SCHEMA = 'api.schema.json';
const TYPES = 'api.d.ts';
const check = process.argv.includes('--check');

function bkgBinary() {
  if (process.env.BKG_BIN) return resolve(process.env.BKG_BIN);
  const target = process.env.CARGO_TARGET_DIR || 'target';
  return join(isAbsolute(target) ? target : join(root, target), 'debug/bkg');
}

function fail(message) {
  console.error(message);
  process.exit(1);
}

/** The document `bkg openapi` prints, pretty-printed so that changes read well in a diff. */
function schemaText() {
  const bkg = bkgBinary();
  if (!existsSync(bkg)) fail(`${bkg} missing: build it with \`cargo build -p bkg\` (or set BKG_BIN)`);
  const out = execFileSync(bkg, ['openapi'], { encoding: 'utf8', maxBuffer: 64 << 20 });
  return JSON.stringify(JSON.parse(out), null, 2) + '\n';
}

/** Writes the schema and its types into `dir`. */
function generate(dir) {
  writeFileSync(join(dir, SCHEMA), schemaText());
  const cli = join(ui, 'node_modules/.bin/openapi-typescript');
  if (!existsSync(cli)) fail(`${cli} missing: run \`scripts/ui.sh install\` (npm ci) first`);
  execFileSync(cli, [join(dir, SCHEMA), '--output', join(dir, TYPES)], { stdio: ['ignore', 'ignore', 'inherit'] });
}

if (!check) {
  generate(core);
  console.log(`wrote ${relative(root, join(core, SCHEMA))} and ${relative(root, join(core, TYPES))} from ${bkgBinary()}`);
  process.exit(0);
}

const tmp = mkdtempSync(join(tmpdir(), 'bkg-api-types-'));
try {
  generate(tmp);
  const stale = [SCHEMA, TYPES].filter((name) => {
    const committed = join(core, name);
    return !existsSync(committed) || readFileSync(committed, 'utf8') !== readFileSync(join(tmp, name), 'utf8');
  });
  if (stale.length === 0) {
    console.log(`ok: ${SCHEMA} and ${TYPES} match \`bkg openapi\``);
    process.exit(0);
  }
  for (const name of stale) {
    const committed = relative(root, join(core, name));
    if (!existsSync(join(core, name))) {
      console.error(`${committed} is missing`);
      continue;
    }
    console.error(`--- ${committed} (committed) vs +++ \`bkg openapi\` now`);
    try {
      execFileSync('diff', ['-u', '--label', committed, '--label', 'generated', join(core, name), join(tmp, name)], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (e) {
      const lines = String(e.stdout || e.message).split('\n');
      console.error(lines.slice(0, 80).join('\n') + (lines.length > 80 ? `\n… (${lines.length - 80} more lines)` : ''));
    }
  }
  fail(
    `FAIL: the admin UI's API types are out of date with the gateway's OpenAPI document ` +
      `(${stale.join(', ')} in admin-ui/src/app/core differ from what \`${bkgBinary()} openapi\` gives).\n` +
      `      Regenerate and commit them: scripts/ui.sh gen-types (then fix what \`scripts/ui.sh build\` reports).`,
  );
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
