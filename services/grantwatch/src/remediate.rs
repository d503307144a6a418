//! `grantwatch remediate plan`: right-size identities to what they used, and prove it first.
//!
//! 1. `analyze` (detection off) over the IAM snapshots and the activity logs, into `DIR/analysis/`
//!    and the state directory: the usage of every identity.
//! 2. The plan of each identity in scope (`grantwatch_core::remediate`), and the `after` snapshot.
//! 3. The replay proof: every successful call of the lookback is evaluated against `before` and
//!    `after` with the request-level evaluator (`AccessModel::decide`: identity policies, boundaries,
//!    SCPs/RCPs, trust policies) where the event names the resource, and with the evaluated grants
//!    where it does not. A call `before` allows and `after` denies refuses the whole plan: `refused.json`
//!    lists the calls and no plan is written.
//! 4. `DIR/plan.json`, `DIR/after/<account>.json` (the shape `--iam` reads) and a summary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustc_hash::FxHashMap;

use grantwatch_core::access::{AccessModel, Grade};
use grantwatch_core::catalog::Catalog;
use grantwatch_core::cloudtrail::{ActionMap, Normalizer};
use grantwatch_core::findings::{FindingsConfig, for_each_subject_batch, identity_score};
use grantwatch_core::iam::IamSnapshot;
use grantwatch_core::policy::IdentityGrants;
use grantwatch_core::remediate::{Outcome, PlanCx, PlanOptions, Planned, apply_edits, complete};
use grantwatch_core::usage::IdentityUsage;
use grantwatch_files::Input;
use grantwatch_s3::S3Config;
use grantwatch_state_rocks::RocksStore;
use grantwatch_types::{
    AccountPlanSummary, DeniedRequest, Event, EventTime, IdentityKind, PLAN_SCHEMA, PlanScope, RemediationPlan,
    ReplayProof, SkippedIdentity, Status,
};

use crate::analyze::{AnalyzeOptions, entitlements, load_snapshot};

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// Output of `aws iam get-account-authorization-details` (files or directories; many accounts).
    #[arg(long, required = true, num_args = 1..)]
    pub iam: Vec<PathBuf>,
    /// CloudTrail covering the lookback: the same inputs as `analyze` (directories, files, `s3://`).
    #[arg(long, num_args = 1..)]
    pub cloudtrail: Vec<String>,
    /// Usage state (RocksDB) kept between runs, as `analyze --state`: logs already read are not read
    /// again. Default: a temporary directory.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Which identities: `inactive` (no activity in the lookback), `over_provisioned` (using less than
    /// --over-provisioned-threshold of their grants), or `all` (both, and every other identity with
    /// unused permissions).
    #[arg(long, value_enum, default_value = "all")]
    pub scope: ScopeArg,
    /// Only these identities (user or role ARNs), whatever their status.
    #[arg(long = "identity", num_args = 1..)]
    pub identities: Vec<String>,
    /// Never plan these identities: ARN patterns with `*` (e.g. `*:role/break-glass-*`); listed in
    /// `skipped`.
    #[arg(long, num_args = 1..)]
    pub exclude: Vec<String>,
    #[arg(long, default_value_t = 90)]
    pub lookback_days: u32,
    /// The end of the lookback (RFC 3339). Default: the latest activity of the snapshots' users and
    /// roles (a later event of another account does not move it).
    #[arg(long)]
    pub as_of: Option<String>,
    #[arg(long, default_value_t = 0.10)]
    pub over_provisioned_threshold: f64,
    /// AWS Organizations tree with its SCPs and RCPs (docs/organizations.md).
    #[arg(long)]
    pub organization: Option<PathBuf>,
    /// Where plan.json, after/ and analysis/ go.
    #[arg(long)]
    pub out: PathBuf,
    /// Reader threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Test hook: take this action out of every policy the plan creates, as a planner bug would, so
    /// that the replay proof must refuse the plan.
    #[arg(long, hide = true)]
    pub fault_drop_action: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ScopeArg {
    Inactive,
    #[value(name = "over_provisioned", alias = "over-provisioned")]
    OverProvisioned,
    All,
}

