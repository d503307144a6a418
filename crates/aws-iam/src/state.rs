//! Pure: what a call does to an identity's IAM state, whether that state already holds, and how two
//! states differ (the drift check).

use grantwatch_types::{AccessKeyState, IamCall, IdentityIamState, NamedDocument, Prior};
use serde_json::Value;

/// A policy document as IAM returns it: URL-encoded JSON (or plain JSON), as a JSON value. `None` when
/// it is neither.
pub fn decode_document(s: &str) -> Option<Value> {
    if s.trim_start().starts_with('{')
        && let Ok(v) = serde_json::from_str::<Value>(s)
    {
        return Some(v);
    }
    let decoded = percent_encoding::percent_decode_str(s).decode_utf8().ok()?;
    serde_json::from_str(&decoded).ok()
}

/// Whether two policy documents say the same: IAM keeps a document as it was written, and a plan
/// carries it as grantwatch re-wrote it (`Action` always a list, `Version` added), so they are compared
/// for meaning, not spelling: a lone string is a one-element list, lists and statements are sets,
/// object keys are unordered, and `Version`/`Id` are left aside.
pub fn same_document(a: &Value, b: &Value) -> bool {
    canonical_document(a) == canonical_document(b)
}

fn canonical_document(doc: &Value) -> Value {
    let Some(o) = doc.as_object() else { return doc.clone() };
    let statements = match o.get("Statement") {
        Some(Value::Array(items)) => items.clone(),
        Some(one @ Value::Object(_)) => vec![one.clone()],
        _ => Vec::new(),
    };
    let mut statements: Vec<Value> = statements.iter().map(canonical_statement).collect();
    statements.sort_by_key(Value::to_string);
    statements.dedup();
    serde_json::json!({ "Statement": statements })
}

fn canonical_statement(s: &Value) -> Value {
    let Some(o) = s.as_object() else { return s.clone() };
    let mut out = serde_json::Map::new();
    for (k, v) in o {
        let v = match k.as_str() {
            "Action" | "NotAction" | "Resource" | "NotResource" => string_set(v),
            "Principal" | "NotPrincipal" => match v {
                Value::Object(p) => Value::Object(p.iter().map(|(k, v)| (k.clone(), string_set(v))).collect()),
                other => other.clone(),
            },
            "Condition" => match v {
                Value::Object(ops) => Value::Object(
                    ops.iter()
                        .map(|(op, keys)| {
                            let keys = match keys {
                                Value::Object(m) => {
                                    Value::Object(m.iter().map(|(k, v)| (k.clone(), string_set(v))).collect())
                                }
                                other => other.clone(),
                            };
                            (op.clone(), keys)
                        })
                        .collect(),
                ),
                other => other.clone(),
            },
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    Value::Object(out)
}

/// A string or a list of strings as a sorted, deduplicated list (other values as they are).
fn string_set(v: &Value) -> Value {
    match v {
        Value::String(_) => Value::Array(vec![v.clone()]),
        Value::Array(items) => {
            let mut items = items.clone();
            items.sort_by_key(Value::to_string);
            items.dedup();
            Value::Array(items)
        }
        other => other.clone(),
    }
}

/// Sorts every list the way [`IdentityIamState`] promises (managed policies, inline policies by name,
/// groups, keys by id), so that states compare as values.
pub fn normalize(state: &mut IdentityIamState) {
    state.managed_policies.sort();
    state.managed_policies.dedup();
    state.inline_policies.sort_by(|a, b| a.name.cmp(&b.name));
    state.groups.sort();
    state.groups.dedup();
    state.access_keys.sort_by(|a, b| a.access_key_id.cmp(&b.access_key_id));
}

/// Applies a call's effect to the state of the identity it acts on. Calls on policies themselves
/// (create, delete, versions) and on permission sets leave an identity's IAM state as it is.
pub fn apply_effect(state: &mut IdentityIamState, call: &IamCall) {
    match call {
        IamCall::AttachPolicy { policy_arn, .. } => {
            if !state.managed_policies.contains(policy_arn) {
                state.managed_policies.push(policy_arn.clone());
            }
        }
        IamCall::DetachPolicy { policy_arn, .. } => state.managed_policies.retain(|p| p != policy_arn),
        IamCall::DeleteInlinePolicy { policy_name, .. } => state.inline_policies.retain(|p| &p.name != policy_name),
        IamCall::PutInlinePolicy { policy_name, document, .. } => {
            state.inline_policies.retain(|p| &p.name != policy_name);
            state.inline_policies.push(NamedDocument { name: policy_name.clone(), document: document.clone() });
        }
        IamCall::RemoveUserFromGroup { group, .. } => state.groups.retain(|g| g != group),
        IamCall::AddUserToGroup { group, .. } => {
            if !state.groups.contains(group) {
                state.groups.push(group.clone());
            }
        }
        IamCall::UpdateAccessKey { access_key_id, status, .. } => {
            for k in state.access_keys.iter_mut().filter(|k| &k.access_key_id == access_key_id) {
                k.status.clone_from(status);
            }
        }
        IamCall::CreatePolicy { .. }
        | IamCall::DeletePolicyVersion { .. }
        | IamCall::DeletePolicy { .. }
        | IamCall::UpdatePermissionSet { .. } => {}
    }
    normalize(state);
}

/// Whether the identity's state already is what the call makes it. `None` for calls whose target is
/// not the identity's state (policies, permission sets): those need a read of their own.
pub fn target_holds(state: &IdentityIamState, call: &IamCall) -> Option<bool> {
    Some(match call {
        IamCall::AttachPolicy { policy_arn, .. } => state.managed_policies.contains(policy_arn),
        IamCall::DetachPolicy { policy_arn, .. } => !state.managed_policies.contains(policy_arn),
        IamCall::DeleteInlinePolicy { policy_name, .. } => {
            !state.inline_policies.iter().any(|p| &p.name == policy_name)
        }
        IamCall::PutInlinePolicy { policy_name, document, .. } => {
            state.inline_policies.iter().any(|p| &p.name == policy_name && same_document(&p.document, document))
        }
        IamCall::RemoveUserFromGroup { group, .. } => !state.groups.contains(group),
        IamCall::AddUserToGroup { group, .. } => state.groups.contains(group),
        // A key that is gone grants nothing: deactivating it is moot (re-activating it fails, loudly).
        IamCall::UpdateAccessKey { access_key_id, status, .. } => match key(state, access_key_id) {
            Some(k) => &k.status == status,
            None => status != "Active",
        },
        IamCall::CreatePolicy { .. }
        | IamCall::DeletePolicyVersion { .. }
        | IamCall::DeletePolicy { .. }
        | IamCall::UpdatePermissionSet { .. } => return None,
    })
}

fn key<'a>(state: &'a IdentityIamState, id: &str) -> Option<&'a AccessKeyState> {
    state.access_keys.iter().find(|k| k.access_key_id == id)
}

