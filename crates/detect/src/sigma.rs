//! SigmaHQ rules evaluated on a CloudTrail-shaped view of each normalized [`Event`].
//!
//! **Crate.** Parsing and evaluation are done by `rsigma-parser` + `rsigma-eval` (the `rsigma` project):
//! it is released every few weeks, implements the Sigma specification's modifiers, `N of` conditions,
//! keywords, `null` and `fieldref`, and compiles rules once into matchers behind an inverted index on
//! exact field values, so an event only meets the rules that could match it. `sigma-rust` 0.7 also
//! parses all 108 SigmaHQ cloud rules, but it evaluates every rule on every event and is released
//! rarely. We pin rsigma 0.23: later releases need a newer Rust than the toolchain we build with.
//! This module is glue only: it keeps the rule metadata grantwatch reports, runs one engine per cloud
//! (a rule only sees events of its `logsource.product`) and builds the document rules read.
//!
//! **Document.** [`sigma_document`] turns the normalized event back into CloudTrail's own field names
//! (what SigmaHQ's AWS rules are written against); fields the event does not have are absent, and an
//! absent field matches a rule's `null` exactly like a JSON `null`. Two additions the rules need: a
//! `status` field (`success`/`failure`, one SigmaHQ rule filters on it), and for Azure and GCP events
//! the provider field names the Azure and GCP rules read (`operationName`, `CategoryValue`,
//! `properties.message`, `gcp.audit.method_name`, `data.protoPayload.authorizationInfo`, ...: see
//! [`azure_fields`] and [`gcp_fields`]).
//! `eventType` is the one CloudTrail field rules read that the normalized event does not carry (see
//! `rules/sigma/README.md`).
//! Rules are evaluated on [`SigmaView`], which computes that document field by field as rules read
//! it (building it whole for every event cost more than the rules did).
//!
//! **Objects.** A rule that matches a string against a field holding an object (SigmaHQ has
//! `requestParameters|contains: 'Suspended'`) compares against the object's compact JSON text with
//! sorted keys; the crate alone would never match an object, which would leave those rules dead.

use std::borrow::Cow;
use std::cell::OnceCell;

use grantwatch_core::cloudtrail::UNKNOWN;
use grantwatch_types::{Actor, Cloud, Event, IdentityKind, Severity, Status};
use rsigma_eval::Engine;
use rsigma_eval::event::{Event as SigmaEvent, EventValue, JsonEvent};
use rsigma_parser::Level;
use serde_json::{Map, Value};

/// One loaded rule's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigmaRule {
    /// The rule's `id` (a UUID), or its path when it has none.
    pub id: String,
    pub title: String,
    pub description: String,
    pub level: Severity,
    /// ATT&CK and other tags as the rule spells them (`attack.t1562.008`).
    pub tags: Vec<String>,
    /// The path the rule was loaded from, as the caller named it.
    pub path: String,
    /// `logsource.product`, lower case: `aws`, `azure` or `gcp`.
    pub product: String,
    pub service: String,
    pub author: String,
    pub references: Vec<String>,
    /// Whether the rule's detection reads `errorCode`, `errorMessage` or `status`: it decides about
    /// failed calls itself. A rule that does not is written for what happened; a failed call it
    /// matches (an attempt that AWS denied) is reported one severity lower.
    pub judges_failures: bool,
}

/// Why a rule (or a whole file) was not loaded. Never fatal for the other rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigmaError {
    #[error("{path}: not a valid Sigma document: {reason}")]
    Parse { path: String, reason: String },
    #[error("{path}: no detection rule in the file")]
    Empty { path: String },
    #[error("{path}: {what} rules are not supported (only single-event detection rules)")]
    Unsupported { path: String, what: &'static str },
    #[error("{path}: rule {title:?} has logsource.product {product:?}; grantwatch evaluates aws, azure and gcp")]
    Product { path: String, title: String, product: Option<String> },
    #[error("{path}: rule {title:?} cannot be compiled: {reason}")]
    Compile { path: String, title: String, reason: String },
}

/// The loaded rules, compiled into one engine per cloud.
pub struct SigmaSet {
    rules: Vec<SigmaRule>,
    /// Indexed by [`slot`]. Each engine rule's id is its index into `rules` (set at load), which is how a
    /// match result finds its way back to the metadata.
    engines: [Engine; 5],
}

impl std::fmt::Debug for SigmaSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigmaSet").field("rules", &self.rules.len()).finish_non_exhaustive()
    }
}

fn slot(cloud: Cloud) -> usize {
    cloud.index()
}

fn product_slot(product: &str) -> Option<usize> {
    match product {
        "aws" => Some(0),
        "azure" => Some(1),
        "gcp" => Some(2),
        "okta" => Some(3),
        "google_workspace" => Some(4),
        _ => None,
    }
}

fn severity(level: Option<Level>) -> Severity {
    match level {
        Some(Level::Informational) => Severity::Informational,
        Some(Level::Low) => Severity::Low,
        // The spec leaves `level` optional; a rule without one is neither noise nor an emergency.
        Some(Level::Medium) | None => Severity::Medium,
        Some(Level::High) => Severity::High,
        Some(Level::Critical) => Severity::Critical,
    }
}

impl SigmaSet {
    /// Loads rules from (path, yaml text) pairs. A rule that fails to parse is reported, not fatal.
    pub fn load(sources: &[(String, String)]) -> (SigmaSet, Vec<SigmaError>) {
        let mut set = SigmaSet { rules: Vec::new(), engines: std::array::from_fn(|_| Engine::new()) };
        let mut errors = Vec::new();
        for (path, text) in sources {
            set.load_one(path, text, &mut errors);
        }
        (set, errors)
    }

    fn load_one(&mut self, path: &str, text: &str, errors: &mut Vec<SigmaError>) {
        let collection = match rsigma_parser::parse_sigma_yaml(text) {
            Ok(c) => c,
            Err(e) => {
                errors.push(SigmaError::Parse { path: path.to_string(), reason: e.to_string() });
                return;
            }
        };
        for reason in &collection.errors {
            errors.push(SigmaError::Parse { path: path.to_string(), reason: reason.clone() });
        }
        if !collection.correlations.is_empty() {
            errors.push(SigmaError::Unsupported { path: path.to_string(), what: "correlation" });
        }
        if !collection.filters.is_empty() {
            errors.push(SigmaError::Unsupported { path: path.to_string(), what: "filter" });
        }
        if collection.rules.is_empty() && collection.errors.is_empty() {
            errors.push(SigmaError::Empty { path: path.to_string() });
        }
        let several = collection.rules.len() > 1;
        let judges_failures = detection_reads_outcome(text);
        for (n, rule) in collection.rules.into_iter().enumerate() {
            let product = rule.logsource.product.as_deref().map(str::to_ascii_lowercase);
            let Some(engine_slot) = product.as_deref().and_then(product_slot) else {
                errors.push(SigmaError::Product { path: path.to_string(), title: rule.title, product });
                continue;
            };
            let index = self.rules.len();
            let meta = SigmaRule {
                id: match (&rule.id, several) {
                    (Some(id), _) => id.clone(),
                    (None, false) => path.to_string(),
                    (None, true) => format!("{path}#{n}"),
                },
                title: rule.title.clone(),
                description: rule.description.clone().unwrap_or_default(),
                level: severity(rule.level),
                tags: rule.tags.clone(),
                path: path.to_string(),
                product: product.unwrap_or_default(),
                service: rule.logsource.service.clone().unwrap_or_default(),
                author: rule.author.clone().unwrap_or_default(),
                references: rule.references.clone(),
                judges_failures,
            };
            let mut compiled = rule;
            compiled.id = Some(index.to_string());
            match self.engines[engine_slot].add_rule(&compiled) {
                Ok(()) => self.rules.push(meta),
                Err(e) => errors.push(SigmaError::Compile {
                    path: path.to_string(),
                    title: meta.title,
                    reason: e.to_string(),
                }),
            }
        }
    }

