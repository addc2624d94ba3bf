// What the synthesized Collections-<env> template must contain. Built offline:
// no AWS credentials, no cargo-lambda build (bundling skipped).

import { Match } from 'aws-cdk-lib/assertions';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ANALYSIS_COMPLETE, FUNCTIONS, FunctionName, IMAGE_PROCESSED, SEARCH_ROUTES, STAGE_DIMENSIONS } from '../lib/collections-stack';
import { fingerprintMigrations } from '../lib/migrations';
import {
  actionsOf,
  allowed,
  build,
  Built,
  CfnResource,
  CfnTemplate,
  Ctx,
  fnLogicalId,
  functionRoleId,
  logicalIdByPath,
  missingManifests,
  render,
  REPO_ROOT,
  resourcesOf,
  resourcesOfType,
  roleStatements,
  SEARCH_CONTEXT,
  Statement,
  SEARCH_ISSUER,
  SEARCH_SECRET_ARN,
} from './helpers';

const STAGES = ['thumbnailer', 'analyzer', 'embedder'] as const;
/** The Stage dimension the stage functions log their metrics under. */
const STAGE_OF = { thumbnailer: 'thumbnail', analyzer: 'analysis', embedder: 'embedding' } as const;
const STREAM_OF = { thumbnailer: 'uploads', analyzer: 'processed', embedder: 'analyzed' } as const;
const ALL: FunctionName[] = ['thumbnailer', 'analyzer', 'embedder', 'migrator'];

function bucketId(t: CfnTemplate): string {
  return logicalIdByPath(t, '/ImagesBucket/Resource');
}
function streamId(t: CfnTemplate, name: 'uploads' | 'processed' | 'analyzed'): string {
  return logicalIdByPath(t, `/${name.charAt(0).toUpperCase() + name.slice(1)}Stream/Resource`);
}
function queueArnRef(t: CfnTemplate, queuePath: string) {
  return { 'Fn::GetAtt': [logicalIdByPath(t, `/${queuePath}/Resource`), 'Arn'] };
}
function envOf(t: CfnTemplate, name: FunctionName): Record<string, unknown> {
  return t.Resources[fnLogicalId(t, name)].Properties!.Environment.Variables;
}
/** The rendered ARN of an SSM parameter of an environment, as the roles' statements name it. */
function parameterArn(env: string, name: string): string {
  return `arn:\${AWS::Partition}:ssm:\${AWS::Region}:\${AWS::AccountId}:parameter/collections/${env}/${name}`;
}
function rolePerms(t: CfnTemplate, name: FunctionName): Map<string, string[]> {
  const m = allowed(t, functionRoleId(t, fnLogicalId(t, name)));
  return new Map([...m].map(([a, rs]) => [a, rs.map(render)]));
}

describe('repository contract', () => {
  it('every Lambda crate manifest exists (cargo-lambda-cdk reads it at synth time, even with bundling skipped)', () => {
    const missing = missingManifests();
    assert.deepEqual(
      missing,
      [],
      `missing Cargo manifests: ${missing.join(', ')} — RustFunction requires stages/<crate>/Cargo.toml to exist and parse as TOML`,
    );
  });
});

describe('stack naming and environments', () => {
  for (const env of ['dev', 'test', 'prod']) {
    it(`env=${env} synthesizes Collections-${env}`, () => {
      const { stack } = build(env);
      assert.equal(stack.stackName, `Collections-${env}`);
    });
  }
  it('refuses an unknown env', () => {
    assert.throws(() => build('staging', {}, { noCache: true }), /context env: expected one of dev, test, prod/);
  });
});

describe('S3 bucket', () => {
  it('has EventBridge notifications on natively (no notifications custom resource), blocks public access, SSE-S3, TLS only, access logs', () => {
    const { template, json } = build('dev');
    template.hasResourceProperties('AWS::S3::Bucket', {
      NotificationConfiguration: { EventBridgeConfiguration: { EventBridgeEnabled: true } },
      PublicAccessBlockConfiguration: {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      },
      BucketEncryption: {
        ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }],
      },
      LoggingConfiguration: { DestinationBucketName: { Ref: logicalIdByPath(json, '/AccessLogsBucket/Resource') } },
    });
    template.resourceCountIs('Custom::S3BucketNotifications', 0);
    template.hasResourceProperties('AWS::S3::BucketPolicy', {
      Bucket: { Ref: bucketId(json) },
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: 'Deny',
            Action: 's3:*',
            Condition: { Bool: { 'aws:SecureTransport': 'false' } },
          }),
        ]),
      },
    });
  });

  it('is versioned in prod only', () => {
    const dev = build('dev').json.Resources;
    const prod = build('prod').json.Resources;
    assert.equal(dev[bucketId(build('dev').json)].Properties!.VersioningConfiguration, undefined);
    assert.deepEqual(prod[bucketId(build('prod').json)].Properties!.VersioningConfiguration, { Status: 'Enabled' });
  });

  it('expires thumbnails (tag collections:kind=thumbnail) after 90 days in test and prod, not in dev', () => {
    const rule = (env: string) => {
      const { json } = build(env);
      const rules: any[] = json.Resources[bucketId(json)].Properties!.LifecycleConfiguration.Rules;
      return rules.find((r) => r.Id === 'expire-thumbnails');
    };
    assert.equal(rule('dev'), undefined);
    for (const env of ['test', 'prod']) {
      const r = rule(env);
      assert.ok(r, `${env}: expire-thumbnails rule missing`);
      assert.equal(r.Status, 'Enabled');
      assert.equal(r.ExpirationInDays, 90);
      assert.deepEqual(r.TagFilters, [{ Key: 'collections:kind', Value: 'thumbnail' }]);
      assert.equal(r.Prefix, undefined, 'a prefix cannot select {user}/thumbnails/');
    }
    // Versioned prod bucket: expired thumbnails' old versions go too.
    assert.equal(rule('prod').NoncurrentVersionExpiration.NoncurrentDays, 30);
  });

  it('is deleted with the stack in dev (objects auto-deleted) and retained in prod', () => {
    const dev = build('dev').json;
    const prod = build('prod').json;
    assert.equal(dev.Resources[bucketId(dev)].DeletionPolicy, 'Delete');
    assert.equal(resourcesOfType(dev, 'Custom::S3AutoDeleteObjects').length, 2);
    assert.equal(prod.Resources[bucketId(prod)].DeletionPolicy, 'Retain');
    assert.equal(resourcesOfType(prod, 'Custom::S3AutoDeleteObjects').length, 0);
  });
});

describe('Kinesis streams', () => {
  it('creates uploads, processed and analyzed: encrypted with KMS, on-demand by default, 48 h retention (record age 24 h + a day)', () => {
    const { template } = build('dev');
    template.resourceCountIs('AWS::Kinesis::Stream', 3);
    for (const name of ['uploads', 'processed', 'analyzed']) {
      template.hasResourceProperties('AWS::Kinesis::Stream', {
        Name: `collections-dev-${name}`,
        StreamEncryption: { EncryptionType: 'KMS', KeyId: 'alias/aws/kinesis' },
        StreamModeDetails: { StreamMode: 'ON_DEMAND' },
        RetentionPeriodHours: 48,
        ShardCount: Match.absent(),
      });
    }
  });

  it('takes provisioned mode, shard count and retention from context (CLI strings)', () => {
    const { template } = build('dev', {
      kinesisStreamMode: 'provisioned',
      kinesisShardCount: '3',
      kinesisRetentionHours: '48',
    });
    for (const name of ['uploads', 'processed', 'analyzed']) {
      template.hasResourceProperties('AWS::Kinesis::Stream', {
        Name: `collections-dev-${name}`,
        StreamModeDetails: { StreamMode: 'PROVISIONED' },
        ShardCount: 3,
        RetentionPeriodHours: 48,
      });
    }
  });

  it('each stream keeps a record at least a day past the maximum record age of its trigger (replayable after the on-failure queue)', () => {
    const variants: Array<[string, Ctx, number]> = [
      ['dev', {}, 48],
      ['prod', {}, 48],
      ['dev', { maxRecordAgeHours: '72' }, 96],
      ['test', { maxRecordAgeHours: 168, kinesisStreamMode: 'provisioned' }, 192],
      ['dev', { kinesisRetentionHours: '720' }, 720],
    ];
    for (const [env, ctx, hours] of variants) {
      const { json } = build(env, ctx);
      const esms = resourcesOfType(json, 'AWS::Lambda::EventSourceMapping');
      assert.equal(esms.length, 3);
      for (const s of ['uploads', 'processed', 'analyzed'] as const) {
        const id = streamId(json, s);
        const retentionSeconds = json.Resources[id].Properties!.RetentionPeriodHours * 3600;
        const mine = esms.filter(([, m]) => m.Properties!.EventSourceArn['Fn::GetAtt']?.[0] === id);
        assert.equal(mine.length, 1, `${env} ${JSON.stringify(ctx)} ${s}: one trigger`);
        const maxAge = mine[0][1].Properties!.MaximumRecordAgeInSeconds;
        assert.ok(Number.isInteger(maxAge) && maxAge > 0, `${s}: a bounded record age`);
        assert.ok(
          retentionSeconds >= maxAge + 86400,
          `${env} ${JSON.stringify(ctx)} ${s}: retention ${retentionSeconds} s < record age ${maxAge} s + 1 day`,
        );
        assert.equal(json.Resources[id].Properties!.RetentionPeriodHours, hours, `${env} ${JSON.stringify(ctx)} ${s}`);
      }
    }
    assert.throws(() => build('dev', { kinesisRetentionHours: '47' }, { noCache: true }), /kinesisRetentionHours: expected at least maxRecordAgeHours \+ 24 = 48/);
    assert.throws(() => build('dev', { maxRecordAgeHours: '72', kinesisRetentionHours: '72' }, { noCache: true }), /= 96/);
  });
});

// A tiny evaluator for the operators our patterns use, to check what they
// actually select (EventBridge semantics: fields AND, a field's matchers OR).
// A `{"Ref": ...}` matcher stands for the physical name `ref` gives it (by
// default: our bucket is "images-bucket").
type RefName = (m: { Ref: string }) => string;
const IMAGES_BUCKET: RefName = () => 'images-bucket';
function matchValue(matchers: any[], value: string, ref: RefName): boolean {
  return matchers.some((m) => {
    if (typeof m === 'string') return m === value;
    if (m?.suffix?.['equals-ignore-case'] !== undefined) {
      return value.toLowerCase().endsWith(String(m.suffix['equals-ignore-case']).toLowerCase());
    }
    if (m?.['anything-but']?.wildcard !== undefined) {
      const ws: string[] = [].concat(m['anything-but'].wildcard);
      return !ws.some((w) => new RegExp(`^${w.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`, 's').test(value));
    }
    if (m?.Ref) return value === ref(m);
    throw new Error(`matcher not handled by the test evaluator: ${JSON.stringify(m)}`);
  });
}
function matches(pattern: any, event: any, ref: RefName = IMAGES_BUCKET): boolean {
  return Object.entries(pattern).every(([k, p]) => {
    if (Array.isArray(p)) return event[k] !== undefined && matchValue(p, event[k], ref);
    return event[k] !== undefined && matches(p, event[k], ref);
  });
}
function s3Event(key: string, bucket = 'images-bucket') {
  return { source: 'aws.s3', 'detail-type': 'Object Created', detail: { bucket: { name: bucket }, object: { key } } };
}