impl From<ScopeArg> for PlanScope {
    fn from(s: ScopeArg) -> PlanScope {
        match s {
            ScopeArg::Inactive => PlanScope::Inactive,
            ScopeArg::OverProvisioned => PlanScope::OverProvisioned,
            ScopeArg::All => PlanScope::All,
        }
    }
}

/// Exit status of a refused plan (some past call would be denied).
pub const EXIT_REFUSED: u8 = 4;

/// What `plan` produced, for the summary and for tests.
#[derive(Debug)]
pub struct PlanOutcome {
    pub plan: RemediationPlan,
    /// False when the replay denied something: `refused.json` was written instead of the plan.
    pub written: bool,
    pub elapsed: std::time::Duration,
    pub analyze_elapsed: std::time::Duration,
    pub replay_elapsed: std::time::Duration,
    pub records_read: u64,
    /// Input files or records were quarantined (`analysis/quarantine.jsonl`): exit status 3, as `analyze`.
    pub records_quarantined: u64,
    pub files_quarantined: u64,
}

pub fn plan_cmd(a: &PlanArgs) -> Result<ExitCode> {
    let outcome = plan(a)?;
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    write_summary(&mut w, &outcome, &a.out)?;
    Ok(if !outcome.written {
        ExitCode::from(EXIT_REFUSED)
    } else if outcome.records_quarantined + outcome.files_quarantined > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs `remediate plan`.
pub fn plan(a: &PlanArgs) -> Result<PlanOutcome> {
    let started = std::time::Instant::now();
    if a.cloudtrail.is_empty() && a.state.is_none() {
        bail!("a plan needs the activity of the lookback: give --cloudtrail (or a --state that holds it)");
    }
    let cloudtrail: Vec<Input> = a
        .cloudtrail
        .iter()
        .map(|c| Input::parse(std::ffi::OsStr::new(c)).map_err(|e| anyhow::anyhow!("--cloudtrail {c}: {e}")))
        .collect::<Result<_>>()?;
    let as_of = match &a.as_of {
        Some(t) => Some(EventTime::parse_rfc3339(t).with_context(|| format!("--as-of {t:?} is not an RFC 3339 time"))?),
        None => None,
    };
    crate::output::create_out_dir(&a.out)?;
    let temp_state;
    let state_dir: PathBuf = match &a.state {
        Some(d) => d.clone(),
        None => {
            temp_state = tempfile::Builder::new().prefix("grantwatch-plan-state-").tempdir()?;
            temp_state.path().to_path_buf()
        }
    };

    // 1. Usage: analyze, detection off.
    let mut opts = AnalyzeOptions::new(a.out.join("analysis"));
    opts.iam = a.iam.clone();
    opts.cloudtrail = cloudtrail.clone();
    opts.as_of = as_of;
    opts.lookback_days = a.lookback_days;
    opts.state = Some(state_dir.clone());
    opts.over_provisioned_ratio = a.over_provisioned_threshold;
    opts.organization = a.organization.clone();
    opts.threads = a.threads;
    opts.progress = !a.quiet;
    let analyzed = crate::analyze::run(&opts)?;
    let analyze_elapsed = analyzed.elapsed;
    // 2. Plans and the after snapshot.
    let catalog = Arc::new(Catalog::aws().context("loading the AWS action catalog")?);
    let (snapshot, _) = load_snapshot(&a.iam)?;
    let org = match &a.organization {
        Some(f) => Some(crate::access::read_organization(f)?),
        None => None,
    };
    let share = grantwatch_core::findings::SUPER_IDENTITY_SHARE;
    let before = entitlements(&snapshot, &catalog, org.as_ref(), &[], share);
    let store = RocksStore::open(&state_dir).with_context(|| format!("opening state dir {}", state_dir.display()))?;
    let mut usages: FxHashMap<String, IdentityUsage> = FxHashMap::default();
    let in_snapshot: rustc_hash::FxHashSet<&str> = before.grants.iter().map(|g| g.arn.as_str()).collect();
    for_each_subject_batch(&catalog, &before.grants, &store, 256, &mut |batch| {
        for (g, u) in batch {
            if matches!(g.kind, IdentityKind::User | IdentityKind::Role) && in_snapshot.contains(g.arn.as_str()) {
                let mut u = u.clone();
                // Session names can be many; nothing here reads them.
                u.sessions = Vec::new();
                usages.insert(g.arn.clone(), u);
            }
        }
    })?;
    drop(store);
    // The lookback ends at the latest activity of the snapshot's own identities, not at the latest
    // event read: one record of another account, or of an identity deleted since, dated later,
    // would otherwise push every identity of the snapshot out of its own lookback and make it look
    // inactive (analysis/ keeps analyze's view, as of the latest event read).
    let latest_own = usages.values().filter_map(|u| u.activity).map(|s| s.last_ms).max();
    let as_of = match (as_of, latest_own) {
        (Some(t), _) => t,
        (None, Some(ms)) => EventTime(ms),
        (None, None) => bail!(
            "the activity logs hold no event of the IAM snapshots' users and roles ({} events read): a plan \
             needs their activity in the lookback",
            analyzed.ingest.events_counted
        ),
    };
    if analyzed.ingest.last_event.is_some_and(|t| t > as_of) {
        tracing::warn!(
            latest_event = %analyzed.ingest.last_event.map(EventTime::to_rfc3339).unwrap_or_default(),
            as_of = %as_of.to_rfc3339(),
            "Events later than the snapshot's identities' latest activity were read (other accounts or identities): \
             the lookback ends at that activity."
        );
    }
    let mut cfg = FindingsConfig::new(as_of);
    cfg.lookback_days = a.lookback_days;
    cfg.over_provisioned_ratio = a.over_provisioned_threshold;
    let plan_opts = PlanOptions { scope: a.scope.into(), only: a.identities.clone(), exclude: a.exclude.clone() };
    for arn in &plan_opts.only {
        if !before.grants.iter().any(|g| &g.arn == arn) {
            bail!("--identity {arn}: no such user or role in the IAM snapshots");
        }
    }
    let no_usage = IdentityUsage::default();
    let usage_of = |arn: &str| usages.get(arn).unwrap_or(&no_usage);
    let mut cx = PlanCx::new(&catalog, &cfg, &plan_opts, &snapshot);
    for g in &before.grants {
        cx.note_usage(g, usage_of(&g.arn));
    }
    let mut planned: Vec<Planned> = Vec::new();
    let mut skipped = Vec::new();
    for g in &before.grants {
        match cx.plan(g, usage_of(&g.arn)) {
            Outcome::Planned(p) => planned.push(*p),
            Outcome::Skipped(reason) => skipped.push(SkippedIdentity { arn: g.arn.clone(), reason }),
            Outcome::OutOfScope => {}
        }
    }
    let edits: Vec<&grantwatch_core::remediate::Edit> = planned.iter().map(|p| &p.edit).collect();
    let mut after_snapshot = apply_edits(&snapshot, &edits);
    if let Some(action) = &a.fault_drop_action {
        for e in &edits {
            for p in &e.create {
                if let Some(doc) = after_snapshot.policies.get_mut(&p.arn).and_then(|p| p.document.as_mut()) {
                    for st in &mut doc.statements {
                        st.actions.retain(|x| !x.eq_ignore_ascii_case(action));
                    }
                }
            }
        }
    }
    let after = entitlements(&after_snapshot, &catalog, org.as_ref(), &[], cfg.super_identity_share);
    let after_index: FxHashMap<&str, usize> =
        after.grants.iter().enumerate().map(|(i, g)| (g.arn.as_str(), i)).collect();
    let before_index: FxHashMap<&str, usize> =
        before.grants.iter().enumerate().map(|(i, g)| (g.arn.as_str(), i)).collect();
    for p in &mut planned {
        let (Some(&b), Some(&af)) = (before_index.get(p.plan.arn.as_str()), after_index.get(p.plan.arn.as_str()))
        else {
            continue;
        };
        if let (Some(bg), Some(ag)) = (before.grants.get(b), after.grants.get(af)) {
            let usage = usage_of(&bg.arn);
            complete(&catalog, &cfg, &mut p.plan, bg, ag, usage);
        }
    }
    let accounts = account_summaries(&catalog, &cfg, &before.grants, &after.grants, &planned, &usage_of);

    // 3. The replay proof.
    let replay_started = std::time::Instant::now();
    let normalizer =
        Normalizer::new(ActionMap::new(Arc::clone(&catalog)).context("loading the CloudTrail action map")?);
    let replay = replay(
        &cloudtrail,
        &normalizer,
        &Replayer {
            before: &before,
            after: &after,
            before_index: &before_index,
            after_index: &after_index,
            catalog: &catalog,
            from: cfg.window_start(),
            to: as_of,
        },
        a.threads.unwrap_or(0),
    )?;
    let replay_elapsed = replay_started.elapsed();

    let written = replay.events_denied == 0;
    let plan = RemediationPlan {
        schema: PLAN_SCHEMA.to_string(),
        generated_by: format!("grantwatch {}", env!("CARGO_PKG_VERSION")),
        as_of,
        lookback_days: cfg.lookback_days,
        window_start: cfg.window_start(),
        scope: plan_opts.scope,
        replay,
        accounts,
        identities: planned.into_iter().map(|p| p.plan).collect(),
        skipped,
    };

    // 4. Files.
    let outputs = crate::output::Outputs::new(&a.out);
    if written {
        let _ = std::fs::remove_file(a.out.join("refused.json"));
        write_after(&a.out.join("after"), &after_snapshot)?;
        outputs.write_json(&a.out.join("plan.json"), &plan)?;
    } else {
        // Never leave an earlier plan beside a refusal: someone could apply it.
        let _ = std::fs::remove_file(a.out.join("plan.json"));
        outputs.write_json(&a.out.join("refused.json"), &plan)?;
    }
    Ok(PlanOutcome {
        plan,
        written,
        elapsed: started.elapsed(),
        analyze_elapsed,
        replay_elapsed,
        records_read: analyzed.ingest.records_read,
        records_quarantined: analyzed.ingest.records_quarantined,
        files_quarantined: analyzed.ingest.files_quarantined,
    })
}

/// Writes one authorization-details file per account of the snapshot.
fn write_after(dir: &Path, after: &IamSnapshot) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let outputs = crate::output::Outputs::new(dir);
    for account in &after.accounts {
        if !grantwatch_core::iam::is_account_id(account) {
            continue;
        }
        outputs.write_json(&dir.join(format!("{account}.json")), &after.authorization_details(account))?;
    }
    Ok(())
}

/// Per account: identities touched, actions removed, mean PCI of users and roles before and after.
fn account_summaries<'u>(
    catalog: &Catalog,
    cfg: &FindingsConfig,
    before: &[IdentityGrants],
    after: &[IdentityGrants],
    planned: &[Planned],
    usage_of: &dyn Fn(&str) -> &'u IdentityUsage,
) -> Vec<AccountPlanSummary> {
    #[derive(Default)]
    struct Acc {
        n: u64,
        before: u64,
        after: u64,
        touched: u64,
        removed: u64,
    }
    let mut by: std::collections::BTreeMap<&str, Acc> = std::collections::BTreeMap::new();
    let after_by: FxHashMap<&str, &IdentityGrants> = after.iter().map(|g| (g.arn.as_str(), g)).collect();
    for g in before.iter().filter(|g| matches!(g.kind, IdentityKind::User | IdentityKind::Role)) {
        let u = usage_of(&g.arn);
        let b = identity_score(catalog, cfg, g, u).pci.score;
        let af = after_by.get(g.arn.as_str()).map_or(b, |ag| identity_score(catalog, cfg, ag, u).pci.score);
        let acc = by.entry(g.account.as_str()).or_default();
        acc.n += 1;
        acc.before += u64::from(b);
        acc.after += u64::from(af);
    }
    for p in planned {
        let acc = by.entry(p.plan.account.as_str()).or_default();
        acc.touched += 1;
        acc.removed += p.plan.removed.len() as u64;
    }
    by.into_iter()
        .map(|(account, a)| {
            let mean = |s: u64| if a.n == 0 { 0.0 } else { (s as f64 / a.n as f64 * 100.0).round() / 100.0 };
            AccountPlanSummary {
                account: account.to_string(),
                identities_touched: a.touched,
                actions_removed: a.removed,
                pci_before: mean(a.before),
                pci_after: mean(a.after),
            }
        })
        .collect()
}

