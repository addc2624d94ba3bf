// Context parsing: CLI values arrive as strings, cdk.json/tests may give numbers and booleans.

import { App, Duration } from 'aws-cdk-lib';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import {
  databaseUrlParameter,
  embeddingProviderKeys,
  loadConfig,
  minStreamRetentionHours,
  ssmParameterName,
  ssmParameterPrefix,
  visionProviderKeys,
} from '../lib/config';
import { fingerprintMigrations } from '../lib/migrations';

const cfg = (context: Record<string, unknown>) => loadConfig(new App({ context }));

describe('configuration from context', () => {
  it('defaults to dev with the documented defaults', () => {
    const c = cfg({});
    assert.equal(c.envName, 'dev');
    assert.equal(c.existingDatabase, false);
    assert.equal(c.streamMode, 'ON_DEMAND');
    assert.equal(c.streamRetention.toHours(), 48, 'maxRecordAge 24 h + a day');
    assert.deepEqual([c.thumbnailer.batchSize, c.thumbnailer.maxBatchingWindow.toSeconds()], [20, 1]);
    assert.deepEqual([c.analyzer.batchSize, c.analyzer.maxBatchingWindow.toSeconds()], [32, 2]);
    assert.deepEqual([c.embedder.batchSize, c.embedder.maxBatchingWindow.toSeconds()], [100, 2]);
    assert.equal(c.parallelizationFactor, 2);
    assert.equal(c.retryAttempts, 3);
    assert.equal(c.maxRecordAge.toHours(), 24);
    assert.equal(c.analyzerConcurrency, 16);
    assert.equal(c.voyageEmbeddingModel, 'voyage-3.5');
    assert.equal(c.analyzerModel, undefined);
    assert.equal(c.natGateways, 1);
    assert.equal(c.versioned, false);
    assert.equal(c.thumbnailExpirationDays, undefined);
    assert.equal(c.logRetention, RetentionDays.ONE_WEEK);
    assert.equal(c.permanentFailureAlarmThreshold, 10);
    assert.equal(c.permanentFailureAlarmMinutes, 15);
  });

  it('per-environment differences', () => {
    const test = cfg({ env: 'test' });
    const prod = cfg({ env: 'prod' });
    assert.equal(test.logRetention, RetentionDays.ONE_MONTH);
    assert.equal(prod.logRetention, RetentionDays.SIX_MONTHS);
    assert.equal(test.thumbnailExpirationDays, 90);
    assert.equal(prod.thumbnailExpirationDays, 90);
    assert.equal(prod.versioned, true);
    assert.equal(test.versioned, false);
    assert.equal(prod.retainData && prod.deletionProtection && prod.dbMultiAz, true);
    assert.equal(test.retainData || test.deletionProtection || test.dbMultiAz, false);
    assert.equal(prod.natGateways, 2);
    assert.equal(test.natGateways, 1);
  });

  it('parses CLI strings', () => {
    const c = cfg({
      env: 'prod',
      existingDatabase: 'yes',
      kinesisStreamMode: 'provisioned',
      kinesisShardCount: '4',
      kinesisRetentionHours: '168',
      parallelizationFactor: '10',
      analyzerBatchSize: '64',
      analyzerBatchWindowSeconds: '0',
      natGateways: '1',
      dbMultiAz: 'false',
      permanentFailureAlarmThreshold: '25',
      permanentFailureAlarmMinutes: '60',
    });
    assert.equal(c.existingDatabase, true);
    assert.equal(c.streamMode, 'PROVISIONED');
    assert.equal(c.shardCount, 4);
    assert.equal(c.streamRetention.toHours(), 168);
    assert.equal(c.parallelizationFactor, 10);
    assert.equal(c.analyzer.batchSize, 64);
    assert.equal(c.analyzer.maxBatchingWindow.toSeconds(), 0);
    assert.equal(c.natGateways, 1);
    assert.equal(c.dbMultiAz, false);
    assert.equal(c.permanentFailureAlarmThreshold, 25);
    assert.equal(c.permanentFailureAlarmMinutes, 60);
  });

  it('rejects values AWS would reject, at synth time', () => {
    assert.throws(() => cfg({ env: 'production' }), /context env/);
    assert.throws(() => cfg({ parallelizationFactor: '11' }), /parallelizationFactor/);
    assert.throws(() => cfg({ kinesisRetentionHours: '12' }), /kinesisRetentionHours/);
    assert.throws(() => cfg({ embedderBatchWindowSeconds: '301' }), /embedderBatchWindowSeconds/);
    assert.throws(() => cfg({ kinesisStreamMode: 'fast' }), /kinesisStreamMode/);
    assert.throws(() => cfg({ existingDatabase: 'maybe' }), /existingDatabase/);
    assert.throws(() => cfg({ thumbnailerBatchSize: '2.5' }), /thumbnailerBatchSize/);
    assert.throws(() => cfg({ permanentFailureAlarmThreshold: '0' }), /permanentFailureAlarmThreshold/);
    assert.throws(() => cfg({ permanentFailureAlarmThreshold: '2.5' }), /permanentFailureAlarmThreshold/);
    assert.throws(() => cfg({ permanentFailureAlarmMinutes: '1441' }), /permanentFailureAlarmMinutes/);
    assert.throws(() => cfg({ dbEngineVersion: '16.4' }), /pgvector/);
    assert.throws(() => cfg({ dbEngineVersion: '17' }), /major\.minor/);
    assert.equal(cfg({ dbEngineVersion: '16.6' }).dbEngineVersion, '16.6');
  });

  it('appDatabaseSecretArn: the full ARN of a secret, existing-database mode only', () => {
    const arn = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:collections/app-AbC123';
    assert.equal(cfg({}).appDatabaseSecretArn, undefined);
    assert.equal(cfg({ existingDatabase: 'true' }).appDatabaseSecretArn, undefined);
    assert.equal(cfg({ existingDatabase: 'true', appDatabaseSecretArn: arn }).appDatabaseSecretArn, arn);
    assert.throws(() => cfg({ appDatabaseSecretArn: arn }), /appDatabaseSecretArn: only used with existingDatabase=true/);
    assert.throws(() => cfg({ existingDatabase: true, appDatabaseSecretArn: 'collections/app' }), /appDatabaseSecretArn: expected the full ARN/);
    assert.throws(
      () => cfg({ existingDatabase: true, appDatabaseSecretArn: 'arn:aws:ssm:eu-west-1:123456789012:parameter/collections/dev/DATABASE_URL' }),
      /appDatabaseSecretArn/,
    );
  });
});

