//! Best-effort resource ARNs from `requestParameters`, for records without a `resources` array.
//!
//! Table-driven and deliberately modest: a handful of services and top-level parameters. Values that are
//! already ARNs are kept verbatim; names become ARNs in the record's partition, region and account.

use serde::Deserialize;

use super::lenient::Str;

#[derive(Debug, Clone, Copy)]
enum Field {
    BucketName,
    Key,
    UserName,
    RoleName,
    GroupName,
    PolicyArn,
    InstanceProfileName,
    FunctionName,
    KeyId,
    SecretId,
    TopicArn,
    TableName,
    Name,
    RoleArn,
    LogGroupName,
}

#[derive(Debug, Clone, Copy)]
enum Template {
    /// Logged as an ARN (or a name to keep as is).
    Verbatim,
    /// `arn:P:s3:::bucket`
    S3Bucket,
    /// `arn:P:s3:::bucket/key` (needs `bucketName` too)
    S3Object,
    /// `arn:P:iam::ACCOUNT:<prefix><name>`
    Iam(&'static str),
    /// `arn:P:<service>:REGION:ACCOUNT:<prefix><name>`
    Regional(&'static str, &'static str),
    /// KMS key id or `alias/...`.
    Kms,
}

/// (eventSource, parameter, template).
const RULES: &[(&str, Field, Template)] = &[
    ("s3.amazonaws.com", Field::BucketName, Template::S3Bucket),
    ("s3.amazonaws.com", Field::Key, Template::S3Object),
    ("iam.amazonaws.com", Field::UserName, Template::Iam("user/")),
    ("iam.amazonaws.com", Field::RoleName, Template::Iam("role/")),
    ("iam.amazonaws.com", Field::GroupName, Template::Iam("group/")),
    ("iam.amazonaws.com", Field::InstanceProfileName, Template::Iam("instance-profile/")),
    ("iam.amazonaws.com", Field::PolicyArn, Template::Verbatim),
    ("sts.amazonaws.com", Field::RoleArn, Template::Verbatim),
    ("lambda.amazonaws.com", Field::FunctionName, Template::Regional("lambda", "function:")),
    ("kms.amazonaws.com", Field::KeyId, Template::Kms),
    ("secretsmanager.amazonaws.com", Field::SecretId, Template::Verbatim),
    ("sns.amazonaws.com", Field::TopicArn, Template::Verbatim),
    ("dynamodb.amazonaws.com", Field::TableName, Template::Regional("dynamodb", "table/")),
    ("cloudtrail.amazonaws.com", Field::Name, Template::Regional("cloudtrail", "trail/")),
    ("logs.amazonaws.com", Field::LogGroupName, Template::Regional("logs", "log-group:")),
];

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Params<'a> {
    #[serde(borrow, default)]
    bucket_name: Str<'a>,
    #[serde(borrow, default)]
    key: Str<'a>,
    #[serde(borrow, default)]
    user_name: Str<'a>,
    #[serde(borrow, default)]
    role_name: Str<'a>,
    #[serde(borrow, default)]
    group_name: Str<'a>,
    #[serde(borrow, default)]
    policy_arn: Str<'a>,
    #[serde(borrow, default)]
    instance_profile_name: Str<'a>,
    #[serde(borrow, default)]
    function_name: Str<'a>,
    #[serde(borrow, default)]
    key_id: Str<'a>,
    #[serde(borrow, default)]
    secret_id: Str<'a>,
    #[serde(borrow, default)]
    topic_arn: Str<'a>,
    #[serde(borrow, default)]
    table_name: Str<'a>,
    #[serde(borrow, default)]
    name: Str<'a>,
    #[serde(borrow, default)]
    role_arn: Str<'a>,
    #[serde(borrow, default)]
    log_group_name: Str<'a>,
}

impl Params<'_> {
    fn get(&self, f: Field) -> Option<&str> {
        match f {
            Field::BucketName => self.bucket_name.get(),
            Field::Key => self.key.get(),
            Field::UserName => self.user_name.get(),
            Field::RoleName => self.role_name.get(),
            Field::GroupName => self.group_name.get(),
            Field::PolicyArn => self.policy_arn.get(),
            Field::InstanceProfileName => self.instance_profile_name.get(),
            Field::FunctionName => self.function_name.get(),
            Field::KeyId => self.key_id.get(),
            Field::SecretId => self.secret_id.get(),
            Field::TopicArn => self.topic_arn.get(),
            Field::TableName => self.table_name.get(),
            Field::Name => self.name.get(),
            Field::RoleArn => self.role_arn.get(),
            Field::LogGroupName => self.log_group_name.get(),
        }
    }
}

