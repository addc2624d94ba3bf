#!/usr/bin/env node
import { buildApp } from '../lib/app';

try {
  const { app, stack } = buildApp();
  if (!stack.bundlingRequired) {
    process.stderr.write(`note: Lambda bundling skipped for ${stack.stackName}: the Lambda code assets are the crate sources, so do not deploy this assembly.\n`);
  }
  app.synth();
} catch (e) {
  process.stderr.write(`error: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
}
