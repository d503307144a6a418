//! What is alert-worthy: the analytics, and the rule configuration every alert they raise goes through.
//!
//! Each analytic looks at one input (an event, a closed identity-hour, a PCI update), against what the
//! identity's [`Profile`] remembers where it needs the past, and returns what it raises as [`Raised`]
//! values: plain data, no stage, no OCSF.
//!
//! - [`single_event`]: the built-in single-event rules and the Sigma rules.
//! - [`stateful`]: against the identity's [`crate::history::History`], first-time anomalies, dormancy,
//!   roles passed to compute for the first time, bulk reads of data never read before, the two-step
//!   policy-version escalation, and "granted and used within minutes".
//! - [`unusual_hour`]: a closed identity-hour scored by the trained models.
//! - [`pci_transitions`]: a new super identity, or a sharp PCI rise.
//! - [`used_after_expiry`] and [`granted_outside`]: permissions on demand used after their grant ended,
//!   and a grant to an on-demand identity made outside grantwatch.
//!
//! [`Policies::admit`] (enabled, severity, allowlists) and [`Profile::triggered_before`] (established
//! behavior) then apply the rule configuration; an alert that passes is a [`Draft`], which the `build`
//! module turns into a finding.

use grantwatch_core::catalog::{AccessLevel, Catalog};
use grantwatch_types::{Event, EventTime, IdentityKind, PciUpdate, RelatedEvent, StatusFlag};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::alert::Evidence;
use crate::build::{Draft, Subject, describe_call, field_evidence, first_time_evidence, related, short, technique_of};
use crate::features::{FEATURES, FeatureMean, HOUR_MS, HourWindow, hour_start};
use crate::history::{History, Novel};
use crate::incident::MAX_EVENTS;
use crate::ml::{BaselineKind, ModelSet};
use crate::rules::{self, AnalyticInfo, Builtin, DetectionSettings, RulePolicy, RulesConfig};
use crate::sigma::SigmaSet;

/// A two-step sequence (policy version created, then made default) must complete within this time.
const SEQUENCE_WINDOW_MS: i64 = HOUR_MS;
/// Grants and sequence steps remembered per identity.
pub(crate) const PENDING_MAX: usize = 16;
/// Reads from data stores first touched within the hour that make a bulk read.
const BULK_READS: u32 = 100;

/// What detection remembers about one identity (kept in state by the stage).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Profile {
    pub(crate) kind: Option<IdentityKind>,
    pub(crate) name: Option<String>,
    pub(crate) account: String,
    /// The person behind the identity, as its events last said. Not kept for roles: a shared
    /// Identity Center role is many people, one per session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) human: Option<String>,
    pub(crate) history: History,
    pub(crate) window: Option<HourWindow>,
    /// Mean of the identity's closed windows' features: its running profile, which places an identity
    /// the model has never seen into a peer group.
    #[serde(default)]
    pub(crate) running: FeatureMean,
    pub(crate) pci: Option<u8>,
    pub(crate) super_identity: Option<bool>,
    /// Permissions granted to this identity recently, waiting for a first use.
    pub(crate) grants: Vec<Pending>,
    /// First steps of two-step sequences.
    pub(crate) steps: Vec<Pending>,
    /// Data stores first touched in the current hour, and the reads from them so far.
    #[serde(default)]
    pub(crate) fresh: FreshData,
    /// Credential items read within the last hour.
    #[serde(default)]
    pub(crate) harvest: CredentialReads,
    /// Instances the identity opened a shell on within the last hour.
    #[serde(default)]
    pub(crate) shells: HourItems,
    /// Analytics this identity triggered: first and last UTC day, within the lookback (established
    /// behavior once the first day is past).
    #[serde(default)]
    pub(crate) triggered: FxHashMap<String, (i32, i32)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct FreshData {
    hour_ms: i64,
    stores: Vec<String>,
    reads: u32,
    events: Vec<RelatedEvent>,
    alerted: bool,
}

/// Credential items (a secret, a decrypted parameter, an instance's password or user data) an identity
/// tried to read, each with the time of its first read, within the last hour.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct CredentialReads {
    /// Items read within the last hour that the identity had not read before.
    #[serde(flatten)]
    hour: HourItems,
    /// Items the identity read successfully, with the last day (an application that reads its own
    /// secrets every hour is not harvesting them).
    #[serde(default)]
    known: Vec<(String, i32)>,
    attempts: u32,
    denied: u32,
}

/// Distinct items (secrets read, instances reached) within the last hour, each with its first time,
/// the events that brought them, and the time of the last alert: one per hour at most.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct HourItems {
    items: Vec<(String, i64)>,
    events: Vec<RelatedEvent>,
    alerted_ms: Option<i64>,
}

impl HourItems {
    /// Forgets items first seen an hour or more before `t`; says whether that emptied the window, whose
    /// events then go too.
    fn expire(&mut self, t: i64) -> bool {
        let before = self.items.len();
        self.items.retain(|(_, first)| t - *first < HOUR_MS);
        let emptied = before > 0 && self.items.is_empty();
        if emptied {
            self.events.clear();
        }
        emptied
    }

    fn add(&mut self, item: String, t: i64) {
        if self.items.len() < HARVEST_ITEMS_MAX && !self.items.iter().any(|(i, _)| *i == item) {
            self.items.push((item, t));
        }
    }

    fn note(&mut self, ev: &Event) {
        if self.events.len() < MAX_EVENTS {
            self.events.push(related(ev));
        }
    }

    /// Whether an alert is due at `t`: the threshold is `reached` and none was raised within the hour.
    /// Records the alert.
    fn due(&mut self, t: i64, reached: bool) -> bool {
        if !reached || self.alerted_ms.is_some_and(|a| t - a < HOUR_MS) {
            return false;
        }
        self.alerted_ms = Some(t);
        true
    }
}

/// Instances reached within an hour that make a fan-out: one is a chore, three in a row is a sweep.
const FANOUT_INSTANCES: usize = 3;

