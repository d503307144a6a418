//! The organization of a scenario: accounts with their resources, identities with their archetypes,
//! habits (actions, hours, source IPs, regions, user agents) and policies, and the IAM snapshot.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::ScenarioConfig;
use super::api::{APIS, ixs};
use crate::util::{aws_id, hex, key_id, time_string};

/// What kind of identity, and so which habits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Arch {
    Developer,
    Admin,
    Analyst,
    Auditor,
    /// An IAM Identity Center permission-set role: many humans, one role (session name = email).
    Sso,
    /// A human who left: active in the first history days only.
    Dormant,
    BreakGlass,
    /// An integration's IAM user with a long-lived key (monitoring, backup vendor), 24/7 from fixed IPs.
    ServiceUser,
    CiCd,
    AppService,
    Lambda,
    Pipeline,
    /// A security scanner role that sweeps the account weekly.
    Scanner,
    /// Created, never used.
    Unused,
}

impl Arch {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Arch::Developer => "developer",
            Arch::Admin => "admin",
            Arch::Analyst => "analyst",
            Arch::Auditor => "auditor",
            Arch::Sso => "sso_role",
            Arch::Dormant => "dormant_user",
            Arch::BreakGlass => "break_glass",
            Arch::ServiceUser => "service_user",
            Arch::CiCd => "ci_cd_role",
            Arch::AppService => "app_service_role",
            Arch::Lambda => "lambda_role",
            Arch::Pipeline => "data_pipeline_role",
            Arch::Scanner => "security_scanner_role",
            Arch::Unused => "unused_role",
        }
    }

    pub(super) fn human(self) -> bool {
        matches!(self, Arch::Developer | Arch::Admin | Arch::Analyst | Arch::Auditor | Arch::Sso | Arch::Dormant)
    }

    /// The humans who sign in through the organization's identity provider every day (dormant users
    /// left before the history's habits matter; break-glass is used with its own credentials).
    pub(super) fn federated(self) -> bool {
        matches!(self, Arch::Developer | Arch::Admin | Arch::Analyst | Arch::Auditor | Arch::Sso)
    }

    fn is_role(self) -> bool {
        !matches!(
            self,
            Arch::Developer
                | Arch::Admin
                | Arch::Analyst
                | Arch::Auditor
                | Arch::Dormant
                | Arch::BreakGlass
                | Arch::ServiceUser
        )
    }
}

// ------------------------------------------------------------------ action pools

