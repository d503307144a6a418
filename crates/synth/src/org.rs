//! The synthetic organization: accounts, their resources, identities with archetypes and policies,
//! and the IAM snapshot files (`get-account-authorization-details` and `list-access-keys` shapes).

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::actions::{CALLS, Level};
use crate::util::{aws_id, glob_match, hex, key_id, percent_encode, time_string, uuid};
use crate::{LOOKBACK_DAYS, OrgSpec};

/// The behaviour (and policies) an identity is generated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Archetype {
    /// `AdministratorAccess` (group, direct or `OrganizationAccountAccessRole`) or an inline `*`.
    Admin,
    /// Explicit IAM write actions: can grant itself anything.
    IamAdmin,
    /// Explicit read-only security audit list (customer managed).
    Auditor,
    /// AWS managed `ReadOnlyAccess`.
    ReadOnlyManaged,
    /// Explicit S3/DynamoDB/Lambda/logs lists via the `developers` group.
    Developer,
    /// Service wildcards (`s3:Get*`, `athena:*`): catalog-dependent grant.
    WildcardAnalyst,
    /// CI deploy role assumed via GitHub OIDC (ECR/ECS/EKS/CloudFormation/S3).
    CiDeploy,
    /// A legacy IAM user with a long-term key used by Terraform.
    DeployUser,
    /// Glue/Athena/S3/KMS pipeline role.
    DataPipeline,
    /// Lambda execution role (SQS/SNS/DynamoDB/KMS/Secrets Manager/SSM).
    AppService,
    SsoAdmin,
    SsoReadOnly,
    SsoDeveloper,
}

impl Archetype {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Archetype::Admin => "admin",
            Archetype::IamAdmin => "iam_admin",
            Archetype::Auditor => "auditor",
            Archetype::ReadOnlyManaged => "read_only_managed",
            Archetype::Developer => "developer",
            Archetype::WildcardAnalyst => "wildcard_analyst",
            Archetype::CiDeploy => "ci_deploy",
            Archetype::DeployUser => "deploy_user",
            Archetype::DataPipeline => "data_pipeline",
            Archetype::AppService => "app_service",
            Archetype::SsoAdmin => "sso_admin",
            Archetype::SsoReadOnly => "sso_read_only",
            Archetype::SsoDeveloper => "sso_developer",
        }
    }

    fn rate(self) -> f64 {
        match self {
            Archetype::AppService => 6.0,
            Archetype::DataPipeline => 3.0,
            Archetype::CiDeploy | Archetype::DeployUser => 2.0,
            Archetype::Admin | Archetype::IamAdmin => 0.6,
            _ => 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    User,
    Role,
    Group,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Role => "role",
            Kind::Group => "group",
        }
    }
}

pub(crate) struct AccessKey {
    pub(crate) id: String,
    pub(crate) active: bool,
    pub(crate) created: i64,
}

pub(crate) struct Session {
    pub(crate) name: String,
    pub(crate) key: String,
}

/// How the identity's calls look on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Human,
    Terraform,
    Sdk,
}

pub(crate) struct Identity {
    pub(crate) account: u32,
    pub(crate) kind: Kind,
    pub(crate) archetype: Archetype,
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) arn: String,
    pub(crate) id: String,
    /// Exact granted action set, or `None` when catalog-dependent.
    pub(crate) granted: Option<BTreeSet<String>>,
    pub(crate) super_identity: bool,
    /// Indices into [`CALLS`] this identity calls, and the cumulative weights to pick one.
    pub(crate) uses: Vec<u16>,
    pub(crate) cum: Vec<f64>,
    pub(crate) weight: f64,
    /// Days (from the spec's start) during which the identity acts: `[from, to)`.
    pub(crate) window: Option<(u32, u32)>,
    pub(crate) keys: Vec<AccessKey>,
    pub(crate) sessions: Vec<Session>,
    pub(crate) ips: Vec<String>,
    pub(crate) style: Style,
    pub(crate) sso: bool,
    pub(crate) oidc: bool,
    pub(crate) home_region: u16,
    pub(crate) created: i64,
    // snapshot-only
    groups: Vec<String>,
    attached: Vec<(String, String)>,
    inline: Vec<(String, Value)>,
    trust: Option<Value>,
}

pub(crate) struct Account {
    pub(crate) id: String,
    pub(crate) buckets: Vec<String>,
    pub(crate) tables: Vec<String>,
    pub(crate) queues: Vec<String>,
    pub(crate) topics: Vec<String>,
    pub(crate) keys: Vec<String>,
    pub(crate) log_groups: Vec<String>,
    pub(crate) params: Vec<String>,
    pub(crate) secrets: Vec<String>,
    pub(crate) repos: Vec<String>,
    pub(crate) clusters: Vec<String>,
    pub(crate) glue_tables: Vec<(String, String)>,
    pub(crate) jobs: Vec<String>,
    pub(crate) stacks: Vec<String>,
    pub(crate) instances: Vec<String>,
    pub(crate) dbs: Vec<String>,
    /// Role identities of the account (indices into `Org::identities`).
    pub(crate) roles: Vec<u32>,
    policies: BTreeMap<String, ManagedPolicy>,
}

