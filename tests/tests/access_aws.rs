//! Permissions on demand, the AWS side: `grantwatch_aws_iam::GrantClient` against moto's IAM and SSO
//! Admin (`scripts/moto`), each test in a fresh moto account of its own. Inline policies (with their
//! time lock) and managed policies on users and roles, installed and revoked, revocations idempotent;
//! Identity Center account assignments created and deleted, waited for through a proxy that answers
//! "in progress" (moto finishes them at once), failing or never finishing; a revocation against an
//! endpoint that never answers, bounded by the client's timeouts; many grants at once; and a grant
//! whose removal failed, denied after its expiry by its own condition (the export, read by the core's
//! access model with the request's time).
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grantwatch_aws_iam::state::decode_document;
use grantwatch_aws_iam::{ApiError, ApiErrorKind, AwsIam, GrantClient, GrantClientOptions};
use grantwatch_core::access::{AccessModel, Grade, RequestContext};
use grantwatch_core::iam::{IamSnapshot, parse_iam_json};
use grantwatch_e2e::http1::{read_message, respond, serve};
use grantwatch_e2e::moto::{self, MotoAccount, block_on};
use grantwatch_types::{EventTime, GrantAction, GrantPrincipal, RevokeAction};
use serde_json::{Value, json};

/// The time lock of every inline policy here (a fixed date: the tests read no clock).
const EXPIRY: &str = "2030-01-01T00:00:00Z";
const POLICY: &str = "grantwatch-access-r1";

/// An inline policy as a grant installs it: the actions on `*`, each statement time-locked.
fn time_locked(actions: &[&str]) -> String {
    json!({"Version": "2012-10-17", "Statement": [{
        "Sid": "GrantwatchAccess1", "Effect": "Allow", "Action": actions, "Resource": ["*"],
        "Condition": {"DateLessThan": {"aws:CurrentTime": EXPIRY}}}]})
    .to_string()
}

fn user(name: &str) -> GrantPrincipal {
    GrantPrincipal::IamUser { name: name.into() }
}

fn role(name: &str) -> GrantPrincipal {
    GrantPrincipal::IamRole { name: name.into() }
}

fn options() -> GrantClientOptions {
    GrantClientOptions { assignment_poll: Duration::from_millis(50), ..GrantClientOptions::default() }
}

/// A client acting in `account`, through `endpoint` when given (a proxy, a dead server), else moto.
fn client(account: &MotoAccount, endpoint: Option<&str>, options: GrantClientOptions) -> GrantClient {
    let mut sdk = account.sdk_config();
    if let Some(url) = endpoint {
        sdk = sdk.into_builder().endpoint_url(url).build();
    }
    let client = GrantClient::from_sdk_config(&sdk, options).unwrap();
    let shown = format!("{client:?}");
    assert!(!shown.contains(&account.secret_key) && !shown.contains(&account.access_key), "{shown}");
    client
}

async fn create_user(iam: &aws_sdk_iam::Client, name: &str) {
    iam.create_user().user_name(name).send().await.unwrap();
}

async fn create_role(iam: &aws_sdk_iam::Client, name: &str) {
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]});
    iam.create_role().role_name(name).assume_role_policy_document(trust.to_string()).send().await.unwrap();
}

/// Creates a customer managed policy; its ARN.
async fn create_policy(iam: &aws_sdk_iam::Client, path: &str, name: &str) -> String {
    let document = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}]});
    let out =
        iam.create_policy().path(path).policy_name(name).policy_document(document.to_string()).send().await.unwrap();
    out.policy.unwrap().arn.unwrap()
}