    pub fn rules(&self) -> &[SigmaRule] {
        &self.rules
    }

    /// Indices (into rules()) of the rules matching the event, ascending; `out` is cleared first. Only
    /// rules whose logsource product matches the event's cloud are evaluated.
    pub fn matching(&self, ev: &Event, out: &mut Vec<usize>) {
        out.clear();
        let engine = &self.engines[slot(ev.cloud)];
        if engine.rule_count() == 0 {
            return;
        }
        let view = SigmaView::new(ev);
        for m in engine.evaluate(&view) {
            if let Some(i) = m.header.rule_id.as_deref().and_then(|id| id.parse::<usize>().ok()) {
                out.push(i);
            }
        }
        out.sort_unstable();
        out.dedup();
    }
}

/// Whether the `detection:` block of a rule file names a field that carries a call's outcome.
fn detection_reads_outcome(text: &str) -> bool {
    let mut inside = false;
    for line in text.lines() {
        if !line.starts_with([' ', '\t']) && !line.trim().is_empty() {
            inside = line.starts_with("detection:");
            continue;
        }
        let field = line.trim_start().trim_start_matches("- ");
        if inside && ["errorCode", "errorMessage", "status:", "status|"].iter().any(|f| field.starts_with(f)) {
            return true;
        }
    }
    false
}

/// A field holding an object reads as the object's canonical JSON text (see the module docs).
fn objects_as_text(v: EventValue<'_>) -> EventValue<'_> {
    match v {
        EventValue::Map(_) => EventValue::Str(Cow::Owned(canonical_json(&v.to_json()))),
        EventValue::Array(items) => EventValue::Array(items.into_iter().map(objects_as_text).collect()),
        other => other,
    }
}

/// Compact JSON with object keys sorted (by code point), whatever order the map keeps: the text an
/// object field is matched as. Python's `json.dumps(v, sort_keys=True, separators=(",", ":"),
/// ensure_ascii=False)` writes the same text (the reference in `tools/sigma_reference.py` relies on it).
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(val, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, val) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(val, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn text(s: &str) -> Value {
    Value::String(s.to_string())
}

/// The document rules are evaluated on: the normalized event in CloudTrail's own field names.
///
/// eventID, eventTime (RFC 3339), eventSource, eventName, awsRegion, recipientAccountId,
/// sourceIPAddress, userAgent, errorCode, errorMessage, additionalEventData, readOnly, userIdentity,
/// requestParameters, responseElements, resources (`[{"ARN": ...}]`), plus `status` and the Azure/GCP names described in the module docs.
/// A field the event lacks is left out (never `null`).
pub fn sigma_document(ev: &Event) -> Value {
    let mut doc = Map::new();
    doc.insert("eventID".into(), text(&ev.uid));
    doc.insert("eventTime".into(), Value::String(ev.time.to_rfc3339()));
    doc.insert("eventSource".into(), text(&ev.api.service));
    doc.insert("eventName".into(), text(&ev.api.operation));
    // The normalizer writes UNKNOWN where the record named no region or account: not a real value.
    if ev.region != UNKNOWN {
        doc.insert("awsRegion".into(), text(&ev.region));
    }
    if ev.account_uid != UNKNOWN {
        doc.insert("recipientAccountId".into(), text(&ev.account_uid));
    }
    if let Some(ip) = &ev.src_ip {
        doc.insert("sourceIPAddress".into(), text(ip));
    }
    if let Some(ua) = &ev.user_agent {
        doc.insert("userAgent".into(), text(ua));
    }
    if let Some(code) = &ev.status_code {
        doc.insert("errorCode".into(), text(code));
    }
    if let Some(message) = &ev.error_message {
        doc.insert("errorMessage".into(), text(message));
    }
    if let Some(extra) = additional_event_data(ev) {
        doc.insert("additionalEventData".into(), extra);
    }
    if let Some(ro) = ev.read_only {
        doc.insert("readOnly".into(), Value::Bool(ro));
    }
    let failed = ev.status == Status::Failure;
    doc.insert("status".into(), text(if failed { "failure" } else { "success" }));
    doc.insert("userIdentity".into(), Value::Object(user_identity(&ev.actor)));
    if let Some(req) = request_parameters(ev) {
        doc.insert("requestParameters".into(), req);
    }
    if let Some(resp) = response_elements(ev) {
        doc.insert("responseElements".into(), resp);
    }
    if !ev.resources.is_empty() {
        let res = ev
            .resources
            .iter()
            .map(|r| {
                let mut m = Map::new();
                m.insert("ARN".into(), text(r));
                Value::Object(m)
            })
            .collect();
        doc.insert("resources".into(), Value::Array(res));
    }
    match ev.cloud {
        Cloud::Aws | Cloud::Okta | Cloud::GoogleWorkspace => {}
        Cloud::Azure => azure_fields(ev, &mut doc),
        Cloud::Gcp => gcp_fields(ev, &mut doc),
    }
    Value::Object(doc)
}

/// Inserts `value` at the dotted `path` of `doc`, making the objects on the way.
fn put_path(doc: &mut Map<String, Value>, path: &str, value: Value) {
    let mut at = doc;
    let mut keys = path.split('.').peekable();
    while let Some(key) = keys.next() {
        if keys.peek().is_none() {
            at.insert(key.to_string(), value);
            return;
        }
        let next = at.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
        if !next.is_object() {
            *next = Value::Object(Map::new());
        }
        let Value::Object(m) = next else { return };
        at = m;
    }
}

/// The string member `key` of the event's `additional` document.
fn additional_str(additional: Option<&Value>, key: &str) -> Option<String> {
    additional?.get(key)?.as_str().map(str::to_string)
}

/// `/subscriptions/s/resourceGroups/rg/providers/...` → `rg`.
fn resource_group(resource_id: &str) -> Option<&str> {
    let mut parts = resource_id.split('/');
    parts.by_ref().find(|p| p.eq_ignore_ascii_case("resourcegroups"))?;
    parts.next().filter(|p| !p.is_empty())
}

/// The Azure Activity Log names SigmaHQ's Azure rules read, in the two spellings they use: the
/// diagnostic export's (`operationName`, `category`, `properties.message`, `resultType`) and Sentinel's
/// `AzureActivity` table (`OperationNameValue`, `CategoryValue`, `ResourceProviderValue`, `ResourceId`,
/// `ActivityStatusValue`, `Caller`, ...). Where the two spell a field alike but for case (`resourceId`,
/// `ResourceId`) only one is set: SQL backends (and pySigma's reference) fold column names. Each is set only from what the event holds: `additional.category` and
/// `additional.message` are the record's own `category` and `properties.message`, absent when the
/// record had none (never guessed from the operation).
fn azure_fields(ev: &Event, doc: &mut Map<String, Value>) {
    let op = text(&ev.api.operation);
    doc.insert("operationName".into(), op.clone());
    doc.insert("OperationNameValue".into(), op);
    doc.insert("ResourceProviderValue".into(), text(&ev.api.service));
    if let Some(first) = ev.resources.first() {
        doc.insert("ResourceId".into(), text(first));
        if let Some(rg) = resource_group(first) {
            doc.insert("ResourceGroup".into(), text(rg));
        }
    }
    // The export's `resultType` and Sentinel's status column: what the final record said.
    let outcome = text(if ev.status == Status::Failure { "Failure" } else { "Success" });
    doc.insert("ActivityStatusValue".into(), outcome.clone());
    doc.insert("resultType".into(), outcome);
    if ev.account_uid != UNKNOWN {
        doc.insert("SubscriptionId".into(), text(&ev.account_uid));
    }
    let caller = ev.actor.name.as_deref().or(ev.actor.principal_id.as_deref());
    if let Some(c) = caller {
        doc.insert("Caller".into(), text(c));
    }
    if let Some(ip) = &ev.src_ip {
        doc.insert("CallerIpAddress".into(), text(ip));
    }
    let additional = ev.additional.as_ref().and_then(|r| r.parse());
    if let Some(category) = additional_str(additional.as_ref(), "category") {
        doc.insert("CategoryValue".into(), text(&category));
        doc.insert("category".into(), Value::String(category));
    }
    let mut props = Map::new();
    if let Some(message) = additional_str(additional.as_ref(), "message") {
        props.insert("message".into(), Value::String(message));
    }
    if let Some(req) = ev.request.as_ref().and_then(|r| r.parse()) {
        props.insert("requestbody".into(), req);
    }
    if let Some(resp) = ev.response.as_ref().and_then(|r| r.parse()) {
        props.insert("responseBody".into(), resp);
    }
    if !props.is_empty() {
        doc.insert("properties".into(), Value::Object(props));
    }
}

/// `v1.compute.vpnTunnels.insert` → `compute.vpnTunnels.insert`: Compute Engine logs versioned method
/// names (`v1.`, `beta.`, `alpha.`), which some rules spell without the version.
fn unversioned_compute(method: &str) -> Option<&str> {
    let (version, rest) = method.split_once('.')?;
    let versioned = version == "beta"
        || version == "alpha"
        || (version.starts_with('v') && version[1..].chars().next().is_some_and(|c| c.is_ascii_digit()));
    (versioned && rest.starts_with("compute.")).then_some(rest)
}

/// `authorizationInfo` as rules read it: each entry's booleans as text (`granted: 'true'` in the
/// rules; Sigma compares strings, and the log writes a JSON boolean).
fn authorization_info(additional: Option<&Value>) -> Option<Value> {
    let entries = additional?.get("authorizationInfo")?.as_array()?;
    let entries = entries
        .iter()
        .map(|e| match e {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| match v {
                        Value::Bool(b) => (k.clone(), text(if *b { "true" } else { "false" })),
                        other => (k.clone(), other.clone()),
                    })
                    .collect(),
            ),
            other => other.clone(),
        })
        .collect();
    Some(Value::Array(entries))
}

