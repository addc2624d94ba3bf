// Builds the CDK app: one stack per invocation, Collections-<env>, with the
// cdk-nag AwsSolutions checks registered as a validation plugin (synthesis
// fails on any unacknowledged finding).

import { App, AppProps, Validations } from 'aws-cdk-lib';
import * as cxapi from 'aws-cdk-lib/cx-api';
import { AwsSolutionsChecks } from 'cdk-nag';

import { CollectionsStack } from './collections-stack';
import { bool, loadConfig } from './config';
import { defaultRepoRoot } from './repo-root';

// Re-exported: the tests import it from here.
export { defaultRepoRoot } from './repo-root';

export interface BuildResult {
  readonly app: App;
  readonly stack: CollectionsStack;
}

/**
 * Creates the app and its stack. `-c skipBundling=true` (or the
 * `aws:cdk:bundling-stacks` context set to []) skips the cargo-lambda build:
 * the template is complete but the Lambda assets are placeholders, so such a
 * synth is for inspection and tests only, never for deploy.
 */
export function buildApp(props: AppProps = {}, repoRoot: string = defaultRepoRoot()): BuildResult {
  const app = new App(props);
  if (bool(app, 'skipBundling', false)) {
    // Must happen before any child exists (context is frozen after that).
    app.node.setContext(cxapi.BUNDLING_STACKS, []);
  }
  const config = loadConfig(app);
  const stackName = `Collections-${config.envName}`;
  const stack = new CollectionsStack(app, stackName, { config, repoRoot });
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  return { app, stack };
}