/// The inline policy's document as IAM keeps it, or `None` when there is none.
async fn inline(iam: &aws_sdk_iam::Client, principal: &GrantPrincipal, policy: &str) -> Option<Value> {
    let document = match principal {
        GrantPrincipal::IamUser { name } => {
            match iam.get_user_policy().user_name(name).policy_name(policy).send().await {
                Ok(out) => out.policy_document().to_string(),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => return None,
                Err(e) => panic!("GetUserPolicy: {e:?}"),
            }
        }
        GrantPrincipal::IamRole { name } => {
            match iam.get_role_policy().role_name(name).policy_name(policy).send().await {
                Ok(out) => out.policy_document().to_string(),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => return None,
                Err(e) => panic!("GetRolePolicy: {e:?}"),
            }
        }
    };
    Some(decode_document(&document).unwrap())
}

/// The managed policies attached to the principal, read with moto's own client.
async fn attached(iam: &aws_sdk_iam::Client, principal: &GrantPrincipal) -> Vec<String> {
    let list = match principal {
        GrantPrincipal::IamUser { name } => iam
            .list_attached_user_policies()
            .user_name(name)
            .send()
            .await
            .unwrap()
            .attached_policies
            .unwrap_or_default(),
        GrantPrincipal::IamRole { name } => iam
            .list_attached_role_policies()
            .role_name(name)
            .send()
            .await
            .unwrap()
            .attached_policies
            .unwrap_or_default(),
    };
    let mut arns: Vec<String> = list.into_iter().filter_map(|p| p.policy_arn).collect();
    arns.sort();
    arns
}

fn assert_not_found(e: &ApiError) {
    assert_eq!((e.kind, e.code.as_deref()), (ApiErrorKind::Service, Some("NoSuchEntity")), "{e}");
}

#[test]
fn inline_policies_are_installed_with_their_time_lock_and_revoked_idempotently() {
    let account = MotoAccount::new(&moto::endpoint());
    let iam = account.iam();
    let client = client(&account, None, options());
    block_on(async {
        create_user(&iam, "alice").await;
        create_role(&iam, "deploy").await;
        for principal in [user("alice"), role("deploy")] {
            assert!(client.principal_exists(&principal).await.unwrap(), "{principal:?}");
            let document = time_locked(&["s3:GetObject", "s3:ListBucket"]);
            let grant =
                GrantAction::PutInlinePolicy { principal: principal.clone(), policy_name: POLICY.into(), document };
            client.install(&grant).await.unwrap();
            // An installation retried after an unknown outcome writes the same policy again.
            client.install(&grant).await.unwrap();
            let stored = inline(&iam, &principal, POLICY).await.unwrap();
            assert_eq!(
                stored,
                serde_json::from_str::<Value>(&time_locked(&["s3:GetObject", "s3:ListBucket"])).unwrap()
            );
            assert_eq!(stored["Statement"][0]["Condition"], json!({"DateLessThan": {"aws:CurrentTime": EXPIRY}}));

            let revoke = RevokeAction::DeleteInlinePolicy { principal: principal.clone(), policy_name: POLICY.into() };
            client.revoke(&revoke).await.unwrap();
            assert_eq!(inline(&iam, &principal, POLICY).await, None, "{principal:?}: revoked");
            // Already gone: a second revocation (a retry, another worker) is done too.
            client.revoke(&revoke).await.unwrap();
        }
        // Another inline policy of the identity is not the grant's: it stays.
        iam.put_user_policy()
            .user_name("alice")
            .policy_name("own")
            .policy_document(time_locked(&["sqs:*"]))
            .send()
            .await
            .unwrap();
        let grant = GrantAction::PutInlinePolicy {
            principal: user("alice"),
            policy_name: POLICY.into(),
            document: time_locked(&["s3:*"]),
        };
        client.install(&grant).await.unwrap();
        client
            .revoke(&RevokeAction::DeleteInlinePolicy { principal: user("alice"), policy_name: POLICY.into() })
            .await
            .unwrap();
        assert!(inline(&iam, &user("alice"), "own").await.is_some());

        // A deleted identity: nothing left to revoke; installing on it fails with AWS's code.
        for ghost in [user("ghost"), role("ghost")] {
            assert!(!client.principal_exists(&ghost).await.unwrap());
            client
                .revoke(&RevokeAction::DeleteInlinePolicy { principal: ghost.clone(), policy_name: POLICY.into() })
                .await
                .unwrap();
            let grant = GrantAction::PutInlinePolicy {
                principal: ghost,
                policy_name: POLICY.into(),
                document: time_locked(&["s3:*"]),
            };
            let err = client.install(&grant).await.unwrap_err();
            assert_not_found(&err);
            assert!(err.request_id.is_some(), "{err:?}");
        }
    });
}