/// What an identity-state call replaces, from the state before it (the fields of [`Prior`] that
/// concern it). Policy and permission-set calls read their prior from IAM instead.
pub fn prior_of(state: &IdentityIamState, call: &IamCall) -> Prior {
    let mut prior = Prior::default();
    match call {
        IamCall::AttachPolicy { policy_arn, .. } | IamCall::DetachPolicy { policy_arn, .. } => {
            prior.attached = Some(state.managed_policies.contains(policy_arn));
        }
        IamCall::DeleteInlinePolicy { policy_name, .. } | IamCall::PutInlinePolicy { policy_name, .. } => {
            prior.document = state.inline_policies.iter().find(|p| &p.name == policy_name).map(|p| p.document.clone());
        }
        IamCall::RemoveUserFromGroup { group, .. } | IamCall::AddUserToGroup { group, .. } => {
            prior.member = Some(state.groups.contains(group));
        }
        IamCall::UpdateAccessKey { access_key_id, .. } => {
            prior.status = key(state, access_key_id).map(|k| k.status.clone())
        }
        IamCall::CreatePolicy { .. }
        | IamCall::DeletePolicyVersion { .. }
        | IamCall::DeletePolicy { .. }
        | IamCall::UpdatePermissionSet { .. } => {}
    }
    prior
}

