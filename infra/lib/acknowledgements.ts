// cdk-nag acknowledgements: how every construct acknowledges a finding (with
// its reason), and the switch the tests turn them all off with.

import { Validations } from 'aws-cdk-lib';
import { IConstruct } from 'constructs';

let acknowledgementsEnabled = true;
/**
 * Tests only: build a stack without any acknowledgement, to check that every
 * acknowledgement still matches a real finding (no stale suppressions).
 */
export function setAcknowledgementsEnabled(enabled: boolean): void {
  acknowledgementsEnabled = enabled;
}

/** Acknowledge one cdk-nag finding on a construct (and its children), with the reason. */
export function acknowledge(scope: IConstruct, id: string, reason: string): void {
  if (!acknowledgementsEnabled) return;
  Validations.of(scope).acknowledge({ id, reason });
}