#[test]
fn managed_policies_are_attached_reported_and_detached() {
    let account = MotoAccount::new(&moto::endpoint());
    let iam = account.iam();
    let client = client(&account, None, options());
    block_on(async {
        create_user(&iam, "bob").await;
        create_role(&iam, "batch").await;
        let ops = create_policy(&iam, "/", "ops").await;
        // moto does not load AWS's managed policies: a second one of the account, with a path.
        let read_only = &create_policy(&iam, "/team/", "read-only").await;
        for principal in [user("bob"), role("batch")] {
            for arn in [ops.as_str(), read_only] {
                assert!(!client.managed_policy_attached(&principal, arn).await.unwrap());
                let grant = GrantAction::AttachManagedPolicy { principal: principal.clone(), policy_arn: arn.into() };
                client.install(&grant).await.unwrap();
                assert!(client.managed_policy_attached(&principal, arn).await.unwrap());
                assert_eq!(attached(&iam, &principal).await, [arn]);
                let revoke = RevokeAction::DetachManagedPolicy { principal: principal.clone(), policy_arn: arn.into() };
                client.revoke(&revoke).await.unwrap();
                assert!(!client.managed_policy_attached(&principal, arn).await.unwrap());
                assert!(attached(&iam, &principal).await.is_empty());
                // Not attached any more: revoked all the same.
                client.revoke(&revoke).await.unwrap();
            }
        }
        // Only the named policy counts, among several.
        iam.attach_user_policy().user_name("bob").policy_arn(read_only).send().await.unwrap();
        assert!(client.managed_policy_attached(&user("bob"), read_only).await.unwrap());
        assert!(!client.managed_policy_attached(&user("bob"), &ops).await.unwrap());

        // A missing identity is an error for the check (the service must not guess) and nothing to
        // revoke; a missing policy cannot be attached.
        assert_not_found(&client.managed_policy_attached(&user("ghost"), &ops).await.unwrap_err());
        assert_not_found(&client.managed_policy_attached(&role("ghost"), &ops).await.unwrap_err());
        let revoke = RevokeAction::DetachManagedPolicy { principal: role("ghost"), policy_arn: ops.clone() };
        client.revoke(&revoke).await.unwrap();
        let missing = format!("arn:aws:iam::{}:policy/missing", account.id);
        let grant = GrantAction::AttachManagedPolicy { principal: user("bob"), policy_arn: missing };
        assert_not_found(&client.install(&grant).await.unwrap_err());
    });
}

// ---------------------------------------------------------------------------------------------------
// Identity Center account assignments. moto creates and deletes an assignment at once and answers
// SUCCEEDED; AWS answers IN_PROGRESS and the caller polls. The tests go through a proxy that forwards
// everything to moto but can answer the assignment calls IN_PROGRESS (after forwarding them), the
// status reads IN_PROGRESS a number of times (then forwards them) or FAILED, and swallow a deletion.
// ---------------------------------------------------------------------------------------------------

const SSO_TARGET: &str = "SWBExternalService.";

#[derive(Default)]
struct Script {
    /// Rewrite the status of Create/DeleteAccountAssignment's answers to IN_PROGRESS.
    in_progress: bool,
    /// Status reads answered IN_PROGRESS before the next ones are forwarded (`usize::MAX`: never).
    polls_in_progress: usize,
    /// Answer the status reads FAILED with this reason.
    fail: Option<String>,
    /// Answer DeleteAccountAssignment IN_PROGRESS without forwarding it: the assignment stays.
    swallow_delete: bool,
    /// The SSO Admin operations received, in order.
    ops: Vec<String>,
    errors: Vec<String>,
}