/// Items remembered per identity, in the hour and as known (a bound on state; more than this within the
/// hour is a harvest anyway).
const HARVEST_ITEMS_MAX: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Pending {
    /// What was granted, or the sequence step's subject (a policy ARN).
    pub(crate) what: String,
    pub(crate) event: RelatedEvent,
    /// Who made the grant (empty for sequence steps).
    #[serde(default)]
    pub(crate) by: String,
}

impl Profile {
    /// Remembers that analytic `id` fired on this identity at `time`, and tells whether it had already
    /// fired on an earlier day within the lookback (established behavior). One that lapsed (not seen
    /// within the lookback) starts over.
    pub(crate) fn triggered_before(&mut self, id: &str, time: EventTime, lookback_days: u32) -> bool {
        let day = crate::history::day_of(time.millis());
        let lookback = lookback_days as i32;
        let (first, last) = match self.triggered.get(id) {
            Some(&(first, last)) if day - last <= lookback => (first.min(day), last.max(day)),
            _ => (day, day),
        };
        self.triggered.insert(id.to_string(), (first, last));
        first < day
    }
}

/// An alert as an analytic raises it, before the rule configuration has had its say.
pub(crate) struct Raised {
    /// The analytic's id (`grantwatch/root-account-used`, `sigma/<rule id>`).
    pub(crate) analytic: String,
    pub(crate) subject: Subject,
    pub(crate) time: EventTime,
    pub(crate) region: Option<String>,
    pub(crate) events: Vec<RelatedEvent>,
    pub(crate) evidence: Vec<Evidence>,
    pub(crate) desc: String,
    /// A failed call matched a rule that does not judge failures: reported one severity lower.
    pub(crate) demoted: bool,
    /// The on-demand grant the alert is about, or that the triggering call used
    /// ([`crate::ondemand::OnDemandGrant::note`]): `explanation.on_demand`.
    pub(crate) on_demand: Option<serde_json::Value>,
}

impl Raised {
    /// An alert of a built-in analytic triggered by the single event `ev`.
    pub(crate) fn on(rule: Builtin, subject: &Subject, ev: &Event, evidence: Vec<Evidence>, desc: String) -> Self {
        Self::at(rule.id().to_string(), subject, ev, vec![related(ev)], evidence, desc)
    }

    /// An alert raised by event `ev` (its time and region) that relates `events`.
    fn at(
        analytic: String,
        subject: &Subject,
        ev: &Event,
        events: Vec<RelatedEvent>,
        evidence: Vec<Evidence>,
        desc: String,
    ) -> Self {
        Raised {
            analytic,
            subject: subject.clone(),
            time: ev.time,
            region: Some(ev.region.clone()),
            events,
            evidence,
            desc,
            demoted: false,
            on_demand: None,
        }
    }

    /// The draft of this alert, as analytic `info` with its effective settings `policy`.
    pub(crate) fn draft(self, info: AnalyticInfo, policy: RulePolicy) -> Draft {
        let Raised { analytic: _, subject, time, region, events, evidence, desc, demoted: _, on_demand } = self;
        Draft { info, policy, subject, time, region, events, evidence, desc, on_demand }
    }
}

/// The enabled analytics (built in, loaded Sigma rules) and their effective settings, by id.
pub(crate) struct Policies(FxHashMap<String, (AnalyticInfo, RulePolicy)>);

impl Policies {
    /// `routine`: analytics the models learned as routine in this organization; those below high
    /// severity are demoted to low unless the configuration says `learn_routine = false` for them.
    pub(crate) fn new(config: &RulesConfig, sigma: &SigmaSet, routine: &[String]) -> Self {
        let mut policies = FxHashMap::default();
        let infos = Builtin::ALL.iter().map(|b| b.info()).chain(sigma.rules().iter().map(|r| AnalyticInfo {
            id: sigma_id(&r.id),
            title: r.title.clone(),
            kind: grantwatch_types::AnalyticKind::Rule,
            severity: r.level,
            technique: technique_of(&r.tags),
            // Community rules of low and medium level flag things that are routine for some identities.
            suppress_established: r.level < grantwatch_types::Severity::High,
        }));
        for info in infos {
            if let Some(mut p) = config.policy(&info) {
                let learn = config.rule.get(&info.id).and_then(|r| r.learn_routine).unwrap_or(true);
                if learn && p.severity < grantwatch_types::Severity::High && routine.contains(&info.id) {
                    p.severity = p.severity.min(grantwatch_types::Severity::Low);
                }
                policies.insert(info.id.clone(), (info, p));
            }
        }
        Policies(policies)
    }

    /// The analytic of `alert` and its effective settings, if the configuration lets the alert through:
    /// the analytic is enabled, severe enough, and neither the configuration nor the analytic allowlists
    /// the identity. Established behavior is the profile's to judge ([`Profile::triggered_before`]).
    pub(crate) fn admit(&self, config: &RulesConfig, alert: &Raised) -> Option<(AnalyticInfo, RulePolicy)> {
        // Cloned (small, and alerts are rare): the draft owns them.
        let (info, mut policy) = self.0.get(&alert.analytic).cloned()?;
        if alert.demoted {
            policy.severity = policy.severity.lower();
        }
        let subject = &alert.subject;
        if policy.severity < config.detection.min_severity
            || config.allowlisted(&subject.account, &subject.uid)
            || policy.allows(&subject.account, &subject.uid)
        {
            return None;
        }
        Some((info, policy))
    }
}

/// The analytic id of a Sigma rule.
pub(crate) fn sigma_id(rule_id: &str) -> String {
    format!("sigma/{rule_id}")
}

