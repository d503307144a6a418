//! One API call before rendering ([`Ev`]) and its CloudTrail record.

use rand::Rng;
use serde::Serialize;
use serde_json::{Value, json};

use super::api::{APIS, Api, R, denied, other_error};
use super::world::{Account, Identity, World};
use crate::util::{hex, push_upper32, time_string, uuid};

/// How a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fail {
    No,
    Denied,
    Other,
}

/// An API call to render: who, what, when, from where, and any explicit parameters.
#[derive(Debug, Clone)]
pub(super) struct Ev {
    /// Seconds since the epoch.
    pub(super) t: i64,
    pub(super) who: u32,
    pub(super) persona: u16,
    /// Role session name overriding the persona's (CI runs, Lambda-created sessions).
    pub(super) session: Option<String>,
    pub(super) api: u16,
    pub(super) region: &'static str,
    pub(super) ip: String,
    pub(super) ua: String,
    pub(super) fail: Fail,
    /// Explicit `requestParameters` (otherwise generated from the identity's resources).
    pub(super) req: Option<Value>,
    pub(super) resp: Option<Value>,
    /// Fixed `eventID` (attacks, so labels can name it); drawn at rendering otherwise.
    pub(super) id: Option<String>,
    /// Credentials from a console session (IAM users: temporary `ASIA` key).
    pub(super) console: bool,
    /// Use this access key id (stolen keys are the victim's own; `None`: the identity's usual).
    pub(super) key: Option<String>,
}

