// Reads the app's configuration from CDK context (`-c key=value`, cdk.json, or
// `new App({ context })` in tests) and fills in per-environment defaults.
//
// Values given with `-c` on the command line arrive as strings, values from
// cdk.json or tests may be numbers/booleans: every reader accepts both.

import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { IConstruct } from 'constructs';

export type EnvName = 'dev' | 'test' | 'prod';
export const ENV_NAMES: readonly EnvName[] = ['dev', 'test', 'prod'];

export type StreamModeName = 'ON_DEMAND' | 'PROVISIONED';

export type EmbeddingProviderName = 'voyage' | 'openai' | 'local';
export const EMBEDDING_PROVIDERS: readonly EmbeddingProviderName[] = ['voyage', 'openai', 'local'];
/** The analyzer's vision providers (ANALYZER_PROVIDER; the Rust accepts exactly these, any case). */
export type VisionProviderName = 'anthropic' | 'openai' | 'local';
export const VISION_PROVIDERS: readonly VisionProviderName[] = ['anthropic', 'openai', 'local'];
/** pgvector stores vectors of at most 16000 dimensions. */
export const MAX_EMBEDDING_DIMENSIONS = 16000;

/** Batching of one Kinesis-fed stage. */
export interface StageBatching {
  readonly batchSize: number;
  readonly maxBatchingWindow: Duration;
}

export interface CollectionsConfig {
  readonly envName: EnvName;
  /** true: no VPC/RDS; the functions read the URL from SSM `/collections/<env>/DATABASE_URL`. */
  readonly existingDatabase: boolean;
  /**
   * Existing-database mode only: the full ARN of a Secrets Manager secret the
   * operator keeps for the application role (JSON username, password, host,
   * port, dbname). When set, the stage functions connect with it instead of
   * the URL parameter, and the migrator provisions that role from it.
   */
  readonly appDatabaseSecretArn?: string;

  // Kinesis
  readonly streamMode: StreamModeName;
  /** Only used in PROVISIONED mode. */
  readonly shardCount: number;
  /**
   * At least maxRecordAge + 24 h (see minStreamRetentionHours): a record the
   * trigger gives up on stays readable in its stream for a day after its
   * sequence numbers reach the stage's on-failure queue.
   */
  readonly streamRetention: Duration;

  // Event source mappings
  readonly thumbnailer: StageBatching;
  readonly analyzer: StageBatching;
  readonly embedder: StageBatching;
  readonly parallelizationFactor: number;
  readonly retryAttempts: number;
  readonly maxRecordAge: Duration;

  // Functions
  readonly rustLog: string;
  readonly analyzerProvider: VisionProviderName;
  readonly analyzerModel?: string;
  readonly analyzerConcurrency: number;
  readonly embeddingProvider: EmbeddingProviderName;
  readonly voyageEmbeddingModel: string;
  /** The OpenAI(-compatible) model; undefined: the provider's default. */
  readonly openaiEmbeddingModel?: string;
  /** The active model's vector length (EMBEDDING_DIMENSIONS). */
  readonly embeddingDimensions: number;
  /**
   * A second model the embedder embeds re-embedding records with (those a
   * `collections reembed --stream` run puts on the analyzed stream), beside
   * the active one; undefined unless `reembedProvider` is set.
   */
  readonly reembed?: ReembedConfig;
  readonly logRetention: RetentionDays;

  // Network and database
  readonly natGateways: number;
  readonly dbInstanceClass: string;
  /** RDS for PostgreSQL engine version, major.minor (17.x: pgvector >= 0.8.0). */
  readonly dbEngineVersion: string;
  readonly dbAllocatedStorageGiB: number;
  readonly dbMultiAz: boolean;
  readonly dbBackupRetentionDays: number;

  // Bucket
  readonly versioned: boolean;
  /** Days after which thumbnails (tag collections:kind=thumbnail) expire; undefined: no rule. */
  readonly thumbnailExpirationDays?: number;
  readonly accessLogExpirationDays: number;

  // Lifecycle of stateful resources
  readonly retainData: boolean;
  readonly deletionProtection: boolean;