/// The stateless analytics: built-in single-event rules, then Sigma rules (`request`/`response` parsed
/// once by the caller).
pub(crate) fn single_event(
    sigma: &SigmaSet,
    ev: &Event,
    subject: &Subject,
    request: Option<&serde_json::Value>,
    response: Option<&serde_json::Value>,
) -> Vec<Raised> {
    let mut hits = Vec::new();
    rules::single_event_rules(ev, request, response, &mut hits);
    let mut sigma_hits = Vec::new();
    sigma.matching(ev, &mut sigma_hits);
    let mut raised = Vec::new();
    for hit in hits {
        let evidence = hit.matched.iter().map(|(k, v)| field_evidence(k, v)).collect();
        let desc = describe_call(&hit.rule.info().title, ev, &hit);
        let mut alert = Raised::on(hit.rule, subject, ev, evidence, desc);
        alert.demoted = hit.attempt;
        raised.push(alert);
    }
    for i in sigma_hits {
        let Some(rule) = sigma.rules().get(i) else { continue };
        let desc = format!(
            "Sigma rule \"{}\" matched {}:{} by {}.",
            rule.title,
            short(&ev.api.service),
            ev.api.operation,
            subject.display()
        );
        let mut evidence =
            vec![field_evidence("eventName", &ev.api.operation), field_evidence("eventSource", &ev.api.service)];
        let failed = ev.status == grantwatch_types::Status::Failure;
        if let Some(code) = ev.status_code.as_deref().filter(|_| failed) {
            evidence.push(field_evidence("errorCode", code));
        }
        let mut alert = Raised::at(sigma_id(&rule.id), subject, ev, vec![related(ev)], evidence, desc);
        alert.demoted = failed && !rule.judges_failures;
        raised.push(alert);
    }
    raised
}

/// The analytics that need the identity's past, once [`History::observe`] has compared `ev` with it
/// (`novel`): first-time, dormancy, bulk reads, sequences, grants. Updates the profile's pending
/// sequence steps, grants and fresh data stores.
pub(crate) fn stateful(
    profile: &mut Profile,
    catalog: &Catalog,
    settings: &DetectionSettings,
    ev: &Event,
    subject: &Subject,
    novel: &Novel,
    request: Option<&serde_json::Value>,
) -> Vec<Raised> {
    let mut raised = Vec::new();
    if novel.established {
        raised.extend(first_time(catalog, settings, ev, subject, novel));
        raised.extend(bulk_reads(&mut profile.fresh, ev, subject, novel));
    }
    raised.extend(credential_harvest(&mut profile.harvest, settings, ev, subject, request));
    raised.extend(remote_access_fanout(&mut profile.shells, ev, subject, request));
    raised.extend(policy_version_escalation(&mut profile.steps, ev, subject, request));
    raised.extend(granted_and_used(&mut profile.grants, settings, ev, subject, novel));
    raised
}

/// First use of sensitive actions and resources, first region, dormancy, first role passed to compute.
fn first_time(
    catalog: &Catalog,
    settings: &DetectionSettings,
    ev: &Event,
    subject: &Subject,
    novel: &Novel,
) -> Vec<Raised> {
    let mut raised = Vec::new();
    let (mut high_risk, mut sensitive) = (Vec::new(), Vec::new());
    for a in &novel.actions {
        let Some(id) = catalog.lookup(a) else { continue };
        let tags = catalog.risk_tags(id);
        let level = catalog.access_level(id);
        if a == "iam:PassRole" {
            // What a passed role is used for is the PassRole analytic's question.
            continue;
        }
        // Permission changes that escalate or expose credentials (iam:AttachUserPolicy,
        // iam:CreateAccessKey, iam:UpdateAssumeRolePolicy...). Tagged Write or Read actions
        // (iam:PassRole, ecr:GetAuthorizationToken) are daily work for developers; the
        // PassRole analytic looks at what a passed role is used for.
        if level == AccessLevel::PermissionsManagement && (tags.privilege_escalation || tags.credential_exposure) {
            high_risk.push(a.clone());
        } else if matches!(level, AccessLevel::Write | AccessLevel::PermissionsManagement) {
            sensitive.push(a.clone());
        }
    }
    for (rule, actions) in [(Builtin::HighRiskPermissionFirstUse, high_risk), (Builtin::FirstTimeAction, sensitive)] {
        if actions.is_empty() {
            continue;
        }
        let desc = format!(
            "{} used {} for the first time in {} days.",
            subject.display(),
            actions.join(", "),
            settings.first_time_lookback_days
        );
        let evidence = actions.iter().map(|a| first_time_evidence("action", a)).collect();
        raised.push(Raised::on(rule, subject, ev, evidence, desc));
    }
    let sensitive_resources: Vec<&String> = novel.resources.iter().filter(|r| sensitive_resource(r)).collect();
    if !sensitive_resources.is_empty() {
        let names: Vec<&str> = sensitive_resources.iter().map(|s| s.as_str()).collect();
        let desc = format!("{} accessed {} for the first time.", subject.display(), names.join(", "));
        let evidence = names.iter().map(|r| first_time_evidence("resource", r)).collect();
        raised.push(Raised::on(Builtin::FirstTimeResource, subject, ev, evidence, desc));
    }
    // A new region, or a return after weeks, is routine on its own (a deployment into a new region,
    // a colleague back from leave); from a network or client the identity never used, it is how
    // stolen credentials look. Both analytics need that second novelty.
    // An identity that roams (CI runners, people on the move) shows new networks all the time: for it
    // only a new client counts.
    let from_elsewhere = novel.agent || (novel.network && !novel.roaming);
    let elsewhere_evidence = || {
        let mut e = Vec::new();
        if novel.network {
            e.push(first_time_evidence("source_network", ev.src_ip.as_deref().unwrap_or_default()));
        }
        if novel.agent {
            e.push(first_time_evidence("user_agent", ev.user_agent.as_deref().unwrap_or_default()));
        }
        e
    };
    if novel.region && from_elsewhere {
        let desc = format!(
            "{} acted in region {} for the first time, from a network or client it never used.",
            subject.display(),
            ev.region
        );
        let mut evidence = vec![first_time_evidence("region", &ev.region)];
        evidence.extend(elsewhere_evidence());
        raised.push(Raised::on(Builtin::FirstTimeRegion, subject, ev, evidence, desc));
    }
    if let Some(idle) = novel.idle_days
        && idle >= f64::from(settings.dormant_after_days)
        && from_elsewhere
    {
        let desc = format!(
            "{} acted after {:.0} days without activity, from a network or client it never used.",
            subject.display(),
            idle
        );
        let mut evidence = vec![Evidence {
            name: "idle_days".into(),
            value: idle,
            baseline: Some(f64::from(settings.dormant_after_days)),
            spread: None,
            score: None,
        }];
        evidence.extend(elsewhere_evidence());
        raised.push(Raised::on(Builtin::DormantIdentityActive, subject, ev, evidence, desc));
    }
    if let Some(role) = &novel.passed_role {
        let desc = format!(
            "{} passed role {role} to new compute ({}:{}) for the first time.",
            subject.display(),
            short(&ev.api.service),
            ev.api.operation
        );
        let evidence = vec![first_time_evidence("passed_role", role)];
        raised.push(Raised::on(Builtin::PassRoleToCompute, subject, ev, evidence, desc));
    }
    raised
}

