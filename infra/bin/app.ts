#!/usr/bin/env node
import { buildApp } from '../lib/app';

const { app, stack } = buildApp();
if (stack.bundlingRequired === false) {
  process.stderr.write(
    `note: Lambda bundling skipped for ${stack.stackName}: this synth is for inspection only; do not deploy it.\n`,
  );
}
app.synth();
