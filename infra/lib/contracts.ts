// The names the Rust code and this app must agree on, read at load time from
// contracts/pipeline.json, the one place they are written: the events the
// stages publish, the metrics namespace, its dimension and metric names, and
// the Stage dimension value of each stage function. Change a name there (and
// in the Rust code), not here. Rust tests check the Rust side against the same
// file; test/contracts.test.ts checks this one.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { defaultRepoRoot } from './repo-root';

/** contracts/pipeline.json of the repository the app is built from. */
export const PIPELINE_CONTRACT_FILE = join(defaultRepoRoot(), 'contracts', 'pipeline.json');

/** An event a stage puts on its environment's bus: its source and detail type. */
export interface EventContract {
  readonly source: string;
  readonly detailType: string;
}

/**
 * The stage functions, in pipeline order (the order of their alarms and
 * dashboard rows). The names are the app's (FUNCTIONS); the contract maps
 * each to its Stage dimension value and must name exactly these.
 */
export type StageFunctionName = 'thumbnailer' | 'analyzer' | 'embedder';
export const STAGE_FUNCTIONS: StageFunctionName[] = ['thumbnailer', 'analyzer', 'embedder'];

const contract: unknown = JSON.parse(readFileSync(PIPELINE_CONTRACT_FILE, 'utf8'));

function field(path: string): unknown {
  let v: unknown = contract;
  for (const k of path.split('.')) {
    v = v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>)[k] : undefined;
  }
  return v;
}

function invalid(path: string, expected: string): never {
  throw new Error(`${PIPELINE_CONTRACT_FILE}: ${path}: expected ${expected}`);
}

function text(path: string): string {
  const v = field(path);
  if (typeof v !== 'string' || v === '') invalid(path, 'a non-empty string');
  return v;
}

function texts(path: string): readonly string[] {
  const v = field(path);
  if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'string' && x !== '')) {
    invalid(path, 'a non-empty list of non-empty strings');
  }
  return Object.freeze([...(v as string[])]);
}

function event(key: string): EventContract {
  return Object.freeze({ source: text(`events.${key}.source`), detailType: text(`events.${key}.detailType`) });
}

function stageDimensions(): Readonly<Record<StageFunctionName, string>> {
  const v = field('stages');
  const given = v !== null && typeof v === 'object' && !Array.isArray(v) ? Object.keys(v).sort() : [];
  if (JSON.stringify(given) !== JSON.stringify([...STAGE_FUNCTIONS].sort())) {
    invalid('stages', `exactly the stage functions ${STAGE_FUNCTIONS.join(', ')}, got ${JSON.stringify(v)}`);
  }
  // In pipeline order, whatever the file's order.
  return Object.freeze(Object.fromEntries(STAGE_FUNCTIONS.map((n) => [n, text(`stages.${n}`)])) as Record<StageFunctionName, string>);
}

/** Event sources and detail types the stages publish (seed contracts). */
export const IMAGE_PROCESSED: EventContract = event('imageProcessed');
export const ANALYSIS_COMPLETE: EventContract = event('analysisComplete');

/**
 * The metrics the stage functions log once per batch in CloudWatch embedded
 * metric format: this namespace, one dimension (STAGE_DIMENSION).
 */
export const METRICS_NAMESPACE: string = text('metrics.namespace');
/** The name of the dimension whose value is the stage (STAGE_DIMENSIONS). */
export const STAGE_DIMENSION: string = text('metrics.stageDimension');
/** The name of the dimension of the token metrics: the model. */
export const MODEL_DIMENSION: string = text('metrics.modelDimension');
/** The Stage dimension value of each stage function. */
export const STAGE_DIMENSIONS: Readonly<Record<StageFunctionName, string>> = stageDimensions();
/**
 * Counts per batch (Unit Count): records received; items done, skipped, failed
 * permanently (recorded on the item, not redelivered); records reported back
 * to Kinesis for another delivery; provider API requests. Besides: STAGE_DURATION_METRIC.
 */
export const STAGE_COUNT_METRICS: readonly string[] = texts('metrics.stageCounts');
/** A batch's duration (Unit Milliseconds). */
export const STAGE_DURATION_METRIC: string = text('metrics.stageDuration');
/** Provider tokens per batch and model (dimension MODEL_DIMENSION). */
export const TOKEN_METRICS: readonly string[] = texts('metrics.tokens');

/**
 * One of STAGE_COUNT_METRICS, by name: throws if the contract has no such
 * metric, so that an alarm or graph never watches a metric no stage logs.
 */
export function stageCountMetric(name: string): string {
  if (!STAGE_COUNT_METRICS.includes(name)) {
    throw new Error(`${PIPELINE_CONTRACT_FILE}: metrics.stageCounts has no ${name} (it has ${STAGE_COUNT_METRICS.join(', ')})`);
  }
  return name;
}