/// Many reads, within an hour, from data stores the identity had never read (in the lookback):
/// collection before exfiltration, or the exfiltration itself.
fn bulk_reads(fresh: &mut FreshData, ev: &Event, subject: &Subject, novel: &Novel) -> Option<Raised> {
    let hour = hour_start(ev.time.millis());
    if fresh.hour_ms != hour {
        *fresh = FreshData { hour_ms: hour, ..FreshData::default() };
    }
    for r in novel.resources.iter().filter(|r| data_store(r)) {
        if fresh.stores.len() < 16 && !fresh.stores.contains(r) {
            fresh.stores.push(r.clone());
        }
    }
    let reads_fresh = ev.read_only == Some(true)
        && ev.resources.iter().any(|r| fresh.stores.iter().any(|s| s == crate::history::resource_key(r)));
    if !reads_fresh {
        return None;
    }
    fresh.reads += 1;
    if fresh.events.len() < MAX_EVENTS {
        fresh.events.push(related(ev));
    }
    if fresh.reads < BULK_READS || fresh.alerted {
        return None;
    }
    fresh.alerted = true;
    let (stores, events, reads) = (fresh.stores.join(", "), fresh.events.clone(), fresh.reads);
    let desc = format!(
        "{} made {reads} reads within the hour from data it had never read before: {stores}.",
        subject.display()
    );
    let evidence = vec![Evidence {
        name: "reads_from_new_data_stores_per_hour".into(),
        value: f64::from(reads),
        baseline: Some(0.0),
        spread: None,
        score: None,
    }];
    Some(Raised::at(Builtin::BulkReadNewData.id().to_string(), subject, ev, events, evidence, desc))
}

/// The credential items a call reads, and whether it reads in bulk by itself (a filter or a path
/// rather than names). Failed calls count: an attempt on thirty instances' passwords is a harvest
/// whether or not AWS said no.
fn credential_items(ev: &Event, request: Option<&serde_json::Value>) -> Option<(Vec<String>, bool)> {
    let req = request?;
    let s = |k: &str| req.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let list = |k: &str| -> Vec<String> {
        req.get(k)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let decrypted = || req.get("withDecryption").and_then(|v| v.as_bool()) == Some(true);
    // Cut: a hostile request may name a 16 KiB "secret", and the profile keeps 64 of them twice.
    let prefixed = |p: &str, items: Vec<String>| {
        items.into_iter().map(|i| format!("{p}:{}", grantwatch_types::cut_str(&i, ITEM_BYTES_MAX))).collect::<Vec<_>>()
    };
    match (ev.api.service.as_str(), ev.api.operation.as_str()) {
        ("secretsmanager.amazonaws.com", "GetSecretValue") => Some((
            prefixed("secret", s("secretId").map(|id| secret_name(&id).to_string()).into_iter().collect()),
            false,
        )),
        ("secretsmanager.amazonaws.com", "BatchGetSecretValue") => {
            let ids = list("secretIdList");
            let by_filter = ids.is_empty();
            let ids = ids.iter().map(|id| secret_name(id).to_string()).collect();
            let items = if by_filter {
                vec![format!("secrets-filter:{}", req.get("filters").map(|f| f.to_string()).unwrap_or_default())]
            } else {
                ids
            };
            Some((prefixed("secret", items), by_filter))
        }
        ("ssm.amazonaws.com", "GetParameter") if decrypted() => {
            Some((prefixed("parameter", s("name").into_iter().collect()), false))
        }
        ("ssm.amazonaws.com", "GetParameters") if decrypted() => Some((prefixed("parameter", list("names")), false)),
        ("ssm.amazonaws.com", "GetParametersByPath") if decrypted() => {
            Some((prefixed("parameter-path", s("path").into_iter().collect()), true))
        }
        ("ec2.amazonaws.com", "GetPasswordData") => {
            Some((prefixed("password", s("instanceId").into_iter().collect()), false))
        }
        ("ec2.amazonaws.com", "DescribeInstanceAttribute") if s("attribute").as_deref() == Some("userData") => {
            Some((prefixed("user-data", s("instanceId").into_iter().collect()), false))
        }
        _ => None,
    }
}

/// The instance a call opens a shell on: a Session Manager session, or an SSH key pushed through EC2
/// Instance Connect.
fn shell_target(ev: &Event, request: Option<&serde_json::Value>) -> Option<String> {
    let req = request?;
    let key = match (ev.api.service.as_str(), ev.api.operation.as_str()) {
        ("ssm.amazonaws.com", "StartSession") => "target",
        ("ec2-instance-connect.amazonaws.com", "SendSSHPublicKey") => "instanceId",
        _ => return None,
    };
    req.get(key).and_then(|v| v.as_str()).map(str::to_string)
}

/// Shells opened on [`FANOUT_INSTANCES`] or more instances within an hour: lateral movement across a
/// fleet. An operator's session on the instance they are fixing stays below; one who sweeps the fleet
/// every week is established after the first time.
fn remote_access_fanout(
    shells: &mut HourItems,
    ev: &Event,
    subject: &Subject,
    request: Option<&serde_json::Value>,
) -> Option<Raised> {
    if ev.status != grantwatch_types::Status::Success {
        return None;
    }
    let target = shell_target(ev, request)?;
    let t = ev.time.millis();
    shells.expire(t);
    shells.add(target, t);
    shells.note(ev);
    if !shells.due(t, shells.items.len() >= FANOUT_INSTANCES) {
        return None;
    }
    let targets: Vec<&str> = shells.items.iter().map(|(i, _)| i.as_str()).collect();
    let desc = format!(
        "{} opened shells on {} instances within an hour ({}:{}): {}.",
        subject.display(),
        targets.len(),
        short(&ev.api.service),
        ev.api.operation,
        targets.join(", ")
    );
    let evidence = vec![Evidence {
        name: "instances_reached_per_hour".into(),
        value: targets.len() as f64,
        baseline: Some(FANOUT_INSTANCES as f64),
        spread: None,
        score: None,
    }];
    let events = std::mem::take(&mut shells.events);
    Some(Raised::at(Builtin::RemoteAccessFanout.id().to_string(), subject, ev, events, evidence, desc))
}

/// The longest item name kept: room for AWS's longest names (SSM parameters, 2,048 characters) as ARNs.
const ITEM_BYTES_MAX: usize = 2_200;

/// The secret a `secretId` names: its name, whether it is given as the name, a partial ARN or the full
/// ARN (which ends in `-` and six random characters), so that every way of naming one secret is one item.
fn secret_name(id: &str) -> &str {
    let name = match id.strip_prefix("arn:") {
        Some(_) => id.splitn(7, ':').nth(6).unwrap_or(id),
        None => id,
    };
    match name.rsplit_once('-') {
        Some((base, suffix))
            if id.starts_with("arn:") && suffix.len() == 6 && suffix.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            base
        }
        _ => name,
    }
}

