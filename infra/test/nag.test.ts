// cdk-nag v3 (AwsSolutions) over every environment and mode: no unacknowledged
// error or warning, every acknowledgement has a reason, and none is stale.

import { Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { IConstruct } from 'constructs';

import { buildApp } from '../lib/app';
import { setAcknowledgementsEnabled } from '../lib/collections-stack';
import { contextFor, Ctx, REPO_ROOT, SEARCH_CONTEXT, SEARCH_SECRET_ARN } from './helpers';

const VARIANTS: Array<[string, string, Ctx]> = [
  ['dev', 'dev', {}],
  ['test', 'test', {}],
  ['prod', 'prod', {}],
  ['dev, existing database', 'dev', { existingDatabase: 'true' }],
  [
    'test, existing database with an application secret',
    'test',
    { existingDatabase: 'true', appDatabaseSecretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:collections/app-AbC123' },
  ],
  ['prod, existing database, provisioned streams', 'prod', { existingDatabase: true, kinesisStreamMode: 'PROVISIONED', kinesisShardCount: 2 }],
  ['dev, search API', 'dev', SEARCH_CONTEXT],
  ['prod, search API', 'prod', SEARCH_CONTEXT],
  ['test, existing database, search API', 'test', { ...SEARCH_CONTEXT, existingDatabase: 'true', searchDatabaseSecretArn: SEARCH_SECRET_ARN }],
  ['dev, search API, local providers (no API keys)', 'dev', { ...SEARCH_CONTEXT, analyzerProvider: 'local', embeddingProvider: 'local' }],
  [
    'dev, search API, re-embedding model',
    'dev',
    { ...SEARCH_CONTEXT, reembedProvider: 'openai', reembedModel: 'text-embedding-3-large', reembedDimensions: '3072' },
  ],
];

interface Finding {
  id: string;
  path: string;
  severity: string;
}

function findings(scope: IConstruct): Finding[] {
  const report = new AwsSolutionsChecks().validateScope(scope);
  return report.violations.flatMap((v) =>
    v.violatingResources.map((r) => ({ id: v.ruleName, path: r.constructPath ?? '', severity: v.severity ?? 'error' })),
  );
}

interface Ack {
  id: string;
  path: string;
  reason: string;
}

function acknowledgements(scope: IConstruct): Ack[] {
  const out: Ack[] = [];
  for (const c of scope.node.findAll()) {
    for (const m of c.node.metadata) {
      if (m.type !== Validations.ACKNOWLEDGED_RULES_METADATA_KEY || !m.data) continue;
      for (const [k, reason] of Object.entries(m.data as Record<string, string>)) {
        const id = k.replace(/^annotation::/i, '');
        // CDK core acknowledges some of its own CloudFormation-Validate rules; ours are the AwsSolutions ones.
        if (id.startsWith('AwsSolutions-')) out.push({ id, path: c.node.path, reason });
      }
    }
  }
  return out;
}

const covers = (a: Ack, f: Finding) => a.id === f.id && (f.path === a.path || f.path.startsWith(`${a.path}/`));

describe('cdk-nag AwsSolutions', () => {
  it('is registered on the app the v3 way (Validations.of(app).addPlugins) and synthesis passes it', () => {
    const outdir = mkdtempSync(join(tmpdir(), 'collections-nag-'));
    try {
      const { app } = buildApp({ context: contextFor('dev'), outdir }, REPO_ROOT);
      // Synthesis runs the registered plugins and throws on any violation.
      const assembly = app.synth();
      assert.ok(assembly.getStackByName('Collections-dev'));
    } finally {
      rmSync(outdir, { recursive: true, force: true });
    }
  });

  it('synthesis fails when a finding is not acknowledged (the plugin is really active)', () => {
    const outdir = mkdtempSync(join(tmpdir(), 'collections-nag-'));
    setAcknowledgementsEnabled(false);
    try {
      const { app } = buildApp({ context: contextFor('dev'), outdir }, REPO_ROOT);
      assert.throws(() => app.synth(), /Validation failed/);
      const report = readFileSync(join(outdir, 'validation-report.json'), 'utf8');
      assert.match(report, /AwsSolutions-SQS3/);
    } finally {
      setAcknowledgementsEnabled(true);
      rmSync(outdir, { recursive: true, force: true });
    }
  });

  for (const [label, env, extra] of VARIANTS) {
    it(`${label}: no unacknowledged error or warning`, () => {
      const { stack } = buildApp({ context: contextFor(env, extra) }, REPO_ROOT);
      const f = findings(stack);
      assert.deepEqual(
        f.map((x) => `${x.severity} ${x.id} at ${x.path}`),
        [],
        'fix these or acknowledge them (with a reason) in lib/collections-stack.ts',
      );
    });

    it(`${label}: every acknowledgement has a reason and still matches a real finding`, () => {
      const { stack } = buildApp({ context: contextFor(env, extra) }, REPO_ROOT);
      const acks = acknowledgements(stack);
      assert.ok(acks.length > 0);
      for (const a of acks) {
        assert.ok(typeof a.reason === 'string' && a.reason.trim().length >= 30, `${a.id} at ${a.path}: reason too short: ${a.reason}`);
      }
      setAcknowledgementsEnabled(false);
      let raw: Finding[];
      try {
        raw = findings(buildApp({ context: contextFor(env, extra) }, REPO_ROOT).stack);
      } finally {
        setAcknowledgementsEnabled(true);
      }
      const stale = acks.filter((a) => !raw.some((f) => covers(a, f)));
      assert.deepEqual(stale.map((a) => `${a.id} at ${a.path}`), [], 'stale acknowledgements: remove them');
      const uncovered = raw.filter((f) => !acks.some((a) => covers(a, f)));
      assert.deepEqual(uncovered.map((f) => `${f.id} at ${f.path}`), []);
    });
  }
});