/// Every difference between what is expected and what IAM has, in words (an identity's name is added
/// by the caller). Empty when they are equal. Documents are compared for meaning ([`same_document`]).
pub fn diff(expected: &IdentityIamState, live: &IdentityIamState) -> Vec<String> {
    let mut out = Vec::new();
    for p in &live.managed_policies {
        if !expected.managed_policies.contains(p) {
            out.push(format!("managed policy {p} is attached, the plan does not expect it"));
        }
    }
    for p in &expected.managed_policies {
        if !live.managed_policies.contains(p) {
            out.push(format!("managed policy {p} is not attached any more"));
        }
    }
    for p in &live.inline_policies {
        match expected.inline_policies.iter().find(|e| e.name == p.name) {
            None => out.push(format!("inline policy {} exists, the plan does not expect it", p.name)),
            Some(e) if !same_document(&e.document, &p.document) => {
                out.push(format!("inline policy {}: its document changed", p.name));
            }
            Some(_) => {}
        }
    }
    for e in &expected.inline_policies {
        if !live.inline_policies.iter().any(|p| p.name == e.name) {
            out.push(format!("inline policy {} is gone", e.name));
        }
    }
    for g in &live.groups {
        if !expected.groups.contains(g) {
            out.push(format!("member of group {g}, the plan does not expect it"));
        }
    }
    for g in &expected.groups {
        if !live.groups.contains(g) {
            out.push(format!("not a member of group {g} any more"));
        }
    }
    for k in &live.access_keys {
        match key(expected, &k.access_key_id) {
            None => out.push(format!("access key {} ({}) is new", k.access_key_id, k.status)),
            Some(e) if e.status != k.status => {
                out.push(format!("access key {} is {}, the plan expects {}", k.access_key_id, k.status, e.status));
            }
            Some(_) => {}
        }
    }
    for e in &expected.access_keys {
        if key(live, &e.access_key_id).is_none() {
            out.push(format!("access key {} is gone", e.access_key_id));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantwatch_types::IdentityKind;
    use grantwatch_types::Subject;
    use serde_json::json;

    fn alice() -> Subject {
        Subject { kind: IdentityKind::User, name: "alice".into(), arn: "arn:aws:iam::111122223333:user/alice".into() }
    }

    fn state() -> IdentityIamState {
        IdentityIamState {
            managed_policies: vec!["arn:aws:iam::aws:policy/ReadOnlyAccess".into()],
            inline_policies: vec![NamedDocument { name: "s3".into(), document: json!({"Statement": []}) }],
            groups: vec!["devs".into()],
            access_keys: vec![AccessKeyState { access_key_id: "AKIA1".into(), status: "Active".into() }],
        }
    }

    #[test]
    fn documents_decode_from_url_encoding_or_plain_json() {
        let plain = r#"{"Version":"2012-10-17","Statement":[]}"#;
        let enc = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
        assert_eq!(decode_document(plain), decode_document(enc));
        assert_eq!(decode_document(enc).unwrap()["Version"], "2012-10-17");
        assert_eq!(decode_document("%7Bnot json"), None);
    }

    #[test]
    fn effects_targets_and_priors_agree() {
        let calls = [
            IamCall::AttachPolicy { subject: alice(), policy_arn: "arn:aws:iam::111122223333:policy/keep".into() },
            IamCall::DetachPolicy { subject: alice(), policy_arn: "arn:aws:iam::aws:policy/ReadOnlyAccess".into() },
            IamCall::DeleteInlinePolicy { subject: alice(), policy_name: "s3".into() },
            IamCall::RemoveUserFromGroup { subject: alice(), group: "devs".into() },
            IamCall::UpdateAccessKey { subject: alice(), access_key_id: "AKIA1".into(), status: "Inactive".into() },
        ];
        let mut s = state();
        for call in &calls {
            assert_eq!(target_holds(&s, call), Some(false), "{call:?}");
            apply_effect(&mut s, call);
            assert_eq!(target_holds(&s, call), Some(true), "{call:?}");
        }
        assert_eq!(s.managed_policies, vec!["arn:aws:iam::111122223333:policy/keep".to_string()]);
        assert!(s.inline_policies.is_empty() && s.groups.is_empty());
        assert_eq!(s.access_keys[0].status, "Inactive");
        let before = state();
        assert_eq!(prior_of(&before, &calls[1]).attached, Some(true));
        assert_eq!(prior_of(&before, &calls[2]).document, Some(json!({"Statement": []})));
        assert_eq!(prior_of(&before, &calls[3]).member, Some(true));
        assert_eq!(prior_of(&before, &calls[4]).status.as_deref(), Some("Active"));
    }

    #[test]
    fn diff_names_every_difference_and_nothing_else() {
        assert!(diff(&state(), &state()).is_empty());
        let mut live = state();
        live.managed_policies.push("arn:aws:iam::aws:policy/AdministratorAccess".into());
        live.inline_policies[0].document = json!({"Statement": [{"Effect": "Allow"}]});
        live.groups.clear();
        live.access_keys[0].status = "Inactive".into();
        live.access_keys.push(AccessKeyState { access_key_id: "AKIA2".into(), status: "Active".into() });
        let d = diff(&state(), &live);
        assert_eq!(d.len(), 5, "{d:?}");
        assert!(d.iter().any(|x| x.contains("AdministratorAccess")));
        assert!(d.iter().any(|x| x.contains("inline policy s3: its document changed")));
        assert!(d.iter().any(|x| x.contains("not a member of group devs")));
        assert!(d.iter().any(|x| x.contains("AKIA1 is Inactive")));
        assert!(d.iter().any(|x| x.contains("AKIA2")));
    }

    #[test]
    fn key_order_inside_documents_does_not_matter() {
        let a = IdentityIamState {
            inline_policies: vec![NamedDocument { name: "p".into(), document: json!({"A": 1, "B": [1, 2]}) }],
            ..IdentityIamState::default()
        };
        let b = IdentityIamState {
            inline_policies: vec![NamedDocument {
                name: "p".into(),
                document: serde_json::from_str(r#"{"B":[1,2],"A":1}"#).unwrap(),
            }],
            ..IdentityIamState::default()
        };
        assert!(diff(&a, &b).is_empty());
    }

    #[test]
    fn documents_compare_by_meaning_not_spelling() {
        let written = json!({"Statement": {"Effect": "Allow", "Action": "s3:GetObject", "Resource": ["b", "a"],
            "Condition": {"StringEquals": {"aws:PrincipalTag/team": "x"}}}});
        let rewritten = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject"],
            "Resource": ["a", "b"], "Condition": {"StringEquals": {"aws:PrincipalTag/team": ["x"]}}}]});
        assert!(same_document(&written, &rewritten));
        let other = json!({"Statement": [{"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": ["a", "b"]}]});
        assert!(!same_document(&written, &other));
    }
}
