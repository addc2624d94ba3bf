// Shared test helpers: build the app offline (no AWS credentials, no Lambda
// bundling) with the same context as `cdk synth` (cdk.json), and small
// readers over the synthesized template.

import { Template } from 'aws-cdk-lib/assertions';
import * as cxapi from 'aws-cdk-lib/cx-api';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { buildApp, BuildResult, defaultRepoRoot } from '../lib/app';

/** infra/ (this file runs from infra/dist/test/). */
export const INFRA_DIR = resolve(__dirname, '..', '..');
export const REPO_ROOT = defaultRepoRoot();

const CDK_JSON_CONTEXT: Record<string, unknown> = JSON.parse(readFileSync(join(INFRA_DIR, 'cdk.json'), 'utf8')).context;

export type Ctx = Record<string, unknown>;

/**
 * Context as the CLI gives it (cdk.json, construct-path and asset metadata on),
 * plus bundling skipped for every stack.
 */
export function contextFor(env: string, extra: Ctx = {}): Ctx {
  return {
    ...CDK_JSON_CONTEXT,
    [cxapi.PATH_METADATA_ENABLE_CONTEXT]: true,
    [cxapi.ASSET_RESOURCE_METADATA_ENABLED_CONTEXT]: true,
    env,
    [cxapi.BUNDLING_STACKS]: [],
    ...extra,
  };
}

export interface Built extends BuildResult {
  readonly template: Template;
  readonly json: CfnTemplate;
}

const cache = new Map<string, Built>();

/** Builds (once per distinct context) the app for an environment and returns its template. */
export function build(env: string, extra: Ctx = {}, opts: { outdir?: string; noCache?: boolean } = {}): Built {
  const key = JSON.stringify([env, extra, opts.outdir ?? '']);
  const hit = opts.noCache ? undefined : cache.get(key);
  if (hit) return hit;
  const result = buildApp({ context: contextFor(env, extra), outdir: opts.outdir }, REPO_ROOT);
  const template = Template.fromStack(result.stack);
  const built = { ...result, template, json: template.toJSON() as CfnTemplate };
  if (!opts.noCache) cache.set(key, built);
  return built;
}

export interface CfnResource {
  Type: string;
  Properties?: Record<string, any>;
  DependsOn?: string[];
  DeletionPolicy?: string;
  UpdateReplacePolicy?: string;
  Metadata?: Record<string, any>;
}
export interface CfnTemplate {
  Resources: Record<string, CfnResource>;
  Outputs?: Record<string, any>;
}

export function resourcesOfType(t: CfnTemplate, type: string): Array<[string, CfnResource]> {
  return Object.entries(t.Resources).filter(([, r]) => r.Type === type);
}

/** The logical id of the one resource whose construct path ends with `pathSuffix`. */
export function logicalIdByPath(t: CfnTemplate, pathSuffix: string): string {
  const hits = Object.entries(t.Resources).filter(([, r]) => {
    const p: string | undefined = r.Metadata?.['aws:cdk:path'];
    return p !== undefined && p.endsWith(pathSuffix);
  });
  if (hits.length !== 1) {
    throw new Error(`expected one resource at *${pathSuffix}, found ${hits.map(([id]) => id).join(', ') || 'none'}`);
  }
  return hits[0][0];
}

export function fnLogicalId(t: CfnTemplate, name: string): string {
  const id = name.charAt(0).toUpperCase() + name.slice(1);
  return logicalIdByPath(t, `/${id}/Resource`);
}

export interface Statement {
  Effect: string;
  Action: string | string[];
  Resource: unknown;
  Condition?: Record<string, any>;
  Sid?: string;
}

export function actionsOf(s: Statement): string[] {
  return Array.isArray(s.Action) ? s.Action : [s.Action];
}

export function resourcesOf(s: Statement): unknown[] {
  return Array.isArray(s.Resource) ? s.Resource : [s.Resource];
}

/** Every statement that applies to a role: its inline policies plus AWS::IAM::Policy resources attached to it. */
export function roleStatements(t: CfnTemplate, roleLogicalId: string): Statement[] {
  const role = t.Resources[roleLogicalId];
  if (!role || role.Type !== 'AWS::IAM::Role') throw new Error(`${roleLogicalId} is not a role`);
  const out: Statement[] = [];
  for (const p of role.Properties?.Policies ?? []) out.push(...p.PolicyDocument.Statement);
  for (const [, r] of resourcesOfType(t, 'AWS::IAM::Policy')) {
    const roles: any[] = r.Properties?.Roles ?? [];
    if (roles.some((x) => x?.Ref === roleLogicalId)) out.push(...r.Properties!.PolicyDocument.Statement);
  }
  return out;
}

export function functionRoleId(t: CfnTemplate, fnId: string): string {
  const role = t.Resources[fnId].Properties!.Role;
  const id = role?.['Fn::GetAtt']?.[0];
  if (!id) throw new Error(`function ${fnId} has no role reference`);
  return id;
}

/** All actions a role is allowed, each with the resources it is allowed on. */
export function allowed(t: CfnTemplate, roleId: string): Map<string, unknown[]> {
  const m = new Map<string, unknown[]>();
  for (const s of roleStatements(t, roleId)) {
    if (s.Effect !== 'Allow') continue;
    for (const a of actionsOf(s)) m.set(a, [...(m.get(a) ?? []), ...resourcesOf(s)]);
  }
  return m;
}

/** Renders an intrinsic (Fn::Join / Ref / GetAtt) into a readable string for comparisons. */
export function render(v: unknown): string {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object') {
    const o = v as Record<string, any>;
    if ('Ref' in o) return `\${${o.Ref}}`;
    if ('Fn::GetAtt' in o) return `\${${o['Fn::GetAtt'].join('.')}}`;
    if ('Fn::Join' in o) return (o['Fn::Join'][1] as unknown[]).map(render).join(o['Fn::Join'][0]);
    if ('Fn::Sub' in o) return String(o['Fn::Sub']);
  }
  return JSON.stringify(v);
}

/** Context that turns the search API on (an issuer and two audiences). */
export const SEARCH_ISSUER = 'https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example';
export const SEARCH_CONTEXT: Ctx = { searchJwtIssuer: SEARCH_ISSUER, searchJwtAudience: 'web-client,cli-client' };
/** An operator's secret for the read-only role, for existing-database mode. */
export const SEARCH_SECRET_ARN = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:collections/search-AbC123';

export function manifestPath(crate: string): string {
  return join(REPO_ROOT, 'stages', crate, 'Cargo.toml');
}

export function missingManifests(): string[] {
  return ['thumbnailer', 'analyzer', 'embedder', 'migrator', 'search'].map(manifestPath).filter((p) => !existsSync(p));
}