describe('embedding settings', () => {
  it('defaults: voyage, voyage-3.5, no OpenAI model (the provider\'s default), 1024 dimensions, no re-embedding model', () => {
    const c = cfg({});
    assert.equal(c.embeddingProvider, 'voyage');
    assert.equal(c.voyageEmbeddingModel, 'voyage-3.5');
    assert.equal(c.openaiEmbeddingModel, undefined);
    assert.equal(c.embeddingDimensions, 1024);
    assert.equal(c.reembed, undefined);
  });

  it('takes the active model and a re-embedding model from context (CLI strings or numbers)', () => {
    const c = cfg({ embeddingProvider: 'openai', openaiEmbeddingModel: 'text-embedding-3-large', embeddingDimensions: '3072' });
    assert.deepEqual([c.embeddingProvider, c.openaiEmbeddingModel, c.embeddingDimensions], ['openai', 'text-embedding-3-large', 3072]);
    assert.equal(cfg({ embeddingDimensions: 16000 }).embeddingDimensions, 16000);
    assert.deepEqual(cfg({ reembedProvider: 'voyage', reembedModel: 'voyage-3-large', reembedDimensions: '2048' }).reembed, {
      provider: 'voyage',
      model: 'voyage-3-large',
      dimensions: 2048,
    });
    assert.deepEqual(cfg({ reembedProvider: 'openai', reembedDimensions: 1 }).reembed, { provider: 'openai', model: undefined, dimensions: 1 });
    assert.deepEqual(cfg({ reembedProvider: 'local' }).reembed, { provider: 'local', model: undefined, dimensions: undefined });
    assert.equal(cfg({ embeddingProvider: 'OpenAI', reembedProvider: ' Voyage' }).embeddingProvider, 'openai', 'any case, as the functions read it');
    assert.equal(cfg({ reembedProvider: 'Voyage' }).reembed!.provider, 'voyage');
  });

  it('rejects unknown providers, sizes pgvector cannot store, and re-embedding settings without reembedProvider', () => {
    assert.throws(() => cfg({ embeddingProvider: 'cohere' }), /context embeddingProvider: expected one of voyage, openai, local, got "cohere"/);
    assert.throws(() => cfg({ reembedProvider: 'voyage-3.5' }), /context reembedProvider: expected one of voyage, openai, local/);
    for (const bad of ['0', '16001', '1.5', 'big', -1]) {
      assert.throws(() => cfg({ embeddingDimensions: bad }), /context embeddingDimensions: expected an integer in \[1, 16000\]/, String(bad));
      assert.throws(() => cfg({ reembedProvider: 'voyage', reembedDimensions: bad }), /context reembedDimensions: expected an integer in \[1, 16000\]/, String(bad));
    }
    assert.throws(() => cfg({ reembedModel: 'voyage-3-large' }), /context reembedModel: only used with reembedProvider/);
    assert.throws(() => cfg({ reembedDimensions: '2048' }), /context reembedDimensions: only used with reembedProvider/);
    assert.throws(() => cfg({ reembedProvider: 'local', reembedModel: 'x' }), /context reembedModel: not used with reembedProvider=local/);
  });
});