describe('EventBridge rules', () => {
  const { json } = build('dev');
  const rules = resourcesOfType(json, 'AWS::Events::Rule');
  const byDesc = (s: string) => {
    const hit = rules.find(([, r]) => String(r.Properties!.Description).includes(s));
    assert.ok(hit, `rule "${s}" missing`);
    return hit[1].Properties!;
  };
  const forward = byDesc('to the collections-dev bus');
  const bus = logicalIdByPath(json, '/Bus/Resource');
  const uploads = byDesc('to the uploads stream');

  it('default bus: S3 Object Created in this bucket, excluding */thumbnails/*, forwarded to the collections-<env> bus (with DLQ)', () => {
    assert.equal(forward.EventBusName, undefined, 'must be on the default bus');
    assert.deepEqual(forward.EventPattern, {
      source: ['aws.s3'],
      'detail-type': ['Object Created', 'Object Deleted'],
      detail: {
        bucket: { name: [{ Ref: bucketId(json) }] },
        object: { key: [{ 'anything-but': { wildcard: '*/thumbnails/*' } }] },
      },
    });
    assert.equal(forward.Targets.length, 1);
    assert.deepEqual(forward.Targets[0].Arn, { 'Fn::GetAtt': [bus, 'Arn'] });
    assert.deepEqual(forward.Targets[0].DeadLetterConfig, { Arn: queueArnRef(json, 'ForwardUploadsDlq') });
    assert.ok(forward.Targets[0].RoleArn);
  });

  it('collections-<env> bus: .jpg/.jpeg/.png in any case → Kinesis uploads keyed by request id, with DLQ and retry policy', () => {
    assert.equal(json.Resources[bus].Properties!.Name, 'collections-dev');
    assert.deepEqual(uploads.EventBusName, { Ref: bus });
    assert.deepEqual(uploads.EventPattern.detail.object.key, [
      { suffix: { 'equals-ignore-case': '.jpg' } },
      { suffix: { 'equals-ignore-case': '.jpeg' } },
      { suffix: { 'equals-ignore-case': '.png' } },
    ]);
    assert.deepEqual(uploads.EventPattern.source, ['aws.s3']);
    assert.deepEqual(uploads.EventPattern['detail-type'], ['Object Created', 'Object Deleted']);
    assert.deepEqual(uploads.EventPattern.detail.bucket, { name: [{ Ref: bucketId(json) }] });
    const [target] = uploads.Targets;
    assert.deepEqual(target.Arn, { 'Fn::GetAtt': [streamId(json, 'uploads'), 'Arn'] });
    assert.deepEqual(target.KinesisParameters, { PartitionKeyPath: '$.detail.request-id' });
    assert.equal(target.Input, undefined, 'the whole event is the record');
    assert.deepEqual(target.DeadLetterConfig, { Arn: queueArnRef(json, 'UploadsRuleDlq') });
    assert.deepEqual(target.RetryPolicy, { MaximumRetryAttempts: 185, MaximumEventAgeInSeconds: 86400 });
  });

  it('the two hops together select exactly the images outside */thumbnails/*', () => {
    const both = (key: string, bucket?: string) =>
      matches(forward.EventPattern, s3Event(key, bucket)) && matches(uploads.EventPattern, s3Event(key, bucket));
    for (const key of ['u1/item.jpg', 'u1/item.JPG', 'u1/a.Jpeg', 'u1/b.PNG', 'u1/trips/c.png', 'u1/thumbnailsx/d.jpg']) {
      assert.ok(both(key), `${key} should reach the uploads stream`);
    }
    for (const key of ['u1/thumbnails/item.jpg', 'u1/thumbnails/trips/c.PNG', 'u1/notes.txt', 'u1/a.gif', 'u1/jpg', 'u1/a.jpg.txt']) {
      assert.ok(!both(key), `${key} must not reach the uploads stream`);
    }
    assert.ok(!both('u1/item.jpg', 'another-bucket'), 'other buckets are ignored');
    const deleted = { ...s3Event('u1/item.jpg'), 'detail-type': 'Object Deleted' };
    assert.ok(matches(forward.EventPattern, deleted) && matches(uploads.EventPattern, deleted), 'deletions reach the stream');
    const restored = { ...s3Event('u1/item.jpg'), 'detail-type': 'Object Restore Completed' };
    assert.ok(!matches(forward.EventPattern, restored), 'other S3 events do not');
  });

  it('collections-<env> bus: ImageProcessed → processed and AnalysisComplete → analyzed, keyed by item_uuid, with DLQ and retry policy', () => {
    const cases = [
      ['ImageProcessed events', 'collections.imageprocessor', 'ImageProcessed', 'processed', 'ImageProcessedRuleDlq'],
      ['AnalysisComplete events', 'collections.analyzer', 'AnalysisComplete', 'analyzed', 'AnalysisCompleteRuleDlq'],
    ] as const;
    for (const [desc, source, detailType, stream, dlq] of cases) {
      const r = byDesc(desc);
      assert.deepEqual(r.EventBusName, { Ref: bus }, 'the environment\'s bus');
      assert.deepEqual(r.EventPattern, { source: [source], 'detail-type': [detailType] });
      const [target] = r.Targets;
      assert.deepEqual(target.Arn, { 'Fn::GetAtt': [streamId(json, stream), 'Arn'] });
      assert.deepEqual(target.KinesisParameters, { PartitionKeyPath: '$.detail.item_uuid' });
      assert.deepEqual(target.DeadLetterConfig, { Arn: queueArnRef(json, dlq) });
      assert.deepEqual(target.RetryPolicy, { MaximumRetryAttempts: 185, MaximumEventAgeInSeconds: 86400 });
    }
  });

  it('partitions every stream on a field of at most 256 characters, whatever the length of the S3 key', () => {
    // Kinesis refuses a longer partition key, and the rule's target then fails.
    const key = `u1/${'folder/'.repeat(140)}photo.jpg`; // 1,000 characters: S3's keys run to 1,024 bytes
    const id = '32d97b0b-0a18-835c-b4ef-a7b62f3886d8';
    const samples: Record<'uploads' | 'processed' | 'analyzed', any> = {
      uploads: { detail: { bucket: { name: 'images-bucket' }, object: { key, etag: 'e1' }, 'request-id': 'N4N7GDK58NMKJ12R' } },
      processed: { detail: { item_id: key.slice(3, -4), item_uuid: id, user_id: 'u1', original_key: key } },
      analyzed: { detail: { item_id: key.slice(3, -4), item_uuid: id, analysis_id: id, user_id: 'u1' } },
    };
    const kinesisTargets = rules.flatMap(([, r]) => r.Properties!.Targets.filter((t: any) => t.KinesisParameters));
    assert.equal(kinesisTargets.length, 3);
    for (const stream of ['uploads', 'processed', 'analyzed'] as const) {
      const event = samples[stream];
      const target = kinesisTargets.find((t: any) => t.Arn['Fn::GetAtt'][0] === streamId(json, stream));
      assert.ok(target, `a rule targets the ${stream} stream`);
      const path: string = target.KinesisParameters.PartitionKeyPath;
      const value = path.replace(/^\$\./, '').split('.').reduce((v: any, field) => v?.[field], event);
      assert.equal(typeof value, 'string', `${path} is in every ${stream} event`);
      assert.ok(value.length <= 256, `${stream}: ${path} is ${value.length} characters`);
    }
  });

  it('every rule target has its own dead-letter queue, encrypted and TLS-only', () => {
    const dlqArns = rules.flatMap(([, r]) => r.Properties!.Targets.map((t: any) => JSON.stringify(t.DeadLetterConfig?.Arn)));
    assert.equal(dlqArns.length, 4);
    assert.equal(new Set(dlqArns).size, 4, 'one DLQ per rule target');
    for (const q of ['ForwardUploadsDlq', 'UploadsRuleDlq', 'ImageProcessedRuleDlq', 'AnalysisCompleteRuleDlq']) {
      assertEncryptedTlsQueue(json, q);
    }
  });
});

// Two environments in one account and region: the stacks are
// environment-agnostic, so both deploy to the account and region of the
// caller's credentials, and share its default bus. A Ref names a resource of
// its own stack: a bus by its Name, a bucket by the name CloudFormation
// generates for it, which begins with the stack name.
function physicalName(b: Built, v: unknown): string {
  if (typeof v === 'string') return v;
  const ref = (v as any)?.Ref;
  const r = typeof ref === 'string' ? b.json.Resources[ref] : undefined;
  if (r?.Type === 'AWS::Events::EventBus') return r.Properties!.Name;
  if (r?.Type === 'AWS::S3::Bucket') return r.Properties!.BucketName ?? `${b.stack.stackName}-${ref}`.toLowerCase();
  throw new Error(`no physical name for ${JSON.stringify(v)}`);
}
/** The bus a rule is on: no EventBusName is the account's default bus. */
function ruleBus(b: Built, r: CfnResource): string {
  const name = r.Properties!.EventBusName;
  return name === undefined ? 'default' : physicalName(b, name);
}
/** The bus a target ARN names, if it names a bus of this stack. */
function targetBus(b: Built, arn: any): string | undefined {
  const r = b.json.Resources[arn?.['Fn::GetAtt']?.[0]];
  return r?.Type === 'AWS::Events::EventBus' ? r.Properties!.Name : undefined;
}
/** The bucket names a rule's pattern accepts (none: no bucket filter). */
function patternBuckets(b: Built, r: CfnResource): string[] {
  return (r.Properties!.EventPattern.detail?.bucket?.name ?? []).map((m: unknown) => physicalName(b, m));
}

interface BusEvent {
  bus: string;
  event: any;
}
/**
 * Every event an environment causes: S3 "Object Created" for its bucket on
 * the default bus, what its rules forward to a bus, and the events its
 * stages put on the bus their EVENT_BUS_NAME names.
 */
function eventsOf(b: Built): BusEvent[] {
  const bucket = physicalName(b, { Ref: bucketId(b.json) });
  const out: BusEvent[] = ['u1/item.jpg', 'u1/b.PNG', 'u1/thumbnails/item.jpg', 'u1/notes.txt'].map((key) => ({
    bus: 'default',
    event: s3Event(key, bucket),
  }));
  const ref: RefName = (m) => physicalName(b, m);
  for (const [, r] of resourcesOfType(b.json, 'AWS::Events::Rule')) {
    for (const t of r.Properties!.Targets) {
      const to = targetBus(b, t.Arn);
      if (to === undefined) continue;
      for (const e of [...out]) {
        if (e.bus === ruleBus(b, r) && matches(r.Properties!.EventPattern, e.event, ref)) out.push({ bus: to, event: e.event });
      }
    }
  }
  for (const [fn, c] of [['thumbnailer', IMAGE_PROCESSED], ['analyzer', ANALYSIS_COMPLETE]] as const) {
    out.push({
      bus: physicalName(b, envOf(b.json, fn).EVENT_BUS_NAME),
      event: { source: c.source, 'detail-type': c.detailType, detail: { item_id: '0190a7c2-0000-7000-8000-000000000001' } },
    });
  }
  return out;
}

/** Whether an IAM action (possibly with wildcards) covers `action`. */
function covers(pattern: string, action: string): boolean {
  return new RegExp(`^${pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`, 'i').test(action);
}

describe('environments apart: dev and test in one account and region', () => {
  const built = { dev: build('dev'), test: build('test') };
  const ENVS = ['dev', 'test'] as const;
  const other = { dev: 'test', test: 'dev' } as const;
  const rules = (env: 'dev' | 'test') => resourcesOfType(built[env].json, 'AWS::Events::Rule');

  it('each environment has one bus, collections-<env>; its rules are on it or on the default bus filtered on its own bucket', () => {
    for (const env of ENVS) {
      const b = built[env];
      const buses = resourcesOfType(b.json, 'AWS::Events::EventBus').map(([, r]) => r.Properties!.Name);
      assert.deepEqual(buses, [`collections-${env}`]);
      const own = physicalName(b, { Ref: bucketId(b.json) });
      for (const [id, r] of rules(env)) {
        const bus = ruleBus(b, r);
        assert.ok(bus === `collections-${env}` || bus === 'default', `${env} ${id}: on ${bus}`);
        if (bus === 'default') assert.deepEqual(patternBuckets(b, r), [own], `${env} ${id}: the default bus needs a bucket filter`);
      }
      const onBus = (s: string) => rules(env).find(([, r]) => r.Properties!.EventPattern.source?.[0] === s)!;
      for (const c of [IMAGE_PROCESSED, ANALYSIS_COMPLETE]) {
        assert.equal(ruleBus(b, onBus(c.source)[1]), `collections-${env}`, `${env} ${c.detailType} rule`);
      }
    }
  });

  it('no rule of one environment shares a bus with a rule of the other, except the default bus with a different bucket name in its pattern', () => {
    for (const a of ENVS) {
      const b = other[a];
      for (const [ida, ra] of rules(a)) {
        for (const [idb, rb] of rules(b)) {
          const bus = ruleBus(built[a], ra);
          if (bus !== ruleBus(built[b], rb)) continue;
          assert.equal(bus, 'default', `${a} ${ida} and ${b} ${idb} share ${bus}`);
          const ba = patternBuckets(built[a], ra);
          const bb = patternBuckets(built[b], rb);
          assert.ok(ba.length > 0 && bb.length > 0, `${a} ${ida} / ${b} ${idb}: default-bus rules must filter on the bucket`);
          assert.ok(!ba.some((x) => bb.includes(x)), `${a} ${ida} / ${b} ${idb}: same bucket ${ba}`);
        }
      }
    }
  });

  it('no rule of one environment matches an event of the other (uploads, forwarded uploads, ImageProcessed, AnalysisComplete)', () => {
    for (const a of ENVS) {
      const mine = eventsOf(built[a]);
      const theirs = eventsOf(built[other[a]]);
      const ref: RefName = (m) => physicalName(built[a], m);
      for (const [id, r] of rules(a)) {
        const on = (es: BusEvent[]) => es.filter((e) => e.bus === ruleBus(built[a], r) && matches(r.Properties!.EventPattern, e.event, ref));
        assert.ok(on(mine).length > 0, `${a} ${id} matches none of its own events: the model is wrong`);
        assert.deepEqual(on(theirs), [], `${a} ${id} matches events of ${other[a]}`);
      }
    }
  });

  it("each stage function publishes on its own environment's bus and may PutEvents on that bus only", () => {
    for (const env of ENVS) {
      const { json } = built[env];
      const bus = logicalIdByPath(json, '/Bus/Resource');
      assert.equal(json.Resources[bus].Properties!.Name, `collections-${env}`);
      for (const n of ALL) {
        const granting = roleStatements(json, functionRoleId(json, fnLogicalId(json, n))).filter(
          (s) => s.Effect === 'Allow' && actionsOf(s).some((a) => covers(a, 'events:PutEvents')),
        );
        if (n === 'thumbnailer' || n === 'analyzer') {
          assert.deepEqual(envOf(json, n).EVENT_BUS_NAME, { Ref: bus }, `${env} ${n}`);
          assert.equal(physicalName(built[env], envOf(json, n).EVENT_BUS_NAME), `collections-${env}`);
          assert.equal(granting.length, 1, `${env} ${n}`);
          assert.deepEqual(resourcesOf(granting[0]), [{ 'Fn::GetAtt': [bus, 'Arn'] }], `${env} ${n}: PutEvents on its own bus only`);
        } else {
          assert.equal(envOf(json, n).EVENT_BUS_NAME, undefined, `${env} ${n}`);
          assert.deepEqual(granting, [], `${env} ${n} may not put events`);
        }
      }
    }
  });
});

function assertEncryptedTlsQueue(json: CfnTemplate, path: string) {
  const qid = logicalIdByPath(json, `/${path}/Resource`);
  assert.equal(json.Resources[qid].Properties!.SqsManagedSseEnabled, true, `${path}: SSE`);
  const policy = resourcesOfType(json, 'AWS::SQS::QueuePolicy').find(([, p]) =>
    (p.Properties!.Queues as any[]).some((q) => q.Ref === qid),
  );
  assert.ok(policy, `${path}: no queue policy`);
  const deny = policy[1].Properties!.PolicyDocument.Statement.find(
    (s: any) => s.Effect === 'Deny' && s.Condition?.Bool?.['aws:SecureTransport'] === 'false',
  );
  assert.ok(deny, `${path}: TLS not enforced`);
}