/// The Cloud Audit Log names SigmaHQ's GCP rules read: the ECS names of Elastic's GCP integration
/// (`gcp.audit.method_name`, `service_name`, `resource_name`, `authorization_info`, ...) and the
/// LogEntry's own under `data.protoPayload` (`methodName`, `serviceName`, `authorizationInfo`,
/// `logName`, `resource.type`, `request`, `response`). The documents are under `data.protoPayload` only:
/// no rule reads ECS's `gcp.audit.request`, and a second copy of their arrays squares what an evaluator
/// that expands arrays into rows (pySigma's reference) must hold.
///
/// - `gcp.audit.method_name` also carries the other spellings of the call: the permissions it
///   exercised (`iam.serviceAccounts.disable` for `google.iam.admin.v1.DisableServiceAccount`) and a
///   Compute method without its version. Several SigmaHQ rules name those (see `docs/gcp.md`); with
///   several spellings the field is an array, which Sigma matches when any member does.
/// - `data.protoPayload.logName` is the log id (`cloudaudit.googleapis.com%2Factivity`), the value the
///   break-glass rule compares by equality; `data.logName` is the LogEntry's full name.
/// - `event.original` (ECS: the raw event as text) holds the request and response documents as
///   compact JSON, so keyword rules find what full-text search over the raw entry would, keys
///   included: the break-glass rule's keyword is a pod annotation's *key*.
fn gcp_fields(ev: &Event, doc: &mut Map<String, Value>) {
    let op = ev.api.operation.as_str();
    let mut names = vec![text(op)];
    let mut add_name = |n: &str| {
        if !names.iter().any(|x| x.as_str().is_some_and(|x| x.eq_ignore_ascii_case(n))) {
            names.push(text(n));
        }
    };
    if let Some(plain) = unversioned_compute(op) {
        add_name(plain);
    }
    for action in &ev.actions {
        add_name(action);
    }
    let method_name = if names.len() == 1 { names.swap_remove(0) } else { Value::Array(names) };
    let additional = ev.additional.as_ref().and_then(|r| r.parse());
    let request = ev.request.as_ref().and_then(|r| r.parse());
    let response = ev.response.as_ref().and_then(|r| r.parse());
    let authz = authorization_info(additional.as_ref());
    let log_name = additional_str(additional.as_ref(), "logName");
    let resource_type = additional.as_ref().and_then(|a| a.pointer("/resource/type")).and_then(Value::as_str);

    put_path(doc, "gcp.audit.method_name", method_name);
    put_path(doc, "gcp.audit.service_name", text(&ev.api.service));
    let proto =
        |doc: &mut Map<String, Value>, key: &str, v: Value| put_path(doc, &format!("data.protoPayload.{key}"), v);
    proto(doc, "methodName", text(op));
    proto(doc, "serviceName", text(&ev.api.service));
    if let Some(first) = ev.resources.first() {
        put_path(doc, "gcp.audit.resource_name", text(first));
        proto(doc, "resourceName", text(first));
    }
    if let Some(email) = ev.actor.name.as_deref() {
        put_path(doc, "gcp.audit.authentication_info.principal_email", text(email));
        proto(doc, "authenticationInfo.principalEmail", text(email));
    }
    if let Some(ip) = &ev.src_ip {
        put_path(doc, "gcp.audit.request_metadata.caller_ip", text(ip));
        proto(doc, "requestMetadata.callerIp", text(ip));
    }
    if let Some(ua) = &ev.user_agent {
        put_path(doc, "gcp.audit.request_metadata.caller_supplied_user_agent", text(ua));
        proto(doc, "requestMetadata.callerSuppliedUserAgent", text(ua));
    }
    if let Some(code) = &ev.status_code {
        put_path(doc, "gcp.audit.status.code", text(code));
        proto(doc, "status.code", text(code));
    }
    if let Some(message) = &ev.error_message {
        put_path(doc, "gcp.audit.status.message", text(message));
        proto(doc, "status.message", text(message));
    }
    if let Some(a) = authz {
        put_path(doc, "gcp.audit.authorization_info", a.clone());
        proto(doc, "authorizationInfo", a);
    }
    if let Some(name) = log_name {
        let id = name.rsplit_once("/logs/").map_or(name.as_str(), |(_, id)| id);
        proto(doc, "logName", text(id));
        put_path(doc, "data.logName", text(&name));
    }
    if let Some(t) = resource_type {
        proto(doc, "resource.type", text(t));
        put_path(doc, "data.resource.type", text(t));
    }
    let mut original = Vec::new();
    if let Some(req) = request {
        original.push(canonical_json(&req));
        proto(doc, "request", req);
    }
    if let Some(resp) = response {
        original.push(canonical_json(&resp));
        proto(doc, "response", resp);
    }
    if !original.is_empty() {
        put_path(doc, "event.original", Value::String(original.join("\n")));
    }
}