/// The two states a replay compares, and the window it replays.
struct Replayer<'a> {
    before: &'a crate::analyze::Entitlements,
    after: &'a crate::analyze::Entitlements,
    before_index: &'a FxHashMap<&'a str, usize>,
    after_index: &'a FxHashMap<&'a str, usize>,
    catalog: &'a Catalog,
    from: EventTime,
    to: EventTime,
}

/// How a state answers one request: denied, conditional, allowed.
fn judge(
    model: &AccessModel,
    who: Option<u32>,
    grants: Option<&IdentityGrants>,
    catalog: &Catalog,
    action: &str,
    resources: &[&str],
) -> Grade {
    let Some(g) = grants else { return Grade::No };
    let Some(id) = catalog.lookup(action) else { return Grade::Yes };
    if catalog.permissionless().contains(id) {
        return Grade::Yes;
    }
    if resources.is_empty() {
        return match (g.granted.contains(id), g.conditional.contains(id)) {
            (false, _) => Grade::No,
            (true, true) => Grade::Conditional,
            (true, false) => Grade::Yes,
        };
    }
    let Some(who) = who else { return Grade::No };
    resources.iter().map(|r| model.decide(who, action, r).grade).max().unwrap_or(Grade::No)
}

/// The event's resources that an action of `prefix` can be about: ARNs of the same service.
fn resources_for<'e>(ev: &'e Event, action: &str) -> Vec<&'e str> {
    let prefix = action.split(':').next().unwrap_or("");
    ev.resources
        .iter()
        .map(String::as_str)
        .filter(|r| {
            let mut parts = r.splitn(4, ':');
            parts.next() == Some("arn")
                && parts.next().is_some()
                && parts.next().is_some_and(|s| s.eq_ignore_ascii_case(prefix))
        })
        .collect()
}