pub(super) const DEV_CORE: &[&str] = &[
    "s3:ListBuckets",
    "s3:ListObjects",
    "s3:GetObject",
    "s3:PutObject",
    "ec2:DescribeInstances",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeVpcs",
    "ec2:DescribeSubnets",
    "lambda:ListFunctions20150331",
    "lambda:GetFunction20150331v2",
    "lambda:UpdateFunctionCode20150331v2",
    "logs:DescribeLogGroups",
    "logs:FilterLogEvents",
    "logs:GetLogEvents",
    "logs:DescribeLogStreams",
    "cloudwatch:GetMetricData",
    "cloudwatch:DescribeAlarms",
    "dynamodb:DescribeTable",
    "dynamodb:Query",
    "dynamodb:GetItem",
    "sts:GetCallerIdentity",
    "kms:Decrypt",
    "secretsmanager:GetSecretValue",
    "ecr:GetAuthorizationToken",
    "ecr:DescribeRepositories",
    "ecs:DescribeServices",
    "ecs:ListTasks",
    "ecs:DescribeTasks",
    "cloudformation:DescribeStacks",
    "cloudformation:DescribeStackEvents",
    "sqs:GetQueueAttributes",
    "ssm:GetParameter",
];
pub(super) const DEV_EXT: &[&str] = &[
    "ec2:StartInstances",
    "ec2:StopInstances",
    "ec2:DescribeVolumes",
    "ec2:DescribeImages",
    "ec2:DescribeInstanceStatus",
    "lambda:GetFunctionConfiguration20150331v2",
    "lambda:UpdateFunctionConfiguration20150331v2",
    "lambda:ListEventSourceMappings20150331",
    "logs:StartQuery",
    "logs:GetQueryResults",
    "cloudwatch:GetMetricStatistics",
    "cloudwatch:ListMetrics",
    "dynamodb:ListTables",
    "dynamodb:Scan",
    "s3:GetBucketLocation",
    "s3:HeadObject",
    "s3:DeleteObject",
    "sqs:ListQueues",
    "sns:ListTopics",
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:DescribeTargetHealth",
    "rds:DescribeDBInstances",
    "cloudformation:GetTemplate",
    "ssm:GetParameters",
    "ssm:StartSession",
    "ssm:DescribeInstanceInformation",
    "iam:GetRole",
];
pub(super) const ADMIN_CORE: &[&str] = &[
    "iam:ListUsers",
    "iam:ListRoles",
    "iam:GetRole",
    "iam:GetUser",
    "iam:ListAttachedRolePolicies",
    "iam:ListAttachedUserPolicies",
    "iam:GetPolicy",
    "iam:GetPolicyVersion",
    "iam:ListAccessKeys",
    "iam:ListGroups",
    "ec2:DescribeInstances",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeVpcs",
    "s3:ListBuckets",
    "s3:GetBucketPolicy",
    "s3:GetBucketAcl",
    "cloudtrail:DescribeTrails",
    "cloudtrail:GetTrailStatus",
    "cloudtrail:LookupEvents",
    "guardduty:ListDetectors",
    "guardduty:ListFindings",
    "guardduty:GetFindings",
    "config:DescribeConfigurationRecorders",
    "logs:DescribeLogGroups",
    "logs:FilterLogEvents",
    "cloudwatch:DescribeAlarms",
    "sts:GetCallerIdentity",
    "organizations:DescribeOrganization",
    "rds:DescribeDBInstances",
    "kms:ListKeys",
];
pub(super) const ADMIN_EXT: &[&str] = &[
    "iam:ListPolicies",
    "iam:ListRolePolicies",
    "iam:ListGroupsForUser",
    "iam:ListMFADevices",
    "iam:GetAccountSummary",
    "iam:GenerateCredentialReport",
    "iam:GetCredentialReport",
    "iam:TagRole",
    "organizations:ListAccounts",
    "ec2:DescribeFlowLogs",
    "ec2:DescribeKeyPairs",
    "ec2:DescribeNetworkInterfaces",
    "ec2:CreateTags",
    "ec2:RebootInstances",
    "s3:GetBucketVersioning",
    "s3:GetBucketEncryption",
    "s3:PutBucketTagging",
    "config:DescribeConfigRules",
    "config:DescribeConfigurationRecorderStatus",
    "guardduty:GetDetector",
    "cloudtrail:GetEventSelectors",
    "kms:DescribeKey",
    "kms:ListAliases",
    "logs:PutRetentionPolicy",
    "cloudwatch:PutMetricAlarm",
    "secretsmanager:ListSecrets",
    "route53:ListHostedZones",
    "rds:DescribeDBSnapshots",
];
pub(super) const ANALYST_CORE: &[&str] = &[
    "athena:StartQueryExecution",
    "athena:GetQueryExecution",
    "athena:GetQueryResults",
    "glue:GetTable",
    "glue:GetTables",
    "glue:GetDatabases",
    "glue:GetPartitions",
    "s3:ListBuckets",
    "s3:ListObjects",
    "s3:GetObject",
    "s3:PutObject",
    "cloudwatch:GetMetricData",
    "sts:GetCallerIdentity",
    "kms:Decrypt",
];
pub(super) const ANALYST_EXT: &[&str] = &[
    "athena:ListWorkGroups",
    "s3:GetBucketLocation",
    "s3:HeadObject",
    "dynamodb:DescribeTable",
    "dynamodb:Query",
    "rds:DescribeDBInstances",
    "logs:FilterLogEvents",
    "kms:GenerateDataKey",
];
pub(super) const AUDIT_CORE: &[&str] = &[
    "iam:GetAccountAuthorizationDetails",
    "iam:ListUsers",
    "iam:ListRoles",
    "iam:GetCredentialReport",
    "iam:GenerateCredentialReport",
    "iam:ListAccessKeys",
    "iam:ListMFADevices",
    "s3:ListBuckets",
    "s3:GetBucketPolicy",
    "s3:GetBucketAcl",
    "s3:GetBucketPublicAccessBlock",
    "s3:GetBucketEncryption",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeInstances",
    "ec2:DescribeFlowLogs",
    "cloudtrail:DescribeTrails",
    "cloudtrail:GetTrailStatus",
    "cloudtrail:LookupEvents",
    "config:DescribeConfigRules",
    "config:DescribeConfigurationRecorderStatus",
    "guardduty:ListFindings",
    "guardduty:GetFindings",
    "sts:GetCallerIdentity",
];
pub(super) const AUDIT_EXT: &[&str] = &[
    "iam:GetAccountSummary",
    "iam:ListPolicies",
    "iam:GetPolicyVersion",
    "kms:ListKeys",
    "kms:DescribeKey",
    "rds:DescribeDBSnapshots",
    "ec2:DescribeSnapshots",
    "s3:GetBucketLogging",
    "s3:GetBucketVersioning",
    "organizations:ListAccounts",
];
pub(super) const SCANNER: &[&str] = &[
    "iam:GetAccountAuthorizationDetails",
    "iam:ListUsers",
    "iam:ListRoles",
    "iam:ListPolicies",
    "iam:GetCredentialReport",
    "iam:GenerateCredentialReport",
    "iam:ListAccessKeys",
    "iam:ListMFADevices",
    "iam:ListAttachedUserPolicies",
    "iam:ListAttachedRolePolicies",
    "iam:GetAccountSummary",
    "s3:ListBuckets",
    "s3:GetBucketPolicy",
    "s3:GetBucketAcl",
    "s3:GetBucketPublicAccessBlock",
    "s3:GetBucketEncryption",
    "s3:GetBucketLogging",
    "s3:GetBucketVersioning",
    "ec2:DescribeInstances",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeVpcs",
    "ec2:DescribeSubnets",
    "ec2:DescribeFlowLogs",
    "ec2:DescribeSnapshots",
    "ec2:DescribeVolumes",
    "ec2:DescribeImages",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeRegions",
    "cloudtrail:DescribeTrails",
    "cloudtrail:GetTrailStatus",
    "cloudtrail:GetEventSelectors",
    "config:DescribeConfigurationRecorders",
    "config:DescribeConfigurationRecorderStatus",
    "config:DescribeConfigRules",
    "guardduty:ListDetectors",
    "guardduty:GetDetector",
    "kms:ListKeys",
    "kms:DescribeKey",
    "kms:ListAliases",
    "rds:DescribeDBInstances",
    "rds:DescribeDBSnapshots",
    "rds:DescribeDBClusters",
    "lambda:ListFunctions20150331",
    "lambda:GetFunctionConfiguration20150331v2",
    "logs:DescribeLogGroups",
    "cloudwatch:DescribeAlarms",
    "sns:ListTopics",
    "sqs:ListQueues",
    "secretsmanager:ListSecrets",
    "elasticloadbalancing:DescribeLoadBalancers",
    "ecr:DescribeRepositories",
    "ecs:ListClusters",
    "route53:ListHostedZones",
    "organizations:DescribeOrganization",
];
pub(super) const CI: &[&str] = &[
    "sts:GetCallerIdentity",
    "cloudformation:DescribeStacks",
    "cloudformation:CreateChangeSet",
    "cloudformation:DescribeChangeSet",
    "cloudformation:ExecuteChangeSet",
    "cloudformation:DescribeStackEvents",
    "s3:PutObject",
    "s3:GetObject",
    "s3:ListObjects",
    "ecr:GetAuthorizationToken",
    "ecr:BatchCheckLayerAvailability",
    "ecr:InitiateLayerUpload",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
    "ecr:BatchGetImage",
    "lambda:GetFunction20150331v2",
    "lambda:UpdateFunctionCode20150331v2",
    "lambda:UpdateFunctionConfiguration20150331v2",
    "ecs:RegisterTaskDefinition",
    "ecs:UpdateService",
    "ecs:DescribeServices",
    "iam:GetRole",
];
/// What a CI role does on a Terraform run that touches IAM (benign, noisy).
pub(super) const CI_IAM: &[&str] = &[
    "iam:GetRole",
    "iam:CreateRole",
    "iam:PutRolePolicy",
    "iam:AttachRolePolicy",
    "iam:TagRole",
    "logs:CreateLogGroup",
];
pub(super) const APP: &[&str] = &[
    "s3:GetObject",
    "s3:PutObject",
    "s3:HeadObject",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:UpdateItem",
    "sqs:ReceiveMessage",
    "sqs:SendMessage",
    "sqs:DeleteMessage",
    "sns:Publish",
    "kms:Decrypt",
    "kms:GenerateDataKey",
    "secretsmanager:GetSecretValue",
    "ssm:GetParameter",
];
pub(super) const LAMBDA: &[&str] = &[
    "logs:CreateLogStream",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "s3:GetObject",
    "s3:PutObject",
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:SendMessage",
    "kms:Decrypt",
    "secretsmanager:GetSecretValue",
    "sns:Publish",
];
pub(super) const PIPELINE: &[&str] = &[
    "s3:GetObject",
    "s3:PutObject",
    "s3:ListObjects",
    "glue:StartJobRun",
    "glue:GetJobRun",
    "glue:GetTable",
    "glue:GetPartitions",
    "glue:BatchCreatePartition",
    "athena:StartQueryExecution",
    "athena:GetQueryExecution",
    "kms:Decrypt",
    "kms:GenerateDataKey",
    "dynamodb:Scan",
];
pub(super) const SERVICE_USER: &[&str] = &[
    "cloudwatch:GetMetricData",
    "cloudwatch:ListMetrics",
    "cloudwatch:GetMetricStatistics",
    "ec2:DescribeInstances",
    "ec2:DescribeInstanceStatus",
    "rds:DescribeDBInstances",
    "elasticloadbalancing:DescribeLoadBalancers",
    "s3:PutObject",
    "s3:ListObjects",
];

// ------------------------------------------------------------------ the organization

