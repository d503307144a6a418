//! Which log an activity record comes from, read from its keys: one input (a directory, a Kafka
//! topic) may mix CloudTrail, Azure Activity Log, Entra sign-ins, GCP Cloud Audit Logs, the Okta
//! System Log and Google Workspace Reports, and each record goes to its own normalizer.
//!
//! The test is a search for a few quoted key names in the record's bytes, not a parse: the record
//! is parsed once, by the normalizer it is routed to. A key name can only appear quoted like this as
//! a key or as a whole string value (quotes inside a string are escaped), so a record can at worst
//! route itself to the wrong normalizer, which then rejects or misreads that record alone.

use memchr::memmem;

/// The log a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordShape {
    /// An AWS CloudTrail record (`eventSource`); also the default, whose normalizer names what is missing.
    CloudTrail,
    /// An Azure Activity Log entry (`operationName`, in the `az monitor activity-log list` or the
    /// diagnostic-settings export form).
    AzureActivity,
    /// An Entra ID sign-in (Graph `auditLogs/signIns`, or the diagnostic export's `SignInLogs`).
    EntraSignIn,
    /// A GCP Cloud Logging entry (`protoPayload`, or `logName` and `insertId`): audit entries are
    /// read, other entries (flow logs) counted as not API activity.
    GcpAudit,
    /// An Okta System Log event (`eventType` and `published`).
    OktaSystemLog,
    /// A Google Workspace Admin SDK Reports activity (`applicationName` inside `id`, and `events`).
    WorkspaceActivity,
}

impl RecordShape {
    /// The shape of one raw record (a JSON object's bytes).
    pub fn of(raw: &[u8]) -> RecordShape {
        let has = |key: &[u8]| memmem::find(raw, key).is_some();
        if has(b"\"eventSource\"") {
            RecordShape::CloudTrail
        } else if has(b"\"protoPayload\"") || (has(b"\"logName\"") && has(b"\"insertId\"")) {
            RecordShape::GcpAudit
        } else if has(b"\"SignInLogs\"") || (has(b"\"appDisplayName\"") && has(b"\"userPrincipalName\"")) {
            RecordShape::EntraSignIn
        } else if has(b"\"operationName\"") {
            RecordShape::AzureActivity
        } else if has(b"\"eventType\"") && has(b"\"published\"") {
            RecordShape::OktaSystemLog
        } else if has(b"\"applicationName\"") && has(b"\"events\"") {
            RecordShape::WorkspaceActivity
        } else {
            RecordShape::CloudTrail
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_log_is_recognized_by_its_keys() {
        let cases: [(&str, RecordShape); 8] = [
            (
                r#"{"eventVersion":"1.08","eventSource":"s3.amazonaws.com","eventName":"GetObject"}"#,
                RecordShape::CloudTrail,
            ),
            (
                r#"{"insertId":"x","protoPayload":{"@type":"type.googleapis.com/google.cloud.audit.AuditLog","methodName":"m"}}"#,
                RecordShape::GcpAudit,
            ),
            (
                r#"{"time":"2024-01-01T00:00:00Z","operationName":"MICROSOFT.STORAGE/STORAGEACCOUNTS/WRITE","category":"Administrative"}"#,
                RecordShape::AzureActivity,
            ),
            (
                r#"{"eventDataId":"e","operationName":{"value":"Microsoft.Compute/virtualMachines/write"}}"#,
                RecordShape::AzureActivity,
            ),
            (
                r#"{"operationName":"Sign-in activity","category":"SignInLogs","properties":{}}"#,
                RecordShape::EntraSignIn,
            ),
            (
                r#"{"id":"s","createdDateTime":"t","userPrincipalName":"a@b.c","appDisplayName":"Azure Portal"}"#,
                RecordShape::EntraSignIn,
            ),
            (
                r#"{"uuid":"u","published":"2024-01-01T00:00:00Z","eventType":"user.session.start"}"#,
                RecordShape::OktaSystemLog,
            ),
            (
                r#"{"id":{"time":"t","applicationName":"admin"},"actor":{"email":"a@b.c"},"events":[]}"#,
                RecordShape::WorkspaceActivity,
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(RecordShape::of(raw.as_bytes()), want, "{raw}");
        }
        // Unknown or broken records go to the CloudTrail normalizer, which names what is missing.
        assert_eq!(RecordShape::of(b"{}"), RecordShape::CloudTrail);
        assert_eq!(RecordShape::of(b"\xff\xfe"), RecordShape::CloudTrail);
        // A key name inside a string value is escaped and does not count.
        let ct = r#"{"eventSource":"x","requestParameters":{"q":"\"protoPayload\""}}"#;
        assert_eq!(RecordShape::of(ct.as_bytes()), RecordShape::CloudTrail);
        let azure = r#"{"operationName":"Microsoft.Web/sites/write","properties":{"m":"\"eventSource\""}}"#;
        assert_eq!(RecordShape::of(azure.as_bytes()), RecordShape::AzureActivity);
    }
}
