//! Support for the end-to-end tests in `tests/` and the streaming benchmark (`src/bin`): [`stack`] runs
//! the services as real processes against the project's real Kafka broker; [`moto`] runs moto's S3
//! server for the tests of `--cloudtrail s3://...`; [`http1`] is the tests' proxies' HTTP;
//! [`pulled`] fakes the Okta System Log and Workspace Reports APIs; [`browser`] checks pages in a real
//! headless Chromium.

pub mod browser;
pub mod http1;
pub mod moto;
pub mod pulled;
pub mod stack;

/// A CloudTrail record as a trail writes it: an API call in us-east-1 by `identity` (a
/// `userIdentity` object), recorded in the identity's account.
pub fn cloudtrail_record(id: &str, time: &str, identity: &serde_json::Value, source: &str, name: &str) -> String {
    serde_json::json!({
        "eventVersion": "1.08",
        "userIdentity": identity,
        "eventTime": time,
        "eventSource": source,
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "203.0.113.9",
        "userAgent": "aws-cli/2.15.0",
        "requestParameters": null,
        "responseElements": null,
        "eventID": id,
        "eventType": "AwsApiCall",
        "recipientAccountId": identity["accountId"],
    })
    .to_string()
}
