//! `grantwatch who-can`: reads the snapshots, the organization and the resource policies, and asks
//! [`grantwatch_core::access`] who can perform one action on one resource.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use grantwatch_core::access::{
    AccessModel, Decision, Grade, ResourcePolicy, StatementRef, WhoCanAnswer, parse_resource_policies,
};
use grantwatch_core::catalog::Catalog;
use grantwatch_core::iam::IamSnapshot;
use grantwatch_core::org::Organization;

/// What the access questions read.
#[derive(Debug, Clone, Default)]
pub struct AccessInputs {
    pub iam: Vec<PathBuf>,
    pub organization: Option<PathBuf>,
    pub resource_policies: Vec<PathBuf>,
}

/// The inputs, read and parsed.
pub struct Loaded {
    pub snapshot: IamSnapshot,
    pub organization: Option<Organization>,
    pub resource_policies: Vec<ResourcePolicy>,
}

pub fn load(inputs: &AccessInputs) -> Result<Loaded> {
    let (snapshot, _) = crate::analyze::load_snapshot(&inputs.iam)?;
    let organization = inputs.organization.as_deref().map(read_organization).transpose()?;
    let resource_policies = read_resource_policies(&inputs.resource_policies)?;
    Ok(Loaded { snapshot, organization, resource_policies })
}

/// Reads the Organizations file (`docs/organizations.md`).
pub fn read_organization(file: &Path) -> Result<Organization> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Ok(Organization::parse(&text, &file.display().to_string())?)
}

/// Reads resource-policies files (`docs/access.md`), in order.
pub fn read_resource_policies(files: &[PathBuf]) -> Result<Vec<ResourcePolicy>> {
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        out.extend(parse_resource_policies(&text, &file.display().to_string())?);
    }
    Ok(out)
}

/// `who-can`'s answer, as printed with `--format json` (schema: `schemas/who_can.v1.json`).
#[derive(Debug, Serialize)]
pub struct WhoCanReport {
    pub action: String,
    pub resource: String,
    pub identities: Vec<WhoCanEntry>,
    /// For a role (`sts:AssumeRole` on a role ARN): every principal its trust policy names, including
    /// services, identity providers and accounts outside the snapshot.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trusted_principals: Vec<TrustedPrincipal>,
}

#[derive(Debug, Serialize)]
pub struct WhoCanEntry {
    pub arn: String,
    pub kind: String,
    /// `allowed`, or `conditional` when a Condition along the way decides.
    pub access: &'static str,
    /// Roles assumed in turn, empty when the identity can do it itself.
    pub via: Vec<ChainStep>,
    /// The statements allowing the request (of the identity, or of the chain's last role).
    pub statements: Vec<StatementView>,
}

#[derive(Debug, Serialize)]
pub struct ChainStep {
    pub assume: String,
    pub access: &'static str,
    pub statements: Vec<StatementView>,
}

#[derive(Debug, Serialize)]
pub struct StatementView {
    /// A managed policy's ARN, `inline:<identity>:<name>`, `trust:<role>`, `resource:<arn>`, `scp:...`.
    pub policy: String,
    pub statement: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    pub effect: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct TrustedPrincipal {
    pub principal: String,
    pub statement: StatementView,
}

fn access_word(g: Grade) -> &'static str {
    match g {
        Grade::Yes => "allowed",
        Grade::Conditional => "conditional",
        Grade::No => "denied",
    }
}

pub fn statement_view(model: &AccessModel, r: StatementRef) -> Option<StatementView> {
    let (src, st) = model.statement(r)?;
    Some(StatementView {
        policy: src.label.clone(),
        statement: r.index,
        sid: st.sid.clone(),
        effect: match st.effect {
            grantwatch_core::iam::Effect::Allow => "Allow",
            grantwatch_core::iam::Effect::Deny => "Deny",
        },
        condition: st.condition.as_deref().and_then(|c| serde_json::from_str(c).ok()),
    })
}

fn views(model: &AccessModel, d: &Decision) -> Vec<StatementView> {
    d.statements.iter().filter_map(|&r| statement_view(model, r)).collect()
}

/// Answers one who-can question on a built model.
pub fn who_can(model: &AccessModel, catalog: &Catalog, action: &str, resource: &str) -> Result<WhoCanReport> {
    let Some(id) = catalog.lookup(action) else {
        bail!("{action:?} is not an action of the AWS catalog (spell it service:Action, e.g. s3:GetObject)");
    };
    let action = catalog.name(id).to_string();
    let edges = model.assume_edges();
    let answers = model.who_can(&action, resource, &edges);
    let entry = |a: &WhoCanAnswer| {
        let s = &model.subjects[a.subject as usize];
        WhoCanEntry {
            arn: s.arn.clone(),
            kind: s.kind.as_str().to_string(),
            access: access_word(a.grade),
            via: a
                .chain
                .iter()
                .map(|(role, d)| ChainStep {
                    assume: model.subjects[*role as usize].arn.clone(),
                    access: access_word(d.grade),
                    statements: views(model, d),
                })
                .collect(),
            statements: views(model, &a.decision),
        }
    };
    let mut identities: Vec<WhoCanEntry> = answers.iter().map(entry).collect();
    identities.sort_by(|a, b| (a.via.len(), &a.arn).cmp(&(b.via.len(), &b.arn)));
    let trusted_principals = match model.subject(resource) {
        Some(role) if action.eq_ignore_ascii_case("sts:AssumeRole") => model
            .trusted_principals(role)
            .into_iter()
            .filter_map(|(principal, r)| Some(TrustedPrincipal { principal, statement: statement_view(model, r)? }))
            .collect(),
        _ => Vec::new(),
    };
    Ok(WhoCanReport { action, resource: resource.to_string(), identities, trusted_principals })
}

/// The human-readable rendering.
pub fn render_text(r: &WhoCanReport, out: &mut impl std::io::Write) -> std::io::Result<()> {
    writeln!(out, "who can {} on {}: {} identities", r.action, r.resource, r.identities.len())?;
    for e in &r.identities {
        let cond = if e.access == "conditional" { "  [conditional]" } else { "" };
        writeln!(out, "\n{} ({}){cond}", e.arn, e.kind)?;
        for step in &e.via {
            writeln!(
                out,
                "  -> assumes {}{}",
                step.assume,
                if step.access == "conditional" { " [conditional]" } else { "" }
            )?;
            for s in &step.statements {
                write_statement(out, s, "       ")?;
            }
        }
        for s in &e.statements {
            write_statement(out, s, "     ")?;
        }
    }
    if !r.trusted_principals.is_empty() {
        writeln!(out, "\ntrust policy principals:")?;
        for t in &r.trusted_principals {
            writeln!(out, "  {}", t.principal)?;
            write_statement(out, &t.statement, "     ")?;
        }
    }
    Ok(())
}

fn write_statement(out: &mut impl std::io::Write, s: &StatementView, indent: &str) -> std::io::Result<()> {
    let sid = s.sid.as_deref().map(|x| format!(" {x:?}")).unwrap_or_default();
    write!(out, "{indent}{} statement {}{sid} ({})", s.policy, s.statement, s.effect)?;
    match &s.condition {
        Some(c) => writeln!(out, " if {c}"),
        None => writeln!(out),
    }
}
