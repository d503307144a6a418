//! Test fixtures shared by the stages' unit tests.

use grantwatch_types::{ActionMapping, Actor, Api, Cloud, Event, EventTime, IdentityKind, Status};

pub const ALICE: &str = "arn:aws:iam::111122223333:user/alice";

/// A successful `s3:GetObject` by the IAM user alice at `time`; tests change what they need.
pub fn event(uid: &str, time: EventTime) -> Event {
    Event {
        uid: uid.into(),
        time,
        cloud: Cloud::Aws,
        account_uid: "111122223333".into(),
        region: "us-east-1".into(),
        actor: Actor {
            human: None,
            uid: ALICE.into(),
            kind: IdentityKind::User,
            name: Some("alice".into()),
            account_uid: Some("111122223333".into()),
            session_name: None,
            principal_id: None,
            access_key_id: None,
            invoked_by: None,
            mfa_authenticated: None,
            on_behalf_of: None,
        },
        api: Api { service: "s3.amazonaws.com".into(), operation: "GetObject".into() },
        actions: vec!["s3:GetObject".into()],
        mapping: ActionMapping::Direct,
        resources: vec![],
        status: Status::Success,
        status_code: None,
        src_ip: None,
        user_agent: None,
        read_only: Some(true),
        request: None,
        response: None,
        additional: None,
        error_message: None,
    }
}
