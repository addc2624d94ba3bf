// How anyone learns that something is wrong: the alarm topic (and the KMS key
// it is encrypted with), every alarm on the functions, streams and stages, the
// stage metrics the functions log, and the dashboard.

import { ArnFormat, CfnOutput, Duration, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kinesis from 'aws-cdk-lib/aws-kinesis';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subs from 'aws-cdk-lib/aws-sns-subscriptions';
import { RustFunction } from 'cargo-lambda-cdk';

import { CollectionsConfig, dataRemovalPolicy } from './config';
import { METRICS_NAMESPACE, STAGE_COUNT_METRICS, STAGE_DIMENSION, STAGE_DIMENSIONS, STAGE_FUNCTIONS, StageFunctionName, stageCountMetric } from './contracts';
import { FUNCTIONS, FunctionName, PipelineFunctionName } from './functions';
import { SearchApi, searchApiAlarms } from './search-api';
import { Streams } from './streams';

/** The stage counts an alarm or graph singles out (each checked against the contract). */
const FAILED = stageCountMetric('Failed');
const API_CALLS = stageCountMetric('ApiCalls');
const CONFIGURATION_FAULT = stageCountMetric('ConfigurationFault');

/** Every alarm of an environment is named collections-<env>-<name> (Alarms.add). */
export function alarmName(envName: string, name: string): string {
  return `collections-${envName}-${name}`;
}

/**
 * A customer-managed key for the alarm topic: CloudWatch alarms cannot
 * publish to a topic encrypted with the AWS-managed aws/sns key (whose
 * policy can't grant cloudwatch.amazonaws.com).
 */
export function createAlarmTopicKey(stack: Stack, cfg: CollectionsConfig): kms.Key {
  const env = cfg.envName;
  const key = new kms.Key(stack, 'Key', {
    alias: `alias/collections-${env}`,
    description: `collections ${env}: the alarm topic`,
    enableKeyRotation: true,
    removalPolicy: dataRemovalPolicy(cfg),
    pendingWindow: Duration.days(cfg.retainData ? 30 : 7),
  });
  key.addToResourcePolicy(
    new iam.PolicyStatement({
      sid: 'AllowCloudWatchAlarmsToPublishToTheAlarmTopic',
      principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
      actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
      resources: ['*'],
      conditions: cloudWatchAlarmSourceConditions(stack, env),
    }),
  );
  return key;
}

/**
 * Confused-deputy guard of the key's CloudWatch grant: CloudWatch may use
 * the key only on behalf of this account's alarms of this environment
 * (collections-<env>-*, in this region), not for an alarm someone else (or
 * another environment) points at the topic. CloudWatch sets both keys when
 * it publishes an alarm to an encrypted topic (EventBridge, for one, does
 * not, but nothing of EventBridge publishes to this topic).
 */
export function cloudWatchAlarmSourceConditions(stack: Stack, envName: string): Record<string, Record<string, string>> {
  return {
    StringEquals: { 'aws:SourceAccount': stack.account },
    ArnLike: {
      'aws:SourceArn': stack.formatArn({
        service: 'cloudwatch',
        resource: 'alarm',
        resourceName: alarmName(envName, '*'),
        arnFormat: ArnFormat.COLON_RESOURCE_NAME,
      }),
    },
  };
}

export interface AlarmsProps {
  readonly config: CollectionsConfig;
  /** Encrypts the topic (createAlarmTopicKey). */
  readonly key: kms.IKey;
}

/** The alarm topic, and every alarm of the stack, each notifying it on ALARM and on OK. */
export class Alarms {
  public readonly topic: sns.Topic;
  /** Every alarm, in the order created (the dashboard shows their state). */
  public readonly all: cloudwatch.Alarm[] = [];

  private readonly stack: Stack;
  private readonly envName: string;

  constructor(stack: Stack, props: AlarmsProps) {
    const env = props.config.envName;
    this.stack = stack;
    this.envName = env;
    this.topic = new sns.Topic(stack, 'AlarmTopic', {
      topicName: `collections-${env}-alarms`,
      displayName: `collections ${env} alarms`,
      masterKey: props.key,
      enforceSSL: true,
    });
    if (props.config.alarmEmail) {
      this.topic.addSubscription(new subs.EmailSubscription(props.config.alarmEmail));
    }
    new CfnOutput(stack, 'AlarmTopicArn', { value: this.topic.topicArn });
  }

  /** An alarm named collections-<env>-<name>; missing data is not breaching. */
  add(name: string, props: Omit<cloudwatch.AlarmProps, 'alarmName'>): cloudwatch.Alarm {
    const id = 'Alarm' + name.replace(/(^|-)([a-z0-9])/g, (_m, _d, c: string) => c.toUpperCase());
    const a = new cloudwatch.Alarm(this.stack, id, {
      // The key's CloudWatch grant admits alarms of exactly this pattern.
      alarmName: alarmName(this.envName, name),
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      ...props,
    });
    a.addAlarmAction(new cwActions.SnsAction(this.topic));
    a.addOkAction(new cwActions.SnsAction(this.topic));
    this.all.push(a);
    return a;
  }
}

/** A metric a stage function logs (embedded metric format), summed over `period`. */
export function stageMetric(name: StageFunctionName, metricName: string, period: Duration): cloudwatch.Metric {
  return new cloudwatch.Metric({
    namespace: METRICS_NAMESPACE,
    metricName,
    dimensionsMap: { [STAGE_DIMENSION]: STAGE_DIMENSIONS[name] },
    statistic: 'Sum',
    period,
  });
}

export interface PipelineAlarmsProps {
  readonly config: CollectionsConfig;
  readonly functions: Record<PipelineFunctionName, RustFunction>;
  readonly streams: Streams;
  readonly search?: SearchApi;
}

/**
 * The alarms on the pipeline: each function's errors, throttles and p99
 * duration (the search API's too, with it), each stream's iterator age, and
 * each stage's permanent failures. (The dead-letter queues' alarms come with
 * the queues.)
 */
export function createPipelineAlarms(alarms: Alarms, props: PipelineAlarmsProps): void {
  const cfg = props.config;
  for (const name of Object.keys(props.functions) as PipelineFunctionName[]) {
    functionAlarms(alarms, name, props.functions[name], cfg);
  }
  if (props.search && cfg.search) {
    functionAlarms(alarms, 'search', props.search.fn, cfg);
    searchApiAlarms(alarms, props.search, cfg.search);
  }
  for (const [name, s] of Object.entries(props.streams) as Array<[string, kinesis.Stream]>) {
    alarms.add(`${name}-iterator-age`, {
      metric: s.metricGetRecordsIteratorAgeMilliseconds({ statistic: 'Maximum', period: Duration.minutes(5) }),
      threshold: cfg.iteratorAgeAlarmMinutes * 60 * 1000,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      alarmDescription: `The oldest record in the ${name} stream is over ${cfg.iteratorAgeAlarmMinutes} min old: its consumer is falling behind or failing.`,
    });
  }
  for (const name of STAGE_FUNCTIONS) permanentFailureAlarm(alarms, name, cfg);
  for (const name of STAGE_FUNCTIONS) configurationFaultAlarm(alarms, name, cfg);
}

function functionAlarms(alarms: Alarms, name: FunctionName, fn: RustFunction, cfg: CollectionsConfig): void {
  const period = Duration.minutes(5);
  alarms.add(`${name}-errors`, {
    metric: fn.metricErrors({ statistic: 'Sum', period }),
    threshold: 1,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
    evaluationPeriods: 1,
    alarmDescription: `The ${name} function failed (a whole invocation errored).`,
  });
  alarms.add(`${name}-throttles`, {
    metric: fn.metricThrottles({ statistic: 'Sum', period }),
    threshold: 1,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
    evaluationPeriods: 1,
    alarmDescription: `The ${name} function was throttled (account or reserved concurrency).`,
  });
  const timeoutMs = FUNCTIONS[name].timeout.toMilliseconds();
  alarms.add(`${name}-duration`, {
    metric: fn.metricDuration({ statistic: 'p99', period }),
    threshold: Math.round(timeoutMs * cfg.durationAlarmFraction),
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
    evaluationPeriods: 1,
    alarmDescription: `p99 duration of ${name} is at ${Math.round(cfg.durationAlarmFraction * 100)}% of its ${timeoutMs / 1000} s timeout.`,
  });
}

function permanentFailureAlarm(alarms: Alarms, name: StageFunctionName, cfg: CollectionsConfig): void {
  const stage = STAGE_DIMENSIONS[name];
  const n = cfg.permanentFailureAlarmThreshold;
  const minutes = cfg.permanentFailureAlarmMinutes;
  alarms.add(`${name}-permanent-failures`, {
    metric: stageMetric(name, FAILED, Duration.minutes(minutes)),
    threshold: n,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
    evaluationPeriods: 1,
    alarmDescription:
      `${n} or more items failed permanently in the ${stage} stage (${name}) within ${minutes} min; they are recorded with their reason and not redelivered. ` +
      '`collections failures` (with DATABASE_URL) lists the items with their reasons; once the cause is fixed, `collections backfill` sends every item not yet done through again.',
  });
}

/**
 * A provider answered 401/403 (the key), 404 (the model or route) or a 400
 * naming the model: the stage redelivers its batch without failing items,
 * so nothing else would tell that the line has stopped.
 */
function configurationFaultAlarm(alarms: Alarms, name: StageFunctionName, cfg: CollectionsConfig): void {
  const stage = STAGE_DIMENSIONS[name];
  const n = cfg.configurationFaultAlarmThreshold;
  alarms.add(`${name}-configuration-faults`, {
    metric: stageMetric(name, CONFIGURATION_FAULT, Duration.minutes(5)),
    threshold: n,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
    evaluationPeriods: 1,
    alarmDescription:
      `${n} or more records of the ${stage} stage (${name}) were held back within 5 min by a configuration fault (a rejected API key, an unknown model or route); ` +
      'they are redelivered, not failed, until the key or model parameter is mended. The function logs name the provider and its answer.',
  });
}

export interface DashboardProps {
  readonly config: CollectionsConfig;
  readonly alarms: Alarms;
  readonly functions: Record<StageFunctionName, RustFunction>;
  /** The stream each stage function reads. */
  readonly stageStreams: Record<StageFunctionName, kinesis.Stream>;
  readonly search?: SearchApi;
}

/**
 * The dashboard collections-<env>: every alarm's state; per stage its counts,
 * provider API calls, its stream's iterator age, its function's errors and
 * p99 duration; with the search API, its requests, errors and latency.
 */
export function createDashboard(stack: Stack, props: DashboardProps): cloudwatch.Dashboard {
  const cfg = props.config;
  const period = Duration.minutes(5);
  const dashboard = new cloudwatch.Dashboard(stack, 'Dashboard', { dashboardName: `collections-${cfg.envName}` });
  dashboard.addWidgets(new cloudwatch.AlarmStatusWidget({ title: 'Alarms', alarms: props.alarms.all, width: 24, height: 4 }));
  for (const name of STAGE_FUNCTIONS) {
    const stage = STAGE_DIMENSIONS[name];
    const fn = props.functions[name];
    const stream = props.stageStreams[name];
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
        left: STAGE_COUNT_METRICS.filter((m) => m !== API_CALLS).map((m) => stageMetric(name, m, period).with({ label: m })),
        width: 6,
      }),
      new cloudwatch.GraphWidget({
        title: `${stage}: provider API calls`,
        left: [stageMetric(name, API_CALLS, period).with({ label: API_CALLS })],
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
  if (props.search && cfg.search) {
    const { stage, fn } = props.search;
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
