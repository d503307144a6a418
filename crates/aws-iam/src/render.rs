//! One line per call, as the dry run and the progress print it: operation, subject, parameters.
//! Policy documents are summarized (statements, actions, size), never printed whole; nothing here
//! ever holds a credential.

use grantwatch_types::IdentityKind;
use grantwatch_types::{IamCall, Subject};
use serde_json::Value;

/// `user/alice`, `role/deploy`, `group/devs`.
pub fn subject(s: &Subject) -> String {
    let kind = match s.kind {
        IdentityKind::Role => "role",
        IdentityKind::Group => "group",
        _ => "user",
    };
    format!("{kind}/{}", s.name)
}

/// A document in a few words: `2 statements, 7 actions, 412 bytes`.
pub fn document_summary(doc: &Value) -> String {
    let statements: Vec<&Value> = match doc.get("Statement") {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(s @ Value::Object(_)) => vec![s],
        _ => Vec::new(),
    };
    let actions: usize = statements
        .iter()
        .map(|s| match s.get("Action").or_else(|| s.get("NotAction")) {
            Some(Value::Array(a)) => a.len(),
            Some(Value::String(_)) => 1,
            _ => 0,
        })
        .sum();
    let bytes = doc.to_string().len();
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    format!("{}, {}, {bytes} bytes", plural(statements.len(), "statement"), plural(actions, "action"))
}

/// `AttachUserPolicy user/alice policy=arn:...`.
pub fn call_line(call: &IamCall) -> String {
    let op = call.operation();
    match call {
        IamCall::CreatePolicy { policy_arn, description, document, .. } => {
            format!("{op} {policy_arn} document=[{}] description={description:?}", document_summary(document))
        }
        IamCall::AttachPolicy { subject: s, policy_arn } | IamCall::DetachPolicy { subject: s, policy_arn } => {
            format!("{op} {} policy={policy_arn}", subject(s))
        }
        IamCall::DeleteInlinePolicy { subject: s, policy_name } => format!("{op} {} inline={policy_name}", subject(s)),
        IamCall::PutInlinePolicy { subject: s, policy_name, document } => {
            format!("{op} {} inline={policy_name} document=[{}]", subject(s), document_summary(document))
        }
        IamCall::RemoveUserFromGroup { subject: s, group } | IamCall::AddUserToGroup { subject: s, group } => {
            format!("{op} {} group={group}", subject(s))
        }
        IamCall::UpdateAccessKey { subject: s, access_key_id, status } => {
            format!("{op} {} key={access_key_id} status={status}", subject(s))
        }
        IamCall::DeletePolicyVersion { policy_arn, version_id } => format!("{op} {policy_arn} version={version_id}"),
        IamCall::DeletePolicy { policy_arn } => format!("{op} {policy_arn}"),
        IamCall::UpdatePermissionSet { permission_set_name, inline_policy, detach_managed, attach_managed } => {
            let mut s = format!("{op} permission-set={permission_set_name}");
            if let Some(doc) = inline_policy {
                s.push_str(&format!(" inline=[{}]", document_summary(doc)));
            }
            for p in detach_managed {
                s.push_str(&format!(" +DetachManagedPolicyFromPermissionSet={p}"));
            }
            for p in attach_managed {
                s.push_str(&format!(" +AttachManagedPolicyToPermissionSet={p}"));
            }
            s.push_str(" +ProvisionPermissionSet=ALL_PROVISIONED_ACCOUNTS");
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_summarize_documents() {
        let doc = json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"},
            {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"}]});
        let call = IamCall::CreatePolicy {
            policy_arn: "arn:aws:iam::111122223333:policy/gw/keep".into(),
            policy_name: "keep".into(),
            path: "/gw/".into(),
            description: "kept".into(),
            document: doc.clone(),
        };
        let line = call_line(&call);
        assert!(
            line.starts_with(
                "CreatePolicy arn:aws:iam::111122223333:policy/gw/keep document=[2 statements, 3 actions, "
            )
        );
        assert!(!line.contains("s3:GetObject"), "documents are summarized: {line}");
        let s = Subject { kind: IdentityKind::Role, name: "r".into(), arn: String::new() };
        assert_eq!(
            call_line(&IamCall::DetachPolicy { subject: s, policy_arn: "arn:p".into() }),
            "DetachRolePolicy role/r policy=arn:p"
        );
    }
}