/// Most distinct denied requests kept for the report (all are counted).
const DENIED_LISTED: usize = 100;
/// Per-thread cache of judged requests; cleared when full, so memory stays bounded.
const CACHE_CAP: usize = 200_000;

#[derive(Default)]
struct ReplayAcc {
    proof: ReplayProof,
    denied: FxHashMap<(String, String, String), (u64, String)>,
    cache: FxHashMap<u64, (Grade, Grade)>,
    requests: rustc_hash::FxHashSet<u64>,
    requests_overflow: bool,
}

fn replay(inputs: &[Input], normalizer: &Normalizer, r: &Replayer<'_>, threads: usize) -> Result<ReplayProof> {
    if inputs.is_empty() {
        return Ok(ReplayProof::default());
    }
    let (_, accs) = grantwatch_runtime::scan::for_each_event(
        inputs,
        &S3Config::default(),
        normalizer,
        grantwatch_files::ReadOptions::default(),
        threads,
        ReplayAcc::default,
        |acc, ev| replay_event(acc, r, ev),
    )
    .context("replaying the lookback")?;
    let mut proof = ReplayProof::default();
    let mut denied: FxHashMap<(String, String, String), (u64, String)> = FxHashMap::default();
    let mut requests = rustc_hash::FxHashSet::default();
    let mut overflow = false;
    for acc in accs {
        proof.events_replayed += acc.proof.events_replayed;
        proof.events_denied += acc.proof.events_denied;
        proof.events_unexplained_before += acc.proof.events_unexplained_before;
        proof.events_conditional += acc.proof.events_conditional;
        proof.events_other_identities += acc.proof.events_other_identities;
        overflow |= acc.requests_overflow;
        requests.extend(acc.requests);
        for (k, (n, ex)) in acc.denied {
            let e = denied.entry(k).or_insert((0, ex));
            e.0 += n;
        }
    }
    proof.requests = requests.len() as u64;
    if overflow {
        tracing::info!("More distinct requests than counted exactly; `requests` is a lower bound.");
    }
    let mut list: Vec<DeniedRequest> = denied
        .into_iter()
        .map(|((identity, action, resource), (events, example_event))| DeniedRequest {
            identity,
            action,
            resource,
            events,
            example_event,
        })
        .collect();
    list.sort_by(|a, b| b.events.cmp(&a.events).then_with(|| (&a.identity, &a.action).cmp(&(&b.identity, &b.action))));
    list.truncate(DENIED_LISTED);
    proof.denied = list;
    Ok(proof)
}

