// How records reach the stages: the three Kinesis streams; the buses and
// EventBridge rules that feed them (uploads from S3, the stages' own events);
// the Kinesis triggers of the stage functions; and the dead-letter queue of
// every rule target and trigger.

import { CfnOutput, Duration, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as kinesis from 'aws-cdk-lib/aws-kinesis';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { KinesisEventSource, SqsDlq } from 'aws-cdk-lib/aws-lambda-event-sources';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { RustFunction } from 'cargo-lambda-cdk';

import { acknowledge } from './acknowledgements';
import { CollectionsConfig, dataRemovalPolicy, StageBatching } from './config';
import { ANALYSIS_COMPLETE, IMAGE_PROCESSED, StageFunctionName } from './contracts';
import type { Alarms } from './observability';
import { THUMBNAILS_WILDCARD } from './storage';

/** The uploads the pipeline takes (any case). */
export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png'];

/** The three streams, in pipeline order. */
export interface Streams {
  /** Uploaded images (S3 events) → thumbnailer. */
  readonly uploads: kinesis.Stream;
  /** ImageProcessed events → analyzer. */
  readonly processed: kinesis.Stream;
  /** AnalysisComplete events → embedder. */
  readonly analyzed: kinesis.Stream;
}

/** Creates the streams collections-<env>-{uploads,processed,analyzed} in `stack`. */
export function createStreams(stack: Stack, cfg: CollectionsConfig): Streams {
  const stream = (cid: string, name: string) =>
    new kinesis.Stream(stack, cid, {
      streamName: `collections-${cfg.envName}-${name}`,
      streamMode: cfg.streamMode === 'PROVISIONED' ? kinesis.StreamMode.PROVISIONED : kinesis.StreamMode.ON_DEMAND,
      shardCount: cfg.streamMode === 'PROVISIONED' ? cfg.shardCount : undefined,
      retentionPeriod: cfg.streamRetention,
      // The AWS-managed aws/kinesis key: no key policy to keep in step with
      // the producers/consumers, no KMS request charges (cdk-nag KDS3
      // prefers it too).
      encryption: kinesis.StreamEncryption.MANAGED,
      removalPolicy: dataRemovalPolicy(cfg),
    });
  const streams = {
    uploads: stream('UploadsStream', 'uploads'),
    processed: stream('ProcessedStream', 'processed'),
    analyzed: stream('AnalyzedStream', 'analyzed'),
  };
  new CfnOutput(stack, 'UploadsStreamName', { value: streams.uploads.streamName, description: 'collections backfill --stream' });
  new CfnOutput(stack, 'ProcessedStreamName', { value: streams.processed.streamName });
  new CfnOutput(stack, 'AnalyzedStreamName', { value: streams.analyzed.streamName });
  return streams;
}

/** The stream each stage function reads. */
export function stageStreams(streams: Streams): Record<StageFunctionName, kinesis.Stream> {
  return { thumbnailer: streams.uploads, analyzer: streams.processed, embedder: streams.analyzed };
}

/**
 * An SQS dead-letter queue (of an EventBridge target or a Kinesis event
 * source), alarmed on depth as collections-<env>-<alarmName>-dlq-depth.
 */
function deadLetterQueue(stack: Stack, cfg: CollectionsConfig, alarms: Alarms, id: string, alarmName: string): sqs.Queue {
  const q = new sqs.Queue(stack, id, {
    encryption: sqs.QueueEncryption.SQS_MANAGED,
    enforceSSL: true,
    retentionPeriod: Duration.days(14),
    removalPolicy: dataRemovalPolicy(cfg),
  });
  acknowledge(q, 'AwsSolutions-SQS3', 'This queue is itself a dead-letter queue (of an EventBridge target or a Kinesis event source); it is alarmed on depth.');
  alarms.add(`${alarmName}-dlq-depth`, {
    metric: q.metricApproximateNumberOfMessagesVisible({ statistic: 'Maximum', period: Duration.minutes(5) }),
    threshold: 1,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
    evaluationPeriods: 1,
    alarmDescription: `Messages in the dead-letter queue ${id}: events or records were dropped after retries; inspect and redrive.`,
  });
  return q;
}

export interface EventRoutingProps {
  readonly config: CollectionsConfig;
  /** The images bucket: its events are matched by its name. */
  readonly bucket: s3.IBucket;
  readonly streams: Streams;
  /** Where the dead-letter queues' alarms go. */
  readonly alarms: Alarms;
}

/**
 * This environment's bus collections-<env> and the rules that fill the
 * streams: uploads (two hops, see the stack's header), ImageProcessed and
 * AnalysisComplete. Returns the bus.
 */
export function createEventRouting(stack: Stack, props: EventRoutingProps): events.EventBus {
  const { config: cfg, bucket, streams, alarms } = props;
  const env = cfg.envName;
  const dlq = (id: string, alarmName: string) => deadLetterQueue(stack, cfg, alarms, id, alarmName);
  const retry = { retryAttempts: 185, maxEventAge: Duration.hours(24) };
  const s3Event = {
    source: ['aws.s3'],
    // A deletion removes the item, its vectors and its thumbnail (the thumbnailer's phase 0).
    detailType: ['Object Created', 'Object Deleted'],
  };

  // This environment's own bus: another environment's stages cannot publish
  // on it (their roles may put events on their own bus only) and its rules
  // see nothing of another environment.
  const bus = new events.EventBus(stack, 'Bus', { eventBusName: `collections-${env}` });

  // Hop 1 (default bus, where S3 sends): everything created in this
  // environment's bucket (matched by name: every environment's bucket
  // notifies the same default bus) except thumbnails.
  new events.Rule(stack, 'ForwardUploadsRule', {
    description: `Objects created or deleted in the images bucket, except */thumbnails/*, to the collections-${env} bus`,
    eventPattern: {
      ...s3Event,
      detail: {
        bucket: { name: [bucket.bucketName] },
        object: { key: events.Match.anythingButWildcard(THUMBNAILS_WILDCARD) },
      },
    },
    targets: [new targets.EventBus(bus, { deadLetterQueue: dlq('ForwardUploadsDlq', 'forward-uploads-rule') })],
  });

  // Hop 2 (environment bus): only .jpg/.jpeg/.png, any case → Kinesis uploads.
  new events.Rule(stack, 'UploadsRule', {
    eventBus: bus,
    description: 'Images (.jpg/.jpeg/.png, any case) to the uploads stream',
    eventPattern: {
      ...s3Event,
      detail: {
        bucket: { name: [bucket.bucketName] },
        object: { key: events.Match.anyOf(...IMAGE_EXTENSIONS.map((e) => events.Match.suffixEqualsIgnoreCase(e))) },
      },
    },
    targets: [
      new targets.KinesisStream(streams.uploads, {
        // Kinesis takes partition keys of 256 characters at most; S3 keys
        // run to 1024 bytes, so the key cannot be one.
        partitionKeyPath: '$.detail.request-id',
        deadLetterQueue: dlq('UploadsRuleDlq', 'uploads-rule'),
        ...retry,
      }),
    ],
  });

  // The stages' events, put on this bus (EVENT_BUS_NAME).
  new events.Rule(stack, 'ImageProcessedRule', {
    eventBus: bus,
    description: 'ImageProcessed events to the processed stream',
    eventPattern: { source: [IMAGE_PROCESSED.source], detailType: [IMAGE_PROCESSED.detailType] },
    targets: [
      new targets.KinesisStream(streams.processed, {
        partitionKeyPath: '$.detail.item_uuid',
        deadLetterQueue: dlq('ImageProcessedRuleDlq', 'image-processed-rule'),
        ...retry,
      }),
    ],
  });

  new events.Rule(stack, 'AnalysisCompleteRule', {
    eventBus: bus,
    description: 'AnalysisComplete events to the analyzed stream',
    eventPattern: { source: [ANALYSIS_COMPLETE.source], detailType: [ANALYSIS_COMPLETE.detailType] },
    targets: [
      new targets.KinesisStream(streams.analyzed, {
        partitionKeyPath: '$.detail.item_uuid',
        deadLetterQueue: dlq('AnalysisCompleteRuleDlq', 'analysis-complete-rule'),
        ...retry,
      }),
    ],
  });
  return bus;
}

export interface StageTriggersProps {
  readonly config: CollectionsConfig;
  readonly functions: Record<StageFunctionName, RustFunction>;
  readonly streams: Streams;
  /** Where the on-failure queues' alarms go. */
  readonly alarms: Alarms;
}

/**
 * Each stage function's Kinesis trigger on its stream: the stage's batching,
 * bisect on error, bounded retries and record age, partial batch responses,
 * and an SQS on-failure destination.
 */
export function connectStages(stack: Stack, props: StageTriggersProps): void {
  const { config: cfg, functions, alarms } = props;
  const streams = stageStreams(props.streams);
  const connect = (fn: RustFunction, stream: kinesis.Stream, batching: StageBatching) => {
    const dlq = deadLetterQueue(stack, cfg, alarms, `${fn.node.id}FailuresDlq`, `${fn.node.id.toLowerCase()}-failures`);
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
  };
  connect(functions.thumbnailer, streams.thumbnailer, cfg.thumbnailer);
  connect(functions.analyzer, streams.analyzer, cfg.analyzer);
  connect(functions.embedder, streams.embedder, cfg.embedder);
}