  // Alarms
  readonly alarmEmail?: string;
  readonly iteratorAgeAlarmMinutes: number;
  /** Fraction of the timeout at which the p99 Duration alarm fires. */
  readonly durationAlarmFraction: number;
  /** Items failed permanently (metric Collections/Failed) per stage and period that raise the alarm. */
  readonly permanentFailureAlarmThreshold: number;
  /** Period of that alarm, minutes. */
  readonly permanentFailureAlarmMinutes: number;
  /** Records held back by a configuration fault (metric Collections/ConfigurationFault) per stage in 5 min that raise the alarm. */
  readonly configurationFaultAlarmThreshold: number;

  /** The search API; undefined (no API, no search function or role) unless `searchJwtIssuer` is set. */
  readonly search?: SearchConfig;
}

/** The second embedding model of a model change (REEMBED_* of the embedder and the migrator). */
export interface ReembedConfig {
  readonly provider: EmbeddingProviderName;
  /** undefined: the provider's default model. */
  readonly model?: string;
  /** undefined: the default size (1024). */
  readonly dimensions?: number;
}

/** The search API (HTTP API + JWT authorizer + the search function). */
export interface SearchConfig {
  /** The OIDC issuer whose tokens the JWT authorizer accepts (https URL, exactly the tokens' `iss`). */
  readonly jwtIssuer: string;
  /** At least one: a token's `aud` (or `client_id`) must be one of them. */
  readonly jwtAudience: string[];
  /** The claim whose value is the caller's user id, the `{user}` of `{user}/...` keys. */
  readonly userClaim: string;
  /** Steady-state requests per second of the API's default stage. */
  readonly throttleRateLimit: number;
  /** Burst of requests of the API's default stage. */
  readonly throttleBurstLimit: number;
  /** p95 latency of the API, milliseconds, at which its latency alarm fires. */
  readonly latencyAlarmMs: number;
  /** 5xx answers of the API within 5 minutes that raise its alarm. */
  readonly serverErrorAlarmThreshold: number;
  /**
   * Existing-database mode only (and required there): the full ARN of the
   * secret of the read-only role the search function connects as.
   */
  readonly databaseSecretArn?: string;
  /**
   * Reserved concurrency of the search function: at most this many
   * instances, each with a pool of SEARCH_DATABASE_MAX_CONNECTIONS, so the
   * API can hold at most their product of the database's connections.
   */
  readonly reservedConcurrency: number;
  /** Per-user token bucket inside each search function instance: refill, requests per second (SEARCH_RATE_PER_USER). */
  readonly ratePerUser: number;
  /** Its capacity, requests (SEARCH_BURST_PER_USER). */
  readonly burstPerUser: number;
}

/**
 * Where the SSM parameters of all environments live; each environment has
 * its own folder under it (ssmParameterPrefix). The seed kept its
 * parameters directly under it, shared by every environment of the account.
 */
export const SSM_PARAMETER_ROOT = '/collections';
/** The API keys the functions may read from SSM (SecureString `{SSM_PARAMETER_PREFIX}/{name}`), as the Rust names them. */
export type ApiKeyName = 'ANTHROPIC_API_KEY' | 'OPENAI_API_KEY' | 'VOYAGE_API_KEY';
/** The parameter (relative to the environment's prefix) that holds the database URL in existing-database mode. */
export const DATABASE_URL_NAME = 'DATABASE_URL';

/**
 * The SSM prefix of one environment, `/collections/<env>` (SSM_PARAMETER_PREFIX
 * of its functions): one account may hold dev, test and prod, and none of
 * them may read another's keys or database URL.
 */
export function ssmParameterPrefix(envName: EnvName): string {
  return `${SSM_PARAMETER_ROOT}/${envName}`;
}

/** The full name of one of an environment's parameters, e.g. `/collections/dev/ANTHROPIC_API_KEY`. */
export function ssmParameterName(envName: EnvName, name: ApiKeyName | typeof DATABASE_URL_NAME): string {
  return `${ssmParameterPrefix(envName)}/${name}`;
}