describe('Lambda functions', () => {
  for (const env of ['dev', 'prod']) {
    it(`${env}: one RustFunction per binary: arm64, provided.al2023, memory/timeout per table, X-Ray active`, () => {
      const { json } = build(env);
      for (const name of ALL) {
        const p = json.Resources[fnLogicalId(json, name)].Properties!;
        assert.deepEqual(p.Architectures, ['arm64'], name);
        assert.equal(p.Runtime, 'provided.al2023', name);
        assert.equal(p.Handler, 'bootstrap', name);
        assert.equal(p.MemorySize, FUNCTIONS[name].memoryMiB, name);
        assert.equal(p.Timeout, FUNCTIONS[name].timeout.toSeconds(), name);
        assert.deepEqual(p.TracingConfig, { Mode: 'Active' }, name);
        assert.equal(p.FunctionName, `collections-${env}-${name}`);
      }
      assert.equal(resourcesOfType(json, 'AWS::Lambda::Function').filter(([, r]) => r.Properties!.Runtime === 'provided.al2023').length, 4);
    });
  }

  it('table values: thumbnailer 1024/60, analyzer 1024/300, embedder 512/60, migrator 512/300', () => {
    const got = Object.fromEntries(ALL.map((n) => [n, [FUNCTIONS[n].memoryMiB, FUNCTIONS[n].timeout.toSeconds()]]));
    assert.deepEqual(got, { thumbnailer: [1024, 60], analyzer: [1024, 300], embedder: [512, 60], migrator: [512, 300] });
  });

  it('the bundling asset of each function is its crate folder', () => {
    const { json } = build('dev');
    for (const name of ALL) {
      const md = json.Resources[fnLogicalId(json, name)].Metadata!;
      assert.ok(String(md['aws:asset:path']).endsWith(`stages/${name}`), `${name}: ${md['aws:asset:path']}`);
    }
  });

  it('log retention: dev 1 week, test 1 month, prod 6 months; each function logs to its own group', () => {
    for (const [env, days] of [['dev', 7], ['test', 30], ['prod', 180]] as const) {
      const { json } = build(env);
      for (const name of ALL) {
        const lg = json.Resources[fnLogicalId(json, name)].Properties!.LoggingConfig.LogGroup.Ref;
        const group = json.Resources[lg];
        assert.equal(group.Type, 'AWS::Logs::LogGroup');
        assert.equal(group.Properties!.RetentionInDays, days, `${env} ${name}`);
        assert.equal(group.Properties!.LogGroupName, `/aws/lambda/collections-${env}-${name}`);
        assert.equal(group.DeletionPolicy, env === 'prod' ? 'Retain' : 'Delete');
      }
    }
  });

  it('environment variables (RDS mode)', () => {
    const { json } = build('dev');
    const appSecret = { Ref: logicalIdByPath(json, '/AppDatabaseSecret/Resource') };
    const location = {
      DATABASE_HOST: { 'Fn::GetAtt': ['Database', 'Endpoint.Address'] },
      DATABASE_PORT: { 'Fn::GetAtt': ['Database', 'Endpoint.Port'] },
      DATABASE_NAME: 'collections',
      DATABASE_CA_FILE: '/opt/rds-ca/rds-ca-bundle.pem',
      RUST_LOG: 'info',
    };
    // The stages connect as the application role; the migrator as the master user.
    const db = { ...location, DATABASE_SECRET_ARN: appSecret };
    const bucket = { Ref: bucketId(json) };
    const bus = { Ref: logicalIdByPath(json, '/Bus/Resource') };
    assert.deepEqual(envOf(json, 'thumbnailer'), { ...db, BUCKET_NAME: bucket, EVENT_BUS_NAME: bus, FUNCTION_TIMEOUT_SECS: '60' });
    assert.deepEqual(envOf(json, 'analyzer'), {
      ...db,
      FUNCTION_TIMEOUT_SECS: '300',
      BUCKET_NAME: bucket,
      EVENT_BUS_NAME: bus,
      ANALYZER_PROVIDER: 'anthropic',
      ANALYZER_CONCURRENCY: '16',
      SSM_PARAMETER_PREFIX: '/collections/dev',
    });
    const embeddingModel = { EMBEDDING_PROVIDER: 'voyage', VOYAGE_EMBEDDING_MODEL: 'voyage-3.5', EMBEDDING_DIMENSIONS: '1024' };
    assert.deepEqual(envOf(json, 'embedder'), {
      ...db,
      FUNCTION_TIMEOUT_SECS: '60',
      ...embeddingModel,
      SSM_PARAMETER_PREFIX: '/collections/dev',
    });
    assert.deepEqual(envOf(json, 'migrator'), {
      ...location,
      DATABASE_SECRET_ARN: { 'Fn::GetAtt': ['Database', 'MasterUserSecret.SecretArn'] },
      APP_DATABASE_SECRET_ARN: appSecret,
      ...embeddingModel,
    });
  });

  it('each stage function gets FUNCTION_TIMEOUT_SECS = its timeout in seconds (both database modes); the migrator does not', () => {
    for (const { json } of [build('dev'), build('prod', { existingDatabase: 'true' })]) {
      for (const n of STAGES) {
        const p = json.Resources[fnLogicalId(json, n)].Properties!;
        assert.equal(envOf(json, n).FUNCTION_TIMEOUT_SECS, String(p.Timeout), n);
        assert.equal(envOf(json, n).FUNCTION_TIMEOUT_SECS, String(FUNCTIONS[n].timeout.toSeconds()), n);
      }
      assert.equal(envOf(json, 'migrator').FUNCTION_TIMEOUT_SECS, undefined);
    }
  });

  it('environment variables from context: ANALYZER_MODEL (only when given), concurrency, Voyage model, RUST_LOG', () => {
    const { json } = build('dev', {
      analyzerModel: 'claude-sonnet-4-5',
      analyzerConcurrency: '8',
      voyageEmbeddingModel: 'voyage-3.5-lite',
      rustLog: 'debug',
    });
    assert.equal(envOf(json, 'analyzer').ANALYZER_MODEL, 'claude-sonnet-4-5');
    assert.equal(envOf(json, 'analyzer').ANALYZER_CONCURRENCY, '8');
    assert.equal(envOf(json, 'embedder').VOYAGE_EMBEDDING_MODEL, 'voyage-3.5-lite');
    for (const n of ALL) assert.equal(envOf(json, n).RUST_LOG, 'debug');
    assert.equal(envOf(build('dev').json, 'analyzer').ANALYZER_MODEL, undefined);
  });

  it('run in the private (egress) subnets with the functions security group', () => {
    const { json } = build('dev');
    const privateSubnets = resourcesOfType(json, 'AWS::EC2::Subnet')
      .filter(([, s]) => (s.Properties!.Tags as any[]).some((t) => t.Key === 'aws-cdk:subnet-type' && t.Value === 'Private'))
      .map(([id]) => id)
      .sort();
    assert.equal(privateSubnets.length, 2);
    const sg = logicalIdByPath(json, '/FunctionsSecurityGroup/Resource');
    for (const name of ALL) {
      const vpc = json.Resources[fnLogicalId(json, name)].Properties!.VpcConfig;
      assert.deepEqual(vpc.SubnetIds.map((s: any) => s.Ref).sort(), privateSubnets, name);
      assert.deepEqual(vpc.SecurityGroupIds, [{ 'Fn::GetAtt': [sg, 'GroupId'] }], name);
    }
  });
});

describe('IAM: each function its own least-privilege role', () => {
  const { json } = build('dev');
  const perms = Object.fromEntries(ALL.map((n) => [n, rolePerms(json, n)])) as Record<FunctionName, Map<string, string[]>>;
  const b = `\${${bucketId(json)}.Arn}`;

  it('four distinct roles, none with AWS-managed policies', () => {
    const roles = ALL.map((n) => functionRoleId(json, fnLogicalId(json, n)));
    assert.equal(new Set(roles).size, 4);
    for (const r of roles) assert.equal(json.Resources[r].Properties!.ManagedPolicyArns, undefined, r);
  });

  it('thumbnailer: read originals, list the bucket (to confirm deletions), write, tag and delete thumbnails only, PutEvents as collections.imageprocessor', () => {
    const p = perms.thumbnailer;
    assert.deepEqual(p.get('s3:GetObject'), [`${b}/*`]);
    assert.deepEqual(p.get('s3:ListBucket'), [b], 'HeadObject of a missing key answers 404, not 403');
    assert.deepEqual(p.get('s3:PutObject'), [`${b}/*/thumbnails/*`]);
    assert.deepEqual(p.get('s3:PutObjectTagging'), [`${b}/*/thumbnails/*`]);
    assert.deepEqual(p.get('s3:DeleteObject'), [`${b}/*/thumbnails/*`], 'an original deleted takes its thumbnail');
    assert.ok(!p.has('s3:*'));
    assertPutEvents(json, 'thumbnailer', 'collections.imageprocessor');
    assert.ok(!p.has('ssm:GetParameter'), 'thumbnailer reads no API keys');
  });

  it('analyzer: read thumbnails only, PutEvents as collections.analyzer, SSM /collections/dev/ANTHROPIC_API_KEY only', () => {
    const p = perms.analyzer;
    assert.deepEqual(p.get('s3:GetObject'), [`${b}/*/thumbnails/*`]);
    assert.ok(!p.has('s3:PutObject'));
    assertPutEvents(json, 'analyzer', 'collections.analyzer');
    assert.deepEqual(p.get('ssm:GetParameter'), [parameterArn('dev', 'ANTHROPIC_API_KEY')]);
    assert.ok(!p.has('ssm:GetParameters'));
  });

  it('embedder: SSM /collections/dev/VOYAGE_API_KEY only — no S3, no events', () => {
    const p = perms.embedder;
    assert.deepEqual(p.get('ssm:GetParameter'), [parameterArn('dev', 'VOYAGE_API_KEY')]);
    for (const a of p.keys()) assert.ok(!a.startsWith('s3:') && !a.startsWith('events:'), `embedder has ${a}`);
  });

  it('migrator: only the database secrets (plus logs/ENI/X-Ray)', () => {
    const p = perms.migrator;
    for (const a of p.keys()) {
      assert.ok(/^(secretsmanager:GetSecretValue|logs:|ec2:|xray:)/.test(a), `migrator has ${a}`);
    }
  });

  it('stage functions read exactly the application secret, the migrator it and the RDS-generated master secret; each writes only its own log group', () => {
    const app = `\${${logicalIdByPath(json, '/AppDatabaseSecret/Resource')}}`;
    for (const n of STAGES) assert.deepEqual(perms[n].get('secretsmanager:GetSecretValue'), [app], n);
    assert.deepEqual(perms.migrator.get('secretsmanager:GetSecretValue'), ['${Database.MasterUserSecret.SecretArn}', app]);
    for (const n of ALL) {
      const lg = json.Resources[fnLogicalId(json, n)].Properties!.LoggingConfig.LogGroup.Ref;
      assert.deepEqual(perms[n].get('logs:PutLogEvents'), [`\${${lg}.Arn}`], n);
      assert.ok(!perms[n].has('logs:CreateLogGroup'), n);
    }
  });

  it('stage functions read only their own stream and send failures only to their own DLQ', () => {
    const streamFor = { thumbnailer: 'uploads', analyzer: 'processed', embedder: 'analyzed' } as const;
    for (const n of STAGES) {
      assert.deepEqual(perms[n].get('kinesis:GetRecords'), [`\${${streamId(json, streamFor[n])}.Arn}`], n);
      const dlq = logicalIdByPath(json, `/${n.charAt(0).toUpperCase() + n.slice(1)}FailuresDlq/Resource`);
      assert.deepEqual(perms[n].get('sqs:SendMessage'), [`\${${dlq}.Arn}`], n);
    }
    assert.ok(!perms.migrator.has('kinesis:GetRecords'));
  });

  it('EventBridge may write each stream; the forward rule may put events on the collections-<env> bus only', () => {
    for (const s of ['uploads', 'processed', 'analyzed'] as const) {
      const rule = resourcesOfType(json, 'AWS::Events::Rule').find(([, r]) =>
        r.Properties!.Targets.some((t: any) => t.Arn?.['Fn::GetAtt']?.[0] === streamId(json, s)),
      )!;
      const roleId = rule[1].Properties!.Targets[0].RoleArn['Fn::GetAtt'][0];
      const m = allowed(json, roleId);
      assert.deepEqual(m.get('kinesis:PutRecord')?.map(render), [`\${${streamId(json, s)}.Arn}`]);
    }
    const bus = logicalIdByPath(json, '/Bus/Resource');
    const fwd = resourcesOfType(json, 'AWS::Events::Rule').filter(([, r]) => r.Properties!.Targets.some((t: any) => t.Arn['Fn::GetAtt']?.[0] === bus));
    assert.equal(fwd.length, 1);
    assert.equal(fwd[0][1].Properties!.EventBusName, undefined, 'from the default bus');
    const m = allowed(json, fwd[0][1].Properties!.Targets[0].RoleArn['Fn::GetAtt'][0]);
    assert.deepEqual(m.get('events:PutEvents')?.map(render), [`\${${bus}.Arn}`]);
  });
});

/** Every IAM statement of the template (roles' inline policies and AWS::IAM::Policy resources), with where it is. */
function iamStatements(t: CfnTemplate): Array<{ where: string; st: Statement }> {
  const out: Array<{ where: string; st: Statement }> = [];
  for (const [id, r] of resourcesOfType(t, 'AWS::IAM::Role')) {
    for (const p of r.Properties?.Policies ?? []) for (const st of p.PolicyDocument.Statement) out.push({ where: id, st });
  }
  for (const [id, r] of resourcesOfType(t, 'AWS::IAM::Policy')) {
    for (const st of r.Properties!.PolicyDocument.Statement) out.push({ where: id, st });
  }
  return out;
}

/** The resources (rendered) of every statement that names an SSM action. */
function ssmGrants(t: CfnTemplate): Array<{ where: string; effect: string; actions: string[]; resource: string }> {
  return iamStatements(t)
    .filter(({ st }) => actionsOf(st).some((a) => a.toLowerCase().startsWith('ssm:') || a === '*'))
    .flatMap(({ where, st }) => resourcesOf(st).map((r) => ({ where, effect: st.Effect, actions: actionsOf(st), resource: render(r) })));
}

/** The SSM parameters (rendered ARNs) one function's role is allowed to read. */
function ssmOf(t: CfnTemplate, name: FunctionName): string[] {
  return rolePerms(t, name).get('ssm:GetParameter') ?? [];
}

