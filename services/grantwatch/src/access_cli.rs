//! `grantwatch access ...`: the command-line client of the access service (`grantwatch-access`), over
//! its HTTP API (`schemas/access_api.openapi.json`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Where the service is and who is asking.
#[derive(Args, Debug)]
pub struct AccessArgs {
    /// The access service's base URL.
    #[arg(long, env = "GRANTWATCH_ACCESS_URL", default_value = "http://127.0.0.1:8790", global = true)]
    pub url: String,
    /// A file holding your bearer token (a static token or an OIDC JWT). Without it the token is read
    /// from GRANTWATCH_ACCESS_TOKEN. Never given on the command line, where `ps` would show it.
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: AccessCommand,
}

#[derive(Subcommand, Debug)]
pub enum AccessCommand {
    /// Ask for extra permissions for a limited time.
    Request(RequestArgs),
    /// Approve a pending request (a high-risk request needs two approvers).
    Approve(DecideArgs),
    /// Deny a pending request.
    Deny(DecideArgs),
    /// Withdraw a request that is not active yet.
    Cancel(DecideArgs),
    /// Take an active grant back before its time.
    Revoke(DecideArgs),
    /// List requests, newest first.
    List(ListArgs),
    /// One request with its whole transition log.
    Show(ShowArgs),
}

#[derive(Args, Debug)]
pub struct RequestArgs {
    /// The IAM user or role ARN that receives the access.
    #[arg(long, conflicts_with = "identity_center_user")]
    pub identity: Option<String>,
    /// An IAM Identity Center user id (with --permission-set).
    #[arg(long)]
    pub identity_center_user: Option<String>,
    /// The account the access is granted in (default: the identity ARN's account).
    #[arg(long)]
    pub account: Option<String>,
    /// An action, optionally with resources: `s3:GetObject` (on `*`) or
    /// `s3:GetObject=arn:aws:s3:::logs/*,arn:aws:s3:::audit/*`. Repeat for more.
    #[arg(long = "action", conflicts_with_all = ["managed_policy", "permission_set"])]
    pub actions: Vec<String>,
    /// An existing managed policy ARN to attach for the duration.
    #[arg(long, conflicts_with = "permission_set")]
    pub managed_policy: Option<String>,
    /// An IAM Identity Center permission set name to assign on --account for the duration.
    #[arg(long)]
    pub permission_set: Option<String>,
    /// How long: `90m`, `2h`, `3600s`, `3600`.
    #[arg(long)]
    pub duration: String,
    #[arg(long)]
    pub justification: String,
    #[arg(long)]
    pub ticket: Option<String>,
    /// A request id of your own ([A-Za-z0-9_-], up to 64); the service makes one otherwise.
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(Args, Debug)]
pub struct DecideArgs {
    /// The request id.
    pub id: String,
    /// Why (required to deny, cancel or revoke).
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only requests in this state (pending, approved, active, expired, denied, cancelled, revoked, failed).
    #[arg(long)]
    pub state: Option<String>,
    /// Only requests for this identity (ARN or Identity Center user id).
    #[arg(long)]
    pub identity: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    pub id: String,
}

/// How long one call to the service may take (an approval waits for the grant's installation).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