pub(super) struct Account {
    pub(super) id: String,
    pub(super) env: &'static str,
    pub(super) regions: Vec<&'static str>,
    /// Buckets identities use day to day.
    pub(super) buckets: Vec<String>,
    /// Buckets with sensitive data only pipelines touch (exfiltration targets).
    pub(super) sensitive: Vec<String>,
    pub(super) tables: Vec<String>,
    pub(super) functions: Vec<String>,
    pub(super) queues: Vec<String>,
    pub(super) topics: Vec<String>,
    pub(super) secrets: Vec<String>,
    pub(super) params: Vec<String>,
    pub(super) log_groups: Vec<String>,
    pub(super) keys: Vec<String>,
    pub(super) instances: Vec<String>,
    pub(super) volumes: Vec<String>,
    pub(super) dbs: Vec<String>,
    pub(super) clusters: Vec<String>,
    pub(super) stacks: Vec<String>,
    pub(super) repos: Vec<String>,
    pub(super) jobs: Vec<String>,
    pub(super) glue_tables: Vec<(String, String)>,
    pub(super) detector: String,
    pub(super) flow_logs: Vec<String>,
    /// NAT gateway egress IPs, two per region.
    pub(super) nat_ips: Vec<String>,
    /// Index of the admin role (privilege-escalation target).
    pub(super) admin_role: usize,
}

/// One way an identity is used: an IAM user's human, one human of an SSO role, or a workload.
pub(super) struct Persona {
    /// Role session name (`None` for IAM users).
    pub(super) session: Option<String>,
    pub(super) office_ip: String,
    pub(super) home_ips: Vec<String>,
    pub(super) cli_ua: String,
    /// Hours east of UTC of the human's office.
    pub(super) tz: i64,
    pub(super) start_hour: i64,
    pub(super) end_hour: i64,
    /// On call every fourth week (week % 4 == slot).
    pub(super) oncall: Option<u8>,
    /// Share of sessions run in the console.
    pub(super) console: f64,
    /// Signs in through the OIDC identity provider (`AssumeRoleWithWebIdentity`) rather than SAML.
    pub(super) web_identity: bool,
    /// A leave: first day away and first day back (scenario day indices); no calls in between.
    pub(super) leave: Option<(i64, i64)>,
}

impl Persona {
    /// Whether the human is away on day `d`.
    pub(super) fn on_leave(&self, d: i64) -> bool {
        self.leave.is_some_and(|(from, back)| (from..back).contains(&d))
    }
}

pub(super) struct Identity {
    pub(super) account: usize,
    pub(super) arch: Arch,
    pub(super) is_role: bool,
    pub(super) name: String,
    pub(super) arn: String,
    pub(super) id: String,
    pub(super) key: String,
    pub(super) personas: Vec<Persona>,
    pub(super) regions: Vec<&'static str>,
    pub(super) core: Vec<u16>,
    pub(super) core_cum: Vec<f64>,
    pub(super) ext: Vec<u16>,
    /// Mean calls per active hour.
    pub(super) rate: f64,
    pub(super) err_rate: f64,
    /// Creation, seconds since the epoch.
    pub(super) created: i64,
    /// First scenario day (index) it may act.
    pub(super) first_day: i64,
    /// Last scenario day (index) of normal activity.
    pub(super) last_day: i64,
    /// Workload IPs (services) — fixed.
    pub(super) ips: Vec<String>,
    pub(super) ua: String,
    pub(super) buckets: Vec<String>,
    pub(super) tables: Vec<String>,
    pub(super) functions: Vec<String>,
    pub(super) queues: Vec<String>,
    pub(super) secrets: Vec<String>,
    pub(super) groups: Vec<&'static str>,
    /// Customer managed policy attached (name).
    pub(super) policy: Option<String>,
    pub(super) managed: Vec<&'static str>,
    /// Actions granted on top of the habits' (overprivilege the attacks exploit).
    pub(super) extra_grants: Vec<String>,
    /// Minute offset of scheduled jobs.
    pub(super) phase: i64,
    /// Deployments into a region of the account the identity never used before: (day index, region).
    pub(super) region_deploys: Vec<(i64, &'static str)>,
}

pub(super) struct World {
    pub(super) accounts: Vec<Account>,
    pub(super) ids: Vec<Identity>,
    /// Scenario start, seconds.
    pub(super) start: i64,
    pub(super) days: i64,
    pub(super) history_days: i64,
}

const FIRST: &[&str] = &[
    "james",
    "mary",
    "robert",
    "patricia",
    "john",
    "jennifer",
    "michael",
    "linda",
    "david",
    "elizabeth",
    "william",
    "barbara",
    "richard",
    "susan",
    "joseph",
    "jessica",
    "thomas",
    "sarah",
    "chris",
    "karen",
    "daniel",
    "lisa",
    "matthew",
    "nancy",
    "anthony",
    "betty",
    "mark",
    "sandra",
    "paul",
    "ashley",
    "steven",
    "emily",
    "andrew",
    "donna",
    "joshua",
    "michelle",
    "kevin",
    "carol",
    "brian",
    "amanda",
    "george",
    "melissa",
    "timothy",
    "deborah",
    "ryan",
    "laura",
    "jacob",
    "rebecca",
    "nicolas",
    "sharon",
    "eric",
    "cynthia",
    "omar",
    "priya",
    "wei",
    "yuki",
    "lukas",
    "sofia",
    "mateo",
    "aisha",
    "ivan",
    "fatima",
    "hiro",
    "ana",
    "lars",
    "ingrid",
    "pierre",
    "chloe",
    "raj",
    "mei",
];
const LAST: &[&str] = &[
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "perez",
    "thompson",
    "white",
    "harris",
    "sanchez",
    "clark",
    "ramirez",
    "lewis",
    "robinson",
    "walker",
    "young",
    "allen",
    "king",
    "wright",
    "scott",
    "torres",
    "nguyen",
    "hill",
    "flores",
    "green",
    "adams",
    "nelson",
    "baker",
    "hall",
    "rivera",
    "campbell",
    "mitchell",
    "carter",
    "roberts",
    "schmidt",
    "muller",
    "rossi",
    "tanaka",
    "kim",
    "patel",
    "singh",
    "chen",
    "wang",
    "novak",
    "silva",
    "costa",
    "dubois",
    "jensen",
    "ivanova",
    "kowalski",
];
const COMPONENTS: &[&str] = &[
    "orders",
    "billing",
    "checkout",
    "catalog",
    "search",
    "auth",
    "notifications",
    "inventory",
    "shipping",
    "reports",
    "users",
    "payments",
    "media",
    "recommendations",
    "analytics",
    "gateway",
    "scheduler",
    "ledger",
    "pricing",
    "feeds",
    "webhooks",
    "exports",
    "imports",
    "audit",
    "images",
];
const VERBS: &[&str] =
    &["processor", "worker", "api", "sync", "handler", "consumer", "indexer", "publisher", "resizer"];

/// Offices: (prefix of the egress /24, hours east of UTC).
const OFFICES: &[(&str, i64)] =
    &[("198.51.100.", -5), ("203.0.113.", -8), ("192.0.2.", 0), ("195.54.164.", 1), ("62.116.130.", 1)];

fn ip<R: Rng>(rng: &mut R, first: &[u8]) -> String {
    let a = first[rng.random_range(0..first.len())];
    format!("{a}.{}.{}.{}", rng.random_range(0..=255u8), rng.random_range(0..=255u8), rng.random_range(1..=254u8))
}

/// A GitHub-hosted runner's address (a new one per job).
pub(super) fn runner_ip<R: Rng>(rng: &mut R) -> String {
    ip(rng, &[4, 13, 20, 40, 52])
}

/// A residential ISP address.
pub(super) fn home_ip<R: Rng>(rng: &mut R) -> String {
    ip(rng, &[73, 24, 67, 98, 86, 92, 2, 81, 176, 109])
}

/// A hotel / mobile / conference network address (benign travel).
pub(super) fn travel_ip<R: Rng>(rng: &mut R) -> String {
    ip(rng, &[38, 64, 66, 104, 149, 172, 208, 216])
}

fn pick<'a, R: Rng, T>(rng: &mut R, xs: &'a [T]) -> &'a T {
    &xs[rng.random_range(0..xs.len())]
}