struct ManagedPolicy {
    id: String,
    path: String,
    default: Value,
    old: Option<Value>,
    attachments: u32,
    created: i64,
}

pub(crate) struct Org {
    pub(crate) accounts: Vec<Account>,
    pub(crate) identities: Vec<Identity>,
}

const FIRST: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "niaj", "olivia",
    "peggy", "rupert", "sybil", "trent", "victor", "walter", "yusuf", "zoe", "maria", "chen", "priya", "lars", "amara",
];
const LAST: &[&str] = &[
    "smith", "jones", "garcia", "miller", "davis", "lopez", "wilson", "anderson", "thomas", "moore", "martin", "lee",
    "walker", "hall", "young", "king", "wright", "scott", "green", "baker", "nguyen", "kim", "patel", "novak",
];
const WORDS: &[&str] = &[
    "orders",
    "payments",
    "billing",
    "users",
    "events",
    "audit",
    "search",
    "catalog",
    "inventory",
    "reports",
    "metrics",
    "ingest",
    "media",
    "profiles",
    "sessions",
    "notifications",
    "ledger",
    "analytics",
    "exports",
    "backups",
];
const ENVS: &[&str] = &["prod", "staging", "dev", "sandbox"];

pub(crate) const ADMIN_ARN: &str = "arn:aws:iam::aws:policy/AdministratorAccess";
pub(crate) const READONLY_ARN: &str = "arn:aws:iam::aws:policy/ReadOnlyAccess";
const SECURITY_AUDIT_ARN: &str = "arn:aws:iam::aws:policy/SecurityAudit";