struct Proxy {
    url: String,
    script: Arc<Mutex<Script>>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let script = Arc::new(Mutex::new(Script::default()));
        let shared = script.clone();
        let upstream = upstream.trim_start_matches("http://").to_string();
        let url = serve(move |conn| {
            if let Err(e) = proxy(conn, &upstream, &shared) {
                shared.lock().unwrap().errors.push(e.to_string());
            }
        });
        Proxy { url, script }
    }

    fn set(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.script.lock().unwrap());
    }

    /// The operations received since the last call.
    fn take_ops(&self) -> Vec<String> {
        let mut s = self.script.lock().unwrap();
        assert!(s.errors.is_empty(), "the proxy failed: {:?}", s.errors);
        std::mem::take(&mut s.ops)
    }
}

fn answer(conn: &mut TcpStream, body: &Value) -> std::io::Result<()> {
    let h = vec![
        ("Content-Type".to_string(), "application/x-amz-json-1.1".to_string()),
        ("x-amzn-RequestId".to_string(), "scripted-1".to_string()),
    ];
    respond(conn, "200 OK", &h, body.to_string().as_bytes())
}

/// The status member of an assignment operation's answer.
fn status_member(op: &str) -> Option<(&'static str, &'static str)> {
    match op {
        "CreateAccountAssignment" | "DescribeAccountAssignmentCreationStatus" => {
            Some(("AccountAssignmentCreationStatus", "AccountAssignmentCreationRequestId"))
        }
        "DeleteAccountAssignment" | "DescribeAccountAssignmentDeletionStatus" => {
            Some(("AccountAssignmentDeletionStatus", "AccountAssignmentDeletionRequestId"))
        }
        _ => None,
    }
}

fn proxy(conn: TcpStream, upstream: &str, script: &Mutex<Script>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    let Some((request_line, headers, body)) = read_message(&mut reader)? else { return Ok(()) };
    let target = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("x-amz-target")).map(|(_, v)| v.clone());
    let op = target.as_deref().and_then(|t| t.strip_prefix(SSO_TARGET)).unwrap_or("").to_string();
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (in_progress, swallow) = {
        let mut s = script.lock().unwrap();
        if !op.is_empty() {
            s.ops.push(op.clone());
        }
        (s.in_progress, s.swallow_delete)
    };
    if op.starts_with("Describe")
        && let Some((member, id_param)) = status_member(&op)
    {
        let mut s = script.lock().unwrap();
        let id = request[id_param].clone();
        if let Some(reason) = s.fail.clone() {
            drop(s);
            return answer(&mut conn, &json!({member: {"Status": "FAILED", "RequestId": id, "FailureReason": reason}}));
        }
        if s.polls_in_progress > 0 {
            s.polls_in_progress = s.polls_in_progress.saturating_sub(1);
            drop(s);
            return answer(&mut conn, &json!({member: {"Status": "IN_PROGRESS", "RequestId": id}}));
        }
    }
    if op == "DeleteAccountAssignment" && swallow {
        return answer(
            &mut conn,
            &json!({"AccountAssignmentDeletionStatus": {"Status": "IN_PROGRESS", "RequestId": "swallowed-1"}}),
        );
    }
    // Forward to moto, one connection per request.
    let mut up = TcpStream::connect(upstream)?;
    write!(up, "{request_line}\r\n")?;
    for (k, v) in &headers {
        if !k.eq_ignore_ascii_case("connection") {
            write!(up, "{k}: {v}\r\n")?;
        }
    }
    write!(up, "Connection: close\r\n\r\n")?;
    up.write_all(&body)?;
    up.flush()?;
    let mut up_reader = BufReader::new(up);
    let Some((status_line, up_headers, mut up_body)) = read_message(&mut up_reader)? else {
        return Err(std::io::Error::other("moto closed the connection"));
    };
    let status = status_line.split_once(' ').map_or("500 Internal Server Error", |(_, s)| s).to_string();
    if in_progress
        && !op.starts_with("Describe")
        && let Some((member, _)) = status_member(&op)
        && status.starts_with("200")
    {
        let mut v: Value = serde_json::from_slice(&up_body).unwrap();
        v[member]["Status"] = "IN_PROGRESS".into();
        up_body = v.to_string().into_bytes();
    }
    respond(&mut conn, &status, &up_headers, &up_body)
}

