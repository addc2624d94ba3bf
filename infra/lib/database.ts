// Where the data lives and how each function reaches it: either an RDS
// PostgreSQL instance in a VPC of its own (security groups, the master secret
// RDS manages, and the secrets of the application and read-only roles, rotated)
// or an existing database named by an SSM parameter and optional secrets.

import { CfnOutput, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as rds from 'aws-cdk-lib/aws-rds';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { IConstruct } from 'constructs';

import { acknowledge } from './acknowledgements';
import { CollectionsConfig, DATABASE_NAME, DATABASE_PORT, databaseUrlParameter, dataRemovalPolicy } from './config';

/** The PostgreSQL role the stage functions log in as (created by the migrator). */
export const APP_DATABASE_USER = 'collections_app';
/**
 * Kept out of generated database passwords: characters that break a
 * postgres:// URL or shell/SQL quoting (spaces are off as well).
 */
export const PASSWORD_EXCLUDED_CHARACTERS = '"@/\\\'';
/** Days between rotations of the application role's password. */
export const APP_SECRET_ROTATION_DAYS = 30;
/** The read-only PostgreSQL role the search function logs in as (created by the migrator). */
export const SEARCH_DATABASE_USER = 'collections_search';

/** How one kind of function reaches the database. */
export interface DatabaseAccess {
  /** Its database environment variables. */
  readonly environment: Record<string, string>;
  /** Grants read of its credentials to a role. */
  grantRead(role: iam.Role): void;
}

/** The database and how the functions reach it. */
export interface Database {
  /** The stage functions: the application role (DML only) where there is one. */
  readonly stage: DatabaseAccess;
  /** The search function (with the search API only): the read-only role. */
  readonly search?: DatabaseAccess;
  /** The migrator: the owner (master) credentials, plus the secrets it provisions the roles from. */
  readonly migrator: DatabaseAccess;
  /** Set when the functions run in a VPC next to an RDS instance. */
  readonly vpc?: ec2.Vpc;
  readonly securityGroup?: ec2.ISecurityGroup;
  /** What must exist before the migrator can reach the database. */
  readonly readiness: IConstruct[];
  /** What must wait for the migrations (e.g. the rotation, which needs the role to exist). */
  readonly afterMigrations: IConstruct[];
  /** RDS mode: the instance. */
  readonly instance?: rds.CfnDBInstance;
  /** RDS mode: the application role's credentials (collections-<env>/database/app). */
  readonly appSecret?: secretsmanager.Secret;
  /** RDS mode with the search API: the read-only role's credentials (collections-<env>/database/search). */
  readonly searchSecret?: secretsmanager.Secret;
}

/** A database role's secret, collections-<env>/database/<name>. */
interface RoleSecretProps {
  readonly name: string;
  readonly user: string;
  /** What the role may do, and who logs in as it (for the secret's description). */
  readonly grants: string;
  readonly usedBy: string;
}

/** The existing database (context existingDatabase), else a new RDS instance in a new VPC, in `stack`. */
export function createDatabase(stack: Stack, cfg: CollectionsConfig): Database {
  return cfg.existingDatabase ? existingDatabase(stack, cfg) : rdsDatabase(stack, cfg);
}

function existingDatabase(stack: Stack, cfg: CollectionsConfig): Database {
  // This environment's own URL, /collections/<env>/DATABASE_URL: another
  // environment in the same account keeps its URL under its own prefix.
  const DATABASE_URL_PARAMETER = databaseUrlParameter(cfg.envName);
  const parameterArn = stack.formatArn({
    service: 'ssm',
    resource: 'parameter',
    resourceName: DATABASE_URL_PARAMETER.replace(/^\//, ''),
  });
  const readUrl = (role: iam.Role) =>
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ReadDatabaseUrl',
        actions: ['ssm:GetParameter'],
        resources: [parameterArn],
      }),
    );
  const owner: DatabaseAccess = { environment: { DATABASE_URL_PARAMETER }, grantRead: readUrl };
  // A function given a role's secret is denied the owner's URL explicitly.
  // Its API-key grants name exact parameters and do not cover the URL; the
  // deny keeps it so should a broader grant ever be added to its role.
  const denyUrl = (role: iam.Role) =>
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'NoOwnerDatabaseUrl',
        effect: iam.Effect.DENY,
        actions: ['ssm:GetParameter', 'ssm:GetParameters'],
        resources: [parameterArn],
      }),
    );
  // An operator's secret (full ARN; host, port and dbname in it, since
  // there are no DATABASE_HOST/PORT/NAME here): the function connects with
  // it and no longer reads the URL.
  const viaSecret = (sid: string, arn: string): DatabaseAccess => ({
    environment: { DATABASE_SECRET_ARN: arn },
    grantRead: (role) => {
      role.addToPrincipalPolicy(new iam.PolicyStatement({ sid, actions: ['secretsmanager:GetSecretValue'], resources: [arn] }));
      denyUrl(role);
    },
  });
  // Without an application secret every stage connects with the URL's user.
  const appArn = cfg.appDatabaseSecretArn;
  // Required with the search API in this mode (config.ts).
  const searchArn = cfg.search?.databaseSecretArn;
  // The migrator connects as the owner and provisions the roles from their secrets.
  const roleSecrets = [appArn, searchArn].filter((a): a is string => a !== undefined);
  return {
    stage: appArn === undefined ? owner : viaSecret('ReadAppDatabaseCredentials', appArn),
    search: searchArn === undefined ? undefined : viaSecret('ReadSearchDatabaseCredentials', searchArn),
    migrator: {
      environment: {
        DATABASE_URL_PARAMETER,
        ...(appArn === undefined ? {} : { APP_DATABASE_SECRET_ARN: appArn }),
        ...(searchArn === undefined ? {} : { SEARCH_DATABASE_SECRET_ARN: searchArn }),
      },
      grantRead: (role) => {
        readUrl(role);
        if (roleSecrets.length > 0) {
          role.addToPrincipalPolicy(
            new iam.PolicyStatement({ sid: 'ReadRoleDatabaseCredentials', actions: ['secretsmanager:GetSecretValue'], resources: roleSecrets }),
          );
        }
      },
    },
    readiness: [],
    afterMigrations: [],
  };
}