/// `requestParameters` as rules see it.
fn request_parameters(ev: &Event) -> Option<Value> {
    let mut req = ev.request.as_ref().and_then(|r| r.parse())?;
    // CloudTrail logs a user-data change as `requestParameters.userData`; SigmaHQ's startup-script
    // rule reads `requestParameters.attribute: userData`, the form of the read call. Say both.
    if ev.api.operation == "ModifyInstanceAttribute"
        && let Some(m) = req.as_object_mut()
        && m.contains_key("userData")
        && !m.contains_key("attribute")
    {
        m.insert("attribute".into(), text("userData"));
    }
    Some(req)
}

/// `responseElements` as rules see it.
fn response_elements(ev: &Event) -> Option<Value> {
    match ev.response.as_ref().and_then(|r| r.parse()) {
        Some(resp) => Some(resp),
        // CloudTrail writes the console sign-in outcome into responseElements; a record that lost it
        // (or a source that never had it) gets it back from the status.
        None if is_console_login(ev) => {
            let outcome = if ev.status == Status::Failure { "Failure" } else { "Success" };
            let mut m = Map::new();
            m.insert("ConsoleLogin".into(), text(outcome));
            Some(Value::Object(m))
        }
        None => None,
    }
}

fn is_console_login(ev: &Event) -> bool {
    ev.api.service == "signin.amazonaws.com" && ev.api.operation == "ConsoleLogin"
}

fn additional_event_data(ev: &Event) -> Option<Value> {
    ev.additional.as_ref().and_then(|r| r.parse())
}

/// [`sigma_document`] without building it: what rules read is computed when they read it. Most
/// events meet few rules, and those read a handful of top-level strings the event already holds, so
/// building the whole document (a tree of owned strings, the request and response parsed) cost more
/// than the rules themselves. The nested objects are built once, on first read; a path this view does
/// not resolve itself (through an array, with escapes or indexes), a keyword search and an Azure or
/// GCP event use the whole document, built on first need. `view_equals_document` holds the two equal.
pub struct SigmaView<'a> {
    ev: &'a Event,
    time: OnceCell<String>,
    identity: OnceCell<UserIdentity<'a>>,
    identity_object: OnceCell<Value>,
    request: OnceCell<Option<Value>>,
    response: OnceCell<Option<Value>>,
    additional: OnceCell<Option<Value>>,
    whole: OnceCell<JsonEvent<'static>>,
}

impl<'a> SigmaView<'a> {
    pub fn new(ev: &'a Event) -> Self {
        SigmaView {
            ev,
            time: OnceCell::new(),
            identity: OnceCell::new(),
            identity_object: OnceCell::new(),
            request: OnceCell::new(),
            response: OnceCell::new(),
            additional: OnceCell::new(),
            whole: OnceCell::new(),
        }
    }

    fn whole(&self) -> &JsonEvent<'static> {
        self.whole.get_or_init(|| JsonEvent::owned(sigma_document(self.ev)))
    }

    fn in_document(&self, path: &str) -> Option<EventValue<'_>> {
        self.whole().get_field(path).map(objects_as_text)
    }

    /// A top-level field of an AWS event, `None` when the document leaves it out.
    fn root(&self, key: &str) -> Option<EventValue<'_>> {
        let ev = self.ev;
        let s = |v: &'a str| Some(EventValue::Str(Cow::Borrowed(v)));
        match key {
            "eventID" => s(&ev.uid),
            "eventTime" => Some(EventValue::Str(Cow::Borrowed(self.time.get_or_init(|| ev.time.to_rfc3339())))),
            "eventSource" => s(&ev.api.service),
            "eventName" => s(&ev.api.operation),
            "awsRegion" => (ev.region != UNKNOWN).then_some(EventValue::Str(Cow::Borrowed(ev.region.as_str()))),
            "recipientAccountId" => {
                (ev.account_uid != UNKNOWN).then_some(EventValue::Str(Cow::Borrowed(ev.account_uid.as_str())))
            }
            "sourceIPAddress" => ev.src_ip.as_deref().and_then(s),
            "userAgent" => ev.user_agent.as_deref().and_then(s),
            "errorCode" => ev.status_code.as_deref().and_then(s),
            "errorMessage" => ev.error_message.as_deref().and_then(s),
            "readOnly" => ev.read_only.map(EventValue::Bool),
            "status" => s(if ev.status == Status::Failure { "failure" } else { "success" }),
            "resources" if !ev.resources.is_empty() => self.in_document(key),
            _ => self.object(key).map(EventValue::from),
        }
    }

    fn identity(&self) -> &UserIdentity<'a> {
        self.identity.get_or_init(|| UserIdentity::of(&self.ev.actor))
    }

    /// The nested objects of an AWS event's document, built on first read.
    fn object(&self, key: &str) -> Option<&Value> {
        let ev = self.ev;
        match key {
            "userIdentity" => Some(self.identity_object.get_or_init(|| Value::Object(self.identity().to_map()))),
            "requestParameters" => self.request.get_or_init(|| request_parameters(ev)).as_ref(),
            "responseElements" => self.response.get_or_init(|| response_elements(ev)).as_ref(),
            "additionalEventData" => self.additional.get_or_init(|| additional_event_data(ev)).as_ref(),
            _ => None,
        }
    }
}