/// Many distinct secrets, decrypted parameters, instance passwords or user data, none of which the
/// identity had read before, read within an hour: credential harvesting. An application reading its
/// own secrets every hour, or a few new ones at a deployment, stays below.
fn credential_harvest(
    reads: &mut CredentialReads,
    settings: &DetectionSettings,
    ev: &Event,
    subject: &Subject,
    request: Option<&serde_json::Value>,
) -> Option<Raised> {
    let (items, bulk) = credential_items(ev, request)?;
    let t = ev.time.millis();
    let day = crate::history::day_of(t);
    let lookback = settings.first_time_lookback_days as i32;
    if reads.hour.expire(t) {
        (reads.attempts, reads.denied) = (0, 0);
    }
    let succeeded = ev.status == grantwatch_types::Status::Success;
    for item in items {
        let known = reads.known.iter().position(|(i, _)| *i == item);
        if known.is_some_and(|k| day - reads.known[k].1 <= lookback) {
            if succeeded && let Some(k) = known {
                reads.known[k].1 = day;
            }
            continue;
        }
        reads.hour.add(item.clone(), t);
        if succeeded {
            match known {
                Some(k) => reads.known[k].1 = day,
                None => {
                    if reads.known.len() >= HARVEST_ITEMS_MAX
                        && let Some(oldest) =
                            reads.known.iter().enumerate().min_by_key(|(_, (_, d))| *d).map(|(i, _)| i)
                    {
                        reads.known.swap_remove(oldest);
                    }
                    reads.known.push((item, day));
                }
            }
        }
    }
    if reads.hour.items.is_empty() && !bulk {
        return None;
    }
    reads.attempts += 1;
    if !succeeded {
        reads.denied += 1;
    }
    reads.hour.note(ev);
    let threshold = settings.credential_reads_per_hour.max(1) as usize;
    if !reads.hour.due(t, bulk || reads.hour.items.len() >= threshold) {
        return None;
    }
    let kinds: std::collections::BTreeSet<&str> =
        reads.hour.items.iter().filter_map(|(i, _)| i.split_once(':').map(|(k, _)| k)).collect();
    let denied = match reads.denied {
        0 => String::new(),
        n => format!(" ({n} of {} calls denied)", reads.attempts),
    };
    let desc = if bulk {
        format!(
            "{} read credentials in bulk with one call ({}:{}){denied}.",
            subject.display(),
            short(&ev.api.service),
            ev.api.operation
        )
    } else {
        format!(
            "{} tried to read {} distinct {} within an hour{denied}.",
            subject.display(),
            reads.hour.items.len(),
            kinds.into_iter().collect::<Vec<_>>().join(", ")
        )
    };
    let evidence = vec![Evidence {
        name: "credential_items_per_hour".into(),
        value: reads.hour.items.len() as f64,
        baseline: Some(f64::from(settings.credential_reads_per_hour)),
        spread: None,
        score: None,
    }];
    let events = std::mem::take(&mut reads.hour.events);
    Some(Raised::at(Builtin::CredentialHarvest.id().to_string(), subject, ev, events, evidence, desc))
}

/// Policy version created, then made default, on the same policy within the sequence window.
fn policy_version_escalation(
    steps: &mut Vec<Pending>,
    ev: &Event,
    subject: &Subject,
    request: Option<&serde_json::Value>,
) -> Option<Raised> {
    let t = ev.time.millis();
    steps.retain(|s| t - s.event.time <= SEQUENCE_WINDOW_MS);
    if ev.status != grantwatch_types::Status::Success || ev.api.service != "iam.amazonaws.com" {
        return None;
    }
    let policy = request.and_then(|r| r.get("policyArn")).and_then(|v| v.as_str()).map(str::to_string);
    match (ev.api.operation.as_str(), policy) {
        ("CreatePolicyVersion", Some(p)) => {
            steps.push(Pending { what: p, event: related(ev), by: String::new() });
            if steps.len() > PENDING_MAX {
                steps.remove(0);
            }
            None
        }
        ("SetDefaultPolicyVersion", Some(p)) => {
            let at = steps.iter().position(|s| s.what == p)?;
            let first = steps.remove(at);
            let desc = format!(
                "{} created a new version of {p} and made it the default {} minutes later.",
                subject.display(),
                (t - first.event.time) / 60_000
            );
            let evidence = vec![field_evidence("policyArn", &p)];
            let events = vec![first.event, related(ev)];
            Some(Raised::at(Builtin::PolicyVersionEscalation.id().to_string(), subject, ev, events, evidence, desc))
        }
        _ => None,
    }
}

