//! The API calls the scenario emits: CloudTrail `eventSource`/`eventName` as AWS logs them, whether the
//! call is read-only or a data event, and what its `requestParameters` talk about.

/// What a call's `requestParameters` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum R {
    None,
    Ec2Filter,
    Bucket,
    Object,
    Instance,
    Volume,
    Snapshot,
    Table,
    Item,
    Function,
    LogGroup,
    Key,
    Secret,
    Role,
    User,
    Policy,
    Queue,
    Topic,
    Param,
    Db,
    DbSnapshot,
    Stack,
    Repo,
    Cluster,
    GlueJob,
    GlueTable,
    Athena,
    Metric,
    Trail,
    Detector,
    Recorder,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Api {
    pub(super) source: &'static str,
    pub(super) name: &'static str,
    pub(super) read_only: bool,
    pub(super) data: bool,
    pub(super) res: R,
}

impl Api {
    /// The IAM service prefix of the event source (`monitoring` is CloudWatch's `cloudwatch`).
    pub(super) fn service(&self) -> &'static str {
        match self.source {
            "monitoring.amazonaws.com" => "cloudwatch",
            "elasticloadbalancing.amazonaws.com" => "elasticloadbalancing",
            s => s.split('.').next().unwrap_or(s),
        }
    }

    /// Logged in `us-east-1` whatever region the caller uses.
    pub(super) fn global(&self) -> bool {
        matches!(self.source, "iam.amazonaws.com" | "organizations.amazonaws.com" | "route53.amazonaws.com")
    }
}

const fn rd(source: &'static str, name: &'static str, res: R) -> Api {
    Api { source, name, read_only: true, data: false, res }
}
const fn wr(source: &'static str, name: &'static str, res: R) -> Api {
    Api { source, name, read_only: false, data: false, res }
}
const fn drd(source: &'static str, name: &'static str, res: R) -> Api {
    Api { source, name, read_only: true, data: true, res }
}
const fn dwr(source: &'static str, name: &'static str, res: R) -> Api {
    Api { source, name, read_only: false, data: true, res }
}

const S3: &str = "s3.amazonaws.com";
const EC2: &str = "ec2.amazonaws.com";
const IAM: &str = "iam.amazonaws.com";
const STS: &str = "sts.amazonaws.com";
const LAMBDA: &str = "lambda.amazonaws.com";
const DDB: &str = "dynamodb.amazonaws.com";
const CW: &str = "monitoring.amazonaws.com";
const LOGS: &str = "logs.amazonaws.com";
const KMS: &str = "kms.amazonaws.com";
const SM: &str = "secretsmanager.amazonaws.com";
const RDS: &str = "rds.amazonaws.com";
const CT: &str = "cloudtrail.amazonaws.com";
const GD: &str = "guardduty.amazonaws.com";
const CFG: &str = "config.amazonaws.com";
const SQS: &str = "sqs.amazonaws.com";
const SNS: &str = "sns.amazonaws.com";
const ECR: &str = "ecr.amazonaws.com";
const ECS: &str = "ecs.amazonaws.com";
const CFN: &str = "cloudformation.amazonaws.com";
const GLUE: &str = "glue.amazonaws.com";
const ATHENA: &str = "athena.amazonaws.com";
const ORG: &str = "organizations.amazonaws.com";
const SSM: &str = "ssm.amazonaws.com";
const ELB: &str = "elasticloadbalancing.amazonaws.com";
const R53: &str = "route53.amazonaws.com";

