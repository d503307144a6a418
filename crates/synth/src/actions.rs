//! The curated table of API calls the generator emits.
//!
//! Every entry is a call whose CloudTrail `eventName` is exactly the IAM action name, so the IAM action
//! is `prefix:eventName` with `prefix` the IAM service prefix of the `eventSource` (the "direct"
//! mapping). Calls whose event name differs from the action (`ListObjects` → `s3:ListBucket`, Lambda's
//! API-version suffixes, `HeadObject`), that need several actions (`RunInstances` also needs
//! `iam:PassRole`, `CreateStack`, `CopyObject`, ...) or need none (`sts:GetCallerIdentity`) are
//! deliberately absent. Access levels follow the AWS Service Authorization Reference; a test checks
//! every entry against the vendored catalog in `data/aws/`.

/// The access level of an action, as the Service Authorization Reference names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    List,
    Read,
    Write,
    PermissionsManagement,
    Tagging,
}

impl Level {
    /// The spelling used by the Service Authorization Reference.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::List => "List",
            Level::Read => "Read",
            Level::Write => "Write",
            Level::PermissionsManagement => "Permissions management",
            Level::Tagging => "Tagging",
        }
    }
}

/// What the call's `requestParameters` (and `resources`) talk about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Res {
    None,
    S3Bucket,
    S3Object,
    IamRole,
    IamUser,
    IamPolicy,
    IamGroup,
    StsRole,
    Ec2Instance,
    Ec2Generic,
    DdbTable,
    DdbItem,
    KmsKey,
    SqsQueue,
    SnsTopic,
    Metric,
    LogGroup,
    SsmParam,
    Secret,
    Trail,
    RdsInstance,
    EcrRepo,
    EcsCluster,
    EksCluster,
    GlueTable,
    GlueJob,
    Athena,
    Stack,
}

/// One emitted API call.
#[derive(Debug, Clone, Copy)]
pub struct ApiCall {
    /// IAM service prefix (`s3`).
    pub prefix: &'static str,
    /// CloudTrail `eventSource` (`s3.amazonaws.com`).
    pub source: &'static str,
    /// CloudTrail `eventName`, equal to the IAM action name.
    pub name: &'static str,
    pub level: Level,
    pub res: Res,
    /// CloudTrail data event (`managementEvent: false`, `eventCategory: Data`).
    pub data: bool,
}

impl ApiCall {
    /// `prefix:name`, the IAM action.
    pub fn action(&self) -> String {
        format!("{}:{}", self.prefix, self.name)
    }

    /// CloudTrail `readOnly`.
    pub fn read_only(&self) -> bool {
        matches!(self.level, Level::List | Level::Read)
    }

    /// Logged in `us-east-1` whatever region the caller uses (IAM is global).
    pub fn global(&self) -> bool {
        self.prefix == "iam"
    }
}

const fn c(prefix: &'static str, source: &'static str, name: &'static str, level: Level, res: Res) -> ApiCall {
    ApiCall { prefix, source, name, level, res, data: false }
}

const fn d(prefix: &'static str, source: &'static str, name: &'static str, level: Level, res: Res) -> ApiCall {
    ApiCall { prefix, source, name, level, res, data: true }
}

use Level::{List as L, PermissionsManagement as P, Read as R, Tagging as T, Write as W};

const S3: &str = "s3.amazonaws.com";
const IAM: &str = "iam.amazonaws.com";
const STS: &str = "sts.amazonaws.com";
const EC2: &str = "ec2.amazonaws.com";
const DDB: &str = "dynamodb.amazonaws.com";
const KMS: &str = "kms.amazonaws.com";
const SQS: &str = "sqs.amazonaws.com";
const SNS: &str = "sns.amazonaws.com";
const CW: &str = "monitoring.amazonaws.com";
const LOGS: &str = "logs.amazonaws.com";
const SSM: &str = "ssm.amazonaws.com";
const SM: &str = "secretsmanager.amazonaws.com";
const CT: &str = "cloudtrail.amazonaws.com";
const RDS: &str = "rds.amazonaws.com";
const ECR: &str = "ecr.amazonaws.com";
const ECS: &str = "ecs.amazonaws.com";
const EKS: &str = "eks.amazonaws.com";
const GLUE: &str = "glue.amazonaws.com";
const ATH: &str = "athena.amazonaws.com";
const CFN: &str = "cloudformation.amazonaws.com";