/// A permission granted to this identity, and used for the first time, within minutes.
fn granted_and_used(
    grants: &mut Vec<Pending>,
    settings: &DetectionSettings,
    ev: &Event,
    subject: &Subject,
    novel: &Novel,
) -> Option<Raised> {
    let t = ev.time.millis();
    let within = i64::from(settings.granted_used_within_minutes) * 60_000;
    // A grant to oneself is the self-privilege-grant analytic's, not this one's.
    grants.retain(|g| t - g.event.time <= within && t >= g.event.time && g.by != ev.actor.uid);
    if novel.actions.is_empty() || ev.status != grantwatch_types::Status::Success {
        return None;
    }
    let g = grants.first().cloned()?;
    if g.event.uid == ev.uid {
        return None;
    }
    grants.remove(0);
    let desc = format!(
        "{} was granted {} and used {} for the first time {} minutes later.",
        subject.display(),
        g.what,
        novel.actions.join(", "),
        (t - g.event.time) / 60_000
    );
    let evidence = vec![
        field_evidence("granted", &g.what),
        Evidence {
            name: "minutes_between_grant_and_use".into(),
            value: ((t - g.event.time) as f64 / 60_000.0).round(),
            baseline: Some(f64::from(settings.granted_used_within_minutes)),
            spread: None,
            score: None,
        },
    ];
    let events = vec![g.event, related(ev)];
    Some(Raised::at(Builtin::GrantedAndUsed.id().to_string(), subject, ev, events, evidence, desc))
}

/// A call that uses what an on-demand grant gave after the grant ended (within the post-expiry window,
/// `u` from [`crate::ondemand::OnDemandGrants::after`]). A success means the removal failed or came late
/// and the grant's time condition did not stop the call; a denied call, that the identity keeps trying
/// (one severity lower). A success its standing permissions explain (it used these actions outside any
/// grant within the lookback) is not one.
pub(crate) fn used_after_expiry(
    u: &crate::ondemand::Use<'_>,
    history: &History,
    settings: &DetectionSettings,
    ev: &Event,
    subject: &Subject,
) -> Option<Raised> {
    let t = ev.time.millis();
    let succeeded = ev.status == grantwatch_types::Status::Success;
    let lookback = settings.first_time_lookback_days;
    if succeeded && !u.actions.is_empty() && u.actions.iter().all(|a| history.knows_action(a, t, lookback)) {
        return None;
    }
    let g = u.grant;
    let minutes = (t - g.end().millis()) / 60_000;
    let what = if u.actions.is_empty() {
        format!("{}:{}", short(&ev.api.service), ev.api.operation)
    } else {
        u.actions.join(", ")
    };
    let outcome = if succeeded {
        "it succeeded: the grant's removal or its time condition did not stop it".to_string()
    } else {
        format!("it was denied ({})", ev.status_code.as_deref().unwrap_or("error"))
    };
    let desc = format!("{} used {what} {minutes} minutes after {} ended; {outcome}.", subject.display(), g.describe());
    let evidence = vec![
        field_evidence("request_id", &g.request_id),
        Evidence {
            name: "minutes_after_grant_end".into(),
            value: minutes as f64,
            baseline: Some(0.0),
            spread: None,
            score: None,
        },
    ];
    let mut alert = Raised::on(Builtin::OnDemandUsedAfterExpiry, subject, ev, evidence, desc);
    alert.demoted = !succeeded;
    alert.on_demand = Some(g.note());
    Some(alert)
}

/// A change that grants to an identity with on-demand access, made outside grantwatch (`o` from
/// [`crate::ondemand::OnDemandGrants::outside_grant`]): standing access slipped in beside the
/// time-bound one, or grantwatch's own policy rewritten.
pub(crate) fn granted_outside(o: &crate::ondemand::Outside<'_>, ev: &Event, subject: &Subject) -> Raised {
    let had = o.grant.map(|g| format!(" ({})", g.describe())).unwrap_or_default();
    let desc = format!(
        "{} called {} on {}, an identity with on-demand access{had}; grantwatch did not make this change.",
        subject.display(),
        o.what,
        o.target
    );
    let mut evidence = vec![field_evidence("target", &o.target), field_evidence("change", &o.what)];
    if let Some(g) = o.grant {
        evidence.push(field_evidence("request_id", &g.request_id));
    }
    let mut alert = Raised::on(Builtin::GrantOutsideGrantwatch, subject, ev, evidence, desc);
    alert.on_demand = o.grant.map(|g| g.note());
    alert
}

/// The trained models' verdict on the closed identity-hour `w` of `subject` (its `features`).
/// `running` is the identity's running profile before this window, which places an identity the models
/// do not know into a peer group ([`ModelSet::score`]).
pub(crate) fn unusual_hour(
    model: &ModelSet,
    subject: &Subject,
    w: &HourWindow,
    features: &[f64; FEATURES],
    running: Option<&[f64; FEATURES]>,
) -> Option<Raised> {
    let verdict = model.score(&subject.uid, features, running);
    if !verdict.anomalous {
        return None;
    }
    let (rule, baseline) = match verdict.baseline {
        BaselineKind::Identity => (Builtin::ModelIdentity, "the identity's own history".to_string()),
        BaselineKind::PeerGroup(g) => (Builtin::ModelPeerGroup, format!("peer group {g}")),
    };
    let top: Vec<String> = verdict.evidence.iter().take(3).map(|e| e.name.clone()).collect();
    let desc = format!(
        "{} behaved unusually in the hour from {} compared with {baseline} (score {:.1}, threshold {:.1}; most unusual: {}).",
        subject.display(),
        EventTime(w.start_ms()),
        verdict.score,
        verdict.threshold,
        top.join(", ")
    );
    let events = w
        .event_ids()
        .iter()
        .take(MAX_EVENTS)
        .map(|id| RelatedEvent { uid: id.clone(), time: w.start_ms(), kind: "hour-window".into() })
        .collect();
    let mut evidence = verdict.evidence;
    evidence.push(Evidence {
        name: "anomaly_score".into(),
        value: verdict.score,
        baseline: Some(verdict.threshold),
        spread: None,
        score: Some(verdict.score / verdict.threshold.max(f64::EPSILON)),
    });
    Some(Raised {
        analytic: rule.id().to_string(),
        subject: subject.clone(),
        time: EventTime(w.end_ms() - 1),
        region: None,
        events,
        evidence,
        desc,
        demoted: false,
        on_demand: None,
    })
}