impl SigmaEvent for SigmaView<'_> {
    fn get_field(&self, path: &str) -> Option<EventValue<'_>> {
        // Escapes, indexes and empty segments: the crate's own path parser, on the whole document.
        if self.ev.cloud != Cloud::Aws || path.contains(['[', '\\']) || path.contains("..") || path.ends_with('.') {
            return self.in_document(path);
        }
        let Some((root, rest)) = path.split_once('.') else {
            return self.root(path).map(objects_as_text);
        };
        // The identity's leaves, the fields rules read most, without building the object.
        if root == "userIdentity" {
            let identity = self.identity();
            if !identity.is_object(rest) {
                return identity.leaf(rest).map(|v| EventValue::Str(Cow::Borrowed(v)));
            }
        }
        // `a.b.c` under one of the nested objects: walk the objects; an array on the way fans out in
        // the crate's path semantics, which the whole document gives.
        let Some(mut at) = self.object(root) else {
            return match root {
                "resources" if !self.ev.resources.is_empty() => self.in_document(path),
                _ => None,
            };
        };
        for key in rest.split('.') {
            match at {
                Value::Object(m) => at = m.get(key)?,
                Value::Array(_) => return self.in_document(path),
                _ => return None,
            }
        }
        Some(objects_as_text(EventValue::from(at)))
    }

    fn any_string_value(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        self.whole().any_string_value(pred)
    }

    fn all_string_values(&self) -> Vec<Cow<'_, str>> {
        self.whole().all_string_values()
    }

    fn visit_string_values(&self, visit: &mut dyn FnMut(&str)) {
        self.whole().visit_string_values(visit)
    }

    fn to_json(&self) -> Value {
        self.whole().to_json()
    }

    fn field_keys(&self) -> Vec<Cow<'_, str>> {
        self.whole().field_keys()
    }

    fn top_level_keys(&self) -> Option<Vec<Cow<'_, str>>> {
        let mut keys = Vec::new();
        self.visit_top_level_keys(&mut |k| keys.push(Cow::Owned(k.to_string())));
        Some(keys)
    }

    /// The keys the document may have: a key named here whose value turns out absent (a request that
    /// does not parse) only costs the index a lookup that finds nothing.
    fn visit_top_level_keys(&self, visit: &mut dyn FnMut(&str)) -> bool {
        let ev = self.ev;
        if ev.cloud != Cloud::Aws {
            return self.whole().visit_top_level_keys(visit);
        }
        for key in ["eventID", "eventTime", "eventSource", "eventName", "status", "userIdentity"] {
            visit(key);
        }
        let optional = [
            ("awsRegion", ev.region != UNKNOWN),
            ("recipientAccountId", ev.account_uid != UNKNOWN),
            ("sourceIPAddress", ev.src_ip.is_some()),
            ("userAgent", ev.user_agent.is_some()),
            ("errorCode", ev.status_code.is_some()),
            ("errorMessage", ev.error_message.is_some()),
            ("additionalEventData", ev.additional.is_some()),
            ("readOnly", ev.read_only.is_some()),
            ("requestParameters", ev.request.is_some()),
            ("responseElements", ev.response.is_some() || is_console_login(ev)),
            ("resources", !ev.resources.is_empty()),
        ];
        for (key, present) in optional {
            if present {
                visit(key);
            }
        }
        true
    }
}

/// `arn:aws:iam::111122223333:role/path/Name` → (`aws`, `111122223333`, `Name`).
fn arn_parts(arn: &str) -> Option<(&str, &str, &str)> {
    let mut it = arn.splitn(6, ':');
    if it.next() != Some("arn") {
        return None;
    }
    let partition = it.next()?;
    let _service = it.next()?;
    let _region = it.next()?;
    let account = it.next()?;
    let resource = it.next()?;
    Some((partition, account, resource.rsplit('/').next().unwrap_or(resource)))
}

/// CloudTrail's `userIdentity`, inverted from the actor the normalizer resolved (see
/// `grantwatch_core::cloudtrail::normalize`): a role session's actor is the role, so its session ARN
/// (`assumed-role/Name/session`) is rebuilt from the role and the session name; a federated user's
/// actor is the IAM user, recognizable by its session name. Leaves only: [`UserIdentity::to_map`] is
/// the object, [`UserIdentity::leaf`] one field of it without building it.
struct UserIdentity<'a> {
    kind: Option<&'static str>,
    arn: Option<Cow<'a, str>>,
    account: Option<&'a str>,
    user_name: Option<&'a str>,
    principal_id: Option<&'a str>,
    access_key_id: Option<&'a str>,
    invoked_by: Option<&'a str>,
    /// `sessionContext`: the issuer's type (its ARN, account and name are the actor's), and the MFA flag.
    issuer: Option<&'static str>,
    mfa: Option<bool>,
    actor: &'a Actor,
}

impl<'a> UserIdentity<'a> {
    fn of(a: &'a Actor) -> Self {
        let uid_arn = a.uid.starts_with("arn:").then_some(a.uid.as_str());
        let parts = uid_arn.and_then(arn_parts);
        let account = a.account_uid.as_deref().or(parts.map(|p| p.1)).filter(|s| !s.is_empty());
        let mut user_name = None;
        let mut issuer = None;
        let (kind, arn): (Option<&'static str>, Option<Cow<'a, str>>) = match a.kind {
            IdentityKind::Root => (Some("Root"), uid_arn.map(Cow::Borrowed)),
            IdentityKind::User => match (&a.session_name, parts) {
                (Some(session), Some((partition, acct, _))) => {
                    issuer = Some("IAMUser");
                    let arn = format!("arn:{partition}:sts::{acct}:federated-user/{session}");
                    (Some("FederatedUser"), Some(Cow::Owned(arn)))
                }
                (Some(_), None) => (Some("FederatedUser"), None),
                (None, _) => {
                    user_name = a.name.as_deref();
                    (Some("IAMUser"), uid_arn.map(Cow::Borrowed))
                }
            },
            IdentityKind::Role => match parts {
                Some((partition, acct, role)) => {
                    issuer = Some("Role");
                    let name = a.name.as_deref().unwrap_or(role);
                    let arn = match &a.session_name {
                        Some(s) => format!("arn:{partition}:sts::{acct}:assumed-role/{name}/{s}"),
                        None => format!("arn:{partition}:sts::{acct}:assumed-role/{name}"),
                    };
                    (Some("AssumedRole"), Some(Cow::Owned(arn)))
                }
                None => (Some("AssumedRole"), None),
            },
            IdentityKind::Service => (Some("AWSService"), None),
            // Another account's root, as CloudTrail's AWSAccount identities are normalized.
            IdentityKind::External if a.uid.ends_with(":root") && uid_arn.is_some() => (Some("AWSAccount"), None),
            // Web identity / SAML users and whatever else could not be resolved: the type is unknown.
            IdentityKind::External | IdentityKind::Group | IdentityKind::ServiceAccount => {
                (None, uid_arn.map(Cow::Borrowed))
            }
        };
        UserIdentity {
            kind,
            arn,
            account,
            user_name,
            principal_id: a.principal_id.as_deref(),
            access_key_id: a.access_key_id.as_deref(),
            invoked_by: a.invoked_by.as_deref(),
            issuer,
            mfa: a.mfa_authenticated,
            actor: a,
        }
    }