pub(super) const APIS: &[Api] = &[
    // s3
    rd(S3, "ListBuckets", R::None),
    rd(S3, "GetBucketLocation", R::Bucket),
    rd(S3, "GetBucketPolicy", R::Bucket),
    rd(S3, "GetBucketAcl", R::Bucket),
    rd(S3, "GetBucketVersioning", R::Bucket),
    rd(S3, "GetBucketEncryption", R::Bucket),
    rd(S3, "GetBucketPublicAccessBlock", R::Bucket),
    rd(S3, "GetBucketLogging", R::Bucket),
    wr(S3, "PutBucketPolicy", R::Bucket),
    wr(S3, "PutBucketAcl", R::Bucket),
    wr(S3, "PutBucketTagging", R::Bucket),
    drd(S3, "ListObjects", R::Bucket),
    drd(S3, "GetObject", R::Object),
    drd(S3, "HeadObject", R::Object),
    dwr(S3, "PutObject", R::Object),
    dwr(S3, "DeleteObject", R::Object),
    // ec2
    rd(EC2, "DescribeInstances", R::Ec2Filter),
    rd(EC2, "DescribeSecurityGroups", R::Ec2Filter),
    rd(EC2, "DescribeVpcs", R::Ec2Filter),
    rd(EC2, "DescribeSubnets", R::Ec2Filter),
    rd(EC2, "DescribeVolumes", R::Ec2Filter),
    rd(EC2, "DescribeSnapshots", R::Ec2Filter),
    rd(EC2, "DescribeImages", R::Ec2Filter),
    rd(EC2, "DescribeRegions", R::Ec2Filter),
    rd(EC2, "DescribeFlowLogs", R::Ec2Filter),
    rd(EC2, "DescribeKeyPairs", R::Ec2Filter),
    rd(EC2, "DescribeNetworkInterfaces", R::Ec2Filter),
    rd(EC2, "DescribeInstanceStatus", R::Ec2Filter),
    wr(EC2, "StartInstances", R::Instance),
    wr(EC2, "StopInstances", R::Instance),
    wr(EC2, "RebootInstances", R::Instance),
    wr(EC2, "CreateTags", R::Instance),
    wr(EC2, "CreateSnapshot", R::Volume),
    wr(EC2, "ModifySnapshotAttribute", R::Snapshot),
    wr(EC2, "DeleteFlowLogs", R::None),
    // iam
    rd(IAM, "ListUsers", R::None),
    rd(IAM, "ListRoles", R::None),
    rd(IAM, "ListGroups", R::None),
    rd(IAM, "ListPolicies", R::None),
    rd(IAM, "GetUser", R::User),
    rd(IAM, "GetRole", R::Role),
    rd(IAM, "GetPolicy", R::Policy),
    rd(IAM, "GetPolicyVersion", R::Policy),
    rd(IAM, "ListAttachedUserPolicies", R::User),
    rd(IAM, "ListAttachedRolePolicies", R::Role),
    rd(IAM, "ListRolePolicies", R::Role),
    rd(IAM, "ListUserPolicies", R::User),
    rd(IAM, "ListGroupsForUser", R::User),
    rd(IAM, "ListAccessKeys", R::User),
    rd(IAM, "ListMFADevices", R::User),
    rd(IAM, "GetAccountSummary", R::None),
    rd(IAM, "GetAccountAuthorizationDetails", R::None),
    rd(IAM, "GenerateCredentialReport", R::None),
    rd(IAM, "GetCredentialReport", R::None),
    rd(IAM, "ListInstanceProfiles", R::None),
    wr(IAM, "CreateUser", R::User),
    wr(IAM, "CreateRole", R::Role),
    wr(IAM, "CreateAccessKey", R::User),
    wr(IAM, "UpdateAccessKey", R::User),
    wr(IAM, "DeleteAccessKey", R::User),
    wr(IAM, "AttachRolePolicy", R::Role),
    wr(IAM, "AttachUserPolicy", R::User),
    wr(IAM, "PutRolePolicy", R::Role),
    wr(IAM, "CreatePolicyVersion", R::Policy),
    wr(IAM, "SetDefaultPolicyVersion", R::Policy),
    wr(IAM, "UpdateAssumeRolePolicy", R::Role),
    wr(IAM, "AddUserToGroup", R::User),
    wr(IAM, "TagRole", R::Role),
    // sts
    rd(STS, "GetCallerIdentity", R::None),
    rd(STS, "AssumeRole", R::Role),
    // federated sign-ins: the role's trust policy authorizes them, not the caller's permissions
    // (like GetCallerIdentity, never in an identity's habits or policies); parameters always explicit
    rd(STS, "AssumeRoleWithSAML", R::None),
    rd(STS, "AssumeRoleWithWebIdentity", R::None),
    // lambda
    rd(LAMBDA, "ListFunctions20150331", R::None),
    rd(LAMBDA, "GetFunction20150331v2", R::Function),
    rd(LAMBDA, "GetFunctionConfiguration20150331v2", R::Function),
    rd(LAMBDA, "ListEventSourceMappings20150331", R::None),
    wr(LAMBDA, "UpdateFunctionCode20150331v2", R::Function),
    wr(LAMBDA, "UpdateFunctionConfiguration20150331v2", R::Function),
    wr(LAMBDA, "CreateFunction20150331", R::Function),
    dwr(LAMBDA, "Invoke", R::Function),
    // dynamodb
    rd(DDB, "ListTables", R::None),
    rd(DDB, "DescribeTable", R::Table),
    drd(DDB, "GetItem", R::Item),
    drd(DDB, "Query", R::Table),
    drd(DDB, "Scan", R::Table),
    dwr(DDB, "PutItem", R::Item),
    dwr(DDB, "UpdateItem", R::Item),
    dwr(DDB, "BatchWriteItem", R::Table),
    // cloudwatch
    rd(CW, "GetMetricData", R::Metric),
    rd(CW, "GetMetricStatistics", R::Metric),
    rd(CW, "DescribeAlarms", R::None),
    rd(CW, "ListMetrics", R::None),
    wr(CW, "PutMetricAlarm", R::Metric),
    // logs
    rd(LOGS, "DescribeLogGroups", R::None),
    rd(LOGS, "DescribeLogStreams", R::LogGroup),
    rd(LOGS, "FilterLogEvents", R::LogGroup),
    rd(LOGS, "GetLogEvents", R::LogGroup),
    rd(LOGS, "StartQuery", R::LogGroup),
    rd(LOGS, "GetQueryResults", R::None),
    wr(LOGS, "CreateLogStream", R::LogGroup),
    wr(LOGS, "CreateLogGroup", R::LogGroup),
    wr(LOGS, "PutRetentionPolicy", R::LogGroup),
    wr(LOGS, "DeleteLogGroup", R::LogGroup),
    // kms
    rd(KMS, "Decrypt", R::Key),
    rd(KMS, "Encrypt", R::Key),
    rd(KMS, "GenerateDataKey", R::Key),
    rd(KMS, "DescribeKey", R::Key),
    rd(KMS, "ListKeys", R::None),
    rd(KMS, "ListAliases", R::None),
    // secretsmanager
    rd(SM, "GetSecretValue", R::Secret),
    rd(SM, "DescribeSecret", R::Secret),
    rd(SM, "ListSecrets", R::None),
    wr(SM, "PutSecretValue", R::Secret),
    // rds
    rd(RDS, "DescribeDBInstances", R::None),
    rd(RDS, "DescribeDBSnapshots", R::None),
    rd(RDS, "DescribeDBClusters", R::None),
    wr(RDS, "CreateDBSnapshot", R::Db),
    wr(RDS, "ModifyDBSnapshotAttribute", R::DbSnapshot),
    // cloudtrail
    rd(CT, "DescribeTrails", R::None),
    rd(CT, "GetTrailStatus", R::Trail),
    rd(CT, "GetEventSelectors", R::Trail),
    rd(CT, "LookupEvents", R::None),
    wr(CT, "StopLogging", R::Trail),
    wr(CT, "DeleteTrail", R::Trail),
    wr(CT, "UpdateTrail", R::Trail),
    // guardduty
    rd(GD, "ListDetectors", R::None),
    rd(GD, "GetDetector", R::Detector),
    rd(GD, "ListFindings", R::Detector),
    rd(GD, "GetFindings", R::Detector),
    wr(GD, "DeleteDetector", R::Detector),
    // config
    rd(CFG, "DescribeConfigurationRecorders", R::None),
    rd(CFG, "DescribeConfigurationRecorderStatus", R::None),
    rd(CFG, "DescribeConfigRules", R::None),
    wr(CFG, "StopConfigurationRecorder", R::Recorder),
    // sqs
    rd(SQS, "ListQueues", R::None),
    rd(SQS, "GetQueueAttributes", R::Queue),
    drd(SQS, "ReceiveMessage", R::Queue),
    dwr(SQS, "SendMessage", R::Queue),
    dwr(SQS, "DeleteMessage", R::Queue),
    // sns
    rd(SNS, "ListTopics", R::None),
    dwr(SNS, "Publish", R::Topic),
    // ecr
    rd(ECR, "GetAuthorizationToken", R::None),
    rd(ECR, "DescribeRepositories", R::None),
    rd(ECR, "BatchCheckLayerAvailability", R::Repo),
    rd(ECR, "BatchGetImage", R::Repo),
    wr(ECR, "InitiateLayerUpload", R::Repo),
    wr(ECR, "CompleteLayerUpload", R::Repo),
    wr(ECR, "PutImage", R::Repo),
    // ecs
    rd(ECS, "ListClusters", R::None),
    rd(ECS, "DescribeClusters", R::Cluster),
    rd(ECS, "DescribeServices", R::Cluster),
    rd(ECS, "ListTasks", R::Cluster),
    rd(ECS, "DescribeTasks", R::Cluster),
    wr(ECS, "UpdateService", R::Cluster),
    wr(ECS, "RegisterTaskDefinition", R::None),
    // cloudformation
    rd(CFN, "DescribeStacks", R::Stack),
    rd(CFN, "DescribeStackEvents", R::Stack),
    rd(CFN, "ListStacks", R::None),
    rd(CFN, "GetTemplate", R::Stack),
    rd(CFN, "DescribeChangeSet", R::Stack),
    wr(CFN, "CreateChangeSet", R::Stack),
    wr(CFN, "ExecuteChangeSet", R::Stack),
    // glue
    rd(GLUE, "GetDatabases", R::None),
    rd(GLUE, "GetTables", R::None),
    rd(GLUE, "GetTable", R::GlueTable),
    rd(GLUE, "GetPartitions", R::GlueTable),
    rd(GLUE, "GetJobRun", R::GlueJob),
    wr(GLUE, "StartJobRun", R::GlueJob),
    wr(GLUE, "BatchCreatePartition", R::GlueTable),
    // athena
    wr(ATHENA, "StartQueryExecution", R::Athena),
    rd(ATHENA, "GetQueryExecution", R::Athena),
    rd(ATHENA, "GetQueryResults", R::Athena),
    rd(ATHENA, "ListWorkGroups", R::None),
    // organizations
    rd(ORG, "DescribeOrganization", R::None),
    rd(ORG, "ListAccounts", R::None),
    // ssm
    rd(SSM, "GetParameter", R::Param),
    rd(SSM, "GetParameters", R::Param),
    rd(SSM, "DescribeInstanceInformation", R::None),
    wr(SSM, "StartSession", R::Instance),
    // elb, route53
    rd(ELB, "DescribeLoadBalancers", R::None),
    rd(ELB, "DescribeTargetHealth", R::None),
    rd(R53, "ListHostedZones", R::None),
];