/** The SSM SecureString that holds the database URL in existing-database mode: `/collections/<env>/DATABASE_URL`. */
export function databaseUrlParameter(envName: EnvName): string {
  return ssmParameterName(envName, DATABASE_URL_NAME);
}

/**
 * The key each vision provider reads (crates/vision settings): `openai` reads
 * OPENAI_API_KEY (optional only with an OPENAI_BASE_URL, which this stack
 * does not set), `local` none.
 */
const VISION_PROVIDER_KEYS: Record<VisionProviderName, readonly ApiKeyName[]> = {
  anthropic: ['ANTHROPIC_API_KEY'],
  openai: ['OPENAI_API_KEY'],
  local: [],
};
/** The key each embedding provider reads (crates/embedding settings). */
const EMBEDDING_PROVIDER_KEYS: Record<EmbeddingProviderName, readonly ApiKeyName[]> = {
  voyage: ['VOYAGE_API_KEY'],
  openai: ['OPENAI_API_KEY'],
  local: [],
};

/** The API keys the analyzer's vision provider reads (none for `local`). */
export function visionProviderKeys(provider: VisionProviderName): readonly ApiKeyName[] {
  return VISION_PROVIDER_KEYS[provider];
}

/** The API keys an embedding provider reads (none for `local`). */
export function embeddingProviderKeys(provider: EmbeddingProviderName): readonly ApiKeyName[] {
  return EMBEDDING_PROVIDER_KEYS[provider];
}

/** Object tag the thumbnailer sets on every thumbnail it writes; the lifecycle rule matches it. */
export const THUMBNAIL_TAG_KEY = 'collections:kind';
export const THUMBNAIL_TAG_VALUE = 'thumbnail';
export const DATABASE_NAME = 'collections';
export const DATABASE_PORT = 5432;
/** Lifetime of the presigned thumbnail URLs the search API answers with, seconds. */
export const SEARCH_URL_TTL_SECONDS = 900;
/**
 * DATABASE_MAX_CONNECTIONS of the search function: the pool of one instance.
 * A Lambda instance serves one request at a time and a request runs its
 * queries one after another, so one connection would do; the second is
 * spare (a connection being replaced does not hold up the next request).
 * The Rust default (5) is sized for the stages' batches.
 */
export const SEARCH_DATABASE_MAX_CONNECTIONS = 2;
/**
 * Default reserved concurrency of the search function. The default database
 * (db.t4g.micro, 1 GiB) allows roughly 80-110 connections (RDS:
 * DBInstanceClassMemory / 9531392, minus 3 reserved for superusers), shared
 * with the three stage functions (pools of 5 per instance), the migrator and
 * the rotations: 10 instances x 2 connections keep the API to 20 of them, so
 * a flood of searches cannot starve the pipeline of connections.
 */
export const DEFAULT_SEARCH_RESERVED_CONCURRENCY = 10;
/** Defaults of the per-user token bucket of each search function instance. */
export const DEFAULT_SEARCH_RATE_PER_USER = 5;
export const DEFAULT_SEARCH_BURST_PER_USER = 20;
/** RDS for PostgreSQL version created by default (pgvector 0.8.x ships with every 17.x from 17.1). */
export const DEFAULT_POSTGRES_VERSION = '17.9';

/**
 * The removal policy of the stateful resources (buckets, streams, key, queues,
 * log groups): with retainData they outlive the stack (RETAIN), else they are
 * deleted with it (DESTROY).
 */
export function dataRemovalPolicy(cfg: CollectionsConfig): RemovalPolicy {
  return cfg.retainData ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY;
}

function raw(scope: IConstruct, key: string): unknown {
  return scope.node.tryGetContext(key);
}

function str(scope: IConstruct, key: string, fallback: string): string;
function str(scope: IConstruct, key: string, fallback?: string): string | undefined;
function str(scope: IConstruct, key: string, fallback?: string): string | undefined {
  const v = raw(scope, key);
  if (v === undefined || v === null || v === '') return fallback;
  if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') {
    throw new Error(`context ${key}: expected a string, got ${JSON.stringify(v)}`);
  }
  return String(v);
}