/// Makes a permission set in the account's Identity Center instance: (instance ARN, its ARN).
async fn create_permission_set(sso: &aws_sdk_ssoadmin::Client, name: &str) -> (String, String) {
    let instances = sso.list_instances().send().await.unwrap();
    let instance = instances.instances()[0].instance_arn().unwrap().to_string();
    let ps = sso
        .create_permission_set()
        .instance_arn(&instance)
        .name(name)
        // moto's default is the number 3600, which the SDK refuses: AWS answers an ISO 8601 duration.
        .session_duration("PT1H")
        .send()
        .await
        .unwrap();
    (instance, ps.permission_set().unwrap().permission_set_arn().unwrap().to_string())
}

/// The users assigned the permission set on the account, sorted.
async fn assigned(sso: &aws_sdk_ssoadmin::Client, instance: &str, ps: &str, account: &str) -> Vec<String> {
    let out = sso
        .list_account_assignments()
        .instance_arn(instance)
        .permission_set_arn(ps)
        .account_id(account)
        .send()
        .await
        .unwrap();
    let mut users: Vec<String> =
        out.account_assignments().iter().filter_map(|a| a.principal_id().map(str::to_string)).collect();
    users.sort();
    users
}

fn assignment(account: &MotoAccount, permission_set: &str, user_id: &str) -> (GrantAction, RevokeAction) {
    let (account_id, permission_set_name, user_id) =
        (account.id.clone(), permission_set.to_string(), user_id.to_string());
    (
        GrantAction::CreateAccountAssignment {
            account_id: account_id.clone(),
            permission_set_name: permission_set_name.clone(),
            user_id: user_id.clone(),
        },
        RevokeAction::DeleteAccountAssignment { account_id, permission_set_name, user_id },
    )
}

const CAROL: &str = "90676d4a5e-0f1c2a3b-4c5d-6e7f-8091-a2b3c4d5e6f7";
const DAVE: &str = "90676d4a5e-11111111-2222-3333-4444-555555555555";