impl Ev {
    pub(super) fn new(t: i64, who: usize, api: u16, region: &'static str, ip: String, ua: String) -> Ev {
        Ev {
            t,
            who: who as u32,
            persona: 0,
            session: None,
            api,
            region,
            ip,
            ua,
            fail: Fail::No,
            req: None,
            resp: None,
            id: None,
            console: false,
            key: None,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rec<'a> {
    event_version: &'static str,
    user_identity: Value,
    event_time: String,
    event_source: &'static str,
    event_name: &'static str,
    aws_region: &'a str,
    #[serde(rename = "sourceIPAddress")]
    source_ip_address: &'a str,
    user_agent: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<String>,
    request_parameters: Value,
    response_elements: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_event_data: Option<Value>,
    #[serde(rename = "requestID")]
    request_id: String,
    #[serde(rename = "eventID")]
    event_id: String,
    read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<Value>,
    event_type: &'static str,
    management_event: bool,
    recipient_account_id: &'a str,
    event_category: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_credential_from_console: Option<&'static str>,
}

/// A stable pseudo-random temporary key id for (identity, session, hour): credentials last an hour.
fn temp_key(who: u32, session: &str, t: i64) -> String {
    const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(who);
    for b in session.bytes().chain(t.div_euclid(3600).to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut s = String::with_capacity(20);
    s.push_str("ASIA");
    for k in 0..16u64 {
        if k % 8 == 0 {
            // splitmix64 step
            h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = h;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            h = z ^ (z >> 31);
        }
        s.push(char::from(B32[((h >> ((k % 8) * 5)) & 31) as usize]));
    }
    s
}

pub(super) fn session_of<'a>(ev: &'a Ev, id: &'a Identity) -> &'a str {
    ev.session
        .as_deref()
        .or_else(|| id.personas.get(usize::from(ev.persona)).and_then(|p| p.session.as_deref()))
        .unwrap_or("session")
}

/// Renders `ev` as one CloudTrail record (no newline) and returns its `eventID`.
pub(super) fn render<G: Rng>(w: &World, ev: &Ev, rng: &mut G, out: &mut Vec<u8>) -> Result<String, serde_json::Error> {
    let id = &w.ids[ev.who as usize];
    let acct = &w.accounts[id.account];
    let aid = acct.id.as_str();
    let api: &Api = &APIS[usize::from(ev.api)];
    let session = session_of(ev, id);
    let creation = time_string(ev.t - ev.t.rem_euclid(3600) + (i64::from(ev.who) * 37) % 600);
    let (user_identity, actor_arn) = if id.is_role {
        let arn = format!("arn:aws:sts::{aid}:assumed-role/{}/{session}", id.name);
        let key = ev.key.clone().unwrap_or_else(|| temp_key(ev.who, session, ev.t));
        let ui = json!({
            "type": "AssumedRole",
            "principalId": format!("{}:{session}", id.id),
            "arn": arn,
            "accountId": aid,
            "accessKeyId": key,
            "sessionContext": {
                "sessionIssuer": {"type": "Role", "principalId": id.id, "arn": id.arn, "accountId": aid, "userName": id.name},
                "webIdFederationData": {},
                "attributes": {"creationDate": creation, "mfaAuthenticated": if ev.console { "true" } else { "false" }}
            }
        });
        (ui, arn)
    } else if ev.console {
        let key = ev.key.clone().unwrap_or_else(|| temp_key(ev.who, "console", ev.t));
        let ui = json!({
            "type": "IAMUser", "principalId": id.id, "arn": id.arn, "accountId": aid, "accessKeyId": key,
            "userName": id.name,
            "sessionContext": {"sessionIssuer": {}, "webIdFederationData": {}, "attributes": {"creationDate": creation, "mfaAuthenticated": "true"}}
        });
        (ui, id.arn.clone())
    } else {
        let key = ev.key.clone().unwrap_or_else(|| id.key.clone());
        let ui = json!({"type": "IAMUser", "principalId": id.id, "arn": id.arn, "accountId": aid, "accessKeyId": key, "userName": id.name});
        (ui, id.arn.clone())
    };
    let region = if api.global() { "us-east-1" } else { ev.region };
    let mut resources = None;
    let req = match &ev.req {
        Some(v) => v.clone(),
        None => params(api, id, acct, region, ev.t, rng, &mut resources),
    };
    let (code, msg) = match ev.fail {
        Fail::No => (None, None),
        Fail::Denied => {
            let (c, m) = denied(api, &actor_arn);
            (Some(c), Some(m))
        }
        Fail::Other => {
            let (c, m) = other_error(api);
            (Some(c), Some(m.to_string()))
        }
    };
    let resp = if ev.fail != Fail::No { Value::Null } else { ev.resp.clone().unwrap_or(Value::Null) };
    let additional = if api.service() == "s3" {
        Some(json!({
            "SignatureVersion": "SigV4", "CipherSuite": "TLS_AES_128_GCM_SHA256", "bytesTransferredIn": 0,
            "AuthenticationMethod": "AuthHeader",
            "bytesTransferredOut": if api.name == "GetObject" && ev.fail == Fail::No { rng.random_range(200..4_000_000u64) } else { 0 }
        }))
    } else {
        None
    };
    let request_id = if api.service() == "s3" {
        let mut s = String::new();
        push_upper32(&mut s, rng, 16);
        s
    } else {
        uuid(rng)
    };
    let event_id = ev.id.clone().unwrap_or_else(|| uuid(rng));
    let rec = Rec {
        event_version: if api.data { "1.10" } else { "1.09" },
        user_identity,
        event_time: time_string(ev.t),
        event_source: api.source,
        event_name: api.name,
        aws_region: region,
        source_ip_address: &ev.ip,
        user_agent: &ev.ua,
        error_code: code,
        error_message: msg,
        request_parameters: req,
        response_elements: resp,
        additional_event_data: additional,
        request_id,
        event_id: event_id.clone(),
        read_only: api.read_only,
        resources,
        event_type: "AwsApiCall",
        management_event: !api.data,
        recipient_account_id: aid,
        event_category: if api.data { "Data" } else { "Management" },
        session_credential_from_console: if ev.console { Some("true") } else { None },
    };
    serde_json::to_writer(&mut *out, &rec)?;
    Ok(event_id)
}

fn pick<'a, G: Rng>(rng: &mut G, own: &'a [String], all: &'a [String]) -> &'a str {
    let xs = if own.is_empty() { all } else { own };
    xs.get(rng.random_range(0..xs.len().max(1))).map_or("default", String::as_str)
}

/// An S3 object key that looks like the bucket's content.
pub(super) fn object_key<G: Rng>(rng: &mut G, bucket: &str, t: i64) -> String {
    let day = &time_string(t - rng.random_range(0..86_400 * 20))[..10];
    let prefix = if bucket.contains("customer-pii") {
        "customers/export"
    } else if bucket.contains("finance") {
        "ledger/monthly"
    } else if bucket.contains("backups") {
        "pg_dump"
    } else if bucket.contains("artifacts") {
        "builds"
    } else if bucket.contains("logs") {
        "AWSLogs/app"
    } else if bucket.contains("data-lake") {
        "raw/events"
    } else {
        "data"
    };
    format!("{prefix}/{day}/{}.{}", hex(rng, 12), if bucket.contains("backups") { "sql.gz" } else { "json" })
}

fn res_entry(kind: &str, arn: String, account: Option<&str>) -> Value {
    match account {
        Some(a) => json!({"accountId": a, "type": kind, "ARN": arn}),
        None => json!({"type": kind, "ARN": arn}),
    }
}

/// Request parameters for a call with no explicit ones: the identity's own resources.
fn params<G: Rng>(
    api: &Api,
    id: &Identity,
    acct: &Account,
    region: &str,
    t: i64,
    rng: &mut G,
    resources: &mut Option<Value>,
) -> Value {
    let aid = acct.id.as_str();
    match api.res {
        R::None => match api.name {
            "DescribeLogGroups" => json!({"limit": 50}),
            "ListFunctions20150331" => json!({"maxItems": 50}),
            "LookupEvents" => json!({"maxResults": 50}),
            "GetQueryResults" => json!({"queryId": crate::util::uuid(rng)}),
            _ => Value::Null,
        },
        R::Ec2Filter => json!({"filterSet": {}, "maxResults": 1000}),
        R::Bucket => {
            let b = pick(rng, &id.buckets, &acct.buckets);
            *resources = Some(json!([res_entry("AWS::S3::Bucket", format!("arn:aws:s3:::{b}"), Some(aid))]));
            match api.name {
                "ListObjects" => {
                    json!({"bucketName": b, "Host": format!("{b}.s3.{region}.amazonaws.com"), "list-type": "2", "prefix": "", "max-keys": "1000"})
                }
                _ => json!({"bucketName": b, "Host": format!("{b}.s3.{region}.amazonaws.com")}),
            }
        }
        R::Object => {
            let b = pick(rng, &id.buckets, &acct.buckets).to_string();
            let key = object_key(rng, &b, t);
            *resources = Some(json!([
                res_entry("AWS::S3::Object", format!("arn:aws:s3:::{b}/{key}"), None),
                res_entry("AWS::S3::Bucket", format!("arn:aws:s3:::{b}"), Some(aid))
            ]));
            json!({"bucketName": b, "Host": format!("{b}.s3.{region}.amazonaws.com"), "key": key})
        }
        R::Instance => {
            json!({"instancesSet": {"items": [{"instanceId": pick(rng, &[], &acct.instances)}]}})
        }
        R::Volume => json!({"volumeId": pick(rng, &[], &acct.volumes)}),
        R::Snapshot => json!({"snapshotId": format!("snap-0{}", hex(rng, 16))}),
        R::Table => {
            let tname = pick(rng, &id.tables, &acct.tables);
            if api.data {
                *resources = Some(json!([res_entry(
                    "AWS::DynamoDB::Table",
                    format!("arn:aws:dynamodb:{region}:{aid}:table/{tname}"),
                    Some(aid)
                )]));
            }
            json!({"tableName": tname})
        }
        R::Item => {
            let tname = pick(rng, &id.tables, &acct.tables);
            *resources = Some(json!([res_entry(
                "AWS::DynamoDB::Table",
                format!("arn:aws:dynamodb:{region}:{aid}:table/{tname}"),
                Some(aid)
            )]));
            json!({"tableName": tname, "key": {"pk": "HIDDEN_DUE_TO_SECURITY_REASONS"}})
        }
        R::Function => {
            let f = id.personas.first().and_then(|p| p.session.clone()).filter(|s| acct.functions.contains(s));
            let f = f.unwrap_or_else(|| pick(rng, &id.functions, &acct.functions).to_string());
            let arn = format!("arn:aws:lambda:{region}:{aid}:function:{f}");
            if api.data {
                *resources = Some(json!([res_entry("AWS::Lambda::Function", arn.clone(), Some(aid))]));
            }
            json!({"functionName": if api.name == "Invoke" { arn } else { f }})
        }
        R::LogGroup => {
            let g = match id.personas.first().and_then(|p| p.session.as_deref()) {
                Some(s) if acct.functions.iter().any(|f| f == s) => format!("/aws/lambda/{s}"),
                _ => pick(rng, &[], &acct.log_groups[2..]).to_string(),
            };
            match api.name {
                "CreateLogStream" => {
                    json!({"logGroupName": g, "logStreamName": format!("{}/[$LATEST]{}", &time_string(t)[..10].replace('-', "/"), hex(rng, 32))})
                }
                "FilterLogEvents" | "StartQuery" => {
                    json!({"logGroupName": g, "startTime": (t - 3600) * 1000, "endTime": t * 1000})
                }
                "PutRetentionPolicy" => json!({"logGroupName": g, "retentionInDays": 30}),
                _ => json!({"logGroupName": g}),
            }
        }
        R::Key => {
            let arn = format!("arn:aws:kms:{region}:{aid}:key/{}", pick(rng, &[], &acct.keys));
            *resources = Some(json!([res_entry("AWS::KMS::Key", arn.clone(), Some(aid))]));
            match api.name {
                "Decrypt" | "Encrypt" => json!({"keyId": arn, "encryptionAlgorithm": "SYMMETRIC_DEFAULT"}),
                "GenerateDataKey" => json!({"keyId": arn, "keySpec": "AES_256"}),
                _ => json!({"keyId": arn}),
            }
        }
        R::Secret => {
            let s = pick(rng, &id.secrets, &acct.secrets);
            json!({"secretId": format!("arn:aws:secretsmanager:{region}:{aid}:secret:{s}-{}", hex(rng, 6))})
        }
        R::Role => json!({"roleName": id.name.clone()}),
        R::User => json!({"userName": if id.is_role { "admin" } else { id.name.as_str() }}),
        R::Policy => {
            let p = id.policy.clone().unwrap_or_else(|| "DeveloperAccess".into());
            let arn = format!("arn:aws:iam::{aid}:policy/{p}");
            if api.name == "GetPolicyVersion" {
                json!({"policyArn": arn, "versionId": "v2"})
            } else {
                json!({"policyArn": arn})
            }
        }
        R::Queue => {
            let q = pick(rng, &id.queues, &acct.queues);
            let url = format!("https://sqs.{region}.amazonaws.com/{aid}/{q}");
            if api.data {
                *resources =
                    Some(json!([res_entry("AWS::SQS::Queue", format!("arn:aws:sqs:{region}:{aid}:{q}"), Some(aid))]));
            }
            match api.name {
                "ReceiveMessage" => json!({"queueUrl": url, "maxNumberOfMessages": 10, "waitTimeSeconds": 20}),
                "GetQueueAttributes" => json!({"queueUrl": url, "attributeNames": ["All"]}),
                _ => json!({"queueUrl": url}),
            }
        }
        R::Topic => {
            let arn = format!("arn:aws:sns:{region}:{aid}:{}", pick(rng, &[], &acct.topics));
            *resources = Some(json!([res_entry("AWS::SNS::Topic", arn.clone(), Some(aid))]));
            json!({"topicArn": arn})
        }
        R::Param => json!({"name": pick(rng, &[], &acct.params), "withDecryption": true}),
        R::Db => json!({"dBInstanceIdentifier": pick(rng, &[], &acct.dbs)}),
        R::DbSnapshot => json!({"dBSnapshotIdentifier": format!("{}-snap", pick(rng, &[], &acct.dbs))}),
        R::Stack => json!({"stackName": pick(rng, &[], &acct.stacks)}),
        R::Repo => json!({"repositoryName": pick(rng, &[], &acct.repos), "registryId": aid}),
        R::Cluster => json!({"cluster": pick(rng, &[], &acct.clusters)}),
        R::GlueJob => {
            let j = pick(rng, &[], &acct.jobs);
            if api.name == "GetJobRun" {
                json!({"jobName": j, "runId": format!("jr_{}", hex(rng, 64))})
            } else {
                json!({"jobName": j})
            }
        }
        R::GlueTable => {
            let (db, tb) = &acct.glue_tables[rng.random_range(0..acct.glue_tables.len())];
            json!({"databaseName": db, "tableName": tb})
        }
        R::Athena => {
            if api.name == "StartQueryExecution" {
                json!({"queryString": "***OMITTED***", "workGroup": "primary", "queryExecutionContext": {"database": format!("{}_lake", acct.env)}})
            } else {
                json!({"queryExecutionId": uuid(rng)})
            }
        }
        R::Metric => json!({"namespace": "AWS/Lambda", "metricName": "Invocations", "period": 300}),
        R::Trail => json!({"name": format!("arn:aws:cloudtrail:us-east-1:{aid}:trail/org-trail")}),
        R::Detector => json!({"detectorId": acct.detector}),
        R::Recorder => json!({"configurationRecorderName": "default"}),
    }
}