fn subset<R: Rng>(rng: &mut R, xs: &[String], lo: usize, hi: usize) -> Vec<String> {
    if xs.is_empty() {
        return Vec::new();
    }
    let n = rng.random_range(lo..=hi).min(xs.len()).max(1);
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    for i in 0..n {
        let j = rng.random_range(i..idx.len());
        idx.swap(i, j);
    }
    idx[..n].iter().map(|&i| xs[i].clone()).collect()
}

fn cli_ua<R: Rng>(rng: &mut R, os: usize) -> String {
    let v = rng.random_range(9..=32u32);
    match os {
        0 => format!("aws-cli/2.15.{v} Python/3.11.8 Darwin/23.3.0 exe/x86_64 prompt/off"),
        1 => format!("aws-cli/2.15.{v} Python/3.11.8 Linux/6.5.0-26-generic exe/x86_64.ubuntu.22 prompt/off"),
        2 => format!("aws-cli/2.15.{v} Python/3.11.8 Windows/10 exe/AMD64 prompt/off"),
        _ => format!(
            "Boto3/1.34.{v} md/Botocore#1.34.{v} ua/2.0 os/macos#23.3.0 md/arch#arm64 lang/python#3.12.2 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.{v}"
        ),
    }
}

fn sdk_ua<R: Rng>(rng: &mut R) -> String {
    let v = rng.random_range(10..=60u32);
    match rng.random_range(0..4) {
        0 => format!(
            "aws-sdk-java/2.25.{v} Linux/5.10.210-201.852.amzn2.x86_64 OpenJDK_64-Bit_Server_VM/17.0.10+7-LTS Java/17.0.10 vendor/Amazon.com_Inc. io/sync http/Apache cfg/retry-mode/legacy"
        ),
        1 => format!(
            "Boto3/1.34.{v} md/Botocore#1.34.{v} ua/2.0 os/linux#5.10.210-201.852.amzn2.x86_64 md/arch#x86_64 lang/python#3.12.2 md/pyimpl#CPython exec-env/AWS_ECS_FARGATE cfg/retry-mode#legacy Botocore/1.34.{v}"
        ),
        2 => format!("aws-sdk-go-v2/1.25.{v} os/linux lang/go#1.22.1 md/GOOS#linux md/GOARCH#amd64"),
        _ => format!(
            "aws-sdk-js/3.5{v}.0 ua/2.0 os/linux#5.10.210-220.855.amzn2.x86_64 lang/js md/nodejs#20.11.1 exec-env/AWS_Lambda_nodejs20.x"
        ),
    }
}

fn cum(weights: &[f64]) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w;
            acc
        })
        .collect()
}

/// A Zipf-ish weighting of `n` actions in a random order: a few dominate, as in real usage.
fn habit_weights<R: Rng>(rng: &mut R, n: usize) -> Vec<f64> {
    (0..n).map(|i| 1.0 / (1.0 + i as f64).powf(0.9) * rng.random_range(0.6..1.4)).collect()
}

fn choose_actions<R: Rng>(rng: &mut R, pool: &[&str], lo: usize, hi: usize) -> (Vec<u16>, Vec<u16>) {
    let mut all = ixs(pool);
    for i in (1..all.len()).rev() {
        let j = rng.random_range(0..=i);
        all.swap(i, j);
    }
    let n = rng.random_range(lo..=hi).min(all.len());
    let ext = all.split_off(n);
    (all, ext)
}