describe('providers and their SSM parameters', () => {
  it('analyzerProvider: anthropic by default; anthropic, openai or local in any case, lowercased; anything else refused', () => {
    assert.equal(cfg({}).analyzerProvider, 'anthropic');
    assert.equal(cfg({ analyzerProvider: 'OpenAI' }).analyzerProvider, 'openai');
    assert.equal(cfg({ analyzerProvider: ' local ' }).analyzerProvider, 'local');
    assert.throws(() => cfg({ analyzerProvider: 'gemini' }), /context analyzerProvider: expected one of anthropic, openai, local, got "gemini"/);
    assert.throws(() => cfg({ analyzerProvider: 'openai-compatible' }), /context analyzerProvider/);
  });

  it('each provider reads its own key; local none', () => {
    assert.deepEqual(visionProviderKeys('anthropic'), ['ANTHROPIC_API_KEY']);
    assert.deepEqual(visionProviderKeys('openai'), ['OPENAI_API_KEY']);
    assert.deepEqual(visionProviderKeys('local'), []);
    assert.deepEqual(embeddingProviderKeys('voyage'), ['VOYAGE_API_KEY']);
    assert.deepEqual(embeddingProviderKeys('openai'), ['OPENAI_API_KEY']);
    assert.deepEqual(embeddingProviderKeys('local'), []);
  });

  it('parameter names are per environment: /collections/<env>/<NAME>', () => {
    assert.equal(ssmParameterPrefix('dev'), '/collections/dev');
    assert.equal(ssmParameterPrefix('prod'), '/collections/prod');
    assert.equal(ssmParameterName('test', 'VOYAGE_API_KEY'), '/collections/test/VOYAGE_API_KEY');
    assert.equal(databaseUrlParameter('prod'), '/collections/prod/DATABASE_URL');
  });
});