#[test]
fn permission_set_assignments_are_created_waited_for_and_deleted() {
    let account = MotoAccount::new(&moto::endpoint());
    let sso = account.sso();
    let proxy = Proxy::start(&account.endpoint);
    let client = client(&account, Some(&proxy.url), options());
    let (grant, revoke) = assignment(&account, "Dev", CAROL);
    block_on(async {
        let (instance, ps) = create_permission_set(&sso, "Dev").await;
        create_permission_set(&sso, "Admin").await;
        // Someone else's assignment of the same permission set: never touched.
        sso.create_account_assignment()
            .instance_arn(&instance)
            .target_id(&account.id)
            .target_type(aws_sdk_ssoadmin::types::TargetType::AwsAccount)
            .permission_set_arn(&ps)
            .principal_type(aws_sdk_ssoadmin::types::PrincipalType::User)
            .principal_id(DAVE)
            .send()
            .await
            .unwrap();

        assert!(!client.account_assignment_exists(&account.id, "Dev", CAROL).await.unwrap());
        proxy.take_ops();
        proxy.set(|s| {
            s.in_progress = true;
            s.polls_in_progress = 2;
        });
        client.install(&grant).await.unwrap();
        assert_eq!(assigned(&sso, &instance, &ps, &account.id).await, [CAROL, DAVE]);
        // The permission set was resolved once (the cache), the creation polled until it succeeded.
        assert_eq!(
            proxy.take_ops(),
            [
                "CreateAccountAssignment",
                "DescribeAccountAssignmentCreationStatus",
                "DescribeAccountAssignmentCreationStatus",
                "DescribeAccountAssignmentCreationStatus"
            ]
        );
        assert!(client.account_assignment_exists(&account.id, "Dev", CAROL).await.unwrap());
        assert!(!client.account_assignment_exists(&account.id, "Admin", CAROL).await.unwrap());

        proxy.set(|s| s.polls_in_progress = 1);
        proxy.take_ops();
        client.revoke(&revoke).await.unwrap();
        assert_eq!(assigned(&sso, &instance, &ps, &account.id).await, [DAVE]);
        assert_eq!(
            proxy.take_ops(),
            [
                "ListAccountAssignments",
                "DeleteAccountAssignment",
                "DescribeAccountAssignmentDeletionStatus",
                "DescribeAccountAssignmentDeletionStatus"
            ]
        );
        // Already gone: done, without a deletion (the cached permission set is checked afresh first).
        client.revoke(&revoke).await.unwrap();
        let ops = proxy.take_ops();
        assert!(!ops.iter().any(|o| o == "DeleteAccountAssignment"), "{ops:?}");
        assert_eq!(ops.first().map(String::as_str), Some("ListAccountAssignments"));
        assert!(ops.iter().any(|o| o == "ListInstances"), "{ops:?}");
        assert_eq!(assigned(&sso, &instance, &ps, &account.id).await, [DAVE]);

        // No permission set of that name: an installation fails with AWS's code, a revocation has
        // nothing to remove.
        let (grant, revoke) = assignment(&account, "Missing", CAROL);
        let err = client.install(&grant).await.unwrap_err();
        assert_eq!(err.code.as_deref(), Some("ResourceNotFoundException"), "{err}");
        assert!(err.message.contains("\"Missing\""), "{err}");
        client.revoke(&revoke).await.unwrap();
        assert_eq!(assigned(&sso, &instance, &ps, &account.id).await, [DAVE]);
    });
}

#[test]
fn an_assignment_that_fails_or_never_finishes_is_an_error() {
    let account = MotoAccount::new(&moto::endpoint());
    let sso = account.sso();
    let proxy = Proxy::start(&account.endpoint);
    let wait = Duration::from_millis(600);
    let client = client(
        &account,
        Some(&proxy.url),
        GrantClientOptions { assignment_wait: wait, assignment_poll: Duration::from_millis(100), ..options() },
    );
    let (grant, revoke) = assignment(&account, "Ops", CAROL);
    block_on(async {
        let (instance, ps) = create_permission_set(&sso, "Ops").await;
        proxy.set(|s| {
            s.in_progress = true;
            s.fail = Some("The principal does not exist in the identity store".into());
        });
        // FAILED: AWS's reason, with the operation's request id; nothing installed (as AWS would
        // leave it: moto made it, so the test removes it).
        let err = client.install(&grant).await.unwrap_err();
        assert_eq!((err.kind, err.code.as_deref()), (ApiErrorKind::Service, Some("AccountAssignmentCreationFailed")));
        assert_eq!(err.message, "The principal does not exist in the identity store");
        assert!(err.request_id.is_some(), "{err:?}");

        // A deletion reported FAILED although the assignment is gone (moto deleted it): revoked.
        client.revoke(&revoke).await.unwrap();
        assert!(assigned(&sso, &instance, &ps, &account.id).await.is_empty());

        // Never finishing: an error within the bound, whose outcome is unknown.
        proxy.set(|s| {
            s.fail = None;
            s.polls_in_progress = usize::MAX;
        });
        let start = Instant::now();
        let err = client.install(&grant).await.unwrap_err();
        let took = start.elapsed();
        assert_eq!(err.kind, ApiErrorKind::Unknown, "{err}");
        assert!(err.message.contains("still in progress"), "{err}");
        assert!(took >= wait - Duration::from_millis(150) && took < wait + Duration::from_secs(5), "{took:?}");
        assert_eq!(assigned(&sso, &instance, &ps, &account.id).await, [CAROL], "moto made it meanwhile");

        // A deletion that fails while the assignment stays is an error: the grant is not revoked.
        proxy.set(|s| {
            s.polls_in_progress = 0;
            s.swallow_delete = true;
            s.fail = Some("Internal failure".into());
        });
        let err = client.revoke(&revoke).await.unwrap_err();
        assert_eq!((err.kind, err.code.as_deref()), (ApiErrorKind::Service, Some("AccountAssignmentDeletionFailed")));
        assert_eq!(assigned(&sso, &instance, &ps, &account.id).await, [CAROL]);
        proxy.set(|s| {
            s.swallow_delete = false;
            s.fail = None;
        });
        client.revoke(&revoke).await.unwrap();
        assert!(assigned(&sso, &instance, &ps, &account.id).await.is_empty());
    });
}