describe('SSM parameters: each environment its own prefix, each function its exact keys', () => {
  /** Contexts under which every kind of SSM grant exists: API keys of all three providers, the URL parameter, the search function. */
  const MODES: Array<[string, Ctx]> = [
    ['RDS, search API, re-embedding with openai', { ...SEARCH_CONTEXT, reembedProvider: 'openai' }],
    [
      'existing database, search API, openai analyzer',
      { ...SEARCH_CONTEXT, existingDatabase: 'true', searchDatabaseSecretArn: SEARCH_SECRET_ARN, analyzerProvider: 'openai' },
    ],
  ];
  const PAIRS = [
    ['dev', 'prod'],
    ['prod', 'dev'],
    ['test', 'prod'],
    ['dev', 'test'],
  ] as const;

  for (const [label, ctx] of MODES) {
    it(`${label}: no statement of one environment names a parameter of another, and none ends in *`, () => {
      for (const [env, other] of PAIRS) {
        const grants = ssmGrants(build(env, ctx).json);
        assert.ok(grants.some((g) => g.effect === 'Allow'), `${env}: no SSM grant at all, the test proves nothing`);
        for (const g of grants) {
          const what = `${env} ${g.where} ${g.effect} ${g.actions} ${g.resource}`;
          assert.ok(g.resource.startsWith('arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/collections/'), what);
          assert.ok(g.resource.startsWith(parameterArn(env, '')), `${what}: not under /collections/${env}/`);
          assert.ok(!g.resource.includes(`/collections/${other}/`), `${what}: names ${other}'s parameter`);
          assert.ok(!g.resource.endsWith('*') && !g.resource.includes('*'), `${what}: wildcard`);
          assert.ok(g.actions.every((a) => a !== '*' && a !== 'ssm:*'), what);
          assert.ok(/^[A-Z_]+$/.test(g.resource.slice(parameterArn(env, '').length)), `${what}: one parameter, exactly`);
        }
      }
    });
  }

  it('the same contexts in dev and prod grant the same parameter names, each under its own prefix', () => {
    for (const [, ctx] of MODES) {
      const names = (env: string) =>
        ssmGrants(build(env, ctx).json)
          .map((g) => `${g.effect} ${g.resource.slice(parameterArn(env, '').length)}`)
          .sort();
      assert.deepEqual(names('prod'), names('dev'));
    }
  });

  it('functions get SSM_PARAMETER_PREFIX=/collections/<env> (analyzer, embedder, search; not the thumbnailer or migrator)', () => {
    for (const env of ['dev', 'test', 'prod']) {
      const { json } = build(env, SEARCH_CONTEXT);
      for (const n of ['analyzer', 'embedder', 'search'] as const) assert.equal(envOf(json, n).SSM_PARAMETER_PREFIX, `/collections/${env}`, `${env} ${n}`);
      for (const n of ['thumbnailer', 'migrator'] as const) assert.equal(envOf(json, n).SSM_PARAMETER_PREFIX, undefined, `${env} ${n}`);
    }
  });

  it('analyzer: the key of its vision provider only (anthropic, openai), none and no SSM statement for local', () => {
    const cases: Array<[string, string[]]> = [
      ['anthropic', ['ANTHROPIC_API_KEY']],
      ['Anthropic', ['ANTHROPIC_API_KEY']],
      ['openai', ['OPENAI_API_KEY']],
      ['local', []],
    ];
    for (const [provider, keys] of cases) {
      const { json } = build('prod', { analyzerProvider: provider });
      assert.equal(envOf(json, 'analyzer').ANALYZER_PROVIDER, provider.toLowerCase());
      assert.deepEqual(ssmOf(json, 'analyzer'), keys.map((k) => parameterArn('prod', k)), provider);
      const statements = roleStatements(json, functionRoleId(json, fnLogicalId(json, 'analyzer')));
      assert.equal(statements.filter((st) => actionsOf(st).some((a) => a.startsWith('ssm:'))).length, keys.length === 0 ? 0 : 1, provider);
    }
  });

  it('embedder: the key of its embedding provider, plus the re-embedding provider\'s when one is configured; none for local', () => {
    const cases: Array<[Ctx, string[]]> = [
      [{}, ['VOYAGE_API_KEY']],
      [{ embeddingProvider: 'openai' }, ['OPENAI_API_KEY']],
      [{ embeddingProvider: 'local' }, []],
      [{ embeddingProvider: 'local', reembedProvider: 'voyage' }, ['VOYAGE_API_KEY']],
      [{ reembedProvider: 'openai' }, ['OPENAI_API_KEY', 'VOYAGE_API_KEY']],
      [{ embeddingProvider: 'openai', reembedProvider: 'openai', reembedModel: 'text-embedding-3-large' }, ['OPENAI_API_KEY']],
      [{ reembedProvider: 'local' }, ['VOYAGE_API_KEY']],
    ];
    for (const [ctx, keys] of cases) {
      const { json } = build('dev', ctx);
      assert.deepEqual(ssmOf(json, 'embedder'), keys.map((k) => parameterArn('dev', k)), JSON.stringify(ctx));
    }
  });

  it('search: exactly its active embedding model\'s key parameter (never the re-embedding one), none for local', () => {
    const cases: Array<[Ctx, string[]]> = [
      [{}, ['VOYAGE_API_KEY']],
      [{ reembedProvider: 'openai' }, ['VOYAGE_API_KEY']],
      [{ embeddingProvider: 'openai' }, ['OPENAI_API_KEY']],
      [{ embeddingProvider: 'local', reembedProvider: 'voyage' }, []],
      [{ existingDatabase: 'true', searchDatabaseSecretArn: SEARCH_SECRET_ARN }, ['VOYAGE_API_KEY']],
    ];
    for (const [ctx, keys] of cases) {
      const { json } = build('test', { ...SEARCH_CONTEXT, ...ctx });
      const statements = roleStatements(json, functionRoleId(json, fnLogicalId(json, 'search')));
      const allowed = statements
        .filter((st) => st.Effect === 'Allow' && actionsOf(st).some((a) => a.startsWith('ssm:')))
        .flatMap((st) => resourcesOf(st).map(render));
      assert.deepEqual(allowed, keys.map((k) => parameterArn('test', k)), JSON.stringify(ctx));
    }
  });

  it('refuses an analyzer provider the functions do not know (it would get no key)', () => {
    assert.throws(() => build('dev', { analyzerProvider: 'gemini' }, { noCache: true }), /context analyzerProvider: expected one of anthropic, openai, local/);
  });
});

function assertPutEvents(json: CfnTemplate, name: FunctionName, source: string) {
  const st = roleStatements(json, functionRoleId(json, fnLogicalId(json, name))).filter((s) =>
    ([] as string[]).concat(s.Action).includes('events:PutEvents'),
  );
  assert.equal(st.length, 1, `${name}: one PutEvents statement`);
  assert.equal(render(st[0].Resource), `\${${logicalIdByPath(json, '/Bus/Resource')}.Arn}`, `${name}: the environment's bus only`);
  assert.deepEqual(st[0].Condition, { StringEquals: { 'events:source': source } });
}

describe('Kinesis event sources', () => {
  const expected = {
    thumbnailer: { stream: 'uploads', batch: 20, window: 1 },
    analyzer: { stream: 'processed', batch: 32, window: 2 },
    embedder: { stream: 'analyzed', batch: 100, window: 2 },
  } as const;

  it('one per stage with batching, parallelization, bisect, bounded retries/age, partial batch failures, TRIM_HORIZON, SQS on-failure', () => {
    const { template, json } = build('dev');
    template.resourceCountIs('AWS::Lambda::EventSourceMapping', 3);
    for (const n of STAGES) {
      const e = expected[n];
      const dlqId = logicalIdByPath(json, `/${n.charAt(0).toUpperCase() + n.slice(1)}FailuresDlq/Resource`);
      template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
        FunctionName: { Ref: fnLogicalId(json, n) },
        EventSourceArn: { 'Fn::GetAtt': [streamId(json, e.stream), 'Arn'] },
        BatchSize: e.batch,
        MaximumBatchingWindowInSeconds: e.window,
        ParallelizationFactor: 2,
        BisectBatchOnFunctionError: true,
        MaximumRetryAttempts: 3,
        MaximumRecordAgeInSeconds: 86400,
        FunctionResponseTypes: ['ReportBatchItemFailures'],
        StartingPosition: 'TRIM_HORIZON',
        DestinationConfig: { OnFailure: { Destination: { 'Fn::GetAtt': [dlqId, 'Arn'] } } },
      });
      assertEncryptedTlsQueue(json, `${n.charAt(0).toUpperCase() + n.slice(1)}FailuresDlq`);
    }
  });

  it('batching and parallelization come from context', () => {
    const { template, json } = build('dev', {
      thumbnailerBatchSize: '5',
      thumbnailerBatchWindowSeconds: '0',
      analyzerBatchSize: 64,
      analyzerBatchWindowSeconds: 10,
      embedderBatchSize: '500',
      embedderBatchWindowSeconds: '5',
      parallelizationFactor: '4',
    });
    const got = (n: FunctionName) =>
      resourcesOfType(json, 'AWS::Lambda::EventSourceMapping').find(([, r]) => r.Properties!.FunctionName.Ref === fnLogicalId(json, n))![1]
        .Properties!;
    assert.equal(got('thumbnailer').BatchSize, 5);
    assert.equal(got('thumbnailer').MaximumBatchingWindowInSeconds, 0);
    assert.equal(got('analyzer').BatchSize, 64);
    assert.equal(got('analyzer').MaximumBatchingWindowInSeconds, 10);
    assert.equal(got('embedder').BatchSize, 500);
    assert.equal(got('embedder').MaximumBatchingWindowInSeconds, 5);
    for (const n of STAGES) assert.equal(got(n).ParallelizationFactor, 4);
    void template;
  });
});

describe('PostgreSQL (RDS mode)', () => {
  it('RDS PostgreSQL 17.x (pgvector >= 0.8), encrypted, RDS-managed secret, private, in isolated subnets', () => {
    const { template, json } = build('dev');
    template.resourceCountIs('AWS::RDS::DBInstance', 1);
    const p = json.Resources.Database.Properties!;
    assert.equal(p.Engine, 'postgres');
    const [major, minor] = String(p.EngineVersion).split('.').map(Number);
    assert.ok(major === 17 && minor >= 1, `engine ${p.EngineVersion} must be 17.1+ (pgvector 0.8)`);
    assert.equal(p.StorageEncrypted, true);
    assert.equal(p.ManageMasterUserPassword, true);
    assert.equal(p.MasterUserPassword, undefined);
    assert.equal(p.PubliclyAccessible, false);
    assert.equal(p.DBName, 'collections');
    const sng = json.Resources[p.DBSubnetGroupName.Ref].Properties!;
    const isolated = resourcesOfType(json, 'AWS::EC2::Subnet')
      .filter(([, s]) => (s.Properties!.Tags as any[]).some((t) => t.Key === 'aws-cdk:subnet-type' && t.Value === 'Isolated'))
      .map(([id]) => id)
      .sort();
    assert.deepEqual(sng.SubnetIds.map((s: any) => s.Ref).sort(), isolated);
  });

  it('only the functions security group may reach port 5432', () => {
    const { json } = build('dev');
    const dbSg = logicalIdByPath(json, '/DatabaseSecurityGroup/Resource');
    const fnSg = logicalIdByPath(json, '/FunctionsSecurityGroup/Resource');
    assert.deepEqual(json.Resources.Database.Properties!.VPCSecurityGroups, [{ 'Fn::GetAtt': [dbSg, 'GroupId'] }]);
    assert.equal(json.Resources[dbSg].Properties!.SecurityGroupIngress, undefined, 'no inline ingress');
    const ingress = resourcesOfType(json, 'AWS::EC2::SecurityGroupIngress').filter(
      ([, r]) => r.Properties!.GroupId['Fn::GetAtt']?.[0] === dbSg,
    );
    assert.equal(ingress.length, 1);
    assert.deepEqual(ingress[0][1].Properties, {
      GroupId: { 'Fn::GetAtt': [dbSg, 'GroupId'] },
      SourceSecurityGroupId: { 'Fn::GetAtt': [fnSg, 'GroupId'] },
      IpProtocol: 'tcp',
      FromPort: 5432,
      ToPort: 5432,
      Description: 'PostgreSQL from the collections functions',
    });
    // The functions may go out on 443 (APIs) and 5432 (to the database group) only.
    const fnEgress = json.Resources[fnSg].Properties!.SecurityGroupEgress;
    assert.deepEqual(fnEgress.map((e: any) => [e.CidrIp, e.FromPort, e.ToPort]), [['0.0.0.0/0', 443, 443]]);
  });

  it('dev: single-AZ, no deletion protection, deleted with the stack; prod: Multi-AZ, deletion protection, snapshot', () => {
    const dev = build('dev').json.Resources.Database;
    const test = build('test').json.Resources.Database;
    const prod = build('prod').json.Resources.Database;
    assert.equal(dev.Properties!.MultiAZ, false);
    assert.equal(dev.Properties!.DeletionProtection, false);
    assert.equal(dev.DeletionPolicy, 'Delete');
    assert.equal(test.DeletionPolicy, 'Snapshot');
    assert.equal(prod.Properties!.MultiAZ, true);
    assert.equal(prod.Properties!.DeletionProtection, true);
    assert.equal(prod.DeletionPolicy, 'Snapshot');
    assert.equal(prod.Properties!.DBInstanceClass, 'db.t4g.small');
    assert.equal(dev.Properties!.DBInstanceClass, 'db.t4g.micro');
  });

  it('NAT gateways: 1 in dev and test, 2 in prod; S3 through a gateway endpoint', () => {
    assert.equal(resourcesOfType(build('dev').json, 'AWS::EC2::NatGateway').length, 1);
    assert.equal(resourcesOfType(build('test').json, 'AWS::EC2::NatGateway').length, 1);
    assert.equal(resourcesOfType(build('prod').json, 'AWS::EC2::NatGateway').length, 2);
    build('dev').template.hasResourceProperties('AWS::EC2::VPCEndpoint', { VpcEndpointType: 'Gateway' });
  });
});

const MASTER_SECRET = { 'Fn::GetAtt': ['Database', 'MasterUserSecret.SecretArn'] };

/** Does an Allow statement let its role read (GetSecretValue) `secret`, directly or by wildcard? */
function readsSecret(st: { Effect: string; Action: string | string[]; Resource: unknown }, secret: unknown): boolean {
  if (st.Effect !== 'Allow') return false;
  const acts = Array.isArray(st.Action) ? st.Action : [st.Action];
  if (!acts.some((a) => a === '*' || a === 'secretsmanager:*' || a === 'secretsmanager:GetSecretValue')) return false;
  const res = Array.isArray(st.Resource) ? st.Resource : [st.Resource];
  return res.some((r) => r === '*' || JSON.stringify(r) === JSON.stringify(secret) || /secretsmanager:\*|:secret:\*/.test(render(r)));
}