/// The table. Order is part of the generator's determinism: append only.
pub static CALLS: &[ApiCall] = &[
    // S3
    d("s3", S3, "GetObject", R, Res::S3Object),
    d("s3", S3, "PutObject", W, Res::S3Object),
    d("s3", S3, "DeleteObject", W, Res::S3Object),
    d("s3", S3, "GetObjectAcl", R, Res::S3Object),
    d("s3", S3, "PutObjectAcl", P, Res::S3Object),
    d("s3", S3, "GetObjectTagging", R, Res::S3Object),
    d("s3", S3, "PutObjectTagging", T, Res::S3Object),
    d("s3", S3, "RestoreObject", W, Res::S3Object),
    c("s3", S3, "CreateBucket", W, Res::S3Bucket),
    c("s3", S3, "DeleteBucket", W, Res::S3Bucket),
    c("s3", S3, "GetBucketPolicy", R, Res::S3Bucket),
    c("s3", S3, "PutBucketPolicy", P, Res::S3Bucket),
    c("s3", S3, "DeleteBucketPolicy", P, Res::S3Bucket),
    c("s3", S3, "GetBucketAcl", R, Res::S3Bucket),
    c("s3", S3, "PutBucketAcl", P, Res::S3Bucket),
    c("s3", S3, "GetBucketVersioning", R, Res::S3Bucket),
    c("s3", S3, "GetBucketLogging", R, Res::S3Bucket),
    c("s3", S3, "GetBucketTagging", R, Res::S3Bucket),
    c("s3", S3, "PutBucketTagging", T, Res::S3Bucket),
    c("s3", S3, "GetBucketPolicyStatus", R, Res::S3Bucket),
    c("s3", S3, "GetBucketPublicAccessBlock", R, Res::S3Bucket),
    c("s3", S3, "GetBucketLocation", R, Res::S3Bucket),
    c("s3", S3, "GetBucketWebsite", R, Res::S3Bucket),
    c("s3", S3, "GetBucketNotification", R, Res::S3Bucket),
    c("s3", S3, "GetBucketOwnershipControls", R, Res::S3Bucket),
    // IAM (global: logged in us-east-1)
    c("iam", IAM, "ListUsers", L, Res::None),
    c("iam", IAM, "ListRoles", L, Res::None),
    c("iam", IAM, "ListGroups", L, Res::None),
    c("iam", IAM, "ListPolicies", L, Res::None),
    c("iam", IAM, "GetUser", R, Res::IamUser),
    c("iam", IAM, "GetRole", R, Res::IamRole),
    c("iam", IAM, "GetGroup", R, Res::IamGroup),
    c("iam", IAM, "GetPolicy", R, Res::IamPolicy),
    c("iam", IAM, "GetPolicyVersion", R, Res::IamPolicy),
    c("iam", IAM, "ListAttachedRolePolicies", L, Res::IamRole),
    c("iam", IAM, "ListRolePolicies", L, Res::IamRole),
    c("iam", IAM, "GetRolePolicy", R, Res::IamRole),
    c("iam", IAM, "ListAttachedUserPolicies", L, Res::IamUser),
    c("iam", IAM, "ListGroupsForUser", L, Res::IamUser),
    c("iam", IAM, "ListAccessKeys", L, Res::IamUser),
    c("iam", IAM, "ListMFADevices", L, Res::IamUser),
    c("iam", IAM, "ListEntitiesForPolicy", L, Res::IamPolicy),
    c("iam", IAM, "ListInstanceProfiles", L, Res::None),
    c("iam", IAM, "GetAccountSummary", L, Res::None),
    c("iam", IAM, "GetAccountAuthorizationDetails", R, Res::None),
    c("iam", IAM, "GenerateCredentialReport", R, Res::None),
    c("iam", IAM, "GetCredentialReport", R, Res::None),
    c("iam", IAM, "CreateRole", P, Res::IamRole),
    c("iam", IAM, "DeleteRole", P, Res::IamRole),
    c("iam", IAM, "TagRole", T, Res::IamRole),
    c("iam", IAM, "UpdateAssumeRolePolicy", P, Res::IamRole),
    c("iam", IAM, "AttachRolePolicy", P, Res::IamRole),
    c("iam", IAM, "DetachRolePolicy", P, Res::IamRole),
    c("iam", IAM, "PutRolePolicy", P, Res::IamRole),
    c("iam", IAM, "CreatePolicy", P, Res::IamPolicy),
    c("iam", IAM, "CreatePolicyVersion", P, Res::IamPolicy),
    c("iam", IAM, "CreateUser", P, Res::IamUser),
    c("iam", IAM, "AttachUserPolicy", P, Res::IamUser),
    c("iam", IAM, "PutUserPolicy", P, Res::IamUser),
    c("iam", IAM, "AddUserToGroup", P, Res::IamUser),
    c("iam", IAM, "CreateAccessKey", P, Res::IamUser),
    c("iam", IAM, "UpdateAccessKey", P, Res::IamUser),
    c("iam", IAM, "DeleteAccessKey", P, Res::IamUser),
    // STS
    c("sts", STS, "AssumeRole", W, Res::StsRole),
    c("sts", STS, "DecodeAuthorizationMessage", W, Res::None),
    // EC2
    c("ec2", EC2, "DescribeInstances", L, Res::Ec2Generic),
    c("ec2", EC2, "DescribeInstanceStatus", L, Res::Ec2Generic),
    c("ec2", EC2, "DescribeVpcs", L, Res::Ec2Generic),
    c("ec2", EC2, "DescribeSubnets", L, Res::Ec2Generic),
    c("ec2", EC2, "DescribeSecurityGroups", L, Res::Ec2Generic),
    c("ec2", EC2, "DescribeVolumes", L, Res::Ec2Generic),
    c("ec2", EC2, "DescribeImages", L, Res::Ec2Generic),
    c("ec2", EC2, "DescribeSnapshots", L, Res::Ec2Generic),
    c("ec2", EC2, "DescribeRegions", L, Res::Ec2Generic),
    c("ec2", EC2, "DescribeAvailabilityZones", L, Res::Ec2Generic),
    c("ec2", EC2, "DescribeNetworkInterfaces", L, Res::Ec2Generic),
    c("ec2", EC2, "DescribeKeyPairs", L, Res::Ec2Generic),
    c("ec2", EC2, "DescribeLaunchTemplates", L, Res::Ec2Generic),
    c("ec2", EC2, "StartInstances", W, Res::Ec2Instance),
    c("ec2", EC2, "StopInstances", W, Res::Ec2Instance),
    c("ec2", EC2, "TerminateInstances", W, Res::Ec2Instance),
    c("ec2", EC2, "RebootInstances", W, Res::Ec2Instance),
    c("ec2", EC2, "CreateTags", T, Res::Ec2Instance),
    c("ec2", EC2, "CreateSnapshot", W, Res::Ec2Generic),
    c("ec2", EC2, "CreateSecurityGroup", W, Res::Ec2Generic),
    c("ec2", EC2, "AuthorizeSecurityGroupIngress", W, Res::Ec2Generic),
    // DynamoDB
    d("dynamodb", DDB, "GetItem", R, Res::DdbItem),
    d("dynamodb", DDB, "PutItem", W, Res::DdbItem),
    d("dynamodb", DDB, "UpdateItem", W, Res::DdbItem),
    d("dynamodb", DDB, "DeleteItem", W, Res::DdbItem),
    d("dynamodb", DDB, "Query", R, Res::DdbTable),
    d("dynamodb", DDB, "Scan", R, Res::DdbTable),
    d("dynamodb", DDB, "BatchGetItem", R, Res::DdbTable),
    d("dynamodb", DDB, "BatchWriteItem", W, Res::DdbTable),
    c("dynamodb", DDB, "DescribeTable", R, Res::DdbTable),
    c("dynamodb", DDB, "ListTables", L, Res::None),
    c("dynamodb", DDB, "CreateTable", W, Res::DdbTable),
    c("dynamodb", DDB, "DescribeContinuousBackups", R, Res::DdbTable),
    c("dynamodb", DDB, "DescribeTimeToLive", R, Res::DdbTable),
    c("dynamodb", DDB, "ListTagsOfResource", R, Res::DdbTable),
    // KMS
    c("kms", KMS, "Decrypt", W, Res::KmsKey),
    c("kms", KMS, "Encrypt", W, Res::KmsKey),
    c("kms", KMS, "GenerateDataKey", W, Res::KmsKey),
    c("kms", KMS, "DescribeKey", R, Res::KmsKey),
    c("kms", KMS, "ListKeys", L, Res::None),
    c("kms", KMS, "ListAliases", L, Res::None),
    c("kms", KMS, "GetKeyPolicy", R, Res::KmsKey),
    c("kms", KMS, "GetKeyRotationStatus", R, Res::KmsKey),
    c("kms", KMS, "ScheduleKeyDeletion", W, Res::KmsKey),
    // SQS
    d("sqs", SQS, "SendMessage", W, Res::SqsQueue),
    d("sqs", SQS, "ReceiveMessage", R, Res::SqsQueue),
    d("sqs", SQS, "DeleteMessage", W, Res::SqsQueue),
    d("sqs", SQS, "ChangeMessageVisibility", W, Res::SqsQueue),
    c("sqs", SQS, "GetQueueAttributes", R, Res::SqsQueue),
    c("sqs", SQS, "GetQueueUrl", R, Res::SqsQueue),
    c("sqs", SQS, "ListQueues", R, Res::None),
    c("sqs", SQS, "SetQueueAttributes", P, Res::SqsQueue),
    c("sqs", SQS, "PurgeQueue", W, Res::SqsQueue),
    // SNS
    d("sns", SNS, "Publish", W, Res::SnsTopic),
    c("sns", SNS, "ListTopics", L, Res::None),
    c("sns", SNS, "GetTopicAttributes", R, Res::SnsTopic),
    c("sns", SNS, "ListSubscriptionsByTopic", L, Res::SnsTopic),
    c("sns", SNS, "Subscribe", W, Res::SnsTopic),
    // CloudWatch (eventSource monitoring.amazonaws.com)
    c("cloudwatch", CW, "PutMetricData", W, Res::Metric),
    c("cloudwatch", CW, "GetMetricData", R, Res::Metric),
    c("cloudwatch", CW, "GetMetricStatistics", R, Res::Metric),
    c("cloudwatch", CW, "ListMetrics", L, Res::Metric),
    c("cloudwatch", CW, "DescribeAlarms", R, Res::None),
    c("cloudwatch", CW, "PutMetricAlarm", W, Res::Metric),
    c("cloudwatch", CW, "DeleteAlarms", W, Res::None),
    // CloudWatch Logs
    c("logs", LOGS, "CreateLogGroup", W, Res::LogGroup),
    c("logs", LOGS, "CreateLogStream", W, Res::LogGroup),
    c("logs", LOGS, "DescribeLogGroups", L, Res::None),
    c("logs", LOGS, "DescribeLogStreams", L, Res::LogGroup),
    c("logs", LOGS, "FilterLogEvents", R, Res::LogGroup),
    c("logs", LOGS, "GetLogEvents", R, Res::LogGroup),
    c("logs", LOGS, "PutRetentionPolicy", W, Res::LogGroup),
    c("logs", LOGS, "StartQuery", R, Res::LogGroup),
    c("logs", LOGS, "GetQueryResults", R, Res::None),
    // SSM
    c("ssm", SSM, "GetParameter", R, Res::SsmParam),
    c("ssm", SSM, "GetParameters", R, Res::SsmParam),
    c("ssm", SSM, "GetParametersByPath", R, Res::SsmParam),
    c("ssm", SSM, "DescribeParameters", L, Res::None),
    c("ssm", SSM, "PutParameter", W, Res::SsmParam),
    c("ssm", SSM, "DescribeInstanceInformation", R, Res::None),
    // Secrets Manager
    c("secretsmanager", SM, "GetSecretValue", R, Res::Secret),
    c("secretsmanager", SM, "DescribeSecret", R, Res::Secret),
    c("secretsmanager", SM, "ListSecrets", L, Res::None),
    c("secretsmanager", SM, "PutSecretValue", W, Res::Secret),
    c("secretsmanager", SM, "RotateSecret", W, Res::Secret),
    c("secretsmanager", SM, "GetResourcePolicy", R, Res::Secret),
    // CloudTrail
    c("cloudtrail", CT, "LookupEvents", R, Res::None),
    c("cloudtrail", CT, "DescribeTrails", R, Res::None),
    c("cloudtrail", CT, "GetTrailStatus", R, Res::Trail),
    c("cloudtrail", CT, "GetEventSelectors", R, Res::Trail),
    c("cloudtrail", CT, "ListTrails", L, Res::None),
    c("cloudtrail", CT, "StopLogging", W, Res::Trail),
    // RDS
    c("rds", RDS, "DescribeDBInstances", L, Res::RdsInstance),
    c("rds", RDS, "DescribeDBClusters", L, Res::None),
    c("rds", RDS, "DescribeDBSnapshots", L, Res::RdsInstance),
    c("rds", RDS, "CreateDBSnapshot", W, Res::RdsInstance),
    c("rds", RDS, "RebootDBInstance", W, Res::RdsInstance),
    // ECR
    c("ecr", ECR, "GetAuthorizationToken", R, Res::None),
    c("ecr", ECR, "BatchGetImage", R, Res::EcrRepo),
    c("ecr", ECR, "GetDownloadUrlForLayer", R, Res::EcrRepo),
    c("ecr", ECR, "BatchCheckLayerAvailability", R, Res::EcrRepo),
    c("ecr", ECR, "InitiateLayerUpload", W, Res::EcrRepo),
    c("ecr", ECR, "UploadLayerPart", W, Res::EcrRepo),
    c("ecr", ECR, "CompleteLayerUpload", W, Res::EcrRepo),
    c("ecr", ECR, "PutImage", W, Res::EcrRepo),
    c("ecr", ECR, "DescribeRepositories", R, Res::None),
    c("ecr", ECR, "DescribeImages", L, Res::EcrRepo),
    c("ecr", ECR, "ListImages", L, Res::EcrRepo),
    // ECS
    c("ecs", ECS, "ListClusters", L, Res::None),
    c("ecs", ECS, "DescribeClusters", R, Res::EcsCluster),
    c("ecs", ECS, "ListServices", L, Res::EcsCluster),
    c("ecs", ECS, "DescribeServices", R, Res::EcsCluster),
    c("ecs", ECS, "UpdateService", W, Res::EcsCluster),
    c("ecs", ECS, "DescribeTaskDefinition", R, Res::None),
    c("ecs", ECS, "ListTasks", L, Res::EcsCluster),
    c("ecs", ECS, "DescribeTasks", R, Res::EcsCluster),
    // EKS
    c("eks", EKS, "DescribeCluster", R, Res::EksCluster),
    c("eks", EKS, "ListClusters", L, Res::None),
    c("eks", EKS, "ListNodegroups", L, Res::EksCluster),
    c("eks", EKS, "DescribeNodegroup", R, Res::EksCluster),
    // Glue
    c("glue", GLUE, "GetDatabase", R, Res::GlueTable),
    c("glue", GLUE, "GetDatabases", R, Res::None),
    c("glue", GLUE, "GetTable", R, Res::GlueTable),
    c("glue", GLUE, "GetTables", R, Res::GlueTable),
    c("glue", GLUE, "GetPartitions", R, Res::GlueTable),
    c("glue", GLUE, "StartJobRun", W, Res::GlueJob),
    c("glue", GLUE, "GetJobRun", R, Res::GlueJob),
    c("glue", GLUE, "GetJobRuns", R, Res::GlueJob),
    c("glue", GLUE, "StartCrawler", W, Res::GlueJob),
    // Athena
    c("athena", ATH, "StartQueryExecution", W, Res::Athena),
    c("athena", ATH, "GetQueryExecution", R, Res::Athena),
    c("athena", ATH, "GetQueryResults", R, Res::Athena),
    c("athena", ATH, "StopQueryExecution", W, Res::Athena),
    c("athena", ATH, "ListWorkGroups", L, Res::None),
    c("athena", ATH, "GetWorkGroup", R, Res::Athena),
    // CloudFormation (read side only: create/update also need iam:PassRole)
    c("cloudformation", CFN, "DescribeStacks", L, Res::Stack),
    c("cloudformation", CFN, "DescribeStackEvents", R, Res::Stack),
    c("cloudformation", CFN, "ListStacks", L, Res::None),
    c("cloudformation", CFN, "GetTemplate", R, Res::Stack),
    c("cloudformation", CFN, "DescribeChangeSet", R, Res::Stack),
    c("cloudformation", CFN, "ExecuteChangeSet", W, Res::Stack),
];

/// Index of an action in [`CALLS`] by its `prefix:Name` spelling.
pub fn index_of(action: &str) -> Option<usize> {
    let (p, n) = action.split_once(':')?;
    CALLS.iter().position(|c| c.prefix == p && c.name == n)
}

/// Event names that exist on a real event source but map to no IAM action (injected as "unmapped").
pub static UNMAPPED: &[(&str, &str)] = &[
    ("s3.amazonaws.com", "InternalReplicateShardMetadata"),
    ("ec2.amazonaws.com", "SyncInternalHostInventory"),
    ("kms.amazonaws.com", "InternalKeyMaterialRefresh"),
    ("dynamodb.amazonaws.com", "InternalPartitionSplitNotice"),
];