/// A PCI update of `subject`, recorded on its profile and compared with the previous one. Only a
/// transition counts: an identity already super in its first update is a Discover finding (super
/// identity), not news. Both analytics depend on the sequence of updates alone, so they do not depend on
/// how the PCI and event topics interleave.
pub(crate) fn pci_transitions(
    profile: &mut Profile,
    settings: &DetectionSettings,
    u: &PciUpdate,
    subject: &Subject,
) -> Vec<Raised> {
    let (prev_pci, prev_super) = (profile.pci, profile.super_identity);
    let is_super = u.status.contains(&StatusFlag::SuperIdentity);
    profile.pci = Some(u.pci.score);
    profile.super_identity = Some(is_super);
    let pci_evidence = |prev: Option<u8>| Evidence {
        name: "pci".into(),
        value: f64::from(u.pci.score),
        baseline: prev.map(f64::from),
        spread: None,
        score: prev.map(|p| f64::from(u.pci.score) - f64::from(p)),
    };
    let alert = |rule: Builtin, desc: String| Raised {
        analytic: rule.id().to_string(),
        subject: subject.clone(),
        time: u.as_of,
        region: None,
        events: vec![],
        evidence: vec![pci_evidence(prev_pci)],
        desc,
        demoted: false,
        on_demand: None,
    };
    let mut raised = Vec::new();
    if is_super && prev_super == Some(false) {
        let desc = format!(
            "{} became a super identity (can do nearly everything, or grant itself anything) in account {}.",
            subject.display(),
            u.account
        );
        raised.push(alert(Builtin::NewSuperIdentity, desc));
    }
    // An identity idle through the whole lookback sees its PCI rise as its usage ages out: that is
    // dormancy (its own analytic), not creep.
    if let Some(p) = prev_pci
        && u.events_in_lookback > 0
        && u.pci.score >= p.saturating_add(settings.pci_rise_points)
    {
        let desc = format!("{}'s Permission Creep Index rose from {p} to {}.", subject.display(), u.pci.score);
        raised.push(alert(Builtin::PciRise, desc));
    }
    raised
}

/// Resources that hold data in bulk (objects, items, rows).
fn data_store(arn: &str) -> bool {
    ["arn:aws:s3:::", ":dynamodb:", ":rds:"].iter().any(|p| arn.contains(p)) || other_cloud_marker(arn, DATA_STORES)
}

/// Resources whose first access is worth an analyst's look: data stores and secrets.
fn sensitive_resource(arn: &str) -> bool {
    ["arn:aws:s3:::", ":secretsmanager:", ":kms:", ":ssm:", ":dynamodb:", ":rds:"].iter().any(|p| arn.contains(p))
        || other_cloud_marker(arn, DATA_STORES)
        || other_cloud_marker(arn, SECRET_STORES)
}

/// Azure resource ids and GCP resource names of data stores, by the segment that names their type
/// (lower case: the Activity Log export writes ids in upper case). GCP Cloud Storage names objects
/// `projects/_/buckets/B/objects/O` (the bucket is the store: [`crate::history::resource_key`]).
const DATA_STORES: &[&str] = &[
    "/microsoft.storage/storageaccounts/",
    "/microsoft.sql/",
    "/microsoft.documentdb/",
    "/microsoft.dbforpostgresql/",
    "/microsoft.dbformysql/",
    "projects/_/buckets/",
    "/datasets/",
    "/instances/",
];

/// Azure Key Vaults, GCP Secret Manager secrets and Cloud KMS keys.
const SECRET_STORES: &[&str] = &["/microsoft.keyvault/vaults/", "/secrets/", "/cryptokeys/"];

