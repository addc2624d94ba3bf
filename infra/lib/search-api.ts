// The search API (with context searchJwtIssuer only): the HTTP API with its
// JWT authorizer, throttled stage and access logs, the search function behind
// it (read-only database role, thumbnails only, presigned URLs), and its alarms.

import { CfnOutput, Duration, Stack } from 'aws-cdk-lib';
import { AccessLogFormat } from 'aws-cdk-lib/aws-apigateway';
import * as apigw from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpJwtAuthorizer } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { RustFunction } from 'cargo-lambda-cdk';

import {
  CollectionsConfig,
  dataRemovalPolicy,
  embeddingProviderKeys,
  SEARCH_DATABASE_MAX_CONNECTIONS,
  SEARCH_URL_TTL_SECONDS,
  SearchConfig,
} from './config';
import { embeddingEnvironment, grantReadApiKeys, grantReadThumbnails, RustFunctionFactory } from './functions';
import type { Alarms } from './observability';

/** The search API's routes, all GET, all behind the JWT authorizer. */
export const SEARCH_ROUTES = ['/v1/search', '/v1/items/{id}', '/v1/items/{id}/similar', '/v1/failures', '/v1/categories'] as const;
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

/** The search API and what serves it. */
export interface SearchApi {
  readonly fn: RustFunction;
  readonly api: apigw.HttpApi;
  /** The `$default` stage: throttling, access logs, metrics. */
  readonly stage: apigw.HttpStage;
  readonly accessLogs: logs.LogGroup;
}

export interface SearchApiProps {
  readonly config: CollectionsConfig;
  /** config.search: the API's settings. */
  readonly search: SearchConfig;
  /** Makes the search function (with the read-only database role's access). */
  readonly factory: RustFunctionFactory;
  /** The images bucket: the function presigns thumbnail URLs of it. */
  readonly bucket: s3.Bucket;
}

/**
 * The search function, and the HTTP API in front of it: the GET routes behind
 * a JWT authorizer, a throttled `$default` stage with JSON access logs.
 */
export function createSearchApi(stack: Stack, props: SearchApiProps): SearchApi {
  const { config: cfg, search, bucket } = props;
  const fn = props.factory.create(
    'search',
    {
      ...embeddingEnvironment(cfg),
      BUCKET_NAME: bucket.bucketName,
      SEARCH_USER_CLAIM: search.userClaim,
      SEARCH_URL_TTL_SECS: String(SEARCH_URL_TTL_SECONDS),
      ...searchLimitsEnvironment(search),
    },
    // Bounds what the API can take of the database: at most this many
    // instances, each with a pool of SEARCH_DATABASE_MAX_CONNECTIONS.
    { reservedConcurrentExecutions: search.reservedConcurrency },
  );
  // Its presigned thumbnail URLs are signed with its own credentials, so
  // it may read thumbnails (the bucket is SSE-S3: no KMS grant) and
  // nothing else of the bucket, and write nothing. Which user's thumbnail
  // it presigns is decided by the database rows, which are scoped to the
  // caller: one role serves every user, so IAM cannot tell them apart.
  grantReadThumbnails(fn, bucket);
  // The active model's key only: searches never use the re-embedding model.
  grantReadApiKeys(fn, cfg, embeddingProviderKeys(cfg.embeddingProvider));

  const name = `collections-${cfg.envName}-search`;
  // Under /aws/vendedlogs/: API Gateway delivers access logs as vended
  // logs, and CloudWatch Logs covers every group under that prefix with one
  // resource policy instead of growing it per group.
  const accessLogs = new logs.LogGroup(stack, 'SearchApiAccessLogs', {
    logGroupName: `/aws/vendedlogs/apigateway/${name}`,
    retention: cfg.logRetention,
    removalPolicy: dataRemovalPolicy(cfg),
  });
  const api = new apigw.HttpApi(stack, 'SearchApi', {
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

  // The API's endpoint (the $default stage serves at its root), without
  // the trailing slash of the stage's URL: "$SEARCH_API_URL/v1/search".
  new CfnOutput(stack, 'SearchApiUrl', {
    value: api.apiEndpoint,
    description: 'The search API: GET /v1/search?q=..., /v1/items/{id}, /v1/items/{id}/similar, /v1/failures with Authorization: Bearer <JWT>',
  });
  return { fn, api, stage, accessLogs };
}

/**
 * The search function's own limits: its database pool, and the per-user
 * token bucket each instance keeps (the function refuses a caller over it;
 * the stage's throttle bounds all callers together).
 */
function searchLimitsEnvironment(search: SearchConfig): Record<string, string> {
  return {
    DATABASE_MAX_CONNECTIONS: String(SEARCH_DATABASE_MAX_CONNECTIONS),
    SEARCH_RATE_PER_USER: String(search.ratePerUser),
    SEARCH_BURST_PER_USER: String(search.burstPerUser),
  };
}

/** The API's own alarms: 5xx answers, and p95 latency. (The search function's come with the others'.) */
export function searchApiAlarms(alarms: Alarms, search: SearchApi, cfg: SearchConfig): void {
  const period = Duration.minutes(5);
  alarms.add('search-api-5xx', {
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
  alarms.add('search-api-latency', {
    metric: search.stage.metricLatency({ statistic: 'p95', period }),
    threshold: cfg.latencyAlarmMs,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
    evaluationPeriods: 3,
    datapointsToAlarm: 3,
    alarmDescription: `p95 latency of the search API at or above ${cfg.latencyAlarmMs} ms for 15 min.`,
  });
}