pub fn run(args: &AccessArgs, out: &mut dyn std::io::Write) -> Result<ExitCode> {
    let token = read_token(args)?;
    let client =
        reqwest::blocking::Client::builder().timeout(CALL_TIMEOUT).build().context("starting the HTTP client")?;
    let base = args.url.trim_end_matches('/');
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| -> Result<Value> {
        let url = format!("{base}{path}");
        let mut req = client.request(method, &url).bearer_auth(&token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().with_context(|| format!("calling {url}"))?;
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let msg =
                value.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| value.to_string());
            bail!("{} ({}): {msg}", status.as_u16(), value.get("error").and_then(Value::as_str).unwrap_or("error"));
        }
        Ok(value)
    };
    let decide = |verb: &str, d: &DecideArgs| -> Result<Value> {
        check_id(&d.id)?;
        call(reqwest::Method::POST, &format!("/v1/requests/{}/{verb}", d.id), Some(json!({ "reason": d.reason })))
    };
    let record = match &args.command {
        AccessCommand::Request(r) => call(reqwest::Method::POST, "/v1/requests", Some(request_body(r)?))?,
        AccessCommand::Approve(d) => decide("approve", d)?,
        AccessCommand::Deny(d) => decide("deny", d)?,
        AccessCommand::Cancel(d) => decide("cancel", d)?,
        AccessCommand::Revoke(d) => decide("revoke", d)?,
        AccessCommand::Show(s) => {
            check_id(&s.id)?;
            let v = call(reqwest::Method::GET, &format!("/v1/requests/{}", s.id), None)?;
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            return Ok(ExitCode::SUCCESS);
        }
        AccessCommand::List(l) => {
            let mut query = vec![format!("limit={}", l.limit)];
            if let Some(s) = &l.state {
                query.push(format!("state={}", encode(s)));
            }
            if let Some(i) = &l.identity {
                query.push(format!("identity={}", encode(i)));
            }
            let v = call(reqwest::Method::GET, &format!("/v1/requests?{}", query.join("&")), None)?;
            let list = v.get("requests").and_then(Value::as_array).cloned().unwrap_or_default();
            if l.json {
                for r in &list {
                    writeln!(out, "{r}")?;
                }
            } else {
                writeln!(
                    out,
                    "{:<24} {:<9} {:<6} {:<20} {:<22} {:<16} IDENTITY / ACCESS",
                    "ID", "STATE", "RISK", "REQUESTER", "EXPIRES", "APPROVALS"
                )?;
                for r in &list {
                    writeln!(out, "{}", summary_row(r))?;
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    writeln!(out, "{}", summary_line(&record))?;
    writeln!(out, "{}", serde_json::to_string_pretty(&record)?)?;
    Ok(ExitCode::SUCCESS)
}

fn read_token(args: &AccessArgs) -> Result<String> {
    let token = match &args.token_file {
        Some(f) => std::fs::read_to_string(f).with_context(|| format!("reading the token file {}", f.display()))?,
        None => std::env::var("GRANTWATCH_ACCESS_TOKEN")
            .context("no token: give --token-file FILE or set GRANTWATCH_ACCESS_TOKEN")?,
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        bail!("the token is empty");
    }
    Ok(token)
}

/// Ids go into the URL path: only the characters the service accepts.
fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        bail!("request id {id:?}: expected [A-Za-z0-9_-], at most 64 characters");
    }
    Ok(())
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `90m`, `2h`, `1d`, `3600s`, `3600`.
pub fn parse_duration(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().with_context(|| format!("duration {s:?}: expected a number with s, m, h or d"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("duration {s:?}: the unit must be s, m, h or d"),
    };
    n.checked_mul(factor).filter(|&v| v > 0).with_context(|| format!("duration {s:?} is out of range"))
}

fn request_body(r: &RequestArgs) -> Result<Value> {
    let identity = match (&r.identity, &r.identity_center_user) {
        (Some(arn), None) if arn.contains(":role/") => json!({ "kind": "iam_role", "arn": arn }),
        (Some(arn), None) if arn.contains(":user/") => json!({ "kind": "iam_user", "arn": arn }),
        (Some(arn), None) => bail!("--identity {arn:?}: expected an IAM user or role ARN"),
        (None, Some(id)) => json!({ "kind": "identity_center_user", "user_id": id }),
        _ => bail!("give --identity ARN or --identity-center-user ID"),
    };
    let access = if let Some(arn) = &r.managed_policy {
        json!({ "kind": "managed_policy", "policy_arn": arn })
    } else if let Some(name) = &r.permission_set {
        let Some(account) = &r.account else { bail!("--permission-set needs --account") };
        json!({ "kind": "permission_set", "name": name, "account_id": account })
    } else if !r.actions.is_empty() {
        let grants: Vec<Value> = r
            .actions
            .iter()
            .map(|a| match a.split_once('=') {
                Some((action, resources)) => json!({
                    "action": action,
                    "resources": resources.split(',').map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>(),
                }),
                None => json!({ "action": a, "resources": ["*"] }),
            })
            .collect();
        json!({ "kind": "actions", "grants": grants })
    } else {
        bail!("say what you need: --action, --managed-policy or --permission-set");
    };
    let mut body = json!({
        "identity": identity,
        "access": access,
        "duration_secs": parse_duration(&r.duration)?,
        "justification": r.justification,
    });
    for (key, value) in [("ticket", &r.ticket), ("id", &r.id), ("account_id", &r.account)] {
        if let Some(v) = value {
            body[key] = json!(v);
        }
    }
    Ok(body)
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_str).unwrap_or("-")
}

fn identity_of(r: &Value) -> &str {
    let i = &r["request"]["identity"];
    i.get("arn").or_else(|| i.get("user_id")).and_then(Value::as_str).unwrap_or("-")
}

fn access_of(r: &Value) -> String {
    let a = &r["request"]["access"];
    match a.get("kind").and_then(Value::as_str) {
        Some("actions") => a["grants"]
            .as_array()
            .map(|g| g.iter().map(|g| text(g, &["action"]).to_string()).collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
        Some("managed_policy") => text(a, &["policy_arn"]).to_string(),
        Some("permission_set") => format!("{} on {}", text(a, &["name"]), text(a, &["account_id"])),
        _ => "-".into(),
    }
}

fn summary_line(r: &Value) -> String {
    let expires = text(r, &["revoke", "expires_at"]);
    format!(
        "{} is {} (risk {}, {}/{} approvals){}",
        text(r, &["request", "id"]),
        text(r, &["state"]),
        text(r, &["risk"]),
        r["approvals"].as_array().map_or(0, Vec::len),
        r["approvals_required"].as_u64().unwrap_or(0),
        if expires == "-" { String::new() } else { format!(", expires {expires}") }
    )
}

fn summary_row(r: &Value) -> String {
    format!(
        "{:<24} {:<9} {:<6} {:<20} {:<22} {:<16} {} / {}",
        text(r, &["request", "id"]),
        text(r, &["state"]),
        text(r, &["risk"]),
        text(r, &["request", "requester"]),
        text(r, &["revoke", "expires_at"]),
        format!("{}/{}", r["approvals"].as_array().map_or(0, Vec::len), r["approvals_required"].as_u64().unwrap_or(0)),
        identity_of(r),
        access_of(r),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("90m").unwrap(), 5400);
        assert_eq!(parse_duration("2h").unwrap(), 7200);
        assert_eq!(parse_duration("3600").unwrap(), 3600);
        assert_eq!(parse_duration("1d").unwrap(), 86_400);
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn ids_that_would_change_the_url_are_refused() {
        assert!(check_id("req-1_a").is_ok());
        assert!(check_id("../admin").is_err());
        assert!(check_id("a?b").is_err());
        assert!(check_id("").is_err());
    }
}