describe('search API settings', () => {
  const issuer = 'https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC';
  const secret = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:collections/search-AbC123';

  it('no search API without searchJwtIssuer', () => {
    assert.equal(cfg({}).search, undefined);
    assert.equal(cfg({ env: 'prod', searchUserClaim: 'email', searchThrottleRateLimit: '10' }).search, undefined);
  });

  it('with an issuer: its audiences, claim sub, 50 rps / burst 100, p95 alarm at 1000 ms, 5xx alarm at 5, 10 instances, 5 rps / burst 20 per user', () => {
    const s = cfg({ searchJwtIssuer: issuer, searchJwtAudience: 'web, cli ,' })!.search!;
    assert.deepEqual(s, {
      jwtIssuer: issuer,
      jwtAudience: ['web', 'cli'],
      userClaim: 'sub',
      throttleRateLimit: 50,
      throttleBurstLimit: 100,
      latencyAlarmMs: 1000,
      serverErrorAlarmThreshold: 5,
      databaseSecretArn: undefined,
      reservedConcurrency: 10,
      ratePerUser: 5,
      burstPerUser: 20,
    });
  });

  it('takes a JSON list of audiences, the claim, throttling and alarm thresholds from context (CLI strings or numbers)', () => {
    const s = cfg({
      searchJwtIssuer: issuer,
      searchJwtAudience: ['web'],
      searchUserClaim: 'cognito:username',
      searchThrottleRateLimit: '20',
      searchThrottleBurstLimit: 40,
      searchLatencyAlarmMs: '2500',
      searchServerErrorAlarmThreshold: '1',
    }).search!;
    assert.deepEqual(s.jwtAudience, ['web']);
    assert.equal(s.userClaim, 'cognito:username');
    assert.deepEqual([s.throttleRateLimit, s.throttleBurstLimit, s.latencyAlarmMs, s.serverErrorAlarmThreshold], [20, 40, 2500, 1]);
  });

  it('existing-database mode: the read-only role\'s secret is required; in RDS mode it is refused', () => {
    assert.equal(cfg({ existingDatabase: 'true', searchJwtIssuer: issuer, searchJwtAudience: 'web', searchDatabaseSecretArn: secret }).search!.databaseSecretArn, secret);
    assert.throws(
      () => cfg({ existingDatabase: 'true', searchJwtIssuer: issuer, searchJwtAudience: 'web' }),
      /searchDatabaseSecretArn: required with searchJwtIssuer and existingDatabase=true/,
    );
    assert.throws(
      () => cfg({ searchJwtIssuer: issuer, searchJwtAudience: 'web', searchDatabaseSecretArn: secret }),
      /searchDatabaseSecretArn: only used with existingDatabase=true/,
    );
    assert.throws(
      () => cfg({ existingDatabase: 'true', searchJwtIssuer: issuer, searchJwtAudience: 'web', searchDatabaseSecretArn: 'collections/search' }),
      /searchDatabaseSecretArn: expected the full ARN/,
    );
  });

  it('rejects what API Gateway would, or what would silently create no API, at synth time', () => {
    assert.throws(() => cfg({ searchJwtIssuer: issuer }), /searchJwtAudience: required with searchJwtIssuer/);
    assert.throws(() => cfg({ searchJwtIssuer: issuer, searchJwtAudience: ' , ' }), /searchJwtAudience: required/);
    assert.throws(() => cfg({ searchJwtIssuer: issuer, searchJwtAudience: [1] }), /searchJwtAudience: expected a list of strings/);
    assert.throws(() => cfg({ searchJwtIssuer: 'http://issuer.example.com', searchJwtAudience: 'web' }), /searchJwtIssuer: expected the https URL/);
    assert.throws(() => cfg({ searchJwtIssuer: 'issuer.example.com', searchJwtAudience: 'web' }), /searchJwtIssuer/);
    assert.throws(() => cfg({ searchJwtAudience: 'web' }), /searchJwtAudience: only used with searchJwtIssuer/);
    assert.throws(() => cfg({ existingDatabase: 'true', searchDatabaseSecretArn: secret }), /searchDatabaseSecretArn: only used with searchJwtIssuer/);
    const on = { searchJwtIssuer: issuer, searchJwtAudience: 'web' };
    assert.throws(() => cfg({ ...on, searchUserClaim: 'user id' }), /searchUserClaim/);
    assert.throws(() => cfg({ ...on, searchThrottleRateLimit: '0' }), /searchThrottleRateLimit/);
    assert.throws(() => cfg({ ...on, searchThrottleBurstLimit: '5001' }), /searchThrottleBurstLimit/);
    assert.throws(() => cfg({ ...on, searchLatencyAlarmMs: '30001' }), /searchLatencyAlarmMs/);
    assert.throws(() => cfg({ ...on, searchServerErrorAlarmThreshold: '0' }), /searchServerErrorAlarmThreshold/);
  });

  it('limits of the search function from context: reserved concurrency and the per-user bucket (CLI strings or numbers)', () => {
    const on = { searchJwtIssuer: issuer, searchJwtAudience: 'web' };
    const s = cfg({ ...on, searchReservedConcurrency: '40', searchRatePerUser: 1, searchBurstPerUser: '100' }).search!;
    assert.deepEqual([s.reservedConcurrency, s.ratePerUser, s.burstPerUser], [40, 1, 100]);
    assert.equal(cfg({ ...on, searchReservedConcurrency: 1000 }).search!.reservedConcurrency, 1000);
    // Without the issuer there is no search function to limit.
    assert.equal(cfg({ searchReservedConcurrency: '40' }).search, undefined);
  });

  it('refuses limits that are not positive whole numbers in range (0 reserved instances would switch the function off)', () => {
    const on = { searchJwtIssuer: issuer, searchJwtAudience: 'web' };
    for (const bad of ['0', '-1', '2.5', 'ten', '1001', true]) {
      assert.throws(() => cfg({ ...on, searchReservedConcurrency: bad }), /context searchReservedConcurrency: expected an integer in \[1, 1000\]/, String(bad));
    }
    for (const bad of ['0', '0.5', 'fast', '10001']) {
      assert.throws(() => cfg({ ...on, searchRatePerUser: bad }), /context searchRatePerUser: expected an integer in \[1, 10000\]/, String(bad));
    }
    for (const bad of ['0', '1.5', 'big', '5001']) {
      assert.throws(() => cfg({ ...on, searchBurstPerUser: bad }), /context searchBurstPerUser: expected an integer in \[1, 5000\]/, String(bad));
    }
  });
});