describe('database roles (RDS mode): the stages connect as collections_app, the master secret is the migrator\'s', () => {
  for (const env of ['dev', 'test', 'prod']) {
    describe(env, () => {
      const { json } = build(env);
      const appId = logicalIdByPath(json, '/AppDatabaseSecret/Resource');
      const app = { Ref: appId };

      it(`the application secret collections-${env}/database/app: username collections_app, a generated password without " @ / \\ ' or spaces, the default key`, () => {
        const p = json.Resources[appId].Properties!;
        assert.equal(p.Name, `collections-${env}/database/app`);
        assert.deepEqual(JSON.parse(p.GenerateSecretString.SecretStringTemplate), { username: 'collections_app' });
        assert.equal(p.GenerateSecretString.GenerateStringKey, 'password');
        for (const c of ['"', '@', '/', '\\', "'"]) assert.ok(p.GenerateSecretString.ExcludeCharacters.includes(c), `excludes ${c}`);
        assert.equal(p.GenerateSecretString.IncludeSpace, false);
        assert.ok(p.GenerateSecretString.PasswordLength >= 32);
        // As the RDS-managed master secret: aws/secretsmanager, so no kms:Decrypt grant is needed.
        assert.equal(p.KmsKeyId, undefined);
        assert.equal(json.Resources.Database.Properties!.MasterUserSecret?.KmsKeyId, undefined);
        assert.equal(resourcesOfType(json, 'AWS::SecretsManager::Secret').length, 1);
      });

      it('each stage function\'s DATABASE_SECRET_ARN is the application secret', () => {
        for (const n of STAGES) {
          assert.deepEqual(envOf(json, n).DATABASE_SECRET_ARN, app, n);
          assert.equal(envOf(json, n).APP_DATABASE_SECRET_ARN, undefined, n);
        }
      });

      it('no stage function role may read the master secret; each reads the application secret, and needs no KMS', () => {
        for (const n of STAGES) {
          const statements = roleStatements(json, functionRoleId(json, fnLogicalId(json, n)));
          const masterReads = statements.filter((st) => readsSecret(st, MASTER_SECRET));
          assert.deepEqual(masterReads, [], `${n} may read the master secret`);
          assert.ok(statements.some((st) => readsSecret(st, app)), `${n} cannot read the application secret`);
          const p = rolePerms(json, n);
          assert.deepEqual(p.get('secretsmanager:GetSecretValue'), [`\${${appId}}`], n);
          assert.ok(![...p.keys()].some((a) => a.startsWith('kms:')), `${n} has a kms: grant`);
        }
      });

      it('the migrator connects with the master secret and reads the application secret (APP_DATABASE_SECRET_ARN)', () => {
        const e = envOf(json, 'migrator');
        assert.deepEqual(e.DATABASE_SECRET_ARN, MASTER_SECRET);
        assert.deepEqual(e.APP_DATABASE_SECRET_ARN, app);
        const statements = roleStatements(json, functionRoleId(json, fnLogicalId(json, 'migrator')));
        assert.ok(statements.some((st) => readsSecret(st, MASTER_SECRET)), 'master');
        assert.ok(statements.some((st) => readsSecret(st, app)), 'application');
        // It reads the secret only after the attachment has completed it.
        const [[, cr]] = resourcesOfType(json, 'Custom::CollectionsMigrations');
        assert.ok(cr.DependsOn?.includes(logicalIdByPath(json, '/AppDatabaseSecretAttachment')));
      });

      it('the secret is attached to the instance (host, port, engine for the rotation)', () => {
        const att = resourcesOfType(json, 'AWS::SecretsManager::SecretTargetAttachment');
        assert.equal(att.length, 1);
        assert.deepEqual(att[0][1].Properties, { SecretId: app, TargetId: { Ref: 'Database' }, TargetType: 'AWS::RDS::DBInstance' });
      });

      it('rotates every 30 days: hosted single-user PostgreSQL rotation in the functions\' subnets and security group, after the migrations', () => {
        const rot = resourcesOfType(json, 'AWS::SecretsManager::RotationSchedule');
        assert.equal(rot.length, 1);
        const [, r] = rot[0];
        assert.deepEqual(r.Properties!.SecretId, app);
        assert.deepEqual(r.Properties!.RotationRules, { ScheduleExpression: 'rate(30 days)' });
        const h = r.Properties!.HostedRotationLambda;
        assert.equal(h.RotationType, 'PostgreSQLSingleUser');
        assert.equal(h.MasterSecretArn, undefined, 'single user: the rotation never sees the master secret');
        assert.equal(h.ExcludeCharacters, json.Resources[appId].Properties!.GenerateSecretString.ExcludeCharacters);
        assert.deepEqual(h.VpcSecurityGroupIds, { 'Fn::GetAtt': [logicalIdByPath(json, '/FunctionsSecurityGroup/Resource'), 'GroupId'] });
        const privateSubnets = resourcesOfType(json, 'AWS::EC2::Subnet')
          .filter(([, sn]) => (sn.Properties!.Tags as any[]).some((t) => t.Key === 'aws-cdk:subnet-type' && t.Value === 'Private'))
          .map(([id]) => `\${${id}}`)
          .sort();
        assert.deepEqual(render(h.VpcSubnetIds).split(',').sort(), privateSubnets);
        const [[crId]] = resourcesOfType(json, 'Custom::CollectionsMigrations');
        assert.ok(r.DependsOn?.includes(crId), 'the role must exist before the first rotation');
        assert.ok(r.DependsOn?.includes(logicalIdByPath(json, '/AppDatabaseSecretAttachment')));
        assert.ok(String((json as any).Transform).startsWith('AWS::SecretsManager-'));
      });

      it('outputs both secret ARNs', () => {
        assert.deepEqual(json.Outputs?.DatabaseSecretArn.Value, MASTER_SECRET);
        assert.deepEqual(json.Outputs?.AppDatabaseSecretArn.Value, app);
      });
    });
  }
});

describe('existing database with an application secret (context appDatabaseSecretArn)', () => {
  const arn = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:collections/app-AbC123';
  const { template, json } = build('dev', { existingDatabase: 'true', appDatabaseSecretArn: arn });
  const urlArn = parameterArn('dev', 'DATABASE_URL');

  it('creates no secret; the stages get DATABASE_SECRET_ARN = that secret and no URL parameter', () => {
    template.resourceCountIs('AWS::SecretsManager::Secret', 0);
    template.resourceCountIs('AWS::SecretsManager::RotationSchedule', 0);
    for (const n of STAGES) {
      const e = envOf(json, n);
      assert.equal(e.DATABASE_SECRET_ARN, arn, n);
      assert.equal(e.DATABASE_URL_PARAMETER, undefined, n);
      assert.deepEqual(rolePerms(json, n).get('secretsmanager:GetSecretValue'), [arn], n);
    }
  });

  it('no stage may read the owner\'s URL parameter: explicitly denied, and no grant covers it', () => {
    for (const n of STAGES) {
      const statements = roleStatements(json, functionRoleId(json, fnLogicalId(json, n)));
      const deny = statements.filter((st) => st.Effect === 'Deny' && actionsOf(st).includes('ssm:GetParameter'));
      assert.deepEqual(deny.flatMap((st) => resourcesOf(st).map(render)), [urlArn], n);
      assert.ok(!(rolePerms(json, n).get('ssm:GetParameter') ?? []).some((r) => r === urlArn || r.endsWith('*')), n);
    }
  });

  it('the migrator keeps the URL parameter and gets APP_DATABASE_SECRET_ARN', () => {
    const e = envOf(json, 'migrator');
    assert.equal(e.DATABASE_URL_PARAMETER, '/collections/dev/DATABASE_URL');
    assert.equal(e.APP_DATABASE_SECRET_ARN, arn);
    assert.equal(e.DATABASE_SECRET_ARN, undefined);
    const p = rolePerms(json, 'migrator');
    assert.deepEqual(p.get('ssm:GetParameter'), [urlArn]);
    assert.deepEqual(p.get('secretsmanager:GetSecretValue'), [arn]);
  });
});

describe('existing database (context existingDatabase=true)', () => {
  const { template, json } = build('dev', { existingDatabase: 'true' });

  it('creates no VPC, NAT gateway or RDS instance; functions run outside a VPC', () => {
    template.resourceCountIs('AWS::EC2::VPC', 0);
    template.resourceCountIs('AWS::EC2::NatGateway', 0);
    template.resourceCountIs('AWS::RDS::DBInstance', 0);
    for (const n of ALL) assert.equal(json.Resources[fnLogicalId(json, n)].Properties!.VpcConfig, undefined);
  });

  it('functions get DATABASE_URL_PARAMETER=/collections/<env>/DATABASE_URL instead of the secret/host vars', () => {
    for (const n of ALL) {
      const e = envOf(json, n);
      assert.equal(e.DATABASE_URL_PARAMETER, '/collections/dev/DATABASE_URL', n);
      for (const k of ['DATABASE_HOST', 'DATABASE_PORT', 'DATABASE_NAME', 'DATABASE_SECRET_ARN', 'APP_DATABASE_SECRET_ARN']) {
        assert.equal(e[k], undefined, `${n} ${k}`);
      }
    }
  });

  it('every function may read the URL parameter of its environment; none reads a secret', () => {
    const urlArn = parameterArn('dev', 'DATABASE_URL');
    for (const n of ALL) {
      const p = rolePerms(json, n);
      assert.ok(p.get('ssm:GetParameter')!.includes(urlArn), n);
      assert.ok(!p.has('secretsmanager:GetSecretValue'), n);
    }
    assert.deepEqual(rolePerms(json, 'thumbnailer').get('ssm:GetParameter'), [urlArn]);
    assert.deepEqual(rolePerms(json, 'migrator').get('ssm:GetParameter'), [urlArn]);
    assert.deepEqual(rolePerms(json, 'analyzer').get('ssm:GetParameter'), [urlArn, parameterArn('dev', 'ANTHROPIC_API_KEY')]);
    assert.deepEqual(rolePerms(json, 'embedder').get('ssm:GetParameter'), [urlArn, parameterArn('dev', 'VOYAGE_API_KEY')]);
    const prod = build('prod', { existingDatabase: 'true' }).json;
    for (const n of ALL) assert.equal(envOf(prod, n).DATABASE_URL_PARAMETER, '/collections/prod/DATABASE_URL', n);
    assert.deepEqual(rolePerms(prod, 'migrator').get('ssm:GetParameter'), [parameterArn('prod', 'DATABASE_URL')]);
  });
});

describe('migrations custom resource', () => {
  it('the Provider framework calls the migrator; the resource carries the hash of migrations/*.sql', () => {
    const { json } = build('dev');
    const [[id, cr]] = resourcesOfType(json, 'Custom::CollectionsMigrations');
    const framework = cr.Properties!.ServiceToken['Fn::GetAtt'][0];
    assert.equal(
      json.Resources[framework].Properties!.Environment.Variables.USER_ON_EVENT_FUNCTION_ARN['Fn::GetAtt'][0],
      fnLogicalId(json, 'migrator'),
    );
    const fp = fingerprintMigrations(REPO_ROOT);
    assert.equal(cr.Properties!.MigrationsHash, fp.hash);
    assert.match(fp.hash, /^[0-9a-f]{64}$/);
    assert.equal(cr.Properties!.MigrationCount, fp.files.length);
    // Runs after the instance and the security-group rules that let the migrator in.
    const deps = cr.DependsOn ?? [];
    assert.ok(deps.includes('Database'), `${id} must depend on the database`);
    const ingress = resourcesOfType(json, 'AWS::EC2::SecurityGroupIngress').map(([i]) => i);
    for (const i of ingress) assert.ok(deps.includes(i), `${id} must wait for ${i}`);
  });

  it('stage functions and their event sources wait for the migrations (migrate, then roll out)', () => {
    const { json } = build('dev');
    const [[crId]] = resourcesOfType(json, 'Custom::CollectionsMigrations');
    for (const n of STAGES) {
      const id = fnLogicalId(json, n);
      assert.ok(json.Resources[id].DependsOn?.includes(crId), `${n} must depend on ${crId}`);
      const esm = resourcesOfType(json, 'AWS::Lambda::EventSourceMapping').find(([, r]) => r.Properties!.FunctionName.Ref === id)!;
      assert.ok(esm[1].DependsOn?.includes(crId), `${n} event source must depend on ${crId}`);
    }
    assert.ok(!json.Resources[fnLogicalId(json, 'migrator')].DependsOn?.includes(crId));
  });
});