fn pick<'a, R: Rng>(rng: &mut R, xs: &'a [&'a str]) -> &'a str {
    xs[rng.random_range(0..xs.len())]
}

fn calls_where(f: impl Fn(&crate::actions::ApiCall) -> bool) -> Vec<String> {
    CALLS.iter().filter(|c| f(c)).map(|c| c.action()).collect()
}

fn reads(prefixes: &[&str]) -> Vec<String> {
    calls_where(|c| prefixes.contains(&c.prefix) && c.read_only())
}

fn names(prefix: &str, list: &[&str]) -> Vec<String> {
    list.iter().map(|n| format!("{prefix}:{n}")).collect()
}

/// A statement `Allow` on `resource` (a string, or a list when several).
fn stmt(sid: &str, actions: &[String], resources: &[String]) -> Value {
    let action = if actions.len() == 1 { json!(actions[0]) } else { json!(actions) };
    let resource = if resources.len() == 1 { json!(resources[0]) } else { json!(resources) };
    json!({"Sid": sid, "Effect": "Allow", "Action": action, "Resource": resource})
}

fn doc(statements: Vec<Value>) -> Value {
    json!({"Version": "2012-10-17", "Statement": statements})
}

fn star() -> Vec<String> {
    vec!["*".to_string()]
}

const S3_OBJECT: &[&str] = &["GetObject", "PutObject", "DeleteObject", "GetObjectTagging", "PutObjectTagging"];
const S3_BUCKET_READ: &[&str] = &["GetBucketLocation", "GetBucketVersioning", "GetBucketTagging", "ListBucket"];

/// S3 statements scoped to `buckets`: object actions on `bucket/*`, bucket actions on the bucket.
fn s3_statements<R: Rng>(rng: &mut R, acct: &Account, object: &[&str], bucket: &[&str]) -> Vec<Value> {
    let n = rng.random_range(1..=acct.buckets.len().min(3));
    let chosen: Vec<&String> = acct.buckets.choose_multiple(rng, n).collect();
    let mut out = Vec::new();
    if !object.is_empty() {
        let res: Vec<String> = chosen.iter().map(|b| format!("arn:aws:s3:::{b}/*")).collect();
        out.push(stmt("ObjectAccess", &names("s3", object), &res));
    }
    if !bucket.is_empty() {
        let res: Vec<String> = chosen.iter().map(|b| format!("arn:aws:s3:::{b}")).collect();
        out.push(stmt("BucketAccess", &names("s3", bucket), &res));
    }
    out
}

/// Allowed actions of a document whose statements were built by [`stmt`]. `None` if any wildcard.
fn doc_actions(doc: &Value) -> Option<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for st in doc["Statement"].as_array()? {
        let acts: Vec<&str> = match &st["Action"] {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        for a in acts {
            if a.contains('*') || a.contains('?') {
                return None;
            }
            out.insert(a.to_string());
        }
    }
    Some(out)
}

fn doc_patterns(doc: &Value, out: &mut Vec<String>) {
    for st in doc["Statement"].as_array().into_iter().flatten() {
        match &st["Action"] {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => out.extend(a.iter().filter_map(Value::as_str).map(str::to_string)),
            _ => {}
        }
    }
}

fn developer_doc<R: Rng>(rng: &mut R, acct: &Account) -> Value {
    let mut sts = s3_statements(rng, acct, S3_OBJECT, S3_BUCKET_READ);
    let mut rest = names(
        "dynamodb",
        &[
            "GetItem",
            "PutItem",
            "UpdateItem",
            "DeleteItem",
            "Query",
            "Scan",
            "BatchGetItem",
            "BatchWriteItem",
            "DescribeTable",
            "ListTables",
        ],
    );
    rest.extend(names(
        "lambda",
        &["InvokeFunction", "GetFunction", "ListFunctions", "GetFunctionConfiguration", "ListAliases"],
    ));
    rest.extend(names(
        "logs",
        &[
            "DescribeLogGroups",
            "DescribeLogStreams",
            "FilterLogEvents",
            "GetLogEvents",
            "StartQuery",
            "GetQueryResults",
        ],
    ));
    rest.extend(names("sqs", &["SendMessage", "ReceiveMessage", "GetQueueAttributes", "ListQueues"]));
    rest.extend(names("cloudwatch", &["GetMetricData", "ListMetrics", "DescribeAlarms"]));
    rest.extend(names("ssm", &["GetParameter", "GetParameters", "DescribeParameters"]));
    rest.extend(names("xray", &["PutTraceSegments", "GetTraceSummaries"]));
    rest.push("s3:ListAllMyBuckets".into());
    sts.push(stmt("DeveloperServices", &rest, &star()));
    doc(sts)
}

fn auditor_doc() -> Value {
    let mut a = reads(&["iam", "ec2", "cloudtrail", "rds", "eks", "ecs"]);
    a.extend(calls_where(|c| c.prefix == "s3" && c.read_only() && c.name.starts_with("GetBucket")));
    a.extend(names("kms", &["DescribeKey", "ListKeys", "ListAliases", "GetKeyPolicy", "GetKeyRotationStatus"]));
    a.extend(names("logs", &["DescribeLogGroups"]));
    a.extend(names("cloudwatch", &["DescribeAlarms"]));
    a.extend(names("config", &["DescribeConfigRules", "DescribeConfigurationRecorders"]));
    a.extend(names("guardduty", &["ListDetectors", "GetFindings"]));
    a.extend(names("securityhub", &["GetFindings"]));
    a.extend(names("organizations", &["DescribeOrganization", "ListAccounts"]));
    a.extend(names("access-analyzer", &["ListAnalyzers"]));
    a.push("s3:ListAllMyBuckets".into());
    doc(vec![stmt("SecurityAudit", &a, &star())])
}

fn iam_admin_doc() -> Value {
    let mut a = calls_where(|c| c.prefix == "iam");
    a.extend(names("iam", &["PassRole", "CreateLoginProfile", "DeleteUserPolicy", "SetDefaultPolicyVersion"]));
    doc(vec![stmt("IamAdministration", &a, &star())])
}

fn ci_doc<R: Rng>(rng: &mut R, acct: &Account) -> Value {
    let mut sts = s3_statements(rng, acct, &["GetObject", "PutObject"], &["GetBucketLocation", "ListBucket"]);
    let mut a = calls_where(|c| c.prefix == "ecr");
    a.extend(calls_where(|c| c.prefix == "ecs"));
    a.extend(calls_where(|c| c.prefix == "cloudformation"));
    a.extend(names("ecs", &["RegisterTaskDefinition"]));
    a.extend(names("cloudformation", &["CreateStack", "UpdateStack", "CreateChangeSet", "ValidateTemplate"]));
    a.extend(names("eks", &["DescribeCluster", "ListClusters"]));
    sts.push(stmt("Deploy", &a, &star()));
    doc(sts)
}

fn pipeline_doc<R: Rng>(rng: &mut R, acct: &Account) -> Value {
    let mut sts = s3_statements(rng, acct, &["GetObject", "PutObject", "DeleteObject"], &["GetBucketLocation"]);
    let mut a = calls_where(|c| c.prefix == "glue" || c.prefix == "athena");
    a.extend(names("glue", &["BatchCreatePartition", "UpdateTable"]));
    a.extend(names("kms", &["Decrypt", "GenerateDataKey", "DescribeKey"]));
    a.extend(names("logs", &["CreateLogGroup", "CreateLogStream", "PutLogEvents"]));
    a.extend(names("cloudwatch", &["PutMetricData"]));
    sts.push(stmt("Pipeline", &a, &star()));
    doc(sts)
}

fn app_baseline_doc() -> Value {
    let mut a = names("logs", &["CreateLogGroup", "CreateLogStream", "PutLogEvents"]);
    a.extend(names("cloudwatch", &["PutMetricData"]));
    a.extend(names("xray", &["PutTraceSegments", "PutTelemetryRecords"]));
    doc(vec![stmt("Baseline", &a, &star())])
}

fn app_inline_doc<R: Rng>(rng: &mut R) -> Value {
    let mut pool = calls_where(|c| {
        matches!(c.prefix, "sqs" | "sns" | "dynamodb" | "kms" | "secretsmanager" | "ssm") && c.level != Level::List
    });
    pool.shuffle(rng);
    let n = rng.random_range(4..=12).min(pool.len());
    pool.truncate(n);
    pool.sort();
    doc(vec![stmt("AppAccess", &pool, &star())])
}

fn wildcard_doc() -> Value {
    let a: Vec<String> = ["s3:Get*", "s3:List*", "athena:*", "glue:Get*", "dynamodb:Describe*", "dynamodb:Query"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    doc(vec![stmt("Analytics", &a, &star())])
}

fn star_doc() -> Value {
    doc(vec![json!({"Effect": "Allow", "Action": "*", "Resource": "*"})])
}

fn old_version(d: &Value) -> Value {
    let mut old = d.clone();
    if let Some(sts) = old["Statement"].as_array_mut() {
        sts.push(stmt("Legacy", &names("s3", &["DeleteBucket", "PutBucketPolicy"]), &star()));
    }
    old
}

impl Account {
    fn policy<R: Rng>(
        &mut self,
        rng: &mut R,
        name: &str,
        path: &str,
        make: impl FnOnce(&mut R, &Account) -> Value,
    ) -> String {
        if !self.policies.contains_key(name) {
            let default = make(rng, self);
            let old = rng.random_bool(0.4).then(|| old_version(&default));
            let created = 1_500_000_000 + rng.random_range(0..150_000_000);
            let p = ManagedPolicy { id: aws_id(rng, "ANPA"), path: path.into(), default, old, attachments: 0, created };
            self.policies.insert(name.to_string(), p);
        }
        if let Some(p) = self.policies.get_mut(name) {
            p.attachments += 1;
        }
        format!("arn:aws:iam::{}:policy{}{}", self.id, path, name)
    }
}

fn new_account<R: Rng>(rng: &mut R, id: String) -> Account {
    let mut words: Vec<&str> = WORDS.to_vec();
    words.shuffle(rng);
    let env = pick(rng, ENVS);
    let w = |i: usize| words[i % words.len()];
    Account {
        buckets: (0..4).map(|i| format!("{}-{}-{}-{}", w(i), env, &id[8..], hex(rng, 4))).collect(),
        tables: (0..3).map(|i| format!("{}-{env}", w(i + 2))).collect(),
        queues: (0..3).map(|i| format!("{}-{env}-queue", w(i + 4))).collect(),
        topics: (0..2).map(|i| format!("{}-{env}-events", w(i + 6))).collect(),
        keys: (0..2).map(|_| uuid(rng)).collect(),
        log_groups: (0..4).map(|i| format!("/aws/lambda/{}-{env}", w(i + 1))).collect(),
        params: (0..4).map(|i| format!("/{env}/{}/config", w(i + 3))).collect(),
        secrets: (0..3).map(|i| format!("{env}/{}/db-credentials", w(i + 5))).collect(),
        repos: (0..3).map(|i| w(i + 7).to_string()).collect(),
        clusters: (0..2).map(|i| format!("{env}-{}", if i == 0 { "main" } else { "batch" })).collect(),
        glue_tables: (0..3).map(|i| (format!("{}_{env}", w(i + 9)), w(i + 10).to_string())).collect(),
        jobs: (0..2).map(|i| format!("{}-etl", w(i + 11))).collect(),
        stacks: (0..3).map(|i| format!("{}-{env}-stack", w(i + 12))).collect(),
        instances: (0..4).map(|_| format!("i-0{}", hex(rng, 16))).collect(),
        dbs: (0..2).map(|i| format!("{}-{env}-db", w(i + 13))).collect(),
        roles: Vec::new(),
        policies: BTreeMap::new(),
        id,
    }
}

/// Builds the organization (no file output).
pub(crate) fn build(spec: &OrgSpec, rng: &mut ChaCha8Rng, n_regions: usize) -> Org {
    let mut accounts = Vec::with_capacity(spec.accounts as usize);
    let mut seen = BTreeSet::new();
    while accounts.len() < spec.accounts as usize {
        let id = format!("{}", rng.random_range(100_000_000_000u64..1_000_000_000_000));
        if seen.insert(id.clone()) {
            accounts.push(new_account(rng, id));
        }
    }
    let start_secs = spec.start.millis().div_euclid(1000);
    let mut identities = Vec::new();
    for (ai, acct) in accounts.iter_mut().enumerate() {
        let mut used_names = BTreeSet::new();
        let n = spec.identities_per_account;
        let home = rng.random_range(0..n_regions.max(1)) as u16;
        // groups first, so users can reference them
        for (gname, arch) in [
            ("admins", Archetype::Admin),
            ("developers", Archetype::Developer),
            ("auditors", Archetype::ReadOnlyManaged),
        ] {
            let mut g = blank(ai as u32, Kind::Group, arch, gname.to_string(), "/".into(), acct, rng, start_secs);
            g.id = aws_id(rng, "AGPA");
            match arch {
                Archetype::Admin => g.attached.push(("AdministratorAccess".into(), ADMIN_ARN.into())),
                Archetype::Developer => {
                    let arn = acct.policy(rng, "DeveloperAccess", "/", developer_doc);
                    g.attached.push(("DeveloperAccess".into(), arn));
                    g.inline.push((
                        "developers-logs".into(),
                        doc(vec![stmt("Logs", &names("logs", &["CreateLogGroup", "CreateLogStream"]), &star())]),
                    ));
                }
                _ => {
                    g.attached.push(("ReadOnlyAccess".into(), READONLY_ARN.into()));
                    g.attached.push(("SecurityAudit".into(), SECURITY_AUDIT_ARN.into()));
                }
            }
            identities.push(g);
        }
        for i in 0..n {
            let (kind, arch) = choose(rng, i, n);
            let mut id = make_identity(rng, ai as u32, kind, arch, acct, &mut used_names, start_secs);
            id.home_region = if rng.random_bool(0.8) { home } else { rng.random_range(0..n_regions.max(1)) as u16 };
            if kind == Kind::Role {
                acct.roles.push(identities.len() as u32);
            }
            identities.push(id);
        }
    }
    resolve_grants(&mut identities, &accounts);
    let days = spec.days;
    let mut any_active = false;
    for id in identities.iter_mut() {
        if id.kind == Kind::Group {
            continue;
        }
        choose_uses(rng, id);
        id.weight = id.archetype.rate() * (1.0 / (1.0 - rng.random::<f64>()).max(1e-9)).powf(1.0 / 1.3).min(200.0);
        id.window = if rng.random_bool(0.15) {
            if days > LOOKBACK_DAYS + 2 && rng.random_bool(0.6) {
                let to = rng.random_range(1..=days - LOOKBACK_DAYS - 1);
                Some((rng.random_range(0..to), to))
            } else {
                None
            }
        } else if rng.random_bool(0.3) {
            Some((rng.random_range(0..=days / 3), days))
        } else {
            Some((0, days))
        };
        any_active |= id.window.is_some_and(|(_, to)| to == days);
    }
    if !any_active && let Some(id) = identities.iter_mut().find(|i| i.kind != Kind::Group) {
        id.window = Some((0, days));
    }
    Org { accounts, identities }
}

#[allow(clippy::too_many_arguments)]
fn blank<R: Rng>(
    account: u32,
    kind: Kind,
    archetype: Archetype,
    name: String,
    path: String,
    acct: &Account,
    rng: &mut R,
    start_secs: i64,
) -> Identity {
    let what = kind.as_str();
    Identity {
        account,
        kind,
        archetype,
        arn: format!("arn:aws:iam::{}:{what}{path}{name}", acct.id),
        name,
        path,
        id: String::new(),
        granted: None,
        super_identity: false,
        uses: Vec::new(),
        cum: Vec::new(),
        weight: 0.0,
        window: None,
        keys: Vec::new(),
        sessions: Vec::new(),
        ips: Vec::new(),
        style: Style::Human,
        sso: false,
        oidc: false,
        home_region: 0,
        created: start_secs - rng.random_range(86_400 * 20..86_400 * 1500),
        groups: Vec::new(),
        attached: Vec::new(),
        inline: Vec::new(),
        trust: None,
    }
}

fn choose<R: Rng>(rng: &mut R, i: u32, n: u32) -> (Kind, Archetype) {
    use Archetype::*;
    if n >= 8 {
        match i {
            0 => return (Kind::Role, Admin),
            1 => return (Kind::Role, SsoAdmin),
            2 => return (Kind::Role, SsoReadOnly),
            3 => return (Kind::Role, SsoDeveloper),
            _ => {}
        }
    }
    let table: &[(Kind, Archetype, u32)] = &[
        (Kind::User, Admin, 4),
        (Kind::User, IamAdmin, 2),
        (Kind::User, Auditor, 5),
        (Kind::User, ReadOnlyManaged, 4),
        (Kind::User, Developer, 22),
        (Kind::User, DeployUser, 5),
        (Kind::Role, Admin, 2),
        (Kind::Role, Auditor, 3),
        (Kind::Role, ReadOnlyManaged, 3),
        (Kind::Role, WildcardAnalyst, 6),
        (Kind::Role, CiDeploy, 10),
        (Kind::Role, DataPipeline, 9),
        (Kind::Role, AppService, 25),
    ];
    let total: u32 = table.iter().map(|t| t.2).sum();
    let mut x = rng.random_range(0..total);
    for &(k, a, w) in table {
        if x < w {
            return (k, a);
        }
        x -= w;
    }
    (Kind::Role, AppService)
}

fn unique(used: &mut BTreeSet<String>, base: String) -> String {
    let mut name = base.clone();
    let mut k = 2;
    while !used.insert(name.clone()) {
        name = format!("{base}-{k}");
        k += 1;
    }
    name
}

fn human<R: Rng>(rng: &mut R) -> (String, String) {
    let f = pick(rng, FIRST);
    let l = pick(rng, LAST);
    (format!("{f}.{l}"), format!("{f}.{l}@example.com"))
}

fn ips<R: Rng>(rng: &mut R, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| match rng.random_range(0..3) {
            0 => format!("203.0.113.{}", rng.random_range(1..255)),
            1 => format!("198.51.100.{}", rng.random_range(1..255)),
            _ => format!(
                "{}.{}.{}.{}",
                rng.random_range(3..100),
                rng.random_range(0..255),
                rng.random_range(0..255),
                rng.random_range(1..255)
            ),
        })
        .collect()
}

fn make_identity<R: Rng>(
    rng: &mut R,
    account: u32,
    kind: Kind,
    arch: Archetype,
    acct: &mut Account,
    used: &mut BTreeSet<String>,
    start_secs: i64,
) -> Identity {
    use Archetype::*;
    let word = pick(rng, WORDS);
    let (base, path) = match (kind, arch) {
        (Kind::User, DeployUser) => (format!("svc-terraform-{word}"), "/service/".to_string()),
        (Kind::User, _) => (human(rng).0, "/".to_string()),
        (_, Admin) if !used.contains("OrganizationAccountAccessRole") => {
            ("OrganizationAccountAccessRole".to_string(), "/".to_string())
        }
        (_, Admin) => ("break-glass-admin".to_string(), "/".to_string()),
        (_, SsoAdmin) => (format!("AWSReservedSSO_AdministratorAccess_{}", hex(rng, 16)), sso_path(rng)),
        (_, SsoReadOnly) => (format!("AWSReservedSSO_ReadOnlyAccess_{}", hex(rng, 16)), sso_path(rng)),
        (_, SsoDeveloper) => (format!("AWSReservedSSO_PowerDeveloper_{}", hex(rng, 16)), sso_path(rng)),
        (_, Auditor) => ("security-audit".to_string(), "/".to_string()),
        (_, ReadOnlyManaged) => (format!("readonly-{word}"), "/".to_string()),
        (_, WildcardAnalyst) => (format!("analytics-notebook-{word}"), "/".to_string()),
        (_, CiDeploy) => (format!("github-actions-deploy-{word}"), "/ci/".to_string()),
        (_, DataPipeline) => (format!("{word}-etl-pipeline"), "/service-role/".to_string()),
        _ => (format!("{word}-{}-lambda-role", pick(rng, ENVS)), "/service-role/".to_string()),
    };
    let name = unique(used, base);
    let mut id = blank(account, kind, arch, name, path, acct, rng, start_secs);
    id.id = aws_id(rng, if kind == Kind::User { "AIDA" } else { "AROA" });
    let n_ips = rng.random_range(1..=3);
    id.ips = ips(rng, n_ips);
    let acct_id = acct.id.clone();
    match arch {
        Admin => {
            if kind == Kind::User {
                if rng.random_bool(0.7) {
                    id.groups.push("admins".into());
                } else {
                    id.attached.push(("AdministratorAccess".into(), ADMIN_ARN.into()));
                }
            } else if id.name == "OrganizationAccountAccessRole" {
                id.attached.push(("AdministratorAccess".into(), ADMIN_ARN.into()));
            } else {
                id.inline.push(("break-glass".into(), star_doc()));
            }
        }
        IamAdmin => {
            let arn = acct.policy(rng, "IamAdministration", "/", |_, _| iam_admin_doc());
            id.attached.push(("IamAdministration".into(), arn));
            id.groups.push("developers".into());
        }
        Auditor => {
            let arn = acct.policy(rng, "SecurityAuditCustom", "/security/", |_, _| auditor_doc());
            id.attached.push(("SecurityAuditCustom".into(), arn));
        }
        ReadOnlyManaged => {
            if kind == Kind::User {
                id.groups.push("auditors".into());
            } else {
                id.attached.push(("ReadOnlyAccess".into(), READONLY_ARN.into()));
            }
        }
        Developer => {
            id.groups.push("developers".into());
            if rng.random_bool(0.35) {
                id.inline.push((
                    format!("{}-extra", id.name),
                    doc(vec![stmt(
                        "Extra",
                        &names("athena", &["StartQueryExecution", "GetQueryExecution", "GetQueryResults"]),
                        &star(),
                    )]),
                ));
            }
        }
        WildcardAnalyst => id.inline.push(("analytics-access".into(), wildcard_doc())),
        CiDeploy | DeployUser => {
            let arn = acct.policy(rng, "CiDeployPolicy", "/ci/", ci_doc);
            id.attached.push(("CiDeployPolicy".into(), arn));
            id.style = Style::Terraform;
        }
        DataPipeline => {
            let arn = acct.policy(rng, "DataPipelinePolicy", "/", pipeline_doc);
            id.attached.push(("DataPipelinePolicy".into(), arn));
            id.style = Style::Sdk;
        }
        AppService => {
            let arn = acct.policy(rng, "AppServiceBaseline", "/", |_, _| app_baseline_doc());
            id.attached.push(("AppServiceBaseline".into(), arn));
            id.inline.push((format!("{}-access", id.name), app_inline_doc(rng)));
            id.style = Style::Sdk;
        }
        SsoAdmin => id.attached.push(("AdministratorAccess".into(), ADMIN_ARN.into())),
        SsoReadOnly => id.attached.push(("ReadOnlyAccess".into(), READONLY_ARN.into())),
        SsoDeveloper => id.inline.push(("AwsSSOInlinePolicy".into(), developer_doc(rng, acct))),
    }
    if kind == Kind::User {
        let n = if rng.random_bool(0.3) { 2 } else { 1 };
        for k in 0..n {
            let created = id.created + rng.random_range(0..86_400 * 10);
            id.keys.push(AccessKey { id: key_id(rng, "AKIA"), active: k == 0 || rng.random_bool(0.7), created });
        }
    } else {
        id.sso = matches!(arch, SsoAdmin | SsoReadOnly | SsoDeveloper);
        id.oidc = arch == CiDeploy;
        let names: Vec<String> = if id.sso {
            (0..rng.random_range(2..=5)).map(|_| human(rng).1).collect()
        } else if arch == CiDeploy {
            (0..3).map(|_| format!("GitHubActions-{}", rng.random_range(1_000_000_000u64..9_000_000_000))).collect()
        } else if arch == AppService {
            vec![id.name.trim_end_matches("-lambda-role").to_string()]
        } else if matches!(arch, Admin | Auditor | ReadOnlyManaged) {
            (0..rng.random_range(1..=3)).map(|_| human(rng).0).collect()
        } else {
            (0..2).map(|_| format!("botocore-session-{}", rng.random_range(1_600_000_000u64..1_700_000_000))).collect()
        };
        let mut seen = BTreeSet::new();
        for n in names {
            if seen.insert(n.clone()) {
                id.sessions.push(Session { name: n, key: key_id(rng, "ASIA") });
            }
        }
        id.trust = Some(trust(rng, arch, &acct_id));
    }
    id
}

fn sso_path<R: Rng>(rng: &mut R) -> String {
    if rng.random_bool(0.5) {
        "/aws-reserved/sso.amazonaws.com/".into()
    } else {
        "/aws-reserved/sso.amazonaws.com/eu-west-1/".into()
    }
}

fn trust<R: Rng>(rng: &mut R, arch: Archetype, acct: &str) -> Value {
    use Archetype::*;
    let st = match arch {
        SsoAdmin | SsoReadOnly | SsoDeveloper => json!({
            "Effect": "Allow",
            "Principal": {"Federated": format!("arn:aws:iam::{acct}:saml-provider/AWSSSO_{}_DO_NOT_DELETE", hex(rng, 16))},
            "Action": ["sts:AssumeRoleWithSAML", "sts:TagSession"],
            "Condition": {"StringEquals": {"SAML:aud": "https://signin.aws.amazon.com/saml"}}
        }),
        CiDeploy => json!({
            "Effect": "Allow",
            "Principal": {"Federated": format!("arn:aws:iam::{acct}:oidc-provider/token.actions.githubusercontent.com")},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringLike": {"token.actions.githubusercontent.com:sub": "repo:example-org/*:ref:refs/heads/main"}}
        }),
        AppService => {
            json!({"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"})
        }
        DataPipeline => {
            json!({"Effect": "Allow", "Principal": {"Service": "glue.amazonaws.com"}, "Action": "sts:AssumeRole"})
        }
        _ => {
            json!({"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{acct}:root")}, "Action": "sts:AssumeRole"})
        }
    };
    json!({"Version": "2012-10-17", "Statement": [st]})
}

/// An exact granted set (or `None`), the super flag and the action patterns of an identity.
type Grant = (Option<BTreeSet<String>>, bool, Vec<String>);

/// Computes each identity's granted set (exact or `None`) and super flag from its policies.
fn resolve_grants(ids: &mut [Identity], accounts: &[Account]) {
    // group name per account -> (exact set or None, super, patterns)
    let mut groups: BTreeMap<(u32, String), Grant> = BTreeMap::new();
    let mut results = Vec::with_capacity(ids.len());
    for id in ids.iter() {
        let acct = &accounts[id.account as usize];
        let mut exact: Option<BTreeSet<String>> = Some(BTreeSet::new());
        let mut sup = false;
        let mut pats = Vec::new();
        fn add_doc(d: &Value, exact: &mut Option<BTreeSet<String>>, pats: &mut Vec<String>) {
            doc_patterns(d, pats);
            match (doc_actions(d), exact.as_mut()) {
                (Some(a), Some(e)) => e.extend(a),
                _ => *exact = None,
            }
        }
        for (_, d) in &id.inline {
            add_doc(d, &mut exact, &mut pats);
        }
        for (name, arn) in &id.attached {
            if arn.starts_with("arn:aws:iam::aws:") {
                exact = None;
                if arn == ADMIN_ARN {
                    sup = true;
                    pats.push("*".into());
                } else if arn == READONLY_ARN {
                    pats.extend(CALLS.iter().filter(|c| readonly_managed_allows(c)).map(|c| c.action()));
                }
            } else if let Some(p) = acct.policies.get(name) {
                add_doc(&p.default, &mut exact, &mut pats);
            }
        }
        for g in &id.groups {
            if let Some((gx, gs, gp)) = groups.get(&(id.account, g.clone())) {
                sup |= *gs;
                pats.extend(gp.iter().cloned());
                match (gx, exact.as_mut()) {
                    (Some(a), Some(e)) => e.extend(a.iter().cloned()),
                    _ => exact = None,
                }
            }
        }
        sup |= pats.iter().any(|p| p == "*" || p == "iam:*")
            || exact.as_ref().is_some_and(|e| {
                [
                    "iam:AttachUserPolicy",
                    "iam:PutUserPolicy",
                    "iam:AttachRolePolicy",
                    "iam:PutRolePolicy",
                    "iam:CreatePolicyVersion",
                ]
                .iter()
                .any(|a| e.contains(*a))
            });
        if id.kind == Kind::Group {
            groups.insert((id.account, id.name.clone()), (exact.clone(), sup, pats.clone()));
        }
        results.push((exact, sup, pats));
    }
    for (id, (exact, sup, pats)) in ids.iter_mut().zip(results) {
        id.granted = exact;
        id.super_identity = sup;
        // stash patterns as the pool for `choose_uses`
        id.uses = CALLS
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                let a = c.action();
                pats.iter().any(|p| glob_match(p, &a))
            })
            .map(|(i, _)| i as u16)
            .collect();
    }
}

/// What AWS managed `ReadOnlyAccess` allows among [`CALLS`] (checked against the vendored policy in a test).
pub(crate) fn readonly_managed_allows(c: &crate::actions::ApiCall) -> bool {
    c.read_only() && !(c.prefix == "secretsmanager" && c.name == "GetSecretValue")
}

/// Picks the subset of the granted callable actions this identity actually uses, with Zipf weights.
fn choose_uses<R: Rng>(rng: &mut R, id: &mut Identity) {
    let mut pool = std::mem::take(&mut id.uses);
    pool.shuffle(rng);
    let k = match id.archetype {
        Archetype::Admin | Archetype::SsoAdmin => rng.random_range(8..=40),
        _ => {
            let frac = rng.random_range(0.25..0.75);
            ((pool.len() as f64 * frac).round() as usize).max(1)
        }
    };
    pool.truncate(k.min(pool.len()));
    let mut acc = 0.0;
    id.cum = (0..pool.len())
        .map(|i| {
            acc += 1.0 / ((i + 1) as f64).powf(1.1);
            acc
        })
        .collect();
    id.uses = pool;
}

impl Org {
    /// The `get-account-authorization-details` document of account `ai`.
    pub(crate) fn authorization_details(&self, ai: usize, encode: bool) -> Value {
        let acct = &self.accounts[ai];
        let enc = |d: &Value, pretty: bool| -> Value {
            if encode {
                let s = if pretty { serde_json::to_string_pretty(d) } else { serde_json::to_string(d) };
                Value::String(percent_encode(&s.unwrap_or_default()))
            } else {
                d.clone()
            }
        };
        let attached = |id: &Identity| -> Vec<Value> {
            id.attached.iter().map(|(n, a)| json!({"PolicyName": n, "PolicyArn": a})).collect()
        };
        let inline = |id: &Identity, pretty: bool| -> Vec<Value> {
            id.inline.iter().map(|(n, d)| json!({"PolicyName": n, "PolicyDocument": enc(d, pretty)})).collect()
        };
        let mut users = Vec::new();
        let mut groups = Vec::new();
        let mut roles = Vec::new();
        for (ix, id) in self.identities.iter().enumerate().filter(|(_, i)| i.account as usize == ai) {
            let pretty = ix % 3 == 0;
            let created = time_string(id.created);
            match id.kind {
                Kind::User => users.push(json!({
                    "Path": id.path, "UserName": id.name, "UserId": id.id, "Arn": id.arn, "CreateDate": created,
                    "UserPolicyList": inline(id, pretty), "GroupList": id.groups,
                    "AttachedManagedPolicies": attached(id), "Tags": []
                })),
                Kind::Group => groups.push(json!({
                    "Path": id.path, "GroupName": id.name, "GroupId": id.id, "Arn": id.arn, "CreateDate": created,
                    "GroupPolicyList": inline(id, pretty), "AttachedManagedPolicies": attached(id)
                })),
                Kind::Role => {
                    let trust = id.trust.as_ref().map(|t| enc(t, pretty)).unwrap_or(Value::Null);
                    roles.push(json!({
                        "Path": id.path, "RoleName": id.name, "RoleId": id.id, "Arn": id.arn, "CreateDate": created,
                        "AssumeRolePolicyDocument": trust, "InstanceProfileList": [],
                        "RolePolicyList": inline(id, pretty), "AttachedManagedPolicies": attached(id), "Tags": [],
                        "RoleLastUsed": {}
                    }))
                }
            }
        }
        let policies: Vec<Value> = acct
            .policies
            .iter()
            .map(|(name, p)| {
                let mut versions = Vec::new();
                let default_v = if p.old.is_some() { "v2" } else { "v1" };
                versions.push(json!({"Document": enc(&p.default, false), "VersionId": default_v, "IsDefaultVersion": true, "CreateDate": time_string(p.created + 86_400 * 30)}));
                if let Some(old) = &p.old {
                    versions.push(json!({"Document": enc(old, false), "VersionId": "v1", "IsDefaultVersion": false, "CreateDate": time_string(p.created)}));
                }
                json!({
                    "PolicyName": name, "PolicyId": p.id, "Arn": format!("arn:aws:iam::{}:policy{}{}", acct.id, p.path, name),
                    "Path": p.path, "DefaultVersionId": default_v, "AttachmentCount": p.attachments,
                    "PermissionsBoundaryUsageCount": 0, "IsAttachable": true, "CreateDate": time_string(p.created),
                    "UpdateDate": time_string(p.created + 86_400 * 30), "PolicyVersionList": versions
                })
            })
            .collect();
        json!({"UserDetailList": users, "GroupDetailList": groups, "RoleDetailList": roles, "Policies": policies, "IsTruncated": false})
    }

    /// The `list-access-keys` document of account `ai`, plus `"Account"`.
    pub(crate) fn access_keys(&self, ai: usize) -> Value {
        let mut keys = Vec::new();
        for id in self.identities.iter().filter(|i| i.account as usize == ai) {
            for k in &id.keys {
                keys.push(json!({"UserName": id.name, "AccessKeyId": k.id, "Status": if k.active { "Active" } else { "Inactive" }, "CreateDate": time_string(k.created)}));
            }
        }
        json!({"Account": self.accounts[ai].id, "AccessKeyMetadata": keys, "IsTruncated": false})
    }
}