function int(scope: IConstruct, key: string, fallback: number, min: number, max: number): number;
function int(scope: IConstruct, key: string, fallback: number | undefined, min: number, max: number): number | undefined;
function int(scope: IConstruct, key: string, fallback: number | undefined, min: number, max: number): number | undefined {
  const v = raw(scope, key);
  if (v === undefined || v === null || v === '') return fallback;
  const n = typeof v === 'number' ? v : Number(String(v).trim());
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new Error(`context ${key}: expected an integer in [${min}, ${max}], got ${JSON.stringify(v)}`);
  }
  return n;
}

function num(scope: IConstruct, key: string, fallback: number, min: number, max: number): number {
  const v = raw(scope, key);
  if (v === undefined || v === null || v === '') return fallback;
  const n = typeof v === 'number' ? v : Number(String(v).trim());
  if (!Number.isFinite(n) || n < min || n > max) {
    throw new Error(`context ${key}: expected a number in [${min}, ${max}], got ${JSON.stringify(v)}`);
  }
  return n;
}

export function bool(scope: IConstruct, key: string, fallback: boolean): boolean {
  const v = raw(scope, key);
  if (v === undefined || v === null || v === '') return fallback;
  if (typeof v === 'boolean') return v;
  const s = String(v).trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(s)) return true;
  if (['false', '0', 'no', 'off'].includes(s)) return false;
  throw new Error(`context ${key}: expected true or false, got ${JSON.stringify(v)}`);
}

export function envNameOf(scope: IConstruct): EnvName {
  const e = str(scope, 'env', 'dev');
  if (!(ENV_NAMES as readonly string[]).includes(e)) {
    throw new Error(`context env: expected one of ${ENV_NAMES.join(', ')}, got ${JSON.stringify(e)}`);
  }
  return e as EnvName;
}

function streamModeOf(scope: IConstruct): StreamModeName {
  const m = str(scope, 'kinesisStreamMode', 'ON_DEMAND').toUpperCase().replace('-', '_');
  if (m !== 'ON_DEMAND' && m !== 'PROVISIONED') {
    throw new Error(`context kinesisStreamMode: expected on_demand or provisioned, got ${JSON.stringify(m)}`);
  }
  return m;
}

/** An embedding provider's name, any case (as the functions read it), lowercased. */
function embeddingProviderOf(scope: IConstruct, key: string, fallback: EmbeddingProviderName): EmbeddingProviderName;
function embeddingProviderOf(scope: IConstruct, key: string): EmbeddingProviderName | undefined;
function embeddingProviderOf(scope: IConstruct, key: string, fallback?: EmbeddingProviderName): EmbeddingProviderName | undefined {
  const p = str(scope, key, fallback)?.trim().toLowerCase();
  if (p !== undefined && !(EMBEDDING_PROVIDERS as readonly string[]).includes(p)) {
    throw new Error(`context ${key}: expected one of ${EMBEDDING_PROVIDERS.join(', ')}, got ${JSON.stringify(p)}`);
  }
  return p as EmbeddingProviderName | undefined;
}

/**
 * The analyzer's provider, any case, lowercased. The stack grants the
 * analyzer exactly that provider's key, so a name the Rust would refuse at
 * cold start is refused here, at synth.
 */
function visionProviderOf(scope: IConstruct): VisionProviderName {
  const p = str(scope, 'analyzerProvider', 'anthropic').trim().toLowerCase();
  if (!(VISION_PROVIDERS as readonly string[]).includes(p)) {
    throw new Error(`context analyzerProvider: expected one of ${VISION_PROVIDERS.join(', ')}, got ${JSON.stringify(p)}`);
  }
  return p as VisionProviderName;
}

/**
 * The second model of a model change; undefined when `reembedProvider` is
 * not set, in which case its model and size are refused.
 */