fn replay_event(acc: &mut ReplayAcc, r: &Replayer<'_>, ev: &Event) {
    if ev.status != Status::Success || ev.actions.is_empty() || ev.time < r.from || ev.time > r.to {
        return;
    }
    acc.proof.events_replayed += 1;
    let actor = ev.actor.uid.as_str();
    let (Some(&bi), Some(&ai)) = (r.before_index.get(actor), r.after_index.get(actor)) else {
        acc.proof.events_other_identities += 1;
        return;
    };
    let (bg, ag) = (r.before.grants.get(bi), r.after.grants.get(ai));
    let (bw, aw) = (r.before.model.subject(actor), r.after.model.subject(actor));
    let mut worst_before = Grade::Yes;
    let mut worst_after = Grade::Yes;
    let mut newly_denied: Option<(&str, String)> = None;
    for action in &ev.actions {
        let resources = resources_for(ev, action);
        let key = {
            use std::hash::{Hash, Hasher};
            let mut h = rustc_hash::FxHasher::default();
            (actor, action.as_str(), &resources).hash(&mut h);
            h.finish()
        };
        if acc.requests.len() < CACHE_CAP {
            acc.requests.insert(key);
        } else {
            acc.requests_overflow = true;
        }
        let (b, a) = match acc.cache.get(&key) {
            Some(&pair) => pair,
            None => {
                let b = judge(&r.before.model, bw, bg, r.catalog, action, &resources);
                let a = judge(&r.after.model, aw, ag, r.catalog, action, &resources);
                if acc.cache.len() >= CACHE_CAP {
                    acc.cache.clear();
                }
                acc.cache.insert(key, (b, a));
                (b, a)
            }
        };
        worst_before = worst_before.min(b);
        worst_after = worst_after.min(a);
        if b > Grade::No && a == Grade::No && newly_denied.is_none() {
            newly_denied = Some((action, resources.first().map_or_else(|| "*".to_string(), |r| r.to_string())));
        }
    }
    if worst_before == Grade::No {
        tracing::debug!(event = %ev.uid, actor, actions = ?ev.actions, resources = ?ev.resources, "Replayed event not explained by the snapshot before.");
        acc.proof.events_unexplained_before += 1;
        return;
    }
    if let Some((action, resource)) = newly_denied {
        acc.proof.events_denied += 1;
        let key = (actor.to_string(), action.to_string(), resource);
        let room = acc.denied.len() < 10 * DENIED_LISTED;
        match acc.denied.get_mut(&key) {
            Some(e) => e.0 += 1,
            None if room => {
                acc.denied.insert(key, (1, ev.uid.clone()));
            }
            None => {}
        }
        return;
    }
    if worst_after == Grade::Conditional {
        acc.proof.events_conditional += 1;
    }
}