// The embedding models: the active one (embedder, search, migrator) and, during
// a model change, the re-embedding one (embedder and migrator only).
describe('embedding models (context embedding*, reembed*)', () => {
  /** A second model of another provider and size, with the search API so that its function is there too. */
  const SECOND_MODEL: Ctx = { reembedProvider: 'openai', reembedModel: 'text-embedding-3-large', reembedDimensions: '3072' };
  const REEMBED: Ctx = { ...SEARCH_CONTEXT, ...SECOND_MODEL };
  const EMBEDDING_VARIABLE = /^(EMBEDDING_|VOYAGE_EMBEDDING_|OPENAI_EMBEDDING_|REEMBED_)/;
  const embeddingEnvOf = (t: CfnTemplate, name: FunctionName) =>
    Object.fromEntries(Object.entries(envOf(t, name)).filter(([k]) => EMBEDDING_VARIABLE.test(k)));
  const reembedKeys = (t: CfnTemplate, name: FunctionName) => Object.keys(envOf(t, name)).filter((k) => k.startsWith('REEMBED_'));
  const migrationsProperties = (t: CfnTemplate) => {
    const [[, cr]] = resourcesOfType(t, 'Custom::CollectionsMigrations');
    return cr.Properties!;
  };
  const ACTIVE = { EMBEDDING_PROVIDER: 'voyage', VOYAGE_EMBEDDING_MODEL: 'voyage-3.5', EMBEDDING_DIMENSIONS: '1024' };

  it('by default: EMBEDDING_DIMENSIONS=1024 for the embedder, search and migrator; no REEMBED_* anywhere', () => {
    const { json } = build('dev', SEARCH_CONTEXT);
    for (const n of ['embedder', 'search', 'migrator'] as const) assert.deepEqual(embeddingEnvOf(json, n), ACTIVE, n);
    for (const n of [...ALL, 'search'] as const) assert.deepEqual(reembedKeys(json, n), [], n);
  });

  it('the active model from context: provider, Voyage or OpenAI model, size, in the embedder, search and migrator alike', () => {
    const { json } = build('dev', {
      ...SEARCH_CONTEXT,
      embeddingProvider: 'openai',
      openaiEmbeddingModel: 'text-embedding-3-large',
      embeddingDimensions: '3072',
    });
    for (const n of ['embedder', 'search', 'migrator'] as const) {
      assert.deepEqual(
        embeddingEnvOf(json, n),
        { EMBEDDING_PROVIDER: 'openai', VOYAGE_EMBEDDING_MODEL: 'voyage-3.5', OPENAI_EMBEDDING_MODEL: 'text-embedding-3-large', EMBEDDING_DIMENSIONS: '3072' },
        n,
      );
    }
  });

  it('with reembedProvider: the embedder and the migrator get REEMBED_PROVIDER, _MODEL, _DIMENSIONS; search and the other stages do not', () => {
    const { json } = build('dev', REEMBED);
    const reembed = { REEMBED_PROVIDER: 'openai', REEMBED_MODEL: 'text-embedding-3-large', REEMBED_DIMENSIONS: '3072' };
    assert.deepEqual(embeddingEnvOf(json, 'embedder'), { ...ACTIVE, ...reembed });
    assert.deepEqual(embeddingEnvOf(json, 'migrator'), { ...ACTIVE, ...reembed });
    assert.deepEqual(embeddingEnvOf(json, 'search'), ACTIVE, 'searches keep to the active model');
    for (const n of ['thumbnailer', 'analyzer', 'search'] as const) assert.deepEqual(reembedKeys(json, n), [], n);
    // Model and size are optional: the provider's default model, 1024 dimensions.
    const bare = build('dev', { reembedProvider: 'voyage' }).json;
    assert.deepEqual(embeddingEnvOf(bare, 'embedder'), { ...ACTIVE, REEMBED_PROVIDER: 'voyage' });
    assert.deepEqual(embeddingEnvOf(bare, 'migrator'), { ...ACTIVE, REEMBED_PROVIDER: 'voyage' });
  });

  it('the migrator gets the embedding settings but no SSM_PARAMETER_PREFIX and no new permission (it calls no provider), in both database modes', () => {
    for (const mode of [{}, { existingDatabase: 'true' }] as Ctx[]) {
      const plain = build('dev', mode).json;
      const changing = build('dev', { ...mode, ...SECOND_MODEL }).json;
      assert.equal(embeddingEnvOf(changing, 'migrator').REEMBED_PROVIDER, 'openai');
      assert.equal(envOf(changing, 'migrator').SSM_PARAMETER_PREFIX, undefined);
      assert.deepEqual([...rolePerms(changing, 'migrator')], [...rolePerms(plain, 'migrator')], JSON.stringify(mode));
      const ssm = rolePerms(changing, 'migrator').get('ssm:GetParameter') ?? [];
      assert.ok(ssm.every((r) => r.endsWith(':parameter/collections/dev/DATABASE_URL')), `the migrator reads no API key: ${ssm}`);
    }
  });

  it('the migrations resource carries the migrator\'s embedding settings (EmbeddingModels)', () => {
    for (const ctx of [{}, REEMBED]) {
      const { json } = build('dev', ctx);
      assert.deepEqual(migrationsProperties(json).EmbeddingModels, embeddingEnvOf(json, 'migrator'));
    }
  });

  it('a change of model (active or re-embedding) changes the migrations resource, so the migrator runs again; an unrelated change does not', () => {
    const base = migrationsProperties(build('dev').json);
    const changes: Ctx[] = [
      { voyageEmbeddingModel: 'voyage-3-large' },
      { embeddingDimensions: '2048' },
      { embeddingProvider: 'openai' },
      { embeddingProvider: 'openai', openaiEmbeddingModel: 'text-embedding-3-large' },
      { reembedProvider: 'voyage' },
      { reembedProvider: 'voyage', reembedModel: 'voyage-3-large' },
      { reembedProvider: 'voyage', reembedModel: 'voyage-3-large', reembedDimensions: 2048 },
    ];
    const seen = new Set([JSON.stringify(base.EmbeddingModels)]);
    for (const c of changes) {
      const p = migrationsProperties(build('dev', c).json);
      assert.notDeepEqual(p.EmbeddingModels, base.EmbeddingModels, JSON.stringify(c));
      assert.ok(!seen.has(JSON.stringify(p.EmbeddingModels)), `${JSON.stringify(c)}: same properties as an earlier change`);
      seen.add(JSON.stringify(p.EmbeddingModels));
      const { EmbeddingModels: _a, ...rest } = p;
      const { EmbeddingModels: _b, ...baseRest } = base;
      assert.deepEqual(rest, baseRest, 'the migrations fingerprint itself is unchanged');
    }
    assert.deepEqual(migrationsProperties(build('dev', { rustLog: 'debug', analyzerConcurrency: '8' }).json), base);
  });

  it('with a re-embedding model the embedder and search functions still wait for the migrations', () => {
    const { json } = build('dev', REEMBED);
    const [[crId]] = resourcesOfType(json, 'Custom::CollectionsMigrations');
    for (const n of ['embedder', 'search'] as const) {
      assert.ok(json.Resources[fnLogicalId(json, n)].DependsOn?.includes(crId), `${n} must depend on ${crId}`);
    }
  });

  it('refuses invalid embedding settings at synth', () => {
    assert.throws(() => build('dev', { embeddingDimensions: '0' }, { noCache: true }), /context embeddingDimensions/);
    assert.throws(() => build('dev', { reembedProvider: 'cohere' }, { noCache: true }), /context reembedProvider: expected one of voyage, openai, local/);
    assert.throws(() => build('dev', { reembedModel: 'voyage-3-large' }, { noCache: true }), /context reembedModel: only used with reembedProvider/);
  });
});

describe('alarms', () => {
  const { template, json } = build('dev');
  const topic = { Ref: logicalIdByPath(json, '/AlarmTopic/Resource') };
  const alarms = resourcesOfType(json, 'AWS::CloudWatch::Alarm').map(([, a]) => a.Properties!);

  it('alarm topic is KMS-encrypted (CMK with rotation, CloudWatch allowed) and TLS-only', () => {
    const keyId = logicalIdByPath(json, '/Key/Resource');
    template.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: { 'Fn::GetAtt': [keyId, 'Arn'] } });
    template.hasResourceProperties('AWS::KMS::Key', {
      EnableKeyRotation: true,
      KeyPolicy: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Principal: { Service: 'cloudwatch.amazonaws.com' },
            Action: ['kms:Decrypt', 'kms:GenerateDataKey*'],
            Condition: Match.objectLike({ StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } } }),
          }),
        ]),
      },
    });
    template.hasResourceProperties('AWS::SNS::TopicPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })]),
      },
    });
  });

  it('the key lets CloudWatch use it only for this account\'s alarms of this environment (aws:SourceAccount, aws:SourceArn)', () => {
    for (const env of ['dev', 'prod']) {
      const t = build(env).json;
      const [[, key]] = resourcesOfType(t, 'AWS::KMS::Key');
      const services = (key.Properties!.KeyPolicy.Statement as any[]).filter((st) => st.Principal?.Service !== undefined);
      assert.equal(services.length, 1, 'CloudWatch is the only service principal of the key');
      const [st] = services;
      assert.equal(st.Principal.Service, 'cloudwatch.amazonaws.com');
      assert.deepEqual(st.Condition.StringEquals, { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } });
      assert.deepEqual(Object.keys(st.Condition).sort(), ['ArnLike', 'StringEquals']);
      const pattern = render(st.Condition.ArnLike['aws:SourceArn']);
      assert.equal(pattern, `arn:\${AWS::Partition}:cloudwatch:\${AWS::Region}:\${AWS::AccountId}:alarm:collections-${env}-*`);
      // The pattern must admit every alarm of the stack (with the search API too), or its notifications are dropped.
      for (const [, a] of resourcesOfType(build(env, SEARCH_CONTEXT).json, 'AWS::CloudWatch::Alarm')) {
        assert.ok(String(a.Properties!.AlarmName).startsWith(`collections-${env}-`), a.Properties!.AlarmName);
      }
    }
  });

  it('every alarm notifies the topic on ALARM and OK; missing data is not breaching', () => {
    // 4 functions × (Errors, Throttles, Duration) + 3 streams + 7 DLQs + 3 stages × (permanent failures, configuration faults)
    assert.equal(alarms.length, 4 * 3 + 3 + 7 + 3 * 2);
    for (const a of alarms) {
      assert.deepEqual(a.AlarmActions, [topic], a.AlarmName);
      assert.deepEqual(a.OKActions, [topic], a.AlarmName);
      assert.equal(a.TreatMissingData, 'notBreaching');
    }
  });

  it('per function: Errors, Throttles, and p99 Duration at 85% of the timeout', () => {
    for (const n of ALL) {
      const fn = { Ref: fnLogicalId(json, n) };
      const of = (metric: string) =>
        alarms.filter((a) => a.MetricName === metric && a.Namespace === 'AWS/Lambda' && JSON.stringify(a.Dimensions) === JSON.stringify([{ Name: 'FunctionName', Value: fn }]));
      assert.equal(of('Errors').length, 1, `${n} Errors`);
      assert.equal(of('Errors')[0].Threshold, 1);
      assert.equal(of('Throttles').length, 1, `${n} Throttles`);
      const d = of('Duration');
      assert.equal(d.length, 1, `${n} Duration`);
      assert.equal(d[0].ExtendedStatistic, 'p99');
      assert.equal(d[0].Threshold, FUNCTIONS[n].timeout.toMilliseconds() * 0.85);
      assert.equal(d[0].ComparisonOperator, 'GreaterThanOrEqualToThreshold');
    }
  });

  it('per stream: GetRecords.IteratorAgeMilliseconds', () => {
    for (const s of ['uploads', 'processed', 'analyzed'] as const) {
      const a = alarms.filter(
        (x) => x.MetricName === 'GetRecords.IteratorAgeMilliseconds' && x.Dimensions[0].Value.Ref === streamId(json, s),
      );
      assert.equal(a.length, 1, s);
      assert.equal(a[0].Statistic, 'Maximum');
      assert.equal(a[0].Threshold, 15 * 60 * 1000);
    }
  });

  it('per dead-letter queue (3 on-failure + 4 rule targets): ApproximateNumberOfMessagesVisible >= 1', () => {
    const queues = resourcesOfType(json, 'AWS::SQS::Queue').map(([id]) => id);
    assert.equal(queues.length, 7);
    for (const q of queues) {
      const a = alarms.filter(
        (x) => x.MetricName === 'ApproximateNumberOfMessagesVisible' && x.Dimensions[0].Value['Fn::GetAtt']?.[0] === q,
      );
      assert.equal(a.length, 1, q);
      assert.equal(a[0].Threshold, 1);
      assert.equal(a[0].ComparisonOperator, 'GreaterThanOrEqualToThreshold');
    }
  });

  const permanentFailureAlarms = (as: Array<Record<string, any>>) => as.filter((a) => a.Namespace === 'Collections' && a.MetricName === 'Failed');

  it('per stage: permanent failures, Collections/Failed with Stage=<stage>, Sum over 15 min >= 10, with what to do', () => {
    const got = permanentFailureAlarms(alarms);
    assert.equal(got.length, 3);
    for (const n of STAGES) {
      const a = got.filter((x) => JSON.stringify(x.Dimensions) === JSON.stringify([{ Name: 'Stage', Value: STAGE_OF[n] }]));
      assert.equal(a.length, 1, n);
      assert.equal(a[0].AlarmName, `collections-dev-${n}-permanent-failures`);
      assert.equal(a[0].Statistic, 'Sum');
      assert.equal(a[0].Period, 15 * 60);
      assert.equal(a[0].EvaluationPeriods, 1);
      assert.equal(a[0].Threshold, 10);
      assert.equal(a[0].ComparisonOperator, 'GreaterThanOrEqualToThreshold');
      assert.equal(a[0].TreatMissingData, 'notBreaching');
      assert.deepEqual(a[0].AlarmActions, [topic]);
      assert.deepEqual(a[0].OKActions, [topic]);
      assert.match(a[0].AlarmDescription, /`collections failures`/);
      assert.match(a[0].AlarmDescription, /`collections backfill`/);
      assert.ok(a[0].AlarmDescription.length <= 1024, 'CloudWatch limit');
    }
    assert.deepEqual(STAGE_DIMENSIONS, STAGE_OF);
  });

  it('permanent-failure threshold and period come from context (CLI strings or numbers)', () => {
    for (const ctx of [
      { permanentFailureAlarmThreshold: '3', permanentFailureAlarmMinutes: '60' },
      { permanentFailureAlarmThreshold: 3, permanentFailureAlarmMinutes: 60 },
    ]) {
      const got = permanentFailureAlarms(resourcesOfType(build('dev', ctx).json, 'AWS::CloudWatch::Alarm').map(([, a]) => a.Properties!));
      assert.equal(got.length, 3);
      for (const a of got) {
        assert.equal(a.Threshold, 3, a.AlarmName);
        assert.equal(a.Period, 3600, a.AlarmName);
      }
    }
    assert.throws(() => build('dev', { permanentFailureAlarmThreshold: '0' }, { noCache: true }), /permanentFailureAlarmThreshold/);
  });

  it('per stage, a configuration-fault alarm on ConfigurationFault, its threshold from context', () => {
    for (const [ctx, threshold] of [[{}, 1], [{ configurationFaultAlarmThreshold: '4' }, 4]] as const) {
      const alarms = resourcesOfType(build('dev', ctx).json, 'AWS::CloudWatch::Alarm')
        .map(([, a]) => a.Properties!)
        .filter((a) => a.MetricName === 'ConfigurationFault');
      assert.deepEqual(
        alarms.map((a) => a.AlarmName).sort(),
        ['collections-dev-analyzer-configuration-faults', 'collections-dev-embedder-configuration-faults', 'collections-dev-thumbnailer-configuration-faults'],
      );
      for (const a of alarms) {
        assert.equal(a.Namespace, 'Collections');
        assert.equal(a.Threshold, threshold, a.AlarmName);
        assert.equal(a.Statistic, 'Sum');
        assert.match(a.AlarmDescription, /redelivered, not failed/);
      }
    }
    assert.throws(() => build('dev', { configurationFaultAlarmThreshold: '0' }, { noCache: true }), /configurationFaultAlarmThreshold/);
  });

  it('an alarm e-mail subscription is added when context alarmEmail is set', () => {
    build('dev', { alarmEmail: 'ops@example.com' }).template.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'email',
      Endpoint: 'ops@example.com',
    });
    template.resourceCountIs('AWS::SNS::Subscription', 0);
  });
});

/** The dashboard body as the JSON CloudWatch receives, with intrinsics rendered as ${...}. */
function dashboardBody(json: CfnTemplate, name: string): any {
  const dashboards = resourcesOfType(json, 'AWS::CloudWatch::Dashboard');
  assert.equal(dashboards.length, 1);
  const p = dashboards[0][1].Properties!;
  assert.equal(p.DashboardName, name);
  return JSON.parse(render(p.DashboardBody));
}

/** Every metric of every graph: [namespace, name, ...dimension name/value pairs, options?]. */
function dashboardMetrics(body: any): any[][] {
  return body.widgets.flatMap((w: any) => w.properties?.metrics ?? []);
}

