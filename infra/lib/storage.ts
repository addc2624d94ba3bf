// Where the images are kept: the images bucket (EventBridge notifications on,
// lifecycle rules for thumbnails, old versions and unfinished uploads) and the
// bucket its server access logs go to.

import { CfnOutput, Duration, Stack } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';

import { CollectionsConfig, dataRemovalPolicy, THUMBNAIL_TAG_KEY, THUMBNAIL_TAG_VALUE } from './config';

/** The keys of the thumbnails: {user}/thumbnails/{file}, under every user's prefix. */
export const THUMBNAILS_WILDCARD = '*/thumbnails/*';

/** Creates the images bucket (and its access-log bucket) in `stack`. */
export function createImagesBucket(stack: Stack, cfg: CollectionsConfig): s3.Bucket {
  const removal = dataRemovalPolicy(cfg);
  const autoDelete = !cfg.retainData;
  const accessLogs = new s3.Bucket(stack, 'AccessLogsBucket', {
    encryption: s3.BucketEncryption.S3_MANAGED, // log delivery supports SSE-S3 only
    blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
    objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
    enforceSSL: true,
    lifecycleRules: [{ id: 'expire-access-logs', expiration: Duration.days(cfg.accessLogExpirationDays) }],
    removalPolicy: removal,
    autoDeleteObjects: autoDelete,
  });

  const lifecycleRules: s3.LifecycleRule[] = [
    { id: 'abort-incomplete-multipart-uploads', abortIncompleteMultipartUploadAfter: Duration.days(7) },
  ];
  if (cfg.thumbnailExpirationDays !== undefined) {
    // Lifecycle filters match a key *prefix*, tags or size, never a wildcard:
    // thumbnails live at {user}/thumbnails/{file}, so no prefix selects them.
    // The thumbnailer tags each thumbnail collections:kind=thumbnail instead.
    lifecycleRules.push({
      id: 'expire-thumbnails',
      tagFilters: { [THUMBNAIL_TAG_KEY]: THUMBNAIL_TAG_VALUE },
      expiration: Duration.days(cfg.thumbnailExpirationDays),
      // In a versioned bucket an expiry only hides the object: drop the old version too.
      noncurrentVersionExpiration: cfg.versioned ? Duration.days(30) : undefined,
    });
  }
  if (cfg.versioned) {
    lifecycleRules.push({ id: 'expire-noncurrent-versions', noncurrentVersionExpiration: Duration.days(90) });
  }

  const bucket = new s3.Bucket(stack, 'ImagesBucket', {
    encryption: s3.BucketEncryption.S3_MANAGED,
    blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
    objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
    enforceSSL: true,
    versioned: cfg.versioned,
    serverAccessLogsBucket: accessLogs,
    serverAccessLogsPrefix: 'images/',
    lifecycleRules,
    removalPolicy: removal,
    autoDeleteObjects: autoDelete,
    // eventBridgeEnabled is set natively below, not through this prop.
  });
  // `eventBridgeEnabled: true` on the L2 bucket is implemented by a
  // Custom::S3BucketNotifications Lambda; CloudFormation has the property
  // natively, so set it on the CfnBucket: same effect, no extra function.
  const cfnBucket = bucket.node.defaultChild as s3.CfnBucket;
  cfnBucket.notificationConfiguration = { eventBridgeConfiguration: { eventBridgeEnabled: true } };

  new CfnOutput(stack, 'BucketName', { value: bucket.bucketName, description: 'Upload images here as {user}/{item}.{jpg,jpeg,png}' });
  return bucket;
}