function rdsDatabase(stack: Stack, cfg: CollectionsConfig): Database {
  const flowLogs = new logs.LogGroup(stack, 'VpcFlowLogs', {
    retention: cfg.logRetention,
    removalPolicy: dataRemovalPolicy(cfg),
  });
  const vpc = new ec2.Vpc(stack, 'Vpc', {
    maxAzs: 2,
    natGateways: cfg.natGateways,
    subnetConfiguration: [
      { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 },
      { name: 'functions', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 22 },
      { name: 'database', subnetType: ec2.SubnetType.PRIVATE_ISOLATED, cidrMask: 24 },
    ],
    // S3 traffic (originals, thumbnails) skips the NAT gateway: free, and no NAT data charge.
    gatewayEndpoints: { S3: { service: ec2.GatewayVpcEndpointAwsService.S3 } },
    flowLogs: {
      rejected: {
        destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogs),
        trafficType: ec2.FlowLogTrafficType.REJECT,
      },
    },
  });

  const functionsSg = new ec2.SecurityGroup(stack, 'FunctionsSecurityGroup', {
    vpc,
    description: 'collections Lambda functions: HTTPS out, PostgreSQL to the database',
    allowAllOutbound: false,
  });
  functionsSg.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(443), 'HTTPS to AWS APIs and the LLM/embedding providers');
  const dbSg = new ec2.SecurityGroup(stack, 'DatabaseSecurityGroup', {
    vpc,
    description: 'collections PostgreSQL: only the pipeline functions may connect',
    allowAllOutbound: false,
  });
  dbSg.addIngressRule(functionsSg, ec2.Port.tcp(DATABASE_PORT), 'PostgreSQL from the collections functions');
  functionsSg.addEgressRule(dbSg, ec2.Port.tcp(DATABASE_PORT), 'PostgreSQL');

  const subnetGroup = new rds.SubnetGroup(stack, 'DatabaseSubnets', {
    vpc,
    description: 'collections PostgreSQL (isolated subnets)',
    vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_ISOLATED },
    removalPolicy: RemovalPolicy.DESTROY,
  });

  // L1 on purpose: ManageMasterUserPassword (RDS generates the password into
  // a Secrets Manager secret and rotates it) is not offered by the L2
  // DatabaseInstance, which would create and store a password itself.
  const database = new rds.CfnDBInstance(stack, 'Database', {
    engine: 'postgres',
    // RDS for PostgreSQL ships pgvector 0.8.0 from 17.1 on (16.5 on the 16
    // line); a pinned, current minor so CloudFormation creates exactly it
    // (a bare "17" is refused by cfn-lint as deprecated for new instances).
    engineVersion: cfg.dbEngineVersion,
    autoMinorVersionUpgrade: true,
    dbInstanceClass: cfg.dbInstanceClass,
    allocatedStorage: String(cfg.dbAllocatedStorageGiB),
    maxAllocatedStorage: Math.max(100, cfg.dbAllocatedStorageGiB * 2),
    storageType: 'gp3',
    storageEncrypted: true,
    dbName: DATABASE_NAME,
    port: String(DATABASE_PORT),
    masterUsername: 'collections',
    manageMasterUserPassword: true,
    multiAz: cfg.dbMultiAz,
    publiclyAccessible: false,
    dbSubnetGroupName: subnetGroup.subnetGroupName,
    vpcSecurityGroups: [dbSg.securityGroupId],
    deletionProtection: cfg.deletionProtection,
    backupRetentionPeriod: cfg.dbBackupRetentionDays,
    copyTagsToSnapshot: true,
  });
  database.applyRemovalPolicy(
    cfg.envName === 'dev' ? RemovalPolicy.DESTROY : RemovalPolicy.SNAPSHOT,
  );

  acknowledge(
    database,
    'AwsSolutions-RDS11',
    'The instance sits in isolated subnets and accepts only the functions\' security group; a non-default port adds no protection and breaks tooling defaults.',
  );
  if (!cfg.dbMultiAz) {
    acknowledge(database, 'AwsSolutions-RDS3', `Single-AZ in ${cfg.envName} to keep an idle environment cheap; prod is Multi-AZ.`);
  }
  if (!cfg.deletionProtection) {
    acknowledge(database, 'AwsSolutions-RDS10', `Deletion protection is on in prod only; ${cfg.envName} must be removable with cdk destroy.`);
  }

  // The roles' credentials. The migrator creates/updates each PostgreSQL
  // role from its secret (LOGIN, this password, its grants); the functions
  // log in with them and never see the master secret.
  const roleSecret = (id: string, props: RoleSecretProps) => createRoleSecret(stack, id, props, cfg, database, vpc, functionsSg);
  const app = roleSecret('AppDatabaseSecret', {
    name: 'app',
    user: APP_DATABASE_USER,
    grants: 'DML only',
    usedBy: 'the stage functions',
  });
  // With the search API only: the role the search function reads with.
  const search = cfg.search
    ? roleSecret('SearchDatabaseSecret', {
        name: 'search',
        user: SEARCH_DATABASE_USER,
        grants: 'SELECT only',
        usedBy: 'the search function',
      })
    : undefined;

  const masterArn = database.attrMasterUserSecretSecretArn;
  const appArn = app.secret.secretArn;
  const searchArn = search?.secret.secretArn;
  const location = {
    DATABASE_HOST: database.attrEndpointAddress,
    DATABASE_PORT: database.attrEndpointPort,
    DATABASE_NAME,
  };
  const readSecrets = (sid: string, resources: string[]) => (role: iam.Role) =>
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({ sid, actions: ['secretsmanager:GetSecretValue'], resources }),
    );

  new CfnOutput(stack, 'DatabaseEndpoint', { value: database.attrEndpointAddress });
  new CfnOutput(stack, 'DatabaseSecretArn', {
    value: masterArn,
    description: 'Master (owner) credentials: the migrator only',
  });
  new CfnOutput(stack, 'AppDatabaseSecretArn', {
    value: appArn,
    description: `${APP_DATABASE_USER} credentials (DML only): the stage functions`,
  });
  if (searchArn !== undefined) {
    new CfnOutput(stack, 'SearchDatabaseSecretArn', {
      value: searchArn,
      description: `${SEARCH_DATABASE_USER} credentials (SELECT only): the search function`,
    });
  }

  return {
    stage: {
      environment: { ...location, DATABASE_SECRET_ARN: appArn },
      grantRead: readSecrets('ReadAppDatabaseCredentials', [appArn]),
    },
    search:
      searchArn === undefined
        ? undefined
        : {
            environment: { ...location, DATABASE_SECRET_ARN: searchArn },
            grantRead: readSecrets('ReadSearchDatabaseCredentials', [searchArn]),
          },
    migrator: {
      environment: {
        ...location,
        DATABASE_SECRET_ARN: masterArn,
        APP_DATABASE_SECRET_ARN: appArn,
        ...(searchArn === undefined ? {} : { SEARCH_DATABASE_SECRET_ARN: searchArn }),
      },
      grantRead: readSecrets('ReadDatabaseCredentials', [masterArn, appArn, ...(searchArn === undefined ? [] : [searchArn])]),
    },
    vpc,
    securityGroup: functionsSg,
    readiness: [database, functionsSg, dbSg, app.attachment, ...(search ? [search.attachment] : [])],
    afterMigrations: [app.rotation, ...(search ? [search.rotation] : [])],
    instance: database,
    appSecret: app.secret,
    searchSecret: search?.secret,
  };
}