/// A server that accepts connections and never answers (kept open until the test process ends).
fn hung_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.extend(conn.ok());
        }
    });
    url
}

fn hung_client(account: &MotoAccount) -> (GrantClient, GrantClientOptions) {
    let options = GrantClientOptions {
        connect_timeout: Duration::from_secs(1),
        attempt_timeout: Duration::from_millis(400),
        operation_timeout: Duration::from_millis(1200),
        max_attempts: 3,
        ..options()
    };
    (client(account, Some(&hung_endpoint()), options), options)
}

#[test]
fn a_revocation_against_a_hung_endpoint_fails_within_the_timeout() {
    let account = MotoAccount::new(&moto::endpoint());
    let (client, options) = hung_client(&account);
    let (_, assignment_revoke) = assignment(&account, "Dev", CAROL);
    let revokes = [
        RevokeAction::DeleteInlinePolicy { principal: user("alice"), policy_name: POLICY.into() },
        RevokeAction::DetachManagedPolicy {
            principal: role("batch"),
            policy_arn: "arn:aws:iam::aws:policy/ReadOnlyAccess".into(),
        },
        assignment_revoke,
    ];
    for revoke in revokes {
        let start = Instant::now();
        let err = block_on(client.revoke(&revoke)).unwrap_err();
        let took = start.elapsed();
        // One call's bound (every attempt, timed out), with room for a loaded machine.
        assert!(
            took >= options.attempt_timeout && took < options.operation_timeout + Duration::from_secs(3),
            "{took:?}"
        );
        assert_eq!(err.kind, ApiErrorKind::Unknown, "{err}");
        assert!(err.message.contains("timeout") || err.message.contains("timed out"), "{err}");
        assert!(!err.to_string().contains(&account.secret_key));
    }
    // Only the operation bound set, below the default attempt bound (as the service configures it):
    // it bounds the call all the same.
    let operation_timeout = Duration::from_millis(800);
    let client =
        self::client(&account, Some(&hung_endpoint()), GrantClientOptions { operation_timeout, ..self::options() });
    let start = Instant::now();
    let revoke = RevokeAction::DeleteInlinePolicy { principal: user("alice"), policy_name: POLICY.into() };
    let err = block_on(client.revoke(&revoke)).unwrap_err();
    assert_eq!(err.kind, ApiErrorKind::Unknown, "{err}");
    assert!(start.elapsed() < operation_timeout + Duration::from_secs(3), "{:?}", start.elapsed());
}