function reembedConfig(scope: IConstruct): ReembedConfig | undefined {
  const provider = embeddingProviderOf(scope, 'reembedProvider');
  const model = str(scope, 'reembedModel');
  const dimensions = int(scope, 'reembedDimensions', undefined, 1, MAX_EMBEDDING_DIMENSIONS);
  if (provider === undefined) {
    for (const [key, given] of [['reembedModel', model], ['reembedDimensions', dimensions]] as const) {
      if (given !== undefined) {
        throw new Error(`context ${key}: only used with reembedProvider (the second model of a model change)`);
      }
    }
    return undefined;
  }
  if (model !== undefined && provider === 'local') {
    throw new Error('context reembedModel: not used with reembedProvider=local (the local provider has a single model)');
  }
  return { provider, model, dimensions };
}

/** Kinesis accepts a retention of 24..8760 hours. */
export const MAX_STREAM_RETENTION_HOURS = 8760;
/** How long, at least, a record stays in its stream after its trigger gave up on it at the maximum record age. */
export const REPLAY_WINDOW_HOURS = 24;

/**
 * The shortest stream retention that keeps a record a day past the event
 * source mappings' maximum record age (whole hours, rounded up).
 */
export function minStreamRetentionHours(maxRecordAge: Duration): number {
  return Math.max(24, Math.ceil(maxRecordAge.toSeconds() / 3600) + REPLAY_WINDOW_HOURS);
}

function streamRetention(scope: IConstruct, maxRecordAge: Duration): Duration {
  const min = minStreamRetentionHours(maxRecordAge);
  const hours = int(scope, 'kinesisRetentionHours', min, 24, MAX_STREAM_RETENTION_HOURS);
  if (hours < min) {
    throw new Error(
      `context kinesisRetentionHours: expected at least maxRecordAgeHours + ${REPLAY_WINDOW_HOURS} = ${min}, so that a record ` +
        `sent to a stage's on-failure queue can still be read from its stream for a day; got ${JSON.stringify(raw(scope, 'kinesisRetentionHours'))}`,
    );
  }
  return Duration.hours(hours);
}

function batching(scope: IConstruct, stage: string, size: number, windowSeconds: number): StageBatching {
  return {
    // Kinesis event source mappings accept 1..10000 records and a window of 0..300 s.
    batchSize: int(scope, `${stage}BatchSize`, size, 1, 10000),
    maxBatchingWindow: Duration.seconds(int(scope, `${stage}BatchWindowSeconds`, windowSeconds, 0, 300)),
  };
}

/**
 * PostgreSQL 16.5+ and 17.1+ on RDS ship pgvector 0.8.x; refuse anything older
 * so that the migrations' HNSW/iterative-scan features are there.
 */
function pgVersion(scope: IConstruct): string {
  const v = str(scope, 'dbEngineVersion', DEFAULT_POSTGRES_VERSION);
  const m = /^(\d+)\.(\d+)$/.exec(v);
  const ok = m !== null && (Number(m[1]) >= 18 || (Number(m[1]) === 17 && Number(m[2]) >= 1) || (Number(m[1]) === 16 && Number(m[2]) >= 5));
  if (!ok) {
    throw new Error(`context dbEngineVersion: expected major.minor of PostgreSQL >= 16.5 or >= 17.1 (pgvector >= 0.8), got ${JSON.stringify(v)}`);
  }
  return v;
}