describe('stream retention against the maximum record age', () => {
  it('defaults to the maximum record age + 24 h, and stays a day above it for every accepted age', () => {
    assert.equal(cfg({}).streamRetention.toHours(), 48);
    assert.equal(cfg({ maxRecordAgeHours: '1' }).streamRetention.toHours(), 25);
    assert.equal(cfg({ maxRecordAgeHours: 72 }).streamRetention.toHours(), 96);
    assert.equal(cfg({ maxRecordAgeHours: '168' }).streamRetention.toHours(), 192);
    for (let h = 1; h <= 168; h++) {
      const c = cfg({ maxRecordAgeHours: h });
      assert.ok(c.streamRetention.toSeconds() >= c.maxRecordAge.toSeconds() + 86400, `maxRecordAgeHours ${h}`);
    }
    assert.equal(minStreamRetentionHours(Duration.minutes(90)), 26, 'rounded up to whole hours');
  });

  it('takes a longer retention from context', () => {
    assert.equal(cfg({ kinesisRetentionHours: '48' }).streamRetention.toHours(), 48);
    assert.equal(cfg({ maxRecordAgeHours: '168', kinesisRetentionHours: 8760 }).streamRetention.toHours(), 8760);
  });

  it('rejects a retention that would not outlast the maximum record age by a day', () => {
    assert.throws(() => cfg({ kinesisRetentionHours: '24' }), /kinesisRetentionHours: expected at least maxRecordAgeHours \+ 24 = 48/);
    assert.throws(() => cfg({ kinesisRetentionHours: 47 }), /kinesisRetentionHours.*48/);
    assert.throws(() => cfg({ maxRecordAgeHours: '72', kinesisRetentionHours: '95' }), /= 96/);
    assert.throws(() => cfg({ maxRecordAgeHours: '169' }), /maxRecordAgeHours/);
    assert.throws(() => cfg({ kinesisRetentionHours: '8761' }), /kinesisRetentionHours/);
  });
});

describe('migrations fingerprint', () => {
  it('changes when a migration is added or edited, not otherwise', () => {
    const root = mkdtempSync(join(tmpdir(), 'collections-mig-'));
    try {
      const dir = join(root, 'migrations');
      require('node:fs').mkdirSync(dir);
      writeFileSync(join(dir, '001_init.sql'), 'CREATE EXTENSION IF NOT EXISTS vector;\n');
      writeFileSync(join(dir, 'README.md'), 'not a migration');
      const a = fingerprintMigrations(root);
      assert.deepEqual(a.files, ['001_init.sql']);
      assert.equal(fingerprintMigrations(root).hash, a.hash, 'stable');
      writeFileSync(join(dir, 'README.md'), 'still not a migration');
      assert.equal(fingerprintMigrations(root).hash, a.hash, 'only *.sql count');
      writeFileSync(join(dir, '001_init.sql'), 'CREATE EXTENSION IF NOT EXISTS vector; -- edited\n');
      const b = fingerprintMigrations(root);
      assert.notEqual(b.hash, a.hash, 'edit');
      writeFileSync(join(dir, '002_more.sql'), 'SELECT 1;\n');
      const c = fingerprintMigrations(root);
      assert.notEqual(c.hash, b.hash, 'addition');
      assert.deepEqual(c.files, ['001_init.sql', '002_more.sql']);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('fails without migrations', () => {
    const root = mkdtempSync(join(tmpdir(), 'collections-mig-'));
    try {
      assert.throws(() => fingerprintMigrations(root), /no migrations folder/);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