/// Whether an Azure or GCP resource (never an ARN: AWS names are judged above) names one of `kinds`.
fn other_cloud_marker(resource: &str, kinds: &[&str]) -> bool {
    if resource.starts_with("arn:") {
        return false;
    }
    let lower = resource.to_ascii_lowercase();
    // GCP's `/instances/` is also Compute's: a data store only under Cloud SQL, Spanner or Bigtable.
    kinds.iter().any(|k| match *k {
        "/instances/" => {
            ["sqladmin", "spanner", "bigtable", "cloudsql"].iter().any(|s| lower.contains(s)) && lower.contains(k)
        }
        k => lower.contains(k),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantwatch_core::testing::event;
    use grantwatch_types::{Api, RawJson, Severity, Status};

    fn subject(ev: &Event) -> Subject {
        Subject::of(ev)
    }

    fn read(uid: &str, at_s: i64, op: &str, request: &str, denied: bool) -> Event {
        let mut e = event(uid, EventTime(1_700_000_000_000 + at_s * 1000));
        e.api = Api { service: "ec2.amazonaws.com".into(), operation: op.into() };
        e.request = RawJson::from_text(request);
        if denied {
            e.status = Status::Failure;
            e.status_code = Some("Client.UnauthorizedOperation".into());
        }
        e
    }

    #[test]
    fn credential_harvest_counts_distinct_items_and_denied_attempts_once_an_hour() {
        let settings = DetectionSettings::default();
        let mut reads = CredentialReads::default();
        let mut raised = Vec::new();
        // The same instance's password five times is one item: no harvest.
        for i in 0..5 {
            let ev = read(&format!("same{i}"), i, "GetPasswordData", r#"{"instanceId":"i-1"}"#, false);
            let parsed = ev.request.as_ref().and_then(RawJson::parse);
            raised.extend(credential_harvest(&mut reads, &settings, &ev, &subject(&ev), parsed.as_ref()));
        }
        assert!(raised.is_empty());
        // Four more instances, denied: five distinct items within the hour.
        for i in 2..=5 {
            let ev = read(&format!("d{i}"), 10 + i, "GetPasswordData", &format!(r#"{{"instanceId":"i-{i}"}}"#), true);
            let parsed = ev.request.as_ref().and_then(RawJson::parse);
            raised.extend(credential_harvest(&mut reads, &settings, &ev, &subject(&ev), parsed.as_ref()));
        }
        assert_eq!(raised.len(), 1);
        assert!(
            raised[0].desc.contains("5 distinct password") && raised[0].desc.contains("4 of 9 calls denied"),
            "{}",
            raised[0].desc
        );
        assert_eq!(raised[0].events.len(), 9);
        // Another within the hour: no second alert. User data is an item too; a read of another
        // attribute is not.
        let ev = read("ud", 100, "DescribeInstanceAttribute", r#"{"attribute":"userData","instanceId":"i-9"}"#, false);
        assert_eq!(
            credential_items(&ev, ev.request.as_ref().and_then(RawJson::parse).as_ref()).unwrap().0,
            ["user-data:i-9"]
        );
        let ev =
            read("it", 100, "DescribeInstanceAttribute", r#"{"attribute":"instanceType","instanceId":"i-9"}"#, false);
        assert!(credential_items(&ev, ev.request.as_ref().and_then(RawJson::parse).as_ref()).is_none());
        let ev = read("more", 200, "GetPasswordData", r#"{"instanceId":"i-7"}"#, false);
        let parsed = ev.request.as_ref().and_then(RawJson::parse);
        assert!(credential_harvest(&mut reads, &settings, &ev, &subject(&ev), parsed.as_ref()).is_none());
        // Secrets by filter are a harvest in one call.
        let mut batch =
            read("batch", 9000, "BatchGetSecretValue", r#"{"filters":[{"key":"tag-key","values":["x"]}]}"#, false);
        batch.api.service = "secretsmanager.amazonaws.com".into();
        let parsed = batch.request.as_ref().and_then(RawJson::parse);
        let mut fresh = CredentialReads::default();
        let alert = credential_harvest(&mut fresh, &settings, &batch, &subject(&batch), parsed.as_ref()).unwrap();
        assert!(alert.desc.contains("in bulk with one call"), "{}", alert.desc);
    }

    #[test]
    fn shells_on_three_instances_within_an_hour_are_a_fanout() {
        let mut shells = HourItems::default();
        let session = |uid: &str, at_s: i64, target: &str| {
            let mut e = read(uid, at_s, "StartSession", &format!(r#"{{"target":"{target}"}}"#), false);
            e.api.service = "ssm.amazonaws.com".into();
            e
        };
        let mut raised = Vec::new();
        for (i, (at, target)) in
            [(0, "i-1"), (60, "i-1"), (120, "i-2"), (4000, "i-3"), (4100, "i-4")].iter().enumerate()
        {
            let ev = session(&format!("s{i}"), *at, target);
            let parsed = ev.request.as_ref().and_then(RawJson::parse);
            raised.extend(remote_access_fanout(&mut shells, &ev, &subject(&ev), parsed.as_ref()));
        }
        // i-1 and i-2 left the hour before i-3 and i-4 came: never three at once.
        assert!(raised.is_empty());
        let ev = session("s5", 4200, "i-5");
        let parsed = ev.request.as_ref().and_then(RawJson::parse);
        let alert = remote_access_fanout(&mut shells, &ev, &subject(&ev), parsed.as_ref()).unwrap();
        assert!(alert.desc.contains("3 instances") && alert.desc.contains("i-5"), "{}", alert.desc);
    }

    #[test]
    fn a_secret_is_one_item_however_it_is_named() {
        let full = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db/password-AbC123";
        assert_eq!(secret_name(full), "prod/db/password");
        assert_eq!(
            secret_name("arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db/password"),
            "prod/db/password"
        );
        assert_eq!(secret_name("prod/db/password"), "prod/db/password");
        assert_eq!(secret_name("my-secret-abcdef"), "my-secret-abcdef", "a bare name keeps its dashes");
        let huge = read("h", 0, "GetPasswordData", &format!(r#"{{"instanceId":"{}"}}"#, "é".repeat(9000)), true);
        let items = credential_items(&huge, huge.request.as_ref().and_then(RawJson::parse).as_ref()).unwrap().0;
        assert!(items[0].len() <= ITEM_BYTES_MAX + "password:".len(), "a hostile name is cut");
    }

    #[test]
    fn failed_calls_of_rules_silent_on_failure_and_routine_analytics_are_reported_lower() {
        let silent = "title: t\nid: r-silent\nlogsource: {product: aws}\ndetection:\n  sel:\n    eventName: DeleteBucket\n  condition: sel\nlevel: medium\n";
        let judging = "title: t\nid: r-judging\nlogsource: {product: aws}\ndetection:\n  sel:\n    eventName: DeleteBucket\n  ok:\n    errorCode: null\n  condition: sel and ok\nlevel: high\n";
        let (sigma, errors) = SigmaSet::load(&[("a.yml".into(), silent.into()), ("b.yml".into(), judging.into())]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(sigma.rules().iter().map(|r| r.judges_failures).collect::<Vec<_>>(), [false, true]);

        let config = RulesConfig::default();
        let mut denied = event("e1", EventTime(1_700_000_000_000));
        denied.api = Api { service: "s3.amazonaws.com".into(), operation: "DeleteBucket".into() };
        denied.status = Status::Failure;
        denied.status_code = Some("AccessDenied".into());
        let alerts = single_event(&sigma, &denied, &subject(&denied), None, None);
        assert_eq!(alerts.len(), 1, "the judging rule wants successes");
        assert!(alerts[0].demoted);
        let policies = Policies::new(&config, &sigma, &[]);
        assert!(policies.admit(&config, &alerts[0]).is_none(), "medium, one lower: low, below min_severity");

        // Learned as routine: a medium analytic is reported as low, a high one is not touched, and
        // `learn_routine = false` keeps it.
        let routine = vec![Builtin::FirstTimeRegion.id().to_string(), Builtin::RootAccountUsed.id().to_string()];
        let policies = Policies::new(&config, &sigma, &routine);
        assert_eq!(policies.0[Builtin::FirstTimeRegion.id()].1.severity, Severity::Low);
        assert_eq!(policies.0[Builtin::RootAccountUsed.id()].1.severity, Severity::High);
        let mut keep = RulesConfig::default();
        keep.rule.insert(
            Builtin::FirstTimeRegion.id().into(),
            crate::rules::RuleSettings { learn_routine: Some(false), ..Default::default() },
        );
        let policies = Policies::new(&keep, &sigma, &routine);
        assert_eq!(policies.0[Builtin::FirstTimeRegion.id()].1.severity, Severity::Medium);
    }
}
