// The Lambda functions: which binaries there are (FUNCTIONS), how one is made
// (RustFunctionFactory: its log group, least-privilege role, database access,
// RDS CA layer, VPC placement), and the four pipeline functions with their
// environment and permissions. Their Kinesis triggers are in streams.ts, the
// search function in search-api.ts.

import { Duration, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as events from 'aws-cdk-lib/aws-events';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { RustFunction } from 'cargo-lambda-cdk';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

import { acknowledge } from './acknowledgements';
import {
  ApiKeyName,
  CollectionsConfig,
  dataRemovalPolicy,
  embeddingProviderKeys,
  ssmParameterName,
  ssmParameterPrefix,
  visionProviderKeys,
} from './config';
import { ANALYSIS_COMPLETE, IMAGE_PROCESSED } from './contracts';
import { Database } from './database';
import { RDS_CA_FILE } from './rds-ca';
import { THUMBNAILS_WILDCARD } from './storage';

/** The Lambda binaries (crate = folder under stages/ = [[bin]] name). */
export const FUNCTIONS = {
  thumbnailer: { crate: 'thumbnailer', memoryMiB: 1024, timeout: Duration.seconds(60) },
  analyzer: { crate: 'analyzer', memoryMiB: 1024, timeout: Duration.seconds(300) },
  embedder: { crate: 'embedder', memoryMiB: 512, timeout: Duration.seconds(60) },
  migrator: { crate: 'migrator', memoryMiB: 512, timeout: Duration.seconds(300) },
  // Under the 30 s an HTTP API waits for its integration, so the function
  // ends (and logs why) before API Gateway gives up on it.
  search: { crate: 'search', memoryMiB: 512, timeout: Duration.seconds(29) },
} as const;
export type FunctionName = keyof typeof FUNCTIONS;
/** The functions every stack has; `search` comes with the search API only. */
export type PipelineFunctionName = Exclude<FunctionName, 'search'>;

/** What a function may have beside its environment. */
export interface FunctionOptions {
  /**
   * Reserved concurrency: at most this many instances at once (and as many
   * kept from the account's pool). Undefined: none, the account's pool.
   */
  readonly reservedConcurrentExecutions?: number;
}

export interface RustFunctionFactoryProps {
  readonly config: CollectionsConfig;
  /** The repository root: the crates are stages/<crate>/ under it. */
  readonly repoRoot: string;
  /** How each kind of function reaches the database, and the VPC if any. */
  readonly database: Database;
  /** The RDS CA bundle (rds-ca.ts): every function here connects to the database. */
  readonly rdsCaLayer: lambda.ILayerVersion;
}

/** Makes the functions of FUNCTIONS in a stack, each with its own log group and role. */
export class RustFunctionFactory {
  private readonly stack: Stack;
  private readonly props: RustFunctionFactoryProps;

  constructor(stack: Stack, props: RustFunctionFactoryProps) {
    this.stack = stack;
    this.props = props;
  }

  /**
   * The function collections-<env>-<name>: arm64, X-Ray tracing, the
   * database access of its kind, `environment` on top. Further permissions
   * are the caller's to add.
   */
  create(name: FunctionName, environment: Record<string, string>, options: FunctionOptions = {}): RustFunction {
    const { config: cfg, database: db } = this.props;
    const spec = FUNCTIONS[name];
    const id = name.charAt(0).toUpperCase() + name.slice(1);
    const functionName = `collections-${cfg.envName}-${name}`;
    const logGroup = new logs.LogGroup(this.stack, `${id}LogGroup`, {
      logGroupName: `/aws/lambda/${functionName}`,
      retention: cfg.logRetention,
      removalPolicy: dataRemovalPolicy(cfg),
    });

    // Its own role: logs to its own group; ENI management when in the VPC;
    // the rest is added by the caller and by the event-source grants.
    const statements = [
      new iam.PolicyStatement({
        sid: 'WriteOwnLogs',
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [logGroup.logGroupArn],
      }),
    ];
    if (db.vpc) {
      statements.push(
        new iam.PolicyStatement({
          sid: 'ManageVpcNetworkInterfaces',
          // The actions of the AWSLambdaVPCAccessExecutionRole managed policy.
          actions: [
            'ec2:CreateNetworkInterface',
            'ec2:DescribeNetworkInterfaces',
            'ec2:DescribeSubnets',
            'ec2:DeleteNetworkInterface',
            'ec2:AssignPrivateIpAddresses',
            'ec2:UnassignPrivateIpAddresses',
          ],
          resources: ['*'],
        }),
      );
    }
    const role = new iam.Role(this.stack, `${id}Role`, {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `collections ${cfg.envName} ${name} function`,
      // Inline on the role (not a separate policy) so that the permissions
      // exist before CloudFormation creates the function in the VPC.
      inlinePolicies: { runtime: new iam.PolicyDocument({ statements }) },
    });
    const access = name === 'migrator' ? db.migrator : name === 'search' ? db.search : db.stage;
    if (access === undefined) throw new Error(`no database access for the ${name} function`);
    access.grantRead(role);
    if (db.vpc) {
      acknowledge(
        role,
        'AwsSolutions-IAM5[Resource::*]',
        'Lambda creates and deletes its VPC network interfaces and writes X-Ray segments; EC2 ENI actions (as in AWSLambdaVPCAccessExecutionRole) and xray:PutTraceSegments/PutTelemetryRecords support no resource-level scoping.',
      );
    } else {
      acknowledge(
        role,
        'AwsSolutions-IAM5[Resource::*]',
        'X-Ray active tracing: xray:PutTraceSegments and xray:PutTelemetryRecords support no resource-level scoping.',
      );
    }

    return new RustFunction(this.stack, id, {
      functionName,
      description: `collections ${name} (Rust, cargo-lambda)`,
      manifestPath: join(this.props.repoRoot, 'stages', spec.crate, 'Cargo.toml'),
      binaryName: spec.crate,
      architecture: lambda.Architecture.ARM_64,
      memorySize: spec.memoryMiB,
      timeout: spec.timeout,
      tracing: lambda.Tracing.ACTIVE,
      reservedConcurrentExecutions: options.reservedConcurrentExecutions,
      logGroup,
      role,
      // Every function here connects to the database: the RDS CA bundle, with
      // which it verifies the server's certificate and host name.
      layers: [this.props.rdsCaLayer],
      environment: {
        ...access.environment,
        DATABASE_CA_FILE: RDS_CA_FILE,
        ...environment,
        // The stage and search functions' fallback when the runtime's deadline is missing or absurd.
        ...(name !== 'migrator' ? { FUNCTION_TIMEOUT_SECS: String(spec.timeout.toSeconds()) } : {}),
        RUST_LOG: cfg.rustLog,
      },
      ...(db.vpc
        ? {
            vpc: db.vpc,
            vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
            securityGroups: [db.securityGroup!],
          }
        : {}),
    });
  }
}

export interface PipelineFunctionsProps {
  readonly config: CollectionsConfig;
  readonly factory: RustFunctionFactory;
  /** The images bucket: originals in, thumbnails out. */
  readonly bucket: s3.Bucket;
  /** This environment's bus, where the stages put their events. */
  readonly bus: events.IEventBus;
}

export interface PipelineFunctions {
  readonly functions: Record<PipelineFunctionName, RustFunction>;
  /**
   * The embedding settings of the migrator's environment (active and
   * re-embedding model): the migrations resource carries them too.
   */
  readonly embeddingModels: Record<string, string>;
}

/** The thumbnailer, analyzer, embedder and migrator, with their environment and permissions. */
export function createPipelineFunctions(stack: Stack, props: PipelineFunctionsProps): PipelineFunctions {
  const { config: cfg, factory, bucket, bus } = props;
  const putEvents = (source: string) =>
    new iam.PolicyStatement({
      sid: 'PutPipelineEventsOnTheEnvironmentBus',
      actions: ['events:PutEvents'],
      resources: [bus.eventBusArn],
      // Only the stage's own event source (the seed's contract).
      conditions: { StringEquals: { 'events:source': source } },
    });

  const thumbnailer = factory.create('thumbnailer', {
    BUCKET_NAME: bucket.bucketName,
    EVENT_BUS_NAME: bus.eventBusName,
  });
  thumbnailer.role!.addToPrincipalPolicy(
    new iam.PolicyStatement({
      sid: 'ReadOriginals',
      actions: ['s3:GetObject'],
      resources: [bucket.arnForObjects('*')],
    }),
  );
  // A wildcard that is the point of the statement.
  acknowledge(
    thumbnailer.role!,
    `AwsSolutions-IAM5[Resource::<${stack.getLogicalId(bucket.node.defaultChild as s3.CfnBucket)}.Arn>/*]`,
    'The thumbnailer reads any original the uploads rule forwards; originals live under every user prefix ({user}/...), so the key is a wildcard. Writes are limited to */thumbnails/* keys.',
  );
  thumbnailer.role!.addToPrincipalPolicy(
    new iam.PolicyStatement({
      sid: 'WriteThumbnails',
      // DeleteObject: an original's deletion removes its thumbnail.
      actions: ['s3:PutObject', 's3:PutObjectTagging', 's3:DeleteObject'],
      resources: [bucket.arnForObjects(THUMBNAILS_WILDCARD)],
    }),
  );
  acknowledgeThumbnailsWildcard(thumbnailer, bucket);
  thumbnailer.role!.addToPrincipalPolicy(
    new iam.PolicyStatement({
      sid: 'ConfirmDeletions',
      // A deletion is acted on only once HeadObject says the original is
      // gone; without s3:ListBucket S3 answers 403, not 404, for a missing
      // key, and "gone" could not be told from "not allowed".
      actions: ['s3:ListBucket'],
      resources: [bucket.bucketArn],
    }),
  );
  thumbnailer.role!.addToPrincipalPolicy(putEvents(IMAGE_PROCESSED.source));

  const analyzerEnv: Record<string, string> = {
    BUCKET_NAME: bucket.bucketName,
    EVENT_BUS_NAME: bus.eventBusName,
    ANALYZER_PROVIDER: cfg.analyzerProvider,
    ANALYZER_CONCURRENCY: String(cfg.analyzerConcurrency),
    SSM_PARAMETER_PREFIX: ssmParameterPrefix(cfg.envName),
  };
  if (cfg.analyzerModel) analyzerEnv.ANALYZER_MODEL = cfg.analyzerModel;
  const analyzer = factory.create('analyzer', analyzerEnv);
  grantReadThumbnails(analyzer, bucket);
  analyzer.role!.addToPrincipalPolicy(putEvents(ANALYSIS_COMPLETE.source));
  grantReadApiKeys(analyzer, cfg, visionProviderKeys(cfg.analyzerProvider));

  // The second model of a model change: the embedder embeds re-embedding
  // records with it, the migrator registers and indexes it; the search
  // function keeps to the active model.
  const reembedModel = reembedEnvironment(cfg);
  const embedder = factory.create('embedder', { ...embeddingEnvironment(cfg), ...reembedModel });
  grantReadApiKeys(embedder, cfg, [
    ...embeddingProviderKeys(cfg.embeddingProvider),
    ...(cfg.reembed === undefined ? [] : embeddingProviderKeys(cfg.reembed.provider)),
  ]);

  // No SSM_PARAMETER_PREFIX and no API-key access: the migrator never
  // calls a provider, so it reads no API key.
  const embeddingModels = { ...embeddingModelEnvironment(cfg), ...reembedModel };
  const migrator = factory.create('migrator', embeddingModels);

  return { functions: { thumbnailer, analyzer, embedder, migrator }, embeddingModels };
}

/**
 * The active embedding model's environment: provider, model (the variable the
 * provider reads; OPENAI_EMBEDDING_MODEL only when given, else the provider's
 * default) and the vectors' length. The embedder embeds with it, the search
 * function its queries; the migrator registers it and builds its vector index.
 */
function embeddingModelEnvironment(cfg: CollectionsConfig): Record<string, string> {
  return {
    EMBEDDING_PROVIDER: cfg.embeddingProvider,
    VOYAGE_EMBEDDING_MODEL: cfg.voyageEmbeddingModel,
    ...(cfg.openaiEmbeddingModel === undefined ? {} : { OPENAI_EMBEDDING_MODEL: cfg.openaiEmbeddingModel }),
    EMBEDDING_DIMENSIONS: String(cfg.embeddingDimensions),
  };
}

/** The environment of a function that embeds with the active model: the model, and where its API key is. */
export function embeddingEnvironment(cfg: CollectionsConfig): Record<string, string> {
  return { ...embeddingModelEnvironment(cfg), SSM_PARAMETER_PREFIX: ssmParameterPrefix(cfg.envName) };
}

/** The re-embedding model's environment (REEMBED_*): empty unless reembedProvider is set. */
function reembedEnvironment(cfg: CollectionsConfig): Record<string, string> {
  const r = cfg.reembed;
  if (r === undefined) return {};
  return {
    REEMBED_PROVIDER: r.provider,
    ...(r.model === undefined ? {} : { REEMBED_MODEL: r.model }),
    ...(r.dimensions === undefined ? {} : { REEMBED_DIMENSIONS: String(r.dimensions) }),
  };
}

/** Lets a function read the thumbnails ({user}/thumbnails/* of every user) and nothing else of the bucket. */
export function grantReadThumbnails(fn: RustFunction, bucket: s3.Bucket): void {
  fn.role!.addToPrincipalPolicy(
    new iam.PolicyStatement({ sid: 'ReadThumbnails', actions: ['s3:GetObject'], resources: [bucket.arnForObjects(THUMBNAILS_WILDCARD)] }),
  );
  acknowledgeThumbnailsWildcard(fn, bucket);
}

function acknowledgeThumbnailsWildcard(fn: RustFunction, bucket: s3.Bucket): void {
  acknowledge(
    fn.role!,
    `AwsSolutions-IAM5[Resource::<${Stack.of(bucket).getLogicalId(bucket.node.defaultChild as s3.CfnBucket)}.Arn>/*/thumbnails/*]`,
    'Thumbnails live at {user}/thumbnails/{file} for every user, so the object ARN needs the user wildcard; it is limited to thumbnail keys of this stack\'s bucket.',
  );
}

/**
 * Lets a function read exactly the API-key parameters `names` of its own
 * environment (`/collections/<env>/<name>`, SecureStrings with the AWS-managed
 * aws/ssm key: no KMS grant needed), and nothing else of SSM: no other
 * environment's keys, no key of a provider it is not configured for, not the
 * database URL. No names (a `local` provider): no statement at all.
 */
export function grantReadApiKeys(fn: RustFunction, cfg: CollectionsConfig, names: readonly ApiKeyName[]): void {
  const unique = [...new Set(names)].sort();
  if (unique.length === 0) return;
  const stack = Stack.of(fn);
  fn.role!.addToPrincipalPolicy(
    new iam.PolicyStatement({
      sid: 'ReadProviderApiKeys',
      // GetParameter only: the functions read one key at a time, with decryption.
      actions: ['ssm:GetParameter'],
      resources: unique.map((name) => parameterArn(stack, ssmParameterName(cfg.envName, name))),
    }),
  );
}

/** The ARN of the SSM parameter `name` (a full name, `/collections/...`) in the stack's account and region. */
export function parameterArn(stack: Stack, name: string): string {
  return stack.formatArn({ service: 'ssm', resource: 'parameter', resourceName: name.replace(/^\//, '') });
}

/**
 * cargo-lambda-cdk builds locally when `cargo lambda` works, else in Docker —
 * but its Docker build mounts only the crate folder, not the Cargo workspace
 * around it, so it cannot build this repository. Fail early and clearly.
 */
export function requireCargoLambda(): void {
  const r = spawnSync('cargo', ['lambda', '--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new Error(
      'Building the Lambda binaries needs cargo-lambda (`pip install cargo-lambda` and ' +
        '`rustup target add aarch64-unknown-linux-gnu`). To synthesize without building them ' +
        '(inspection only, never deploy), add `-c skipBundling=true`.',
    );
  }
}
