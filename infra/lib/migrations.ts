// The SQL migrations on deploy: their fingerprint (taken at synth time) and
// the CloudFormation custom resource that runs the migrator whenever they,
// or the embedding models, change.

import { CustomResource, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as cr from 'aws-cdk-lib/custom-resources';
import { IConstruct } from 'constructs';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { acknowledge } from './acknowledgements';
import { CollectionsConfig, dataRemovalPolicy } from './config';
import type { Database } from './database';

export interface MigrationsFingerprint {
  /** sha256 over every migrations/*.sql file name and content, in name order. */
  readonly hash: string;
  readonly files: string[];
}

/**
 * Fingerprints the SQL migrations at synth time. The migrations custom
 * resource carries the hash as a property, so CloudFormation sends it an
 * Update (and the migrator runs) whenever a migration is added or changed.
 */
export function fingerprintMigrations(repoRoot: string): MigrationsFingerprint {
  const dir = join(repoRoot, 'migrations');
  if (!existsSync(dir)) {
    throw new Error(`no migrations folder at ${dir}: the migrations custom resource needs it`);
  }
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.sql'))
    .sort();
  if (files.length === 0) {
    throw new Error(`no *.sql files in ${dir}`);
  }
  const h = createHash('sha256');
  for (const f of files) {
    const body = readFileSync(join(dir, f));
    // Length-prefix name and body so that no two different sets hash alike.
    h.update(`${f.length}:${f}\n${body.length}:`);
    h.update(body);
    h.update('\n');
  }
  return { hash: h.digest('hex'), files };
}

export interface MigrationsProps {
  readonly config: CollectionsConfig;
  /** The repository root: the migrations are migrations/*.sql under it. */
  readonly repoRoot: string;
  /** The function that runs them (the custom resource's handler). */
  readonly migrator: lambda.IFunction;
  /**
   * The embedding settings of the migrator's environment; the resource
   * carries them, so that a change of model runs the migrator (which
   * registers the model and builds its index) before the functions that use
   * the model roll out.
   */
  readonly embeddingModels: Record<string, string>;
  /** The database: what must exist before the migrator can reach it, what must wait for the migrations. */
  readonly database: Pick<Database, 'readiness' | 'afterMigrations'>;
  /** The functions to roll out after the migrations: the stage and search functions. */
  readonly functions: IConstruct[];
}

/** The custom resource Custom::CollectionsMigrations (CDK Provider framework → the migrator) in `stack`. */
export function createMigrations(stack: Stack, props: MigrationsProps): CustomResource {
  const { config: cfg, migrator } = props;
  const migrations = fingerprintMigrations(props.repoRoot);

  const providerLogs = new logs.LogGroup(stack, 'MigrationsProviderLogGroup', {
    retention: cfg.logRetention,
    removalPolicy: dataRemovalPolicy(cfg),
  });
  const providerRole = new iam.Role(stack, 'MigrationsProviderRole', {
    assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
    description: `collections ${cfg.envName}: CloudFormation custom-resource framework for the migrations`,
    inlinePolicies: {
      runtime: new iam.PolicyDocument({
        statements: [
          new iam.PolicyStatement({
            sid: 'WriteOwnLogs',
            actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
            resources: [providerLogs.logGroupArn],
          }),
        ],
      }),
    },
  });
  const provider = new cr.Provider(stack, 'MigrationsProvider', {
    onEventHandler: migrator,
    logGroup: providerLogs,
    frameworkOnEventRole: providerRole,
  });
  acknowledge(
    providerRole,
    `AwsSolutions-IAM5[Resource::<${stack.getLogicalId(migrator.node.defaultChild as lambda.CfnFunction)}.Arn>:*]`,
    'Granted by the CDK Provider framework: invoke the migrator function and its versions/aliases (ARN:*); scoped to that one function.',
  );

  const resource = new CustomResource(stack, 'Migrations', {
    serviceToken: provider.serviceToken,
    resourceType: 'Custom::CollectionsMigrations',
    properties: {
      // Changes whenever a migration file is added or edited → Update → migrator runs.
      MigrationsHash: migrations.hash,
      MigrationCount: migrations.files.length,
      LatestMigration: migrations.files[migrations.files.length - 1],
      // Changes with the embedding model (active or re-embedding) → Update → migrator runs.
      EmbeddingModels: props.embeddingModels,
    },
  });
  // The migrator must reach PostgreSQL: wait for the security-group rules
  // (separate resources, since the two groups reference each other), not
  // just for the instance.
  for (const c of props.database.readiness) resource.node.addDependency(c);
  // The rotation logs in as the role the migrator creates.
  for (const c of props.database.afterMigrations) c.node.addDependency(resource);

  // Migrate first, then roll out stage and search code that may rely on the
  // new schema (on create this also keeps the event sources off until the
  // schema exists, and the search function until its role does).
  for (const fn of props.functions) fn.node.addDependency(resource);
  return resource;
}