describe('dashboard', () => {
  const { json } = build('dev');
  const body = dashboardBody(json, 'collections-dev');
  const metrics = dashboardMetrics(body);
  const find = (ns: string, name: string, dimName: string, dimValue: unknown) =>
    metrics.filter((m) => m[0] === ns && m[1] === name && m[2] === dimName && JSON.stringify(m[3]) === JSON.stringify(dimValue));

  it('one dashboard collections-<env>, per environment', () => {
    for (const env of ['test', 'prod']) assert.ok(dashboardBody(build(env).json, `collections-${env}`).widgets.length > 0);
  });

  it('per stage: Done, Skipped, Failed, Redelivered and ApiCalls of Collections, Stage dimension, Sum', () => {
    for (const n of STAGES) {
      for (const m of ['Done', 'Skipped', 'Failed', 'Redelivered', 'ApiCalls']) {
        const hits = find('Collections', m, 'Stage', STAGE_OF[n]);
        assert.equal(hits.length, 1, `${STAGE_OF[n]} ${m}`);
        assert.equal(hits[0].length, 5, `${STAGE_OF[n]} ${m}: one dimension, then options`);
        assert.equal(hits[0][4].stat, 'Sum', `${STAGE_OF[n]} ${m}`);
      }
    }
    // The same metrics found by a plain text search of the template value (a Fn::Join).
    const raw = JSON.stringify(resourcesOfType(json, 'AWS::CloudWatch::Dashboard')[0][1].Properties!.DashboardBody);
    for (const stage of Object.values(STAGE_OF)) {
      for (const m of ['Done', 'Skipped', 'Failed', 'Redelivered', 'ApiCalls']) {
        assert.ok(raw.includes(`\\"Collections\\",\\"${m}\\",\\"Stage\\",\\"${stage}\\"`), `${stage} ${m}`);
      }
    }
  });

  it('per stage: the iterator age of its stream, and its function\'s errors and p99 duration', () => {
    for (const n of STAGES) {
      const age = find('AWS/Kinesis', 'GetRecords.IteratorAgeMilliseconds', 'StreamName', `\${${streamId(json, STREAM_OF[n])}}`);
      assert.equal(age.length, 1, `${n} iterator age`);
      assert.equal(age[0][4].stat, 'Maximum');
      const fn = `\${${fnLogicalId(json, n)}}`;
      const errors = find('AWS/Lambda', 'Errors', 'FunctionName', fn);
      assert.equal(errors.length, 1, `${n} errors`);
      assert.equal(errors[0][4].stat, 'Sum');
      const duration = find('AWS/Lambda', 'Duration', 'FunctionName', fn);
      assert.equal(duration.length, 1, `${n} duration`);
      assert.equal(duration[0][4].stat, 'p99');
    }
  });

  it('shows the state of every alarm', () => {
    const status = body.widgets.filter((w: any) => w.type === 'alarm');
    assert.equal(status.length, 1);
    const arns = new Set(resourcesOfType(json, 'AWS::CloudWatch::Alarm').map(([id]) => `\${${id}.Arn}`));
    assert.deepEqual(new Set(status[0].properties.alarms), arns);
  });
});