impl World {
    pub(super) fn build(cfg: &ScenarioConfig, rng: &mut ChaCha8Rng) -> World {
        let start = cfg.start.millis().div_euclid(1000);
        let days = i64::from(cfg.history_days + cfg.detect_days);
        let mut accounts = Vec::new();
        const ENVS: &[&str] = &["prod", "staging", "data", "shared", "dev", "sandbox"];
        const REGIONS: &[&[&str]] = &[
            &["us-east-1", "us-west-2"],
            &["us-east-1", "eu-west-1"],
            &["eu-west-1", "eu-central-1"],
            &["us-west-2", "us-east-2"],
        ];
        for a in 0..cfg.accounts as usize {
            let mut id = String::from("1");
            for _ in 0..11 {
                id.push(char::from(b'0' + rng.random_range(0..10u8)));
            }
            let env = ENVS[a % ENVS.len()];
            let env: &'static str = if a < ENVS.len() { env } else { "workload" };
            let tag = &id[8..];
            let regions: Vec<&'static str> = REGIONS[a % REGIONS.len()].to_vec();
            let b = |n: &str| format!("acme-{env}-{n}-{tag}");
            let buckets = [
                "app-assets",
                "uploads",
                "logs",
                "artifacts",
                "data-lake",
                "reports",
                "static-web",
                "ml-models",
                "tmp",
            ]
            .iter()
            .map(|n| b(n))
            .collect();
            let sensitive = ["customer-pii", "finance-exports", "db-backups"].iter().map(|n| b(n)).collect();
            let mut functions = Vec::new();
            for c in COMPONENTS.iter().take(14) {
                functions.push(format!("{env}-{c}-{}", pick(rng, VERBS)));
            }
            let tables = ["orders", "users", "sessions", "inventory", "payments", "events", "carts", "audit-log"]
                .iter()
                .map(|t| format!("{env}-{t}"))
                .collect();
            let queues = COMPONENTS.iter().take(8).map(|c| format!("{env}-{c}-queue")).collect();
            let topics = COMPONENTS.iter().skip(3).take(5).map(|c| format!("{env}-{c}-events")).collect();
            let secrets = ["db/password", "api/stripe", "api/sendgrid", "oauth/client", "redis/auth", "jwt/signing"]
                .iter()
                .map(|s| format!("{env}/{s}"))
                .collect();
            let params = ["feature-flags", "db/host", "cache/endpoint", "service/config"]
                .iter()
                .map(|p| format!("/{env}/{p}"))
                .collect();
            let mut log_groups: Vec<String> = Vec::new();
            let mut keys = Vec::new();
            for _ in 0..4 {
                let mut k = hex(rng, 8);
                k.push('-');
                k.push_str(&hex(rng, 4));
                k.push_str("-4");
                k.push_str(&hex(rng, 3));
                k.push_str("-a");
                k.push_str(&hex(rng, 3));
                k.push('-');
                k.push_str(&hex(rng, 12));
                keys.push(k);
            }
            let instances = (0..12).map(|_| format!("i-0{}", hex(rng, 16))).collect();
            let volumes = (0..8).map(|_| format!("vol-0{}", hex(rng, 16))).collect();
            let dbs = ["orders-db", "users-db", "analytics-db"].iter().map(|d| format!("{env}-{d}")).collect();
            let clusters = ["web", "workers"].iter().map(|c| format!("{env}-{c}")).collect();
            let stacks = COMPONENTS.iter().take(10).map(|c| format!("{env}-{c}-stack")).collect();
            let repos = COMPONENTS.iter().take(10).map(|c| format!("{c}-service")).collect();
            let jobs = ["nightly-etl", "sessionize", "orders-to-lake", "ml-features", "finance-rollup"]
                .iter()
                .map(|j| format!("{env}-{j}"))
                .collect();
            let glue_tables = ["orders", "events", "users", "payments"]
                .iter()
                .map(|t| (format!("{env}_lake"), (*t).to_string()))
                .collect();
            let detector = hex(rng, 32);
            let flow_logs = (0..3).map(|_| format!("fl-0{}", hex(rng, 16))).collect();
            let mut nat_ips = Vec::new();
            for _ in 0..regions.len() * 2 {
                nat_ips.push(ip(rng, &[3, 18, 34, 35, 44, 52, 54]));
            }
            log_groups.push("/aws/cloudtrail/org-trail".into());
            log_groups.push("/aws/vpc/flowlogs".into());
            accounts.push(Account {
                id,
                env,
                regions,
                buckets,
                sensitive,
                tables,
                functions,
                queues,
                topics,
                secrets,
                params,
                log_groups,
                keys,
                instances,
                volumes,
                dbs,
                clusters,
                stacks,
                repos,
                jobs,
                glue_tables,
                detector,
                flow_logs,
                nat_ips,
                admin_role: 0,
            });
        }
        for a in &mut accounts {
            let fl: Vec<String> = a.functions.iter().map(|f| format!("/aws/lambda/{f}")).collect();
            a.log_groups.extend(fl);
            let ecs: Vec<String> = a.clusters.iter().map(|c| format!("/ecs/{c}")).collect();
            a.log_groups.extend(ecs);
        }

        let mut w = World { accounts, ids: Vec::new(), start, days, history_days: i64::from(cfg.history_days) };
        let n_acc = cfg.accounts as usize;
        let total = cfg.identities as usize;
        let dormant_min = (cfg.attacks_per_technique as usize).div_ceil(n_acc) + 1;
        let mut used_names = std::collections::BTreeSet::new();
        for a in 0..n_acc {
            let n = total / n_acc + usize::from(a < total % n_acc);
            let mut archs = vec![Arch::Sso, Arch::Sso, Arch::Sso, Arch::BreakGlass, Arch::Scanner];
            let dormant = ((n as f64 * 0.03).round() as usize).max(dormant_min);
            archs.extend(std::iter::repeat_n(Arch::Dormant, dormant));
            let forced = [
                Arch::Admin,
                Arch::Admin,
                Arch::Developer,
                Arch::Analyst,
                Arch::Auditor,
                Arch::CiCd,
                Arch::AppService,
                Arch::Lambda,
                Arch::Pipeline,
                Arch::ServiceUser,
                Arch::Unused,
            ];
            archs.extend(forced);
            let table: &[(Arch, f64)] = &[
                (Arch::Developer, 27.0),
                (Arch::Admin, 2.5),
                (Arch::Analyst, 9.0),
                (Arch::Auditor, 1.5),
                (Arch::ServiceUser, 3.0),
                (Arch::CiCd, 5.0),
                (Arch::AppService, 22.0),
                (Arch::Lambda, 16.0),
                (Arch::Pipeline, 6.0),
                (Arch::Unused, 8.0),
            ];
            let c = cum(&table.iter().map(|x| x.1).collect::<Vec<_>>());
            while archs.len() < n {
                let x = rng.random::<f64>() * c[c.len() - 1];
                archs.push(table[c.partition_point(|&v| v <= x).min(table.len() - 1)].0);
            }
            archs.truncate(n);
            for arch in archs {
                let ident = w.make_identity(cfg, rng, a, arch, &mut used_names);
                if arch == Arch::Sso && ident.name.contains("AdministratorAccess") {
                    w.accounts[a].admin_role = w.ids.len();
                }
                w.ids.push(ident);
            }
        }
        w.plan_benign_changes(rng);
        w
    }

    /// Draws sign-in methods, leaves and new-region deployments. Drawn after the whole organization,
    /// so that the identities and their habits stay what the seed gave before these existed.
    fn plan_benign_changes(&mut self, rng: &mut ChaCha8Rng) {
        let days = self.days;
        for id in &mut self.ids {
            if id.arch.federated() {
                for p in &mut id.personas {
                    p.web_identity = rng.random_bool(0.25);
                    if !rng.random_bool(0.08) {
                        continue;
                    }
                    // 15-30 days away, back before the end so the return is in the trail
                    let lo = id.first_day.max(0) + 1;
                    let longest = (days - 1 - lo).min(30);
                    if longest >= 15 {
                        let len = rng.random_range(15..=longest);
                        let from = rng.random_range(lo..=days - 1 - len);
                        p.leave = Some((from, from + len));
                    }
                }
            }
            if matches!(id.arch, Arch::CiCd | Arch::Pipeline) {
                // the account's other enabled regions, each a first deployment once: about one a
                // month while regions the identity never used are left
                let mut fresh: Vec<&'static str> =
                    self.accounts[id.account].regions.iter().filter(|r| !id.regions.contains(r)).copied().collect();
                for d in id.first_day.max(0)..days {
                    if fresh.is_empty() {
                        break;
                    }
                    if rng.random_bool(1.0 / 30.0) {
                        let r = fresh.remove(rng.random_range(0..fresh.len()));
                        id.region_deploys.push((d, r));
                    }
                }
            }
        }
    }