/// Whether [`from_request_parameters`] knows anything about this eventSource (skip parsing otherwise).
pub(crate) fn has_rules(event_source: &str) -> bool {
    RULES.iter().any(|(src, _, _)| src.eq_ignore_ascii_case(event_source))
}

/// The ARN partition of a region (`cn-north-1` → `aws-cn`).
pub(crate) fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// Resources named by `requestParameters` (a JSON object); appends to `out`. Unparseable input adds nothing.
pub(crate) fn from_request_parameters(
    raw: &str,
    event_source: &str,
    region: Option<&str>,
    account: Option<&str>,
    out: &mut Vec<String>,
) {
    let Ok(params) = serde_json::from_str::<Params<'_>>(raw) else {
        return;
    };
    let part = partition_of(region.unwrap_or(""));
    for (_, field, tpl) in RULES.iter().filter(|(src, _, _)| src.eq_ignore_ascii_case(event_source)) {
        let Some(v) = params.get(*field) else { continue };
        if v.starts_with("arn:") {
            out.push(v.to_string());
            continue;
        }
        let arn = match *tpl {
            Template::Verbatim => Some(v.to_string()),
            Template::S3Bucket => Some(format!("arn:{part}:s3:::{v}")),
            Template::S3Object => params.bucket_name.get().map(|b| format!("arn:{part}:s3:::{b}/{v}")),
            Template::Iam(prefix) => account.map(|a| format!("arn:{part}:iam::{a}:{prefix}{v}")),
            Template::Regional(svc, prefix) => match (region, account) {
                (Some(r), Some(a)) if !v.contains(':') => Some(format!("arn:{part}:{svc}:{r}:{a}:{prefix}{v}")),
                _ => Some(v.to_string()),
            },
            Template::Kms => match (region, account) {
                (Some(r), Some(a)) if v.starts_with("alias/") => Some(format!("arn:{part}:kms:{r}:{a}:{v}")),
                (Some(r), Some(a)) => Some(format!("arn:{part}:kms:{r}:{a}:key/{v}")),
                _ => Some(v.to_string()),
            },
        };
        out.extend(arn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(raw: &str, src: &str) -> Vec<String> {
        let mut out = Vec::new();
        from_request_parameters(raw, src, Some("eu-west-1"), Some("111122223333"), &mut out);
        out
    }

    #[test]
    fn table_rules() {
        assert_eq!(
            run(r#"{"bucketName":"b","key":"a/b.txt","Host":"x"}"#, "s3.amazonaws.com"),
            ["arn:aws:s3:::b", "arn:aws:s3:::b/a/b.txt"]
        );
        assert_eq!(
            run(r#"{"userName":"Bob","groupName":"Admins"}"#, "iam.amazonaws.com"),
            ["arn:aws:iam::111122223333:user/Bob", "arn:aws:iam::111122223333:group/Admins"]
        );
        assert_eq!(
            run(r#"{"functionName":"f"}"#, "lambda.amazonaws.com"),
            ["arn:aws:lambda:eu-west-1:111122223333:function:f"]
        );
        assert_eq!(run(r#"{"keyId":"alias/k"}"#, "kms.amazonaws.com"), ["arn:aws:kms:eu-west-1:111122223333:alias/k"]);
        assert_eq!(
            run(r#"{"policyArn":"arn:aws:iam::aws:policy/X"}"#, "iam.amazonaws.com"),
            ["arn:aws:iam::aws:policy/X"]
        );
        assert!(run(r#"{"bucketName":5}"#, "s3.amazonaws.com").is_empty());
        assert!(run(r#"[1,2]"#, "s3.amazonaws.com").is_empty());
        assert!(run(r#"{"bucketName":"b"}"#, "ec2.amazonaws.com").is_empty());
        assert_eq!(partition_of("cn-north-1"), "aws-cn");
    }
}