// The search API: created only with context searchJwtIssuer (and searchJwtAudience).
describe('search API (context searchJwtIssuer)', () => {
  const built = build('dev', SEARCH_CONTEXT);
  const { template, json } = built;
  const apiId = logicalIdByPath(json, '/SearchApi/Resource');
  const stageId = logicalIdByPath(json, '/SearchApi/DefaultStage/Resource');
  const searchSecret = { Ref: logicalIdByPath(json, '/SearchDatabaseSecret/Resource') };
  const appSecret = { Ref: logicalIdByPath(json, '/AppDatabaseSecret/Resource') };
  const alarms = resourcesOfType(json, 'AWS::CloudWatch::Alarm').map(([id, a]) => [id, a.Properties!] as const);
  const apiAlarm = (metric: string) => {
    const hits = alarms.filter(([, a]) => a.Namespace === 'AWS/ApiGateway' && a.MetricName === metric);
    assert.equal(hits.length, 1, `one ${metric} alarm`);
    return hits[0];
  };

  it('is not created without searchJwtIssuer: no API, no search function, secret or SEARCH_DATABASE_SECRET_ARN', () => {
    for (const b of [build('dev'), build('prod'), build('dev', { existingDatabase: 'true' })]) {
      for (const type of ['AWS::ApiGatewayV2::Api', 'AWS::ApiGatewayV2::Stage', 'AWS::ApiGatewayV2::Route', 'AWS::ApiGatewayV2::Authorizer']) {
        assert.equal(resourcesOfType(b.json, type).length, 0, type);
      }
      const names = resourcesOfType(b.json, 'AWS::Lambda::Function').map(([, f]) => String(f.Properties!.FunctionName));
      assert.ok(!names.some((n) => n.endsWith('-search')), `${names}`);
      assert.equal(envOf(b.json, 'migrator').SEARCH_DATABASE_SECRET_ARN, undefined);
      assert.equal(b.json.Outputs?.SearchApiUrl, undefined);
      assert.equal(b.stack.search, undefined);
    }
    assert.equal(resourcesOfType(build('dev').json, 'AWS::SecretsManager::Secret').length, 1, 'the application secret only');
  });

  it('routes GET /v1/search, /v1/items/{id}, /v1/items/{id}/similar, /v1/failures and /v1/categories, each behind the JWT authorizer', () => {
    template.resourceCountIs('AWS::ApiGatewayV2::Api', 1);
    template.hasResourceProperties('AWS::ApiGatewayV2::Api', { Name: 'collections-dev-search', ProtocolType: 'HTTP' });
    const authorizers = resourcesOfType(json, 'AWS::ApiGatewayV2::Authorizer');
    assert.equal(authorizers.length, 1);
    const [authId] = authorizers[0];
    const routes = resourcesOfType(json, 'AWS::ApiGatewayV2::Route').map(([, r]) => r.Properties!);
    assert.deepEqual(routes.map((r) => r.RouteKey).sort(), [
      'GET /v1/categories',
      'GET /v1/failures',
      'GET /v1/items/{id}',
      'GET /v1/items/{id}/similar',
      'GET /v1/search',
    ]);
    for (const r of routes) {
      assert.deepEqual(r.ApiId, { Ref: apiId }, r.RouteKey);
      assert.equal(r.AuthorizationType, 'JWT', r.RouteKey);
      assert.deepEqual(r.AuthorizerId, { Ref: authId }, r.RouteKey);
    }
  });

  it('the authorizer checks tokens of the context issuer and audiences, from the Authorization header', () => {
    const [[, auth]] = resourcesOfType(json, 'AWS::ApiGatewayV2::Authorizer');
    assert.deepEqual(auth.Properties, {
      ApiId: { Ref: apiId },
      AuthorizerType: 'JWT',
      Name: 'collections-dev-search-jwt',
      IdentitySource: ['$request.header.Authorization'],
      JwtConfiguration: { Issuer: SEARCH_ISSUER, Audience: ['web-client', 'cli-client'] },
    });
    const other = build('dev', { searchJwtIssuer: 'https://login.example.com/realms/photos', searchJwtAudience: ['photos-api'] }).json;
    const [[, a]] = resourcesOfType(other, 'AWS::ApiGatewayV2::Authorizer');
    assert.deepEqual(a.Properties!.JwtConfiguration, { Issuer: 'https://login.example.com/realms/photos', Audience: ['photos-api'] });
  });

  it('each route reaches the search function through a payload 2.0 Lambda proxy, and API Gateway may invoke it for those routes only', () => {
    const fn = fnLogicalId(json, 'search');
    const integrations = resourcesOfType(json, 'AWS::ApiGatewayV2::Integration').map(([id, r]) => [id, r.Properties!] as const);
    assert.equal(integrations.length, 1);
    const [integrationId, integration] = integrations[0];
    assert.equal(integration.IntegrationType, 'AWS_PROXY');
    assert.equal(integration.PayloadFormatVersion, '2.0');
    assert.deepEqual(integration.IntegrationUri, { 'Fn::GetAtt': [fn, 'Arn'] });
    for (const [, r] of resourcesOfType(json, 'AWS::ApiGatewayV2::Route')) {
      assert.equal(render(r.Properties!.Target), `integrations/\${${integrationId}}`);
    }
    const permissions = resourcesOfType(json, 'AWS::Lambda::Permission').filter(([, p]) => p.Properties!.FunctionName['Fn::GetAtt']?.[0] === fn);
    assert.deepEqual(
      permissions.map(([, p]) => [p.Properties!.Principal, render(p.Properties!.SourceArn)]).sort(),
      SEARCH_ROUTES.map((path) => [
        'apigateway.amazonaws.com',
        `arn:\${AWS::Partition}:execute-api:\${AWS::Region}:\${AWS::AccountId}:\${${apiId}}/*/*${path}`,
      ]).sort(),
    );
  });

  it('$default stage: deployed on every change, throttled at 50 requests/s with bursts of 100 by default, else from context', () => {
    const stages = resourcesOfType(json, 'AWS::ApiGatewayV2::Stage');
    assert.equal(stages.length, 1, 'no other (unthrottled) stage');
    const p = json.Resources[stageId].Properties!;
    assert.equal(p.StageName, '$default');
    assert.equal(p.AutoDeploy, true);
    assert.deepEqual(p.DefaultRouteSettings, { ThrottlingRateLimit: 50, ThrottlingBurstLimit: 100 });
    const custom = build('dev', { ...SEARCH_CONTEXT, searchThrottleRateLimit: '5', searchThrottleBurstLimit: 10 }).json;
    const [[, s]] = resourcesOfType(custom, 'AWS::ApiGatewayV2::Stage');
    assert.deepEqual(s.Properties!.DefaultRouteSettings, { ThrottlingRateLimit: 5, ThrottlingBurstLimit: 10 });
  });

  it('access logs: one JSON object per request (requestId, ip, routeKey, status, latencies) into its own log group, kept as long as the function logs', () => {
    const settings = json.Resources[stageId].Properties!.AccessLogSettings;
    const groupId = logicalIdByPath(json, '/SearchApiAccessLogs/Resource');
    assert.deepEqual(settings.DestinationArn, { 'Fn::GetAtt': [groupId, 'Arn'] });
    const format = JSON.parse(settings.Format);
    assert.deepEqual(
      {
        requestId: format.requestId,
        ip: format.ip,
        routeKey: format.routeKey,
        status: format.status,
        responseLatency: format.responseLatency,
        integrationLatency: format.integrationLatency,
      },
      {
        requestId: '$context.requestId',
        ip: '$context.identity.sourceIp',
        routeKey: '$context.routeKey',
        status: '$context.status',
        responseLatency: '$context.responseLatency',
        integrationLatency: '$context.integrationLatency',
      },
    );
    for (const [env, days] of [['dev', 7], ['test', 30], ['prod', 180]] as const) {
      const b = build(env, SEARCH_CONTEXT).json;
      const group = b.Resources[logicalIdByPath(b, '/SearchApiAccessLogs/Resource')];
      assert.equal(group.Properties!.RetentionInDays, days, env);
      assert.equal(group.Properties!.LogGroupName, `/aws/vendedlogs/apigateway/collections-${env}-search`);
      assert.equal(group.DeletionPolicy, env === 'prod' ? 'Retain' : 'Delete');
    }
  });

  it('the search function: arm64 RustFunction of stages/search, in the private subnets with the functions security group, after the migrations', () => {
    const id = fnLogicalId(json, 'search');
    const p = json.Resources[id].Properties!;
    assert.equal(p.FunctionName, 'collections-dev-search');
    assert.deepEqual(p.Architectures, ['arm64']);
    assert.equal(p.Runtime, 'provided.al2023');
    assert.equal(p.Timeout, FUNCTIONS.search.timeout.toSeconds());
    assert.ok(p.Timeout < 30, 'ends before the HTTP API gives up on it (30 s)');
    assert.equal(p.MemorySize, FUNCTIONS.search.memoryMiB);
    assert.deepEqual(p.TracingConfig, { Mode: 'Active' });
    assert.ok(String(json.Resources[id].Metadata!['aws:asset:path']).endsWith('stages/search'));
    const privateSubnets = resourcesOfType(json, 'AWS::EC2::Subnet')
      .filter(([, s]) => (s.Properties!.Tags as any[]).some((t) => t.Key === 'aws-cdk:subnet-type' && t.Value === 'Private'))
      .map(([sid]) => sid)
      .sort();
    assert.deepEqual(p.VpcConfig.SubnetIds.map((s: any) => s.Ref).sort(), privateSubnets);
    assert.deepEqual(p.VpcConfig.SecurityGroupIds, [{ 'Fn::GetAtt': [logicalIdByPath(json, '/FunctionsSecurityGroup/Resource'), 'GroupId'] }]);
    const [[crId]] = resourcesOfType(json, 'Custom::CollectionsMigrations');
    assert.ok(json.Resources[id].DependsOn?.includes(crId), 'its role exists only once the migrations ran');
    const lg = json.Resources[p.LoggingConfig.LogGroup.Ref].Properties!;
    assert.equal(lg.LogGroupName, '/aws/lambda/collections-dev-search');
  });

  it('environment: the search secret (neither the master nor the application secret), the embedder\'s embedding settings, bucket, claim, URL lifetime', () => {
    const e = envOf(json, 'search');
    assert.deepEqual(e.DATABASE_SECRET_ARN, searchSecret);
    assert.notDeepEqual(e.DATABASE_SECRET_ARN, MASTER_SECRET);
    assert.notDeepEqual(e.DATABASE_SECRET_ARN, appSecret);
    const embedder = envOf(json, 'embedder');
    const { FUNCTION_TIMEOUT_SECS: _t, DATABASE_SECRET_ARN: _s, ...embedderRest } = embedder;
    assert.deepEqual(e, {
      ...embedderRest,
      DATABASE_SECRET_ARN: searchSecret,
      BUCKET_NAME: { Ref: bucketId(json) },
      SEARCH_USER_CLAIM: 'sub',
      SEARCH_URL_TTL_SECS: '900',
      FUNCTION_TIMEOUT_SECS: '29',
      DATABASE_MAX_CONNECTIONS: '2',
      SEARCH_RATE_PER_USER: '5',
      SEARCH_BURST_PER_USER: '20',
    });
    for (const k of ['EMBEDDING_PROVIDER', 'VOYAGE_EMBEDDING_MODEL', 'SSM_PARAMETER_PREFIX', 'DATABASE_HOST', 'DATABASE_PORT', 'DATABASE_NAME']) {
      assert.ok(k in e, k);
    }
    const custom = build('dev', { ...SEARCH_CONTEXT, searchUserClaim: 'cognito:username', embeddingProvider: 'openai', voyageEmbeddingModel: 'voyage-3.5-lite' }).json;
    assert.equal(envOf(custom, 'search').SEARCH_USER_CLAIM, 'cognito:username');
    assert.equal(envOf(custom, 'search').EMBEDDING_PROVIDER, 'openai');
    assert.equal(envOf(custom, 'search').VOYAGE_EMBEDDING_MODEL, 'voyage-3.5-lite');
  });

  it('IAM: GetObject on thumbnails only, nothing written or deleted, only the search secret, its embedding key parameter', () => {
    const p = rolePerms(json, 'search');
    const b = `\${${bucketId(json)}.Arn}`;
    assert.deepEqual(p.get('s3:GetObject'), [`${b}/*/thumbnails/*`]);
    for (const a of p.keys()) {
      assert.ok(!a.startsWith('s3:') || a === 's3:GetObject', `search has ${a}`);
      assert.ok(!a.startsWith('kms:') && !a.startsWith('events:') && !a.startsWith('kinesis:') && !a.startsWith('sqs:'), `search has ${a}`);
    }
    assert.deepEqual(p.get('secretsmanager:GetSecretValue'), [render(searchSecret)]);
    const statements = roleStatements(json, functionRoleId(json, fnLogicalId(json, 'search')));
    assert.deepEqual(statements.filter((st) => readsSecret(st, MASTER_SECRET)), [], 'master');
    assert.deepEqual(statements.filter((st) => readsSecret(st, appSecret)), [], 'application');
    assert.deepEqual(p.get('ssm:GetParameter'), [parameterArn('dev', 'VOYAGE_API_KEY')], 'its embedding key only');
    const lg = json.Resources[fnLogicalId(json, 'search')].Properties!.LoggingConfig.LogGroup.Ref;
    assert.deepEqual(p.get('logs:PutLogEvents'), [`\${${lg}.Arn}`]);
    const roles = [...STAGES, 'migrator', 'search'].map((n) => functionRoleId(json, fnLogicalId(json, n)));
    assert.equal(new Set(roles).size, 5, 'a role of its own');
  });

  it('the read-only role\'s secret collections-<env>/database/search: collections_search, attached to the instance, rotated every 30 days after the migrations', () => {
    const id = searchSecret.Ref;
    const p = json.Resources[id].Properties!;
    assert.equal(p.Name, 'collections-dev/database/search');
    assert.deepEqual(JSON.parse(p.GenerateSecretString.SecretStringTemplate), { username: 'collections_search' });
    assert.equal(p.GenerateSecretString.ExcludeCharacters, json.Resources[appSecret.Ref].Properties!.GenerateSecretString.ExcludeCharacters);
    assert.equal(p.KmsKeyId, undefined);
    const att = resourcesOfType(json, 'AWS::SecretsManager::SecretTargetAttachment').find(([, a]) => a.Properties!.SecretId.Ref === id);
    assert.ok(att);
    assert.deepEqual(att[1].Properties!.TargetId, { Ref: 'Database' });
    const rot = resourcesOfType(json, 'AWS::SecretsManager::RotationSchedule').find(([, r]) => r.Properties!.SecretId.Ref === id);
    assert.ok(rot);
    const [, r] = rot;
    assert.deepEqual(r.Properties!.RotationRules, { ScheduleExpression: 'rate(30 days)' });
    assert.equal(r.Properties!.HostedRotationLambda.RotationType, 'PostgreSQLSingleUser');
    assert.equal(r.Properties!.HostedRotationLambda.RotationLambdaName, 'collections-dev-search-secret-rotation');
    assert.equal(r.Properties!.HostedRotationLambda.MasterSecretArn, undefined);
    const [[crId, cr]] = resourcesOfType(json, 'Custom::CollectionsMigrations');
    assert.ok(r.DependsOn?.includes(crId), 'the role must exist before the first rotation');
    assert.ok(cr.DependsOn?.includes(att[0]), 'the migrator reads the secret once the attachment completed it');
    assert.deepEqual(json.Outputs?.SearchDatabaseSecretArn.Value, searchSecret);
  });

  it('the migrator gets SEARCH_DATABASE_SECRET_ARN and may read it (it creates the role, SELECT only)', () => {
    const e = envOf(json, 'migrator');
    assert.deepEqual(e.SEARCH_DATABASE_SECRET_ARN, searchSecret);
    assert.deepEqual(e.DATABASE_SECRET_ARN, MASTER_SECRET);
    assert.deepEqual(e.APP_DATABASE_SECRET_ARN, appSecret);
    const statements = roleStatements(json, functionRoleId(json, fnLogicalId(json, 'migrator')));
    assert.ok(statements.some((st) => readsSecret(st, searchSecret)));
    assert.deepEqual(rolePerms(json, 'migrator').get('secretsmanager:GetSecretValue'), [
      '${Database.MasterUserSecret.SecretArn}',
      render(appSecret),
      render(searchSecret),
    ]);
  });

  it('limits: reserved concurrency 10, a pool of 2 connections an instance, a per-user bucket of 5 requests/s with bursts of 20', () => {
    const p = json.Resources[fnLogicalId(json, 'search')].Properties!;
    assert.equal(p.ReservedConcurrentExecutions, 10);
    const e = envOf(json, 'search');
    assert.equal(e.DATABASE_MAX_CONNECTIONS, '2');
    assert.equal(e.SEARCH_RATE_PER_USER, '5');
    assert.equal(e.SEARCH_BURST_PER_USER, '20');
    // At most 20 connections for the API, well within a db.t4g.micro's, shared with the stages.
    assert.ok(p.ReservedConcurrentExecutions * Number(e.DATABASE_MAX_CONNECTIONS) <= 20);
    // The pipeline functions keep the account's pool and the Rust default pool size.
    for (const n of ALL) {
      assert.equal(json.Resources[fnLogicalId(json, n)].Properties!.ReservedConcurrentExecutions, undefined, n);
      assert.equal(envOf(json, n).DATABASE_MAX_CONNECTIONS, undefined, n);
      assert.equal(envOf(json, n).SEARCH_RATE_PER_USER, undefined, n);
    }
  });

  it('limits from context: searchReservedConcurrency, searchRatePerUser, searchBurstPerUser; invalid values refused at synth', () => {
    const custom = build('prod', { ...SEARCH_CONTEXT, searchReservedConcurrency: '25', searchRatePerUser: 2, searchBurstPerUser: '8' }).json;
    assert.equal(custom.Resources[fnLogicalId(custom, 'search')].Properties!.ReservedConcurrentExecutions, 25);
    assert.equal(envOf(custom, 'search').SEARCH_RATE_PER_USER, '2');
    assert.equal(envOf(custom, 'search').SEARCH_BURST_PER_USER, '8');
    assert.equal(envOf(custom, 'search').DATABASE_MAX_CONNECTIONS, '2');
    assert.throws(() => build('dev', { ...SEARCH_CONTEXT, searchReservedConcurrency: '0' }, { noCache: true }), /context searchReservedConcurrency/);
    assert.throws(() => build('dev', { ...SEARCH_CONTEXT, searchRatePerUser: '1.5' }, { noCache: true }), /context searchRatePerUser/);
    assert.throws(() => build('dev', { ...SEARCH_CONTEXT, searchBurstPerUser: '-1' }, { noCache: true }), /context searchBurstPerUser/);
  });

  it('alarms: 5xx of the stage (Sum within 5 min >= 5) and its p95 Latency (>= 1000 ms for 15 min), to the alarm topic', () => {
    const topic = { Ref: logicalIdByPath(json, '/AlarmTopic/Resource') };
    const dims = [
      { Name: 'ApiId', Value: { Ref: apiId } },
      { Name: 'Stage', Value: '$default' },
    ];
    const [, errors] = apiAlarm('5xx');
    assert.equal(errors.AlarmName, 'collections-dev-search-api-5xx');
    assert.deepEqual(errors.Dimensions, dims);
    assert.equal(errors.Statistic, 'Sum');
    assert.equal(errors.Period, 300);
    assert.equal(errors.Threshold, 5);
    assert.equal(errors.ComparisonOperator, 'GreaterThanOrEqualToThreshold');
    const [, latency] = apiAlarm('Latency');
    assert.equal(latency.AlarmName, 'collections-dev-search-api-latency');
    assert.deepEqual(latency.Dimensions, dims);
    assert.equal(latency.ExtendedStatistic, 'p95');
    assert.equal(latency.Threshold, 1000);
    assert.equal(latency.EvaluationPeriods, 3);
    assert.equal(latency.DatapointsToAlarm, 3);
    for (const a of [errors, latency]) {
      assert.deepEqual(a.AlarmActions, [topic], a.AlarmName);
      assert.deepEqual(a.OKActions, [topic], a.AlarmName);
      assert.equal(a.TreatMissingData, 'notBreaching');
    }
    // And the function's own Errors, Throttles and Duration, as every function.
    const fn = fnLogicalId(json, 'search');
    for (const m of ['Errors', 'Throttles', 'Duration']) {
      assert.equal(alarms.filter(([, a]) => a.MetricName === m && a.Dimensions?.[0]?.Value?.Ref === fn).length, 1, m);
    }
    assert.equal(alarms.length, 4 * 3 + 3 + 7 + 3 * 2 + 3 + 2);
  });

  it('alarm thresholds come from context', () => {
    const custom = build('dev', { ...SEARCH_CONTEXT, searchLatencyAlarmMs: '2500', searchServerErrorAlarmThreshold: 1 }).json;
    const get = (metric: string) =>
      resourcesOfType(custom, 'AWS::CloudWatch::Alarm').find(([, a]) => a.Properties!.Namespace === 'AWS/ApiGateway' && a.Properties!.MetricName === metric)![1]
        .Properties!;
    assert.equal(get('Latency').Threshold, 2500);
    assert.equal(get('5xx').Threshold, 1);
  });

  it('the dashboard shows both alarms, the API\'s requests, errors and latency, and the function', () => {
    const body = dashboardBody(json, 'collections-dev');
    const status = body.widgets.find((w: any) => w.type === 'alarm');
    for (const metric of ['5xx', 'Latency']) assert.ok(status.properties.alarms.includes(`\${${apiAlarm(metric)[0]}.Arn}`), metric);
    const metrics = dashboardMetrics(body);
    const onStage = (name: string) =>
      metrics.filter((m) => m[0] === 'AWS/ApiGateway' && m[1] === name && m[2] === 'ApiId' && m[3] === `\${${apiId}}` && m[4] === 'Stage' && m[5] === '$default');
    for (const m of ['Count', '4xx', '5xx', 'Latency', 'IntegrationLatency']) assert.equal(onStage(m).length, 1, m);
    assert.equal(onStage('Latency')[0][6].stat, 'p95');
    const fn = `\${${fnLogicalId(json, 'search')}}`;
    assert.equal(metrics.filter((m) => m[0] === 'AWS/Lambda' && m[1] === 'Errors' && m[3] === fn).length, 1);
  });

  it('outputs SearchApiUrl, the API\'s endpoint without a trailing slash (the $default stage serves at its root)', () => {
    assert.deepEqual(json.Outputs?.SearchApiUrl.Value, { 'Fn::GetAtt': [apiId, 'ApiEndpoint'] });
  });

  it('refuses an issuer without audience, a non-https issuer, an audience without issuer', () => {
    assert.throws(() => build('dev', { searchJwtIssuer: SEARCH_ISSUER }, { noCache: true }), /searchJwtAudience: required with searchJwtIssuer/);
    assert.throws(() => build('dev', { ...SEARCH_CONTEXT, searchJwtIssuer: 'http://issuer.example.com' }, { noCache: true }), /searchJwtIssuer/);
    assert.throws(() => build('dev', { searchJwtAudience: 'web' }, { noCache: true }), /searchJwtAudience: only used with searchJwtIssuer/);
  });

  describe('existing database (context searchDatabaseSecretArn)', () => {
    const ex = build('dev', { ...SEARCH_CONTEXT, existingDatabase: 'true', searchDatabaseSecretArn: SEARCH_SECRET_ARN }).json;
    const urlArn = parameterArn('dev', 'DATABASE_URL');

    it('the search function runs outside a VPC and connects with that secret, never the owner\'s URL', () => {
      const p = ex.Resources[fnLogicalId(ex, 'search')].Properties!;
      assert.equal(p.VpcConfig, undefined);
      const e = envOf(ex, 'search');
      assert.equal(e.DATABASE_SECRET_ARN, SEARCH_SECRET_ARN);
      assert.equal(e.DATABASE_URL_PARAMETER, undefined);
      assert.deepEqual(rolePerms(ex, 'search').get('secretsmanager:GetSecretValue'), [SEARCH_SECRET_ARN]);
      const deny = roleStatements(ex, functionRoleId(ex, fnLogicalId(ex, 'search'))).filter(
        (st) => st.Effect === 'Deny' && actionsOf(st).includes('ssm:GetParameter'),
      );
      assert.deepEqual(deny.flatMap((st) => resourcesOf(st).map(render)), [urlArn]);
      resourcesOfType(ex, 'AWS::SecretsManager::Secret').forEach(([id]) => assert.fail(`creates secret ${id}`));
    });

    it('the migrator keeps the URL and gets SEARCH_DATABASE_SECRET_ARN; the stages keep the URL', () => {
      const e = envOf(ex, 'migrator');
      assert.equal(e.DATABASE_URL_PARAMETER, '/collections/dev/DATABASE_URL');
      assert.equal(e.SEARCH_DATABASE_SECRET_ARN, SEARCH_SECRET_ARN);
      assert.equal(e.APP_DATABASE_SECRET_ARN, undefined);
      assert.deepEqual(rolePerms(ex, 'migrator').get('secretsmanager:GetSecretValue'), [SEARCH_SECRET_ARN]);
      for (const n of STAGES) assert.equal(envOf(ex, n).DATABASE_URL_PARAMETER, '/collections/dev/DATABASE_URL', n);
      const both = build('test', {
        ...SEARCH_CONTEXT,
        existingDatabase: 'true',
        searchDatabaseSecretArn: SEARCH_SECRET_ARN,
        appDatabaseSecretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:collections/app-AbC123',
      }).json;
      assert.deepEqual(rolePerms(both, 'migrator').get('secretsmanager:GetSecretValue'), [
        'arn:aws:secretsmanager:us-east-1:123456789012:secret:collections/app-AbC123',
        SEARCH_SECRET_ARN,
      ]);
    });

    it('is refused without that secret', () => {
      assert.throws(
        () => build('dev', { ...SEARCH_CONTEXT, existingDatabase: 'true' }, { noCache: true }),
        /searchDatabaseSecretArn: required with searchJwtIssuer and existingDatabase=true/,
      );
    });
  });
});

describe('the master secret is the migrator\'s alone, with the search API too', () => {
  for (const env of ['dev', 'test', 'prod']) {
    it(`${env}: no role but the migrator's may read it`, () => {
      const { json } = build(env, SEARCH_CONTEXT);
      const migratorRole = functionRoleId(json, fnLogicalId(json, 'migrator'));
      const readers = resourcesOfType(json, 'AWS::IAM::Role')
        .map(([id]) => id)
        .filter((id) => roleStatements(json, id).some((st) => readsSecret(st, MASTER_SECRET)));
      assert.deepEqual(readers, [migratorRole]);
    });
  }
});