fn write_summary(w: &mut dyn Write, o: &PlanOutcome, out: &Path) -> std::io::Result<()> {
    let p = &o.plan;
    writeln!(
        w,
        "grantwatch remediate plan — as of {} (lookback {} days, scope {:?})",
        p.as_of.to_rfc3339(),
        p.lookback_days,
        p.scope
    )?;
    writeln!(w)?;
    let removed: usize = p.identities.iter().map(|i| i.removed.len()).sum();
    writeln!(
        w,
        "Identities touched: {}   actions removed: {}   skipped: {}",
        p.identities.len(),
        removed,
        p.skipped.len()
    )?;
    let r = &p.replay;
    writeln!(
        w,
        "Replay of the lookback against the plan: {} events replayed ({} distinct requests), {} denied \
         ({} not explained by the snapshot before either, {} of callers outside it, {} conditional)",
        r.events_replayed,
        r.requests,
        r.events_denied,
        r.events_unexplained_before,
        r.events_other_identities,
        r.events_conditional
    )?;
    if o.records_quarantined + o.files_quarantined > 0 {
        writeln!(
            w,
            "Quarantined input: {} files, {} records (reasons in {})",
            o.files_quarantined,
            o.records_quarantined,
            out.join("analysis").join("ingest_report.json").display()
        )?;
    }
    writeln!(w)?;
    writeln!(w, "{:<14} {:>10} {:>10} {:>12}", "account", "identities", "removed", "PCI")?;
    for a in &p.accounts {
        writeln!(
            w,
            "{:<14} {:>10} {:>10} {:>5.1} → {:<5.1}",
            a.account, a.identities_touched, a.actions_removed, a.pci_before, a.pci_after
        )?;
    }
    writeln!(w)?;
    let mut top: Vec<_> = p.identities.iter().collect();
    top.sort_by(|a, b| b.removed.len().cmp(&a.removed.len()).then_with(|| a.arn.cmp(&b.arn)));
    for i in top.iter().take(10) {
        writeln!(
            w,
            "  {:<60} {:>6} removed, {:>4} kept   PCI {:>3} → {:<3}  ({:?})",
            i.arn,
            i.removed.len(),
            i.granted_after,
            i.pci_before,
            i.pci_after,
            i.reason
        )?;
    }
    writeln!(w)?;
    if o.written {
        writeln!(w, "Plan: {}   after: {}", out.join("plan.json").display(), out.join("after").display())?;
        writeln!(
            w,
            "Review it, then: grantwatch remediate apply --plan {} --journal FILE",
            out.join("plan.json").display()
        )?;
    } else {
        writeln!(
            w,
            "REFUSED: {} past calls would be denied after the plan; see {}",
            r.events_denied,
            out.join("refused.json").display()
        )?;
        for d in r.denied.iter().take(10) {
            writeln!(
                w,
                "  {} {} on {} ×{} (e.g. event {})",
                d.identity, d.action, d.resource, d.events, d.example_event
            )?;
        }
    }
    writeln!(
        w,
        "Took {:.2} s (analyze {:.2} s, {} records; replay {:.2} s)",
        o.elapsed.as_secs_f64(),
        o.analyze_elapsed.as_secs_f64(),
        o.records_read,
        o.replay_elapsed.as_secs_f64()
    )
}