    fn make_identity<R: Rng>(
        &self,
        cfg: &ScenarioConfig,
        rng: &mut R,
        a: usize,
        arch: Arch,
        used: &mut std::collections::BTreeSet<(usize, String)>,
    ) -> Identity {
        let acct = &self.accounts[a];
        let env = acct.env;
        let mut sso_kind = 0usize;
        let mut name = String::new();
        for attempt in 0..1000u32 {
            name = match arch {
                Arch::Developer | Arch::Admin | Arch::Analyst | Arch::Auditor | Arch::Dormant => {
                    let n = format!("{}.{}", pick(rng, FIRST), pick(rng, LAST));
                    if attempt > 20 { format!("{n}{attempt}") } else { n }
                }
                Arch::Sso => {
                    sso_kind = used.iter().filter(|(x, n)| *x == a && n.starts_with("AWSReservedSSO")).count();
                    let ps = ["AdministratorAccess", "PowerUserAccess", "ReadOnlyAccess"][sso_kind % 3];
                    format!("AWSReservedSSO_{ps}_{}", hex(rng, 16))
                }
                Arch::BreakGlass => "breakglass-admin".into(),
                Arch::Scanner => "security-audit-scanner".into(),
                Arch::ServiceUser => {
                    let v =
                        ["datadog", "backup-vendor", "grafana", "legacy-ftp-sync", "newrelic", "pagerduty", "sentry"];
                    let base = format!("svc-{}", pick(rng, &v));
                    if attempt > 5 { format!("{base}-{attempt}") } else { base }
                }
                Arch::CiCd => {
                    let c = pick(rng, COMPONENTS);
                    let base = format!("github-actions-{c}-deploy");
                    if attempt > 10 { format!("{base}-{attempt}") } else { base }
                }
                Arch::AppService => {
                    let base = format!("{env}-{}-{}-role", pick(rng, COMPONENTS), pick(rng, VERBS));
                    if attempt > 10 { format!("{base}{attempt}") } else { base }
                }
                Arch::Lambda => {
                    let base = format!("{env}-{}-{}-lambda-role", pick(rng, COMPONENTS), pick(rng, VERBS));
                    if attempt > 10 { format!("{base}{attempt}") } else { base }
                }
                Arch::Pipeline => {
                    let j = ["etl", "ingest", "sessionize", "feature-store", "warehouse-load", "export", "rollup"];
                    let base = format!("{env}-{}-{}-pipeline-role", pick(rng, COMPONENTS), pick(rng, &j));
                    if attempt > 10 { format!("{base}{attempt}") } else { base }
                }
                Arch::Unused => {
                    let base = format!("{env}-{}-legacy-role", pick(rng, COMPONENTS));
                    if attempt > 0 { format!("{base}-{attempt}") } else { base }
                }
            };
            if used.insert((a, name.clone())) {
                break;
            }
        }
        let is_role = arch.is_role();
        let aid = &acct.id;
        let arn = match (is_role, arch) {
            (true, Arch::Sso) => format!("arn:aws:iam::{aid}:role/aws-reserved/sso.amazonaws.com/{name}"),
            (true, _) => format!("arn:aws:iam::{aid}:role/{name}"),
            _ => format!("arn:aws:iam::{aid}:user/{name}"),
        };
        let id = aws_id(rng, if is_role { "AROA" } else { "AIDA" });
        let key = if is_role { String::new() } else { key_id(rng, "AKIA") };
        let regions: Vec<&'static str> =
            if rng.random_bool(0.7) || acct.regions.len() < 2 { vec![acct.regions[0]] } else { acct.regions.clone() };

        // personas
        let make_human = |rng: &mut R, session: Option<String>| {
            let (office, tz) =
                OFFICES[if a.is_multiple_of(2) { rng.random_range(0..3) } else { rng.random_range(2..5) }];
            let start_hour = rng.random_range(7..=10);
            Persona {
                session,
                office_ip: format!("{office}{}", rng.random_range(1..=14u8)),
                home_ips: (0..rng.random_range(1..=2)).map(|_| home_ip(rng)).collect(),
                cli_ua: {
                    let os = rng.random_range(0..4);
                    cli_ua(rng, os)
                },
                tz,
                start_hour,
                end_hour: start_hour + rng.random_range(8..=10),
                oncall: if matches!(arch, Arch::Admin | Arch::Developer | Arch::Sso) && rng.random_bool(0.15) {
                    Some(rng.random_range(0..4))
                } else {
                    None
                },
                console: match arch {
                    Arch::Sso => 0.6,
                    Arch::Analyst => 0.4,
                    _ => rng.random_range(0.05..0.3),
                },
                web_identity: false,
                leave: None,
            }
        };
        let mut personas = Vec::new();
        let mut ips = Vec::new();
        let mut ua = String::new();
        match arch {
            Arch::Sso => {
                let members =
                    if sso_kind.is_multiple_of(3) { rng.random_range(3..=8) } else { rng.random_range(5..=20) };
                for _ in 0..members {
                    let email = format!("{}.{}@acme.example", pick(rng, FIRST), pick(rng, LAST));
                    personas.push(make_human(rng, Some(email)));
                }
            }
            Arch::Developer | Arch::Admin | Arch::Analyst | Arch::Auditor | Arch::Dormant | Arch::BreakGlass => {
                personas.push(make_human(rng, None));
            }
            _ => {
                let sessions: Vec<String> = match arch {
                    Arch::AppService => {
                        (0..rng.random_range(1..=4)).map(|_| pick(rng, &acct.instances).clone()).collect()
                    }
                    Arch::Lambda => vec![pick(rng, &acct.functions).clone()],
                    Arch::Pipeline => vec!["GlueJobRunnerSession".into()],
                    Arch::Scanner => vec!["prowler-scan".into()],
                    Arch::CiCd => vec!["GitHubActions".into()],
                    _ => vec![String::new()],
                };
                for s in sessions {
                    personas.push(Persona {
                        session: if is_role { Some(s) } else { None },
                        office_ip: String::new(),
                        home_ips: Vec::new(),
                        cli_ua: String::new(),
                        tz: 0,
                        start_hour: 0,
                        end_hour: 24,
                        oncall: None,
                        console: 0.0,
                        web_identity: false,
                        leave: None,
                    });
                }
                ips = match arch {
                    Arch::ServiceUser => vec![ip(rng, &[34, 35, 52, 13]), ip(rng, &[34, 35, 52, 13])],
                    Arch::Scanner => vec![pick(rng, &acct.nat_ips).clone()],
                    _ => {
                        let k = rng.random_range(0..acct.nat_ips.len());
                        vec![acct.nat_ips[k].clone(), acct.nat_ips[(k + 1) % acct.nat_ips.len()].clone()]
                    }
                };
                ua = match arch {
                    Arch::CiCd => {
                        if rng.random_bool(0.5) {
                            "APN/1.0 HashiCorp/1.0 Terraform/1.7.4 (+https://www.terraform.io) terraform-provider-aws/5.40.0 (+https://registry.terraform.io/providers/hashicorp/aws) aws-sdk-go-v2/1.25.2 os/linux lang/go#1.22.0 md/GOOS#linux md/GOARCH#amd64".into()
                        } else {
                            format!(
                                "aws-cli/2.15.{} Python/3.11.8 Linux/6.5.0-1016-azure exe/x86_64.ubuntu.22 prompt/off",
                                rng.random_range(20..40)
                            )
                        }
                    }
                    Arch::Scanner => "prowler/3.15.2 Boto3/1.34.69 Python/3.11.8 Linux/5.10.210-201.852.amzn2.x86_64 Botocore/1.34.69".into(),
                    Arch::ServiceUser => {
                        format!("aws-sdk-go/1.50.{} (go1.21.6; linux; amd64)", rng.random_range(0..40))
                    }
                    _ => sdk_ua(rng),
                };
            }
        }

        let (pool_core, pool_ext, lo, hi): (&[&str], &[&str], usize, usize) = match arch {
            Arch::Developer | Arch::Dormant => (DEV_CORE, DEV_EXT, 8, 18),
            Arch::Admin => (ADMIN_CORE, ADMIN_EXT, 12, 24),
            Arch::Analyst => (ANALYST_CORE, ANALYST_EXT, 6, 12),
            Arch::Auditor => (AUDIT_CORE, AUDIT_EXT, 10, 18),
            Arch::Sso => match sso_kind % 3 {
                0 => (ADMIN_CORE, ADMIN_EXT, 20, 30),
                1 => (DEV_CORE, DEV_EXT, 20, 32),
                _ => (AUDIT_CORE, AUDIT_EXT, 12, 20),
            },
            Arch::BreakGlass => (&["sts:GetCallerIdentity", "iam:GetAccountSummary", "iam:ListUsers"], &[], 3, 3),
            Arch::ServiceUser => (SERVICE_USER, &[], 3, 6),
            Arch::CiCd => (CI, CI_IAM, 22, 22),
            Arch::AppService => (APP, &[], 4, 8),
            Arch::Lambda => (LAMBDA, &[], 3, 6),
            Arch::Pipeline => (PIPELINE, &[], 8, 13),
            Arch::Scanner => (SCANNER, &[], 54, 54),
            Arch::Unused => (APP, &[], 2, 4),
        };
        let (mut core, mut ext) = choose_actions(rng, pool_core, lo, hi);
        if arch == Arch::Lambda && !core.contains(&ixs(&["logs:CreateLogStream"])[0]) {
            core.push(ixs(&["logs:CreateLogStream"])[0]);
        }
        ext.extend(ixs(pool_ext));
        ext.sort_unstable();
        ext.dedup();
        ext.retain(|x| !core.contains(x));
        let core_cum = cum(&habit_weights(rng, core.len()));
        let rate = match arch {
            Arch::Developer | Arch::Dormant => rng.random_range(10.0..35.0),
            Arch::Admin => rng.random_range(10.0..30.0),
            Arch::Analyst => rng.random_range(8.0..25.0),
            Arch::Auditor => rng.random_range(8.0..20.0),
            Arch::Sso => rng.random_range(10.0..25.0),
            Arch::BreakGlass => 0.0,
            Arch::ServiceUser => rng.random_range(2.0..8.0),
            Arch::CiCd => rng.random_range(2.0..5.0),
            Arch::AppService => (rng.random_range(-0.7f64..1.6)).exp(),
            Arch::Lambda => (rng.random_range(-1.2f64..1.2)).exp(),
            Arch::Pipeline => rng.random_range(0.2..1.0),
            Arch::Scanner | Arch::Unused => 0.0,
        } * cfg.volume;
        let err_rate = rng.random_range(0.005..0.03);
        let history = i64::from(cfg.history_days);
        let new_roll = rng.random::<f64>();
        let first_day = match arch {
            Arch::Sso | Arch::BreakGlass | Arch::Scanner | Arch::Dormant => 0,
            _ if new_roll < 0.04 && history > 6 => rng.random_range(2..history - 3),
            _ if new_roll < 0.045 => history + rng.random_range(0..i64::from(cfg.detect_days.max(1))),
            _ => 0,
        };
        let created = if first_day > 0 {
            self.start + first_day * 86_400 + rng.random_range(14 * 3600..16 * 3600)
        } else {
            self.start - rng.random_range(30..900) * 86_400 - rng.random_range(0..86_400)
        };
        let last_day = if arch == Arch::Dormant { rng.random_range(1..=3) } else { self.days };
        let groups = match arch {
            Arch::Developer | Arch::Dormant => vec!["developers"],
            Arch::Admin | Arch::BreakGlass => vec!["admins"],
            Arch::Analyst => vec!["analysts"],
            Arch::Auditor => vec!["auditors"],
            _ => vec![],
        };
        let managed = match arch {
            Arch::Sso => match sso_kind % 3 {
                0 => vec!["AdministratorAccess"],
                1 => vec!["PowerUserAccess"],
                _ => vec!["ReadOnlyAccess", "SecurityAudit"],
            },
            Arch::Scanner => vec!["SecurityAudit", "ReadOnlyAccess"],
            _ => vec![],
        };
        let policy = match arch {
            Arch::CiCd | Arch::AppService | Arch::Lambda | Arch::Pipeline | Arch::ServiceUser | Arch::Unused => {
                Some(format!("{name}-policy"))
            }
            _ => None,
        };
        let non_sensitive = acct.buckets.clone();
        let mut buckets = subset(rng, &non_sensitive, 1, 3);
        if arch == Arch::Pipeline {
            buckets.push(pick(rng, &acct.sensitive).clone());
            buckets.push(acct.buckets[4].clone());
        }
        if arch == Arch::CiCd {
            buckets = vec![acct.buckets[3].clone()];
        }
        Identity {
            account: a,
            arch,
            is_role,
            name,
            arn,
            id,
            key,
            personas,
            regions,
            core,
            core_cum,
            ext,
            rate,
            err_rate,
            created,
            first_day,
            last_day,
            ips,
            ua,
            buckets,
            tables: subset(rng, &acct.tables, 1, 3),
            functions: subset(rng, &acct.functions, 1, 3),
            queues: subset(rng, &acct.queues, 1, 2),
            secrets: subset(rng, &acct.secrets, 1, 2),
            groups,
            policy,
            managed,
            extra_grants: Vec::new(),
            phase: rng.random_range(0..50),
            region_deploys: Vec::new(),
        }
    }

