// What cargo-lambda-cdk runs. A fake `cargo` first on PATH records every call
// (and pretends cargo-lambda is installed, so local bundling would be chosen):
//  - with bundling skipped (the tests' and `-c skipBundling=true` mode) no build runs;
//  - with bundling on, each function is built by exactly
//    `cargo lambda build --release --arm64 --bin <crate> --flatten <crate>` in stages/<crate>
//    (search only with the search API on).
// (node --test runs each file in its own process, so the PATH change stays here.)

import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as cxapi from 'aws-cdk-lib/cx-api';

import { buildApp } from '../lib/app';
import { contextFor, REPO_ROOT, SEARCH_CONTEXT } from './helpers';

const work = mkdtempSync(join(tmpdir(), 'collections-bundling-'));
const log = join(work, 'cargo.log');

before(() => {
  const bin = join(work, 'bin');
  mkdirSync(bin);
  writeFileSync(
    join(bin, 'cargo'),
    `#!/bin/sh
printf '%s|%s\\n' "$PWD" "$*" >> "${log}"
if [ "$1" = lambda ] && [ "$2" = --version ]; then echo "cargo-lambda 0.0.0 (fake)"; exit 0; fi
if [ "$1" = lambda ] && [ "$2" = build ]; then
  while [ $# -gt 0 ]; do
    if [ "$1" = --lambda-dir ]; then mkdir -p "$2" && printf 'fake bootstrap' > "$2/bootstrap"; fi
    shift
  done
  exit 0
fi
exit 1
`,
  );
  chmodSync(join(bin, 'cargo'), 0o755);
  process.env.PATH = `${bin}:${process.env.PATH}`;
  writeFileSync(log, '');
});
after(() => rmSync(work, { recursive: true, force: true }));

const calls = () =>
  readFileSync(log, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [cwd, args] = l.split('|');
      return { cwd, args };
    });

describe('Lambda bundling (cargo-lambda-cdk)', () => {
  it('is not run when bundling is skipped: at most the `cargo lambda --version` probe', () => {
    const outdir = join(work, 'skipped');
    const { app } = buildApp({ context: contextFor('dev'), outdir }, REPO_ROOT);
    app.synth();
    const c = calls();
    assert.ok(c.every((x) => x.args === 'lambda --version'), `unexpected cargo calls: ${JSON.stringify(c)}`);
    assert.ok(c.length <= 1);
  });

  it('-c skipBundling=true skips it too (for `cdk synth` without cargo-lambda)', () => {
    writeFileSync(log, '');
    const ctx = contextFor('dev', { skipBundling: 'true' });
    delete ctx[cxapi.BUNDLING_STACKS];
    const { app, stack } = buildApp({ context: ctx, outdir: join(work, 'skip-flag') }, REPO_ROOT);
    app.synth();
    assert.equal(stack.bundlingRequired, false);
    assert.ok(calls().every((x) => x.args === 'lambda --version'));
  });

  it('builds each binary for arm64 in release from its crate folder when bundling is on', () => {
    writeFileSync(log, '');
    const ctx = contextFor('dev');
    delete ctx[cxapi.BUNDLING_STACKS];
    const outdir = join(work, 'bundled');
    const { app, stack } = buildApp({ context: ctx, outdir }, REPO_ROOT);
    assert.equal(stack.bundlingRequired, true);
    app.synth();
    const builds = calls().filter((x) => x.args.startsWith('lambda build'));
    const byCrate = new Map(builds.map((b) => [b.cwd, b.args]));
    for (const crate of ['thumbnailer', 'analyzer', 'embedder', 'migrator']) {
      const args = byCrate.get(realpathSync(join(REPO_ROOT, 'stages', crate)));
      assert.ok(args, `no build in stages/${crate}: ${JSON.stringify(builds)}`);
      assert.match(args!, new RegExp(`^lambda build --lambda-dir \\S+ --release --arm64 --bin ${crate} --flatten ${crate}$`));
    }
    assert.equal(builds.length, 4);
    const asset = JSON.parse(readFileSync(join(outdir, `${stack.artifactId}.assets.json`), 'utf8'));
    const zips = Object.values(asset.files as Record<string, any>).filter((f) => f.source.packaging === 'zip');
    assert.ok(zips.some((f) => existsSync(join(outdir, f.source.path, 'bootstrap'))), 'bundled assets hold the bootstrap binary');
  });

  it('builds the search binary too when the search API is on', () => {
    writeFileSync(log, '');
    const ctx = contextFor('dev', SEARCH_CONTEXT);
    delete ctx[cxapi.BUNDLING_STACKS];
    const { app } = buildApp({ context: ctx, outdir: join(work, 'bundled-search') }, REPO_ROOT);
    app.synth();
    const builds = calls().filter((x) => x.args.startsWith('lambda build'));
    const byCrate = new Map(builds.map((b) => [b.cwd, b.args]));
    for (const crate of ['thumbnailer', 'analyzer', 'embedder', 'migrator', 'search']) {
      const args = byCrate.get(realpathSync(join(REPO_ROOT, 'stages', crate)));
      assert.ok(args, `no build in stages/${crate}: ${JSON.stringify(builds)}`);
      assert.match(args!, new RegExp(`^lambda build --lambda-dir \\S+ --release --arm64 --bin ${crate} --flatten ${crate}$`));
    }
    assert.equal(builds.length, 5);
  });
});
