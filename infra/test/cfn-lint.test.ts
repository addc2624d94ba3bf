// cfn-lint (pinned in scripts/requirements-test.txt) over the synthesized templates.
//
// Where cfn-lint is looked for, in order: $CFN_LINT; <repo>/.local/venv/bin/cfn-lint;
// `cfn-lint` on PATH. Missing cfn-lint is a failure, not a skip.
//
// Errors fail. Warnings fail too, except W3005 ("DependsOn already enforced by
// a Ref/GetAtt"), which CDK itself emits on its generated resources.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';

import { buildApp } from '../lib/app';
import { contextFor, Ctx, REPO_ROOT, SEARCH_CONTEXT, SEARCH_SECRET_ARN } from './helpers';

const ALLOWED_WARNINGS = new Set(['W3005']);

export function findCfnLint(): string | undefined {
  if (process.env.CFN_LINT) return process.env.CFN_LINT;
  const venv = join(REPO_ROOT, '.local', 'venv', 'bin', 'cfn-lint');
  if (existsSync(venv)) return venv;
  const which = spawnSync('sh', ['-c', 'command -v cfn-lint'], { encoding: 'utf8' });
  const onPath = which.stdout.trim();
  return which.status === 0 && onPath ? onPath : undefined;
}

function pinnedVersion(): string | undefined {
  const req = readFileSync(join(REPO_ROOT, 'scripts', 'requirements-test.txt'), 'utf8');
  return /^cfn-lint==(\S+)/m.exec(req)?.[1];
}

interface LintFinding {
  Level: string;
  Message: string;
  Rule: { Id: string };
  Location: { Path: Array<string | number>; Start: { LineNumber: number } };
}

const outdirs: string[] = [];
after(() => {
  for (const d of outdirs) rmSync(d, { recursive: true, force: true });
});

const VARIANTS: Array<[string, string, Ctx]> = [
  ['dev', 'dev', {}],
  ['prod', 'prod', {}],
  ['dev, existing database', 'dev', { existingDatabase: 'true' }],
  [
    'test, existing database with an application secret',
    'test',
    { existingDatabase: 'true', appDatabaseSecretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:collections/app-AbC123' },
  ],
  ['test, provisioned streams', 'test', { kinesisStreamMode: 'provisioned', kinesisShardCount: '2', kinesisRetentionHours: '72' }],
  ['dev, search API', 'dev', SEARCH_CONTEXT],
  ['prod, existing database, search API', 'prod', { ...SEARCH_CONTEXT, existingDatabase: 'true', searchDatabaseSecretArn: SEARCH_SECRET_ARN }],
];

describe('cfn-lint', () => {
  const cfnLint = findCfnLint();

  it('is installed (set CFN_LINT, or run scripts/test.sh, which installs scripts/requirements-test.txt into .local/venv)', () => {
    assert.ok(cfnLint, 'cfn-lint not found: not in $CFN_LINT, not at .local/venv/bin/cfn-lint, not on PATH');
    const v = spawnSync(cfnLint!, ['--version'], { encoding: 'utf8' });
    assert.equal(v.status, 0, `${cfnLint} --version failed: ${v.stderr}`);
    const pinned = pinnedVersion();
    const got = v.stdout.trim();
    if (pinned && !got.includes(pinned)) {
      process.stderr.write(`note: ${cfnLint} is "${got}", scripts/requirements-test.txt pins ${pinned}\n`);
    }
  });

  for (const [label, env, extra] of VARIANTS) {
    it(`${label}: the template has no cfn-lint error (nor warning other than ${[...ALLOWED_WARNINGS].join(', ')})`, () => {
      assert.ok(cfnLint, 'cfn-lint not found');
      const outdir = mkdtempSync(join(tmpdir(), 'collections-cfnlint-'));
      outdirs.push(outdir);
      const { app, stack } = buildApp({ context: contextFor(env, extra), outdir }, REPO_ROOT);
      app.synth();
      const templatePath = join(outdir, stack.templateFile);
      assert.ok(existsSync(templatePath));
      const r = spawnSync(cfnLint!, ['--format', 'json', '--', templatePath], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
      assert.ok(r.status !== null, `cfn-lint did not run: ${r.error}`);
      let results: LintFinding[];
      try {
        results = JSON.parse(r.stdout || '[]');
      } catch {
        assert.fail(`cfn-lint output is not JSON (exit ${r.status}): ${r.stdout}\n${r.stderr}`);
      }
      const bad = results.filter((f) => f.Level === 'Error' || (f.Level === 'Warning' && !ALLOWED_WARNINGS.has(f.Rule.Id)));
      assert.deepEqual(
        bad.map((f) => `${f.Level} ${f.Rule.Id} ${f.Location.Path.join('/')}: ${f.Message}`),
        [],
      );
      // Exit code: 0 clean, 4 warnings only (cfn-lint's bit flags); 2 = errors, anything else = it broke.
      assert.ok(r.status === 0 || r.status === 4, `cfn-lint exited ${r.status}: ${r.stderr}`);
    });
  }
});