#[test]
fn many_grants_are_installed_and_revoked_at_once() {
    let account = MotoAccount::new(&moto::endpoint());
    let iam = account.iam();
    let sso = account.sso();
    let client = client(&account, None, options());
    let users: Vec<String> = (0..16).map(|i| format!("u{i:02}")).collect();
    let people: Vec<String> = (0..4).map(|i| format!("90676d4a5e-{i:08}-0000-0000-0000-000000000000")).collect();
    block_on(async {
        for u in &users {
            create_user(&iam, u).await;
        }
        let (instance, ps) = create_permission_set(&sso, "Dev").await;
        let mut grants: Vec<(GrantAction, RevokeAction)> = users
            .iter()
            .map(|u| {
                (
                    GrantAction::PutInlinePolicy {
                        principal: user(u),
                        policy_name: POLICY.into(),
                        document: time_locked(&["s3:GetObject"]),
                    },
                    RevokeAction::DeleteInlinePolicy { principal: user(u), policy_name: POLICY.into() },
                )
            })
            .collect();
        grants.extend(people.iter().map(|p| assignment(&account, "Dev", p)));
        let mut set = tokio::task::JoinSet::new();
        for (g, _) in &grants {
            let (client, g) = (client.clone(), g.clone());
            set.spawn(async move { client.install(&g).await });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
        for u in &users {
            assert!(inline(&iam, &user(u), POLICY).await.is_some(), "{u}");
        }
        let mut want = people.clone();
        want.sort();
        assert_eq!(assigned(&sso, &instance, &ps, &account.id).await, want);

        for (_, r) in &grants {
            let (client, r) = (client.clone(), r.clone());
            set.spawn(async move { client.revoke(&r).await });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
        for u in &users {
            assert!(inline(&iam, &user(u), POLICY).await.is_none(), "{u}");
        }
        assert!(assigned(&sso, &instance, &ps, &account.id).await.is_empty());
    });
}

/// The second lock: a grant whose removal failed (the endpoint hung) is still in IAM, and the core's
/// access model, given the request's time, allows it before its expiry and denies it from then on.
#[test]
fn an_expired_grant_is_denied_by_its_condition_even_if_removal_failed() {
    let account = MotoAccount::new(&moto::endpoint());
    let iam = account.iam();
    let client = client(&account, None, options());
    block_on(async {
        create_user(&iam, "temp").await;
        let grant = GrantAction::PutInlinePolicy {
            principal: user("temp"),
            policy_name: POLICY.into(),
            document: time_locked(&["s3:GetObject"]),
        };
        client.install(&grant).await.unwrap();
    });
    let (hung, _) = hung_client(&account);
    let revoke = RevokeAction::DeleteInlinePolicy { principal: user("temp"), policy_name: POLICY.into() };
    block_on(hung.revoke(&revoke)).unwrap_err();

    let export = AwsIam::from_sdk_config(&account.sdk_config()).unwrap().export().unwrap();
    let mut snapshot = IamSnapshot::default();
    snapshot.merge(parse_iam_json(export.to_string().as_bytes(), "export.json").unwrap());
    let model = AccessModel::new(&snapshot, &[], None);
    let temp = model.subject(&format!("arn:aws:iam::{}:user/temp", account.id)).unwrap();
    let object = "arn:aws:s3:::reports/q3.csv";
    let at = |t: &str| RequestContext::at(EventTime::parse_rfc3339(t).unwrap());
    let grade = |action: &str, ctx: &RequestContext| model.decide_in(temp, action, object, ctx).grade;
    assert_eq!(grade("s3:GetObject", &at("2029-12-31T23:59:59Z")), Grade::Yes, "before the expiry");
    assert_eq!(grade("s3:GetObject", &at(EXPIRY)), Grade::No, "at the expiry");
    assert_eq!(grade("s3:GetObject", &at("2030-06-01T00:00:00Z")), Grade::No, "after it");
    assert_eq!(model.decide(temp, "s3:GetObject", object).grade, Grade::Conditional, "no time: not judged");
    assert_eq!(grade("s3:PutObject", &at("2029-12-31T23:59:59Z")), Grade::No, "only what was granted");

    // The scheduler's retry, once the endpoint answers, removes it (a new client: the first one's
    // connections belonged to the runtime of its own block_on).
    drop(client);
    block_on(self::client(&account, None, options()).revoke(&revoke)).unwrap();
    assert_eq!(block_on(inline(&iam, &user("temp"), POLICY)), None);
}