    fn mfa_text(&self) -> Option<&'static str> {
        self.mfa.map(|m| if m { "true" } else { "false" })
    }

    /// The string at `path` under `userIdentity` (`type`, `sessionContext.sessionIssuer.arn`, ...);
    /// `None` when the object has no such leaf (an object-valued path is not a leaf either).
    fn leaf(&self, path: &str) -> Option<&str> {
        match path {
            "type" => self.kind,
            "arn" => self.arn.as_deref(),
            "accountId" => self.account,
            "userName" => self.user_name,
            "principalId" => self.principal_id,
            "accessKeyId" => self.access_key_id,
            "invokedBy" => self.invoked_by,
            _ => {
                self.issuer?;
                match path.strip_prefix("sessionContext.")? {
                    "sessionIssuer.type" => self.issuer,
                    "sessionIssuer.arn" => Some(&self.actor.uid),
                    "sessionIssuer.accountId" => self.account,
                    "sessionIssuer.userName" => self.actor.name.as_deref(),
                    "attributes.mfaAuthenticated" => self.mfa_text(),
                    _ => None,
                }
            }
        }
    }

    /// Whether `path` names one of the object's objects (`sessionContext`, `sessionContext.attributes`).
    fn is_object(&self, path: &str) -> bool {
        self.issuer.is_some()
            && match path {
                "sessionContext" | "sessionContext.sessionIssuer" => true,
                "sessionContext.attributes" => self.mfa.is_some(),
                _ => false,
            }
    }

    fn to_map(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let put = |m: &mut Map<String, Value>, key: &str, v: Option<&str>| {
            if let Some(v) = v {
                m.insert(key.into(), text(v));
            }
        };
        if let Some(kind) = self.issuer {
            let mut iss = Map::new();
            put(&mut iss, "type", Some(kind));
            put(&mut iss, "arn", Some(&self.actor.uid));
            put(&mut iss, "accountId", self.account);
            put(&mut iss, "userName", self.actor.name.as_deref());
            let mut ctx = Map::new();
            ctx.insert("sessionIssuer".into(), Value::Object(iss));
            if let Some(mfa) = self.mfa_text() {
                let mut attrs = Map::new();
                put(&mut attrs, "mfaAuthenticated", Some(mfa));
                ctx.insert("attributes".into(), Value::Object(attrs));
            }
            m.insert("sessionContext".into(), Value::Object(ctx));
        }
        for key in ["userName", "type", "arn", "accountId", "principalId", "accessKeyId", "invokedBy"] {
            put(&mut m, key, self.leaf(key));
        }
        m
    }
}