    /// The action names an identity's policies allow (habits, extended set and extra grants).
    fn granted(&self, id: &Identity) -> Vec<String> {
        let mut v: Vec<String> = id
            .core
            .iter()
            .chain(id.ext.iter())
            .map(|&i| {
                let a = &APIS[usize::from(i)];
                iam_action(a.service(), a.name)
            })
            .collect();
        v.extend(id.extra_grants.iter().cloned());
        v.sort();
        v.dedup();
        v
    }

    /// `get-account-authorization-details` of account `ai`, as of `as_of` (seconds).
    pub(super) fn authorization_details(&self, ai: usize, last_used: &[Option<(i64, &'static str)>]) -> Value {
        let acct = &self.accounts[ai];
        let aid = &acct.id;
        let doc = |actions: Vec<String>| json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]});
        let mut users = Vec::new();
        let mut roles = Vec::new();
        let mut policies = Vec::new();
        let group_policy = |g: &str| -> Vec<String> {
            let mut acts: Vec<String> = match g {
                "developers" => ixs(DEV_CORE).into_iter().chain(ixs(DEV_EXT)).collect::<Vec<_>>(),
                "analysts" => ixs(ANALYST_CORE).into_iter().chain(ixs(ANALYST_EXT)).collect(),
                _ => Vec::new(),
            }
            .into_iter()
            .map(|i| {
                let a = &APIS[usize::from(i)];
                iam_action(a.service(), a.name)
            })
            .collect();
            acts.sort();
            acts.dedup();
            acts
        };
        for (ix, id) in self.ids.iter().enumerate().filter(|(_, i)| i.account == ai) {
            let created = time_string(id.created);
            let attached: Vec<Value> = id
                .managed
                .iter()
                .map(|m| json!({"PolicyName": m, "PolicyArn": format!("arn:aws:iam::aws:policy/{m}")}))
                .chain(
                    id.policy
                        .iter()
                        .map(|p| json!({"PolicyName": p, "PolicyArn": format!("arn:aws:iam::{aid}:policy/{p}")})),
                )
                .collect();
            if let Some(p) = &id.policy {
                let granted = self.granted(id);
                policies.push(json!({
                    "PolicyName": p, "PolicyId": format!("ANPA{}", &id.id[4..]), "Arn": format!("arn:aws:iam::{aid}:policy/{p}"),
                    "Path": "/", "DefaultVersionId": "v2", "AttachmentCount": 1, "PermissionsBoundaryUsageCount": 0,
                    "IsAttachable": true, "CreateDate": created, "UpdateDate": created,
                    "PolicyVersionList": [
                        {"Document": doc(granted.clone()), "VersionId": "v2", "IsDefaultVersion": true, "CreateDate": created},
                        {"Document": doc(granted.into_iter().take(3).collect()), "VersionId": "v1", "IsDefaultVersion": false, "CreateDate": created}
                    ]
                }));
            }
            let last = last_used.get(ix).copied().flatten();
            if id.is_role {
                let trust = match id.arch {
                    Arch::Sso => {
                        let mut statements = vec![
                            json!({"Effect": "Allow", "Principal": {"Federated": saml_provider(aid, id)}, "Action": ["sts:AssumeRoleWithSAML", "sts:TagSession"], "Condition": {"StringEquals": {"SAML:aud": "https://signin.aws.amazon.com/saml"}}}),
                        ];
                        // the trail shows some of its humans signing in through OIDC: the trust
                        // policy has to allow it
                        if id.personas.iter().any(|p| p.web_identity) {
                            statements.push(json!({"Effect": "Allow", "Principal": {"Federated": format!("arn:aws:iam::{aid}:oidc-provider/{OIDC_ISSUER}")}, "Action": "sts:AssumeRoleWithWebIdentity", "Condition": {"StringEquals": {format!("{OIDC_ISSUER}:aud"): OIDC_AUDIENCE}}}));
                        }
                        json!({"Version": "2012-10-17", "Statement": statements})
                    }
                    Arch::CiCd => {
                        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Federated": format!("arn:aws:iam::{aid}:oidc-provider/token.actions.githubusercontent.com")}, "Action": "sts:AssumeRoleWithWebIdentity", "Condition": {"StringLike": {"token.actions.githubusercontent.com:sub": "repo:acme/*:ref:refs/heads/main"}}}]})
                    }
                    Arch::Lambda => {
                        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
                    }
                    Arch::Pipeline => {
                        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "glue.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
                    }
                    Arch::Scanner => {
                        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{aid}:root")}, "Action": "sts:AssumeRole", "Condition": {"StringEquals": {"sts:ExternalId": "prowler"}}}]})
                    }
                    _ => {
                        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
                    }
                };
                let inline: Vec<Value> = if id.arch == Arch::Sso || id.arch == Arch::Scanner {
                    if id.extra_grants.is_empty() {
                        Vec::new()
                    } else {
                        vec![json!({"PolicyName": "extra", "PolicyDocument": doc(id.extra_grants.clone())})]
                    }
                } else {
                    Vec::new()
                };
                let path = if id.arch == Arch::Sso { "/aws-reserved/sso.amazonaws.com/" } else { "/" };
                let role_last = match last {
                    Some((t, region)) => json!({"LastUsedDate": time_string(t), "Region": region}),
                    None => json!({}),
                };
                roles.push(json!({
                    "Path": path, "RoleName": id.name, "RoleId": id.id, "Arn": id.arn, "CreateDate": created,
                    "AssumeRolePolicyDocument": trust, "InstanceProfileList": [], "RolePolicyList": inline,
                    "AttachedManagedPolicies": attached, "Tags": [], "RoleLastUsed": role_last
                }));
            } else {
                // users' extra grants (overprivilege the attacks exploit) are inline; integration
                // users' are in their own managed policy already
                let inline: Vec<Value> = if id.extra_grants.is_empty() || id.policy.is_some() {
                    Vec::new()
                } else {
                    vec![
                        json!({"PolicyName": format!("{}-extra", id.name), "PolicyDocument": doc(id.extra_grants.clone())}),
                    ]
                };
                let managed = attached;
                users.push(json!({
                    "Path": "/", "UserName": id.name, "UserId": id.id, "Arn": id.arn, "CreateDate": created,
                    "UserPolicyList": inline, "GroupList": id.groups, "AttachedManagedPolicies": managed, "Tags": []
                }));
            }
        }
        // group policies: developers and analysts get customer managed policies; CreatePolicyVersion targets
        let dev = group_policy("developers");
        let created = time_string(self.start - 400 * 86_400);
        for (g, acts) in [("DeveloperAccess", dev), ("AnalystAccess", group_policy("analysts"))] {
            policies.push(json!({
                "PolicyName": g, "PolicyId": format!("ANPA{}{}", &aid[..6], if g.starts_with('D') { "DEVACCESS01" } else { "ANLACCESS01" }),
                "Arn": format!("arn:aws:iam::{aid}:policy/{g}"), "Path": "/", "DefaultVersionId": "v2", "AttachmentCount": 1,
                "PermissionsBoundaryUsageCount": 0, "IsAttachable": true, "CreateDate": created, "UpdateDate": created,
                "PolicyVersionList": [
                    {"Document": doc(acts.clone()), "VersionId": "v2", "IsDefaultVersion": true, "CreateDate": created},
                    {"Document": doc(acts.into_iter().take(5).collect()), "VersionId": "v1", "IsDefaultVersion": false, "CreateDate": created}
                ]
            }));
        }
        let group = |name: &str, attached: Value| {
            json!({"Path": "/", "GroupName": name, "GroupId": format!("AGPA{}{}", &aid[..5], name.to_ascii_uppercase().chars().take(12).collect::<String>()),
                   "Arn": format!("arn:aws:iam::{aid}:group/{name}"), "CreateDate": created, "GroupPolicyList": [], "AttachedManagedPolicies": attached})
        };
        let groups = vec![
            group(
                "admins",
                json!([{"PolicyName": "AdministratorAccess", "PolicyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}]),
            ),
            group(
                "developers",
                json!([{"PolicyName": "DeveloperAccess", "PolicyArn": format!("arn:aws:iam::{aid}:policy/DeveloperAccess")}]),
            ),
            group(
                "analysts",
                json!([{"PolicyName": "AnalystAccess", "PolicyArn": format!("arn:aws:iam::{aid}:policy/AnalystAccess")}]),
            ),
            group(
                "auditors",
                json!([{"PolicyName": "SecurityAudit", "PolicyArn": "arn:aws:iam::aws:policy/SecurityAudit"}, {"PolicyName": "ReadOnlyAccess", "PolicyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}]),
            ),
        ];
        json!({"UserDetailList": users, "GroupDetailList": groups, "RoleDetailList": roles, "Policies": policies, "IsTruncated": false})
    }

    /// `list-access-keys` of account `ai` plus `"Account"`.
    pub(super) fn access_keys(&self, ai: usize) -> Value {
        let keys: Vec<Value> = self
            .ids
            .iter()
            .filter(|i| i.account == ai && !i.is_role)
            .map(|i| json!({"UserName": i.name, "AccessKeyId": i.key, "Status": "Active", "CreateDate": time_string(i.created + 600)}))
            .collect();
        json!({"Account": self.accounts[ai].id, "AccessKeyMetadata": keys, "IsTruncated": false})
    }
}

/// The organization's OIDC identity provider (issuer host) and the audience of its tokens for AWS.
pub(super) const OIDC_ISSUER: &str = "login.acme.example";
pub(super) const OIDC_AUDIENCE: &str = "aws-federation";

/// The SAML provider humans of `id` sign in through: IAM Identity Center's for its roles, the
/// organization's IdP otherwise.
pub(super) fn saml_provider(aid: &str, id: &Identity) -> String {
    if id.arch == Arch::Sso {
        format!("arn:aws:iam::{aid}:saml-provider/AWSSSO_{}_DO_NOT_DELETE", &id.id[4..12])
    } else {
        format!("arn:aws:iam::{aid}:saml-provider/acme-idp")
    }
}

/// The IAM action of a CloudTrail event name (Lambda's API-version suffixes dropped).
pub(super) fn iam_action(service: &str, name: &str) -> String {
    let base = match name {
        "ListObjects" => "ListBucket",
        "HeadObject" => "GetObject",
        "Invoke" => "InvokeFunction",
        n => n.trim_end_matches("20150331v2").trim_end_matches("20150331").trim_end_matches("20150331v2"),
    };
    format!("{service}:{base}")
}