function secretArn(scope: IConstruct, key: string, existingDatabase: boolean): string | undefined {
  const v = str(scope, key);
  if (v === undefined) return undefined;
  if (!existingDatabase) {
    throw new Error(`context ${key}: only used with existingDatabase=true (in RDS mode the stack creates the application secret)`);
  }
  if (!/^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+$/.test(v)) {
    throw new Error(`context ${key}: expected the full ARN of a Secrets Manager secret, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** A list from context: a JSON array (cdk.json, tests) or a comma-separated string (`-c key=a,b`). */
function list(scope: IConstruct, key: string): string[] | undefined {
  const v = raw(scope, key);
  if (v === undefined || v === null || v === '') return undefined;
  const items = Array.isArray(v) ? v : typeof v === 'string' ? v.split(',') : undefined;
  if (items === undefined || !items.every((x) => typeof x === 'string')) {
    throw new Error(`context ${key}: expected a list of strings or a comma-separated string, got ${JSON.stringify(v)}`);
  }
  const out = (items as string[]).map((x) => x.trim()).filter((x) => x !== '');
  return out.length > 0 ? out : undefined;
}

/**
 * The search API's settings; undefined when `searchJwtIssuer` is not set, in
 * which case the settings that only make sense with it are refused.
 */
function searchConfig(scope: IConstruct, existingDatabase: boolean): SearchConfig | undefined {
  const issuer = str(scope, 'searchJwtIssuer');
  const audience = list(scope, 'searchJwtAudience');
  const secretArnGiven = str(scope, 'searchDatabaseSecretArn');
  if (issuer === undefined) {
    for (const [key, given] of [['searchJwtAudience', audience], ['searchDatabaseSecretArn', secretArnGiven]] as const) {
      if (given !== undefined) {
        throw new Error(`context ${key}: only used with searchJwtIssuer (the search API is created only when the issuer is set)`);
      }
    }
    return undefined;
  }
  // API Gateway fetches {issuer}/.well-known/openid-configuration over HTTPS
  // and compares the tokens' iss with it character for character.
  let url: URL | undefined;
  try {
    url = new URL(issuer);
  } catch {
    url = undefined;
  }
  if (url === undefined || url.protocol !== 'https:' || /\s/.test(issuer)) {
    throw new Error(`context searchJwtIssuer: expected the https URL of an OIDC issuer (exactly the tokens' iss), got ${JSON.stringify(issuer)}`);
  }
  if (audience === undefined) {
    throw new Error(
      'context searchJwtAudience: required with searchJwtIssuer: the audiences (aud, or client_id for Cognito access tokens) ' +
        'the JWT authorizer accepts, as a list or a comma-separated string',
    );
  }
  const userClaim = str(scope, 'searchUserClaim', 'sub');
  if (!/^[A-Za-z0-9_.:\/-]{1,256}$/.test(userClaim)) {
    throw new Error(`context searchUserClaim: expected a claim name (letters, digits, _ . : / -), got ${JSON.stringify(userClaim)}`);
  }
  let databaseSecretArn: string | undefined;
  if (existingDatabase) {
    databaseSecretArn = secretArn(scope, 'searchDatabaseSecretArn', existingDatabase);
    if (databaseSecretArn === undefined) {
      throw new Error(
        'context searchDatabaseSecretArn: required with searchJwtIssuer and existingDatabase=true: the full ARN of the secret of ' +
          'the read-only role the search function connects as (the migrator creates that role from it)',
      );
    }
  } else if (secretArnGiven !== undefined) {
    throw new Error('context searchDatabaseSecretArn: only used with existingDatabase=true (in RDS mode the stack creates the search secret)');
  }
  return {
    jwtIssuer: issuer,
    jwtAudience: audience,
    userClaim,
    // API Gateway's account defaults are 10,000 requests/s and a burst of 5,000.
    throttleRateLimit: int(scope, 'searchThrottleRateLimit', 50, 1, 10000),
    throttleBurstLimit: int(scope, 'searchThrottleBurstLimit', 100, 1, 5000),
    // An HTTP API gives up on its integration after 30 s.
    latencyAlarmMs: int(scope, 'searchLatencyAlarmMs', 1000, 1, 30000),
    serverErrorAlarmThreshold: int(scope, 'searchServerErrorAlarmThreshold', 5, 1, 1_000_000),
    databaseSecretArn,
    // 0 would switch the function off; 1000 instances (2000 connections)
    // is past what an instance holds without a connection proxy (not built).
    reservedConcurrency: int(scope, 'searchReservedConcurrency', DEFAULT_SEARCH_RESERVED_CONCURRENCY, 1, 1000),
    // Whole numbers, as the function parses them; no more than the stage allows.
    ratePerUser: int(scope, 'searchRatePerUser', DEFAULT_SEARCH_RATE_PER_USER, 1, 10000),
    burstPerUser: int(scope, 'searchBurstPerUser', DEFAULT_SEARCH_BURST_PER_USER, 1, 5000),
  };
}

/** Reads every setting. Context keys are listed in infra/README.md. */
export function loadConfig(scope: IConstruct): CollectionsConfig {
  const envName = envNameOf(scope);
  const prod = envName === 'prod';
  const test = envName === 'test';

  const logRetention = {
    dev: RetentionDays.ONE_WEEK,
    test: RetentionDays.ONE_MONTH,
    prod: RetentionDays.SIX_MONTHS,
  }[envName];

  const analyzerModel = str(scope, 'analyzerModel');
  const alarmEmail = str(scope, 'alarmEmail');
  // Lambda accepts a maximum record age of 60 s..7 days for Kinesis.
  const maxRecordAge = Duration.hours(int(scope, 'maxRecordAgeHours', 24, 1, 168));

  const existingDatabase = bool(scope, 'existingDatabase', false);

  return {
    envName,
    existingDatabase,
    appDatabaseSecretArn: secretArn(scope, 'appDatabaseSecretArn', existingDatabase),

    streamMode: streamModeOf(scope),
    shardCount: int(scope, 'kinesisShardCount', 1, 1, 500),
    // Default and minimum: maxRecordAgeHours + 24.
    streamRetention: streamRetention(scope, maxRecordAge),

    thumbnailer: batching(scope, 'thumbnailer', 20, 1),
    analyzer: batching(scope, 'analyzer', 32, 2),
    embedder: batching(scope, 'embedder', 100, 2),
    parallelizationFactor: int(scope, 'parallelizationFactor', 2, 1, 10),
    retryAttempts: int(scope, 'streamRetryAttempts', 3, 0, 10000),
    maxRecordAge,

    rustLog: str(scope, 'rustLog', 'info'),
    analyzerProvider: visionProviderOf(scope),
    analyzerModel,
    analyzerConcurrency: int(scope, 'analyzerConcurrency', 16, 1, 256),
    embeddingProvider: embeddingProviderOf(scope, 'embeddingProvider', 'voyage'),
    voyageEmbeddingModel: str(scope, 'voyageEmbeddingModel', 'voyage-3.5'),
    openaiEmbeddingModel: str(scope, 'openaiEmbeddingModel'),
    embeddingDimensions: int(scope, 'embeddingDimensions', 1024, 1, MAX_EMBEDDING_DIMENSIONS),
    reembed: reembedConfig(scope),
    logRetention,

    natGateways: int(scope, 'natGateways', prod ? 2 : 1, 1, 2),
    dbInstanceClass: str(scope, 'dbInstanceClass', prod ? 'db.t4g.small' : 'db.t4g.micro'),
    dbEngineVersion: pgVersion(scope),
    dbAllocatedStorageGiB: int(scope, 'dbAllocatedStorageGiB', 20, 20, 65536),
    dbMultiAz: bool(scope, 'dbMultiAz', prod),
    dbBackupRetentionDays: int(scope, 'dbBackupRetentionDays', prod ? 14 : test ? 7 : 1, 1, 35),

    versioned: prod,
    thumbnailExpirationDays: prod || test ? 90 : undefined,
    accessLogExpirationDays: prod ? 365 : test ? 90 : 30,

    retainData: prod,
    deletionProtection: prod,

    alarmEmail,
    iteratorAgeAlarmMinutes: int(scope, 'iteratorAgeAlarmMinutes', 15, 1, 10080),
    durationAlarmFraction: num(scope, 'durationAlarmFraction', 0.85, 0.5, 1),
    permanentFailureAlarmThreshold: int(scope, 'permanentFailureAlarmThreshold', 10, 1, 1_000_000),
    // One evaluation period; CloudWatch allows at most a day for it.
    permanentFailureAlarmMinutes: int(scope, 'permanentFailureAlarmMinutes', 15, 1, 1440),
    configurationFaultAlarmThreshold: int(scope, 'configurationFaultAlarmThreshold', 1, 1, 1_000_000),

    search: searchConfig(scope, existingDatabase),
  };
}