/**
 * The secret of a PostgreSQL role the migrator provisions, attached to the
 * instance and rotated. Encrypted with the AWS-managed aws/secretsmanager
 * key, like the RDS-managed master secret: no key policy to keep in step,
 * no kms:Decrypt grant needed.
 */
function createRoleSecret(
  stack: Stack,
  id: string,
  props: RoleSecretProps,
  cfg: CollectionsConfig,
  database: rds.CfnDBInstance,
  vpc: ec2.IVpc,
  functionsSg: ec2.ISecurityGroup,
): { secret: secretsmanager.Secret; attachment: secretsmanager.CfnSecretTargetAttachment; rotation: secretsmanager.RotationSchedule } {
  const secret = new secretsmanager.Secret(stack, id, {
    secretName: `collections-${cfg.envName}/database/${props.name}`,
    description: `collections ${cfg.envName}: PostgreSQL role ${props.user} (${props.grants}) of ${props.usedBy}`,
    generateSecretString: {
      secretStringTemplate: JSON.stringify({ username: props.user }),
      generateStringKey: 'password',
      passwordLength: 32,
      excludeCharacters: PASSWORD_EXCLUDED_CHARACTERS,
      includeSpace: false,
    },
  });
  // Adds host, port, engine and dbInstanceIdentifier to the secret: the
  // hosted rotation function reads them to connect.
  const attachment = new secretsmanager.CfnSecretTargetAttachment(stack, `${id}Attachment`, {
    secretId: secret.secretArn,
    targetId: database.ref,
    targetType: 'AWS::RDS::DBInstance',
  });
  // Single-user rotation: the rotation function (from the AWS Serverless
  // Application Repository, through the SecretsManager transform) logs in as
  // the role and changes its own password (any role may). It runs in the
  // functions' subnets with their security group: 5432 to the database, 443
  // (NAT) to Secrets Manager. It waits for the migrations, which create the role.
  const rotation = new secretsmanager.RotationSchedule(stack, `${id}Rotation`, {
    secret,
    hostedRotation: secretsmanager.HostedRotation.postgreSqlSingleUser({
      functionName: `collections-${cfg.envName}-${props.name}-secret-rotation`,
      vpc,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
      securityGroups: [functionsSg],
      excludeCharacters: PASSWORD_EXCLUDED_CHARACTERS,
    }),
    automaticallyAfter: Duration.days(APP_SECRET_ROTATION_DAYS),
  });
  rotation.node.addDependency(attachment);
  return { secret, attachment, rotation };
}
