// The names shared with the Rust code: what lib/contracts.ts exports (and
// lib/collections-stack.ts re-exports) is exactly contracts/pipeline.json,
// which the Rust tests check the Rust side against.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import * as stack from '../lib/collections-stack';
import * as contracts from '../lib/contracts';
import { build, REPO_ROOT, resourcesOfType } from './helpers';

const FILE = join(REPO_ROOT, 'contracts', 'pipeline.json');
const json = JSON.parse(readFileSync(FILE, 'utf8'));

describe('contracts/pipeline.json', () => {
  it('is the file lib/contracts.ts reads', () => {
    assert.equal(contracts.PIPELINE_CONTRACT_FILE, FILE);
  });

  it('gives the events the stages publish: source and detail type', () => {
    for (const m of [contracts, stack]) {
      assert.deepEqual(m.IMAGE_PROCESSED, json.events.imageProcessed);
      assert.deepEqual(m.ANALYSIS_COMPLETE, json.events.analysisComplete);
    }
  });

  it('gives the metrics namespace, the dimension names and the metric names', () => {
    for (const m of [contracts, stack]) {
      assert.equal(m.METRICS_NAMESPACE, json.metrics.namespace);
      assert.deepEqual(m.STAGE_COUNT_METRICS, json.metrics.stageCounts);
    }
    assert.equal(contracts.STAGE_DIMENSION, json.metrics.stageDimension);
    assert.equal(contracts.MODEL_DIMENSION, json.metrics.modelDimension);
    assert.equal(contracts.STAGE_DURATION_METRIC, json.metrics.stageDuration);
    assert.deepEqual(contracts.TOKEN_METRICS, json.metrics.tokens);
  });

  it('gives the Stage dimension value of each stage function; the stage functions are those of FUNCTIONS', () => {
    for (const m of [contracts, stack]) {
      assert.deepEqual(m.STAGE_DIMENSIONS, json.stages);
      assert.deepEqual([...m.STAGE_FUNCTIONS].sort(), Object.keys(json.stages).sort());
      for (const name of m.STAGE_FUNCTIONS) assert.ok(name in stack.FUNCTIONS, name);
    }
    // Pipeline order: the order of the stage alarms and dashboard rows.
    assert.deepEqual(contracts.STAGE_FUNCTIONS, ['thumbnailer', 'analyzer', 'embedder']);
  });

  it('has every stage count an alarm or graph names; stageCountMetric refuses any other', () => {
    for (const name of ['Failed', 'ApiCalls']) assert.equal(contracts.stageCountMetric(name), name);
    assert.throws(() => contracts.stageCountMetric('NoSuchMetric'), /metrics\.stageCounts has no NoSuchMetric/);
  });

  it('is what the stage alarms watch: its namespace, its Stage dimension and values, a metric it names', () => {
    const { json: t } = build('dev');
    const stageAlarms = resourcesOfType(t, 'AWS::CloudWatch::Alarm')
      .map(([, a]) => a.Properties!)
      .filter((a) => a.Namespace === json.metrics.namespace);
    // Per stage: permanent failures and configuration faults.
    assert.equal(stageAlarms.length, 2 * Object.keys(json.stages).length);
    for (const a of stageAlarms) {
      assert.ok(json.metrics.stageCounts.includes(a.MetricName), a.MetricName);
      assert.equal(a.Dimensions.length, 1);
      assert.equal(a.Dimensions[0].Name, json.metrics.stageDimension);
      assert.ok(Object.values(json.stages).includes(a.Dimensions[0].Value), a.Dimensions[0].Value);
    }
  });
});