fn user_identity(a: &Actor) -> Map<String, Value> {
    UserIdentity::of(a).to_map()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::print_stdout)]

    use super::*;
    use grantwatch_core::cloudtrail::Normalizer;
    use std::path::{Path, PathBuf};

    fn rules_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules/sigma")
    }

    fn collect(dir: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                collect(&p, out);
            } else if p.extension().is_some_and(|e| e == "yml") {
                let rel = p.strip_prefix(rules_dir()).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }

    fn all_rules() -> SigmaSet {
        let mut sources = Vec::new();
        collect(&rules_dir(), &mut sources);
        let (set, errors) = SigmaSet::load(&sources);
        assert!(errors.is_empty(), "{errors:?}");
        set
    }

    fn normalize(record: &str) -> Event {
        thread_local! { static N: Normalizer = Normalizer::aws().unwrap(); }
        N.with(|n| n.normalize(record.as_bytes())).unwrap()
    }

    fn record(source: &str, name: &str, identity: &str, extra: &str) -> String {
        format!(
            r#"{{"eventID":"e-{name}","eventTime":"2024-05-06T07:08:09Z","eventSource":"{source}","eventName":"{name}","awsRegion":"us-east-1","recipientAccountId":"111122223333","sourceIPAddress":"198.51.100.7","userAgent":"aws-cli/2.15","userIdentity":{identity}{extra}}}"#
        )
    }

    const USER: &str = r#"{"type":"IAMUser","principalId":"AIDAEXAMPLE","arn":"arn:aws:iam::111122223333:user/alice","accountId":"111122223333","accessKeyId":"AKIAEXAMPLE","userName":"alice"}"#;
    const ROLE: &str = r#"{"type":"AssumedRole","principalId":"AROAEXAMPLE:s1","arn":"arn:aws:sts::111122223333:assumed-role/Admin/s1","accountId":"111122223333","sessionContext":{"sessionIssuer":{"type":"Role","arn":"arn:aws:iam::111122223333:role/Admin","userName":"Admin"},"attributes":{"mfaAuthenticated":"false"}}}"#;

    fn titles(set: &SigmaSet, ev: &Event) -> Vec<String> {
        let mut out = Vec::new();
        set.matching(ev, &mut out);
        assert!(out.windows(2).all(|w| w[0] < w[1]));
        out.iter().map(|&i| set.rules()[i].title.clone()).collect()
    }

    #[test]
    fn loads_all_sigmahq_cloud_rules() {
        let set = all_rules();
        assert_eq!(set.rules().len(), 108);
        let count = |p: &str| set.rules().iter().filter(|r| r.product == p).count();
        assert_eq!((count("aws"), count("azure"), count("gcp")), (57, 35, 16));
        let stop = set.rules().iter().find(|r| r.title == "AWS CloudTrail Important Change").unwrap();
        assert_eq!(stop.id, "4db60cc0-36fb-42b7-9b58-a5b53019fb74");
        assert_eq!(stop.level, Severity::Medium);
        assert!(stop.tags.iter().any(|t| t == "attack.t1685.002"), "{:?}", stop.tags);
        assert_eq!(stop.path, "aws/cloudtrail/aws_cloudtrail_disable_logging.yml");
        assert_eq!(stop.service, "cloudtrail");
        assert!(!stop.author.is_empty() && !stop.references.is_empty() && !stop.description.is_empty());
        let mut ids: Vec<_> = set.rules().iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 108);
    }

    #[test]
    fn bad_rules_are_reported_and_the_rest_load() {
        let good = "title: T\nlogsource: {product: aws}\ndetection: {sel: {eventName: X}, condition: sel}\n";
        let sources = vec![
            ("bad.yml".to_string(), "title: [unclosed".to_string()),
            ("good.yml".to_string(), good.to_string()),
            ("linux.yml".to_string(), good.replace("aws", "linux")),
            ("nocond.yml".to_string(), "title: T\nlogsource: {product: aws}\ndetection: {sel: {a: b}}\n".into()),
        ];
        let (set, errors) = SigmaSet::load(&sources);
        assert_eq!(set.rules().len(), 1);
        assert_eq!(set.rules()[0].id, "good.yml");
        assert_eq!(set.rules()[0].level, Severity::Medium);
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors.iter().any(|e| matches!(e, SigmaError::Product { path, .. } if path == "linux.yml")));
        assert!(errors.iter().all(|e| !e.to_string().is_empty()));
    }

    #[test]
    fn stop_logging_matches_important_change() {
        let set = all_rules();
        let ev = normalize(&record(
            "cloudtrail.amazonaws.com",
            "StopLogging",
            USER,
            r#","requestParameters":{"name":"main"},"readOnly":false"#,
        ));
        assert_eq!(titles(&set, &ev), ["AWS CloudTrail Important Change"]);
    }

    #[test]
    fn status_conditions() {
        let set = all_rules();
        let ok =
            normalize(&record("s3.amazonaws.com", "DeleteBucket", USER, r#","requestParameters":{"bucketName":"b"}"#));
        assert_eq!(titles(&set, &ok), ["AWS Bucket Deleted"]);
        let failed = normalize(&record("s3.amazonaws.com", "DeleteBucket", USER, r#","errorCode":"AccessDenied""#));
        assert!(titles(&set, &failed).is_empty());
        // `status: success` is not CloudTrail's, but the document carries it for this rule.
        let saml = normalize(&record("iam.amazonaws.com", "DeleteSAMLProvider", USER, ""));
        assert_eq!(titles(&set, &saml), ["AWS SAML Provider Deletion Activity"]);
        let saml_failed = normalize(&record("iam.amazonaws.com", "DeleteSAMLProvider", USER, r#","errorCode":"X""#));
        assert!(titles(&set, &saml_failed).is_empty());
    }

    #[test]
    fn identity_filters_and_fieldref() {
        let set = all_rules();
        let by_user = normalize(&record("s3.amazonaws.com", "ListBuckets", USER, ""));
        assert_eq!(titles(&set, &by_user), ["Potential Bucket Enumeration on AWS"]);
        let by_role = normalize(&record("s3.amazonaws.com", "ListBuckets", ROLE, ""));
        assert_eq!(titles(&set, &by_role), ["AWS STS AssumeRole Misuse"]);
        // IMDS credentials: a role named aws:ec2-instance (no session issuer in the record).
        let imds_id = r#"{"type":"AssumedRole","arn":"arn:aws:sts::111122223333:assumed-role/aws:ec2-instance/i-0abc","accountId":"111122223333"}"#;
        let imds = normalize(&record("s3.amazonaws.com", "ListObjects", imds_id, ""));
        let imds_titles = titles(&set, &imds);
        let imds_rule = "Malicious Usage Of IMDS Credentials Outside Of AWS Infrastructure".to_string();
        assert!(imds_titles.contains(&imds_rule), "{imds_titles:?} for {}", sigma_document(&imds));
        let own = normalize(&record(
            "iam.amazonaws.com",
            "UpdateLoginProfile",
            USER,
            r#","requestParameters":{"userName":"arn:aws:iam::111122223333:user/alice"}"#,
        ));
        assert!(titles(&set, &own).is_empty());
        let other = normalize(&record(
            "iam.amazonaws.com",
            "UpdateLoginProfile",
            USER,
            r#","requestParameters":{"userName":"bob"}"#,
        ));
        assert_eq!(titles(&set, &other), ["AWS User Login Profile Was Modified"]);
    }

    #[test]
    fn objects_match_as_json_text() {
        let set = all_rules();
        let ev = normalize(&record(
            "s3.amazonaws.com",
            "PutBucketVersioning",
            USER,
            r#","requestParameters":{"bucketName":"b","VersioningConfiguration":{"Status":"Suspended"}}"#,
        ));
        assert_eq!(titles(&set, &ev), ["AWS S3 Bucket Versioning Disable"]);
        let view = SigmaView::new(&ev);
        let text = view.get_field("requestParameters").unwrap();
        assert_eq!(text.as_str().unwrap(), r#"{"VersioningConfiguration":{"Status":"Suspended"},"bucketName":"b"}"#);
    }

    #[test]
    fn document_uses_cloudtrail_names_and_omits_absent_fields() {
        let ev = normalize(&record("sts.amazonaws.com", "GetCallerIdentity", ROLE, r#","readOnly":true"#));
        let doc = sigma_document(&ev);
        assert_eq!(doc["eventName"], "GetCallerIdentity");
        assert_eq!(doc["eventTime"], "2024-05-06T07:08:09Z");
        assert_eq!(doc["readOnly"], true);
        assert_eq!(doc["userIdentity"]["type"], "AssumedRole");
        assert_eq!(doc["userIdentity"]["arn"], "arn:aws:sts::111122223333:assumed-role/Admin/s1");
        assert_eq!(doc["userIdentity"]["sessionContext"]["sessionIssuer"]["type"], "Role");
        assert_eq!(
            doc["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"],
            "arn:aws:iam::111122223333:role/Admin"
        );
        assert!(doc.get("errorCode").is_none() && doc.get("requestParameters").is_none());
        let login = normalize(&record("signin.amazonaws.com", "ConsoleLogin", USER, ""));
        assert_eq!(sigma_document(&login)["responseElements"]["ConsoleLogin"], "Success");
    }

    #[test]
    fn rules_only_see_their_cloud() {
        let set = all_rules();
        let mut ev = normalize(&record("cloudtrail.amazonaws.com", "StopLogging", USER, ""));
        ev.cloud = Cloud::Azure;
        assert!(titles(&set, &ev).is_empty());
        ev.api.operation = "MICROSOFT.KEYVAULT/VAULTS/KEYS/CREATE".into();
        assert_eq!(titles(&set, &ev), ["Azure Keyvault Key Modified or Deleted"]);
        ev.cloud = Cloud::Gcp;
        ev.api.operation = "storage.buckets.delete".into();
        assert!(titles(&set, &ev).contains(&"Google Cloud Storage Buckets Modified or Deleted".to_string()));
    }

    fn all_clouds() -> std::sync::Arc<grantwatch_core::catalog::Catalog> {
        static C: std::sync::OnceLock<std::sync::Arc<grantwatch_core::catalog::Catalog>> = std::sync::OnceLock::new();
        C.get_or_init(|| std::sync::Arc::new(grantwatch_core::catalog::Catalog::all_clouds().unwrap())).clone()
    }

    fn azure_export(op: &str, resource: &str, extra: serde_json::Value) -> Event {
        let mut rec = serde_json::json!({
            "time": "2024-05-03T08:00:00.1000000Z", "resourceId": resource, "operationName": op,
            "category": "Administrative", "resultType": "Success", "resultSignature": "Succeeded.OK",
            "callerIpAddress": "203.0.113.20", "correlationId": "c1",
            "identity": {"claims": {"http://schemas.microsoft.com/identity/claims/objectidentifier": "1a1a",
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn": "carol@fabrikam.com"}},
            "properties": {"message": op}
        });
        if let (Some(m), serde_json::Value::Object(e)) = (rec.as_object_mut(), extra) {
            m.extend(e);
        }
        grantwatch_core::azure::normalize_activity(rec.to_string().as_bytes(), &all_clouds()).unwrap()
    }

    #[test]
    fn azure_rules_read_category_message_and_provider() {
        let set = all_rules();
        // The AD FS rules need CategoryValue, ResourceProviderValue, ResourceId and OperationNameValue.
        let rid = "/SUBSCRIPTIONS/S1/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.ADHYBRIDHEALTHSERVICE/SERVICES/AdFederationService-contoso.com";
        let ev = azure_export("Microsoft.ADHybridHealthService/services/delete", rid, serde_json::json!({}));
        let doc = sigma_document(&ev);
        assert_eq!(doc["CategoryValue"], "Administrative");
        assert_eq!(doc["ResourceGroup"], "RG");
        assert_eq!(doc["ActivityStatusValue"], "Success");
        assert_eq!(titles(&set, &ev), ["Azure Active Directory Hybrid Health AD FS Service Delete"]);
        // A record without a category does not claim one: the rule stays silent.
        let mut uncategorized = ev.clone();
        uncategorized.additional = None;
        assert!(titles(&set, &uncategorized).is_empty());
        // Keyword rules find the operation; the device rule reads properties.message.
        let grant =
            azure_export("MICROSOFT.AUTHORIZATION/ROLEASSIGNMENTS/WRITE", "/SUBSCRIPTIONS/S1", serde_json::json!({}));
        assert_eq!(titles(&set, &grant), ["Granting Of Permissions To An Account"]);
        let device = azure_export(
            "Microsoft.Intune/x/write",
            "/SUBSCRIPTIONS/S1",
            serde_json::json!({"properties": {"message": "Delete device"}}),
        );
        assert_eq!(sigma_document(&device)["properties"]["message"], "Delete device");
        assert_eq!(titles(&set, &device), ["Azure Device or Configuration Modified or Deleted"]);
    }

    fn gcp_entry(
        method: &str,
        service: &str,
        perms: &[(&str, bool)],
        request: serde_json::Value,
        resource_type: &str,
    ) -> Event {
        let authz: Vec<serde_json::Value> =
            perms.iter().map(|(p, g)| serde_json::json!({"resource": "r", "permission": p, "granted": g})).collect();
        let entry = serde_json::json!({
            "protoPayload": {"@type": "type.googleapis.com/google.cloud.audit.AuditLog", "status": {},
                "authenticationInfo": {"principalEmail": "alice@example.com"},
                "requestMetadata": {"callerIp": "203.0.113.9"},
                "serviceName": service, "methodName": method, "authorizationInfo": authz,
                "resourceName": "projects/p/x", "request": request},
            "insertId": "i1", "resource": {"type": resource_type, "labels": {"project_id": "p"}},
            "timestamp": "2024-05-03T08:00:00Z",
            "logName": "projects/p/logs/cloudaudit.googleapis.com%2Factivity"
        });
        let n = grantwatch_core::gcp::GcpNormalizer::new(all_clouds()).unwrap();
        n.normalize(entry.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn gcp_rules_read_authorization_info_log_name_and_other_spellings() {
        let set = all_rules();
        let acm = "accesscontextmanager.googleapis.com";
        let perm = "accesscontextmanager.accessPolicies.delete";
        let deleted = gcp_entry(
            "google.identity.accesscontextmanager.v1.AccessContextManager.DeleteAccessPolicy",
            acm,
            &[(perm, true)],
            serde_json::json!({"name": "accessPolicies/1"}),
            "audited_resource",
        );
        assert_eq!(sigma_document(&deleted)["data"]["protoPayload"]["authorizationInfo"][0]["granted"], "true");
        assert_eq!(titles(&set, &deleted), ["GCP Access Policy Deleted"]);
        let refused = gcp_entry(
            "google.identity.accesscontextmanager.v1.AccessContextManager.DeleteAccessPolicy",
            acm,
            &[(perm, false)],
            serde_json::json!({"name": "accessPolicies/1"}),
            "audited_resource",
        );
        assert!(titles(&set, &refused).is_empty());
        // Break-glass: the log id, the resource type and the annotation key in the request.
        let pod = |annotation: &str| serde_json::json!({"kind": "Pod", "metadata": {"name": "p", "annotations": {annotation: "true"}}});
        let glass = gcp_entry(
            "io.k8s.core.v1.pods.create",
            "k8s.io",
            &[("io.k8s.core.v1.pods.create", true)],
            pod("image-policy.k8s.io/break-glass"),
            "k8s_cluster",
        );
        assert_eq!(sigma_document(&glass)["data"]["protoPayload"]["logName"], "cloudaudit.googleapis.com%2Factivity");
        assert_eq!(titles(&set, &glass), ["GCP Break-glass Container Workload Deployed"]);
        let plain = gcp_entry("io.k8s.core.v1.pods.create", "k8s.io", &[], pod("team"), "k8s_cluster");
        assert!(titles(&set, &plain).is_empty());
        // The permission spelling: IAM logs DisableServiceAccount, the rule names .serviceAccounts.disable.
        let disable = gcp_entry(
            "google.iam.admin.v1.DisableServiceAccount",
            "iam.googleapis.com",
            &[("iam.serviceAccounts.disable", true)],
            serde_json::json!({"name": "projects/-/serviceAccounts/1"}),
            "service_account",
        );
        assert_eq!(titles(&set, &disable), ["Google Cloud Service Account Disabled or Deleted"]);
        // Compute's versioned method, spelled without the version by the VPN rule.
        let vpn = gcp_entry(
            "v1.compute.vpnTunnels.insert",
            "compute.googleapis.com",
            &[("compute.vpnTunnels.create", true)],
            serde_json::json!({"name": "t"}),
            "vpn_tunnel",
        );
        assert_eq!(titles(&set, &vpn), ["Google Cloud VPN Tunnel Modified or Deleted"]);
    }

    /// Throughput of `matching` over synthetic AWS events with all rules loaded. Prints events/s; set
    /// GRANTWATCH_SIGMA_BENCH_EVENTS (e.g. 200000) and run with `--release -- --nocapture` to measure.
    #[test]
    fn throughput() {
        let set = all_rules();
        let n: usize =
            std::env::var("GRANTWATCH_SIGMA_BENCH_EVENTS").ok().and_then(|s| s.parse().ok()).unwrap_or(5_000);
        let names = [
            ("s3.amazonaws.com", "GetObject", true),
            ("s3.amazonaws.com", "PutObject", false),
            ("ec2.amazonaws.com", "DescribeInstances", true),
            ("iam.amazonaws.com", "CreateAccessKey", false),
            ("sts.amazonaws.com", "AssumeRole", false),
            ("kms.amazonaws.com", "Decrypt", true),
            ("cloudtrail.amazonaws.com", "StopLogging", false),
            ("lambda.amazonaws.com", "Invoke", false),
        ];
        let events: Vec<Event> = (0..64)
            .map(|i| {
                let (src, name, ro) = names[i % names.len()];
                let identity = if i % 3 == 0 { USER } else { ROLE };
                let extra = if ro {
                    r#","readOnly":true"#.to_string()
                } else {
                    format!(r#","readOnly":false,"requestParameters":{{"bucketName":"b{i}","key":"k/{i}"}},"responseElements":{{"x":{i}}}"#)
                };
                normalize(&record(src, name, identity, &extra))
            })
            .collect();
        let mut out = Vec::new();
        let mut hits = 0usize;
        let start = std::time::Instant::now();
        for i in 0..n {
            set.matching(&events[i % events.len()], &mut out);
            hits += out.len();
        }
        let secs = start.elapsed().as_secs_f64();
        println!("sigma throughput: {n} events, {hits} matches, {:.0} events/s", n as f64 / secs);
        assert!(hits > 0);
    }
}