/// The index of `source`'s `name` (`"s3:GetObject"` style: service prefix, colon, event name).
pub(super) fn ix(action: &str) -> u16 {
    let (svc, name) = action.split_once(':').unwrap_or(("", action));
    APIS.iter().position(|a| a.name == name && a.service() == svc).map_or(0, |i| i as u16)
}

/// Indices of several `service:Name` actions.
pub(super) fn ixs(actions: &[&str]) -> Vec<u16> {
    actions.iter().map(|a| ix(a)).collect()
}

/// The `errorCode` and `errorMessage` of an access denial of `api` for `actor_arn`.
pub(super) fn denied(api: &Api, actor_arn: &str) -> (&'static str, String) {
    let action = format!("{}:{}", api.service(), api.name.trim_end_matches(char::is_numeric));
    let msg = format!(
        "User: {actor_arn} is not authorized to perform: {action} because no identity-based policy allows the {action} action"
    );
    match api.service() {
        "s3" => ("AccessDenied", "Access Denied".into()),
        "ec2" => ("Client.UnauthorizedOperation", format!("You are not authorized to perform this operation. {msg}")),
        "iam"
        | "sts"
        | "cloudtrail"
        | "rds"
        | "sqs"
        | "sns"
        | "cloudformation"
        | "cloudwatch"
        | "organizations"
        | "elasticloadbalancing"
        | "route53" => ("AccessDenied", msg),
        _ => ("AccessDeniedException", msg),
    }
}

/// A non-permission failure typical of `api`.
pub(super) fn other_error(api: &Api) -> (&'static str, &'static str) {
    match (api.service(), api.name) {
        ("s3", "GetObject" | "HeadObject") => ("NoSuchKey", "The specified key does not exist."),
        ("s3", _) => ("NoSuchBucketPolicy", "The bucket policy does not exist"),
        ("ec2", _) => ("Client.RequestLimitExceeded", "Request limit exceeded."),
        ("dynamodb", "PutItem" | "UpdateItem") => ("ConditionalCheckFailedException", "The conditional request failed"),
        ("lambda" | "secretsmanager" | "logs" | "glue" | "ecs", _) => {
            ("ResourceNotFoundException", "The specified resource does not exist.")
        }
        ("iam", _) => ("NoSuchEntityException", "The entity cannot be found."),
        _ => ("ThrottlingException", "Rate exceeded"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for (i, a) in APIS.iter().enumerate() {
            let key = format!("{}:{}", a.service(), a.name);
            assert_eq!(usize::from(ix(&key)), i, "{key}");
        }
    }
}
