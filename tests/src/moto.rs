//! moto's S3 server (started by `scripts/moto`, the project's own script) for the tests of
//! `--cloudtrail s3://...`, and a client to fill its buckets.
#![allow(clippy::unwrap_used)] // test support: a panic is a failed test

use std::path::Path;
use std::process::Command;
use std::sync::Once;

use aws_sdk_s3::config::{Credentials, Region};

use crate::stack::repo;

static MOTO: Once = Once::new();

/// moto's fixed test credentials: the server accepts any, and grantwatch takes them from the
/// environment like any other (the default chain).
pub const ACCESS_KEY: &str = "AKIAGRANTWATCHTEST01";
/// Distinctive, so that a test can check that it is never printed.
pub const SECRET_KEY: &str = "gw-moto-secret-never-printed-7Qx2";
pub const REGION: &str = "us-east-1";

/// Starts moto's S3 server if it is not running (idempotent; installs moto from PyPI into its venv on
/// first use) and returns its endpoint URL. A server that cannot start fails the test, loudly.
pub fn endpoint() -> String {
    MOTO.call_once(|| {
        let status = Command::new(repo().join("scripts/moto")).arg("start").status().unwrap();
        assert!(status.success(), "scripts/moto start failed");
    });
    let out = Command::new(repo().join("scripts/moto")).arg("endpoint").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A client of the moto server (path-style, fixed credentials).
pub fn client(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "grantwatch-e2e"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Creates `bucket` and uploads every file below `dir`, keyed by its path relative to `dir` (with
/// `/`), under `prefix`. Returns the number of objects.
pub fn upload_tree(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str, dir: &Path) -> usize {
    let mut files = Vec::new();
    walk(dir, &mut files);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        if client.head_bucket().bucket(bucket).send().await.is_err() {
            client.create_bucket().bucket(bucket).send().await.unwrap();
        }
        // A few uploads at a time: moto answers each in milliseconds, but there are hundreds.
        for batch in files.chunks(16) {
            let mut set = tokio::task::JoinSet::new();
            for path in batch {
                let rel = path.strip_prefix(dir).unwrap().to_str().unwrap().replace('\\', "/");
                let key = format!("{prefix}{rel}");
                let body = std::fs::read(path).unwrap();
                let (client, bucket) = (client.clone(), bucket.to_string());
                set.spawn(async move { client.put_object().bucket(bucket).key(key).body(body.into()).send().await });
            }
            while let Some(r) = set.join_next().await {
                r.unwrap().unwrap();
            }
        }
    });
    files.len()
}

/// Uploads one object (creating the bucket if needed).
pub fn put(client: &aws_sdk_s3::Client, bucket: &str, key: &str, body: Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        if client.head_bucket().bucket(bucket).send().await.is_err() {
            client.create_bucket().bucket(bucket).send().await.unwrap();
        }
        client.put_object().bucket(bucket).key(key).body(body.into()).send().await.unwrap();
    });
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// A fresh account of the moto server, one per test: temporary credentials from `sts:AssumeRole` into
/// a role of a random account id (moto acts in the account of the role for every request signed with
/// them: IAM, STS and SSO Admin alike), so tests sharing the server never see each other's identities.
#[derive(Clone)]
pub struct MotoAccount {
    pub endpoint: String,
    pub id: String,
    pub access_key: String,
    /// moto's generated secret: a test checks that it is never printed.
    pub secret_key: String,
    pub session_token: String,
}

impl std::fmt::Debug for MotoAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MotoAccount").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Runs one future on a runtime of its own (tests are synchronous).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn sdk_config(endpoint: &str, creds: Credentials) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(creds))
        .build()
}

impl MotoAccount {
    /// A new account with a random 12-digit id.
    pub fn new(endpoint: &str) -> MotoAccount {
        let id = format!("{}", 100_000_000_000u64 + rand::random::<u64>() % 800_000_000_000);
        let base = Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "grantwatch-e2e");
        let sts = aws_sdk_sts::Client::new(&sdk_config(endpoint, base));
        let out = block_on(
            sts.assume_role()
                .role_arn(format!("arn:aws:iam::{id}:role/grantwatch-e2e"))
                .role_session_name("e2e")
                .send(),
        )
        .unwrap();
        let c = out.credentials().unwrap();
        MotoAccount {
            endpoint: endpoint.to_string(),
            id,
            access_key: c.access_key_id().to_string(),
            secret_key: c.secret_access_key().to_string(),
            session_token: c.session_token().to_string(),
        }
    }

    fn config(&self) -> aws_config::SdkConfig {
        let creds = Credentials::new(
            &self.access_key,
            &self.secret_key,
            Some(self.session_token.clone()),
            None,
            "grantwatch-e2e",
        );
        sdk_config(&self.endpoint, creds)
    }

    /// The SDK configuration of this account (its temporary credentials, moto's endpoint, the test
    /// region), for clients built in the test process.
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        self.config()
    }

    pub fn iam(&self) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.config())
    }

    pub fn sso(&self) -> aws_sdk_ssoadmin::Client {
        aws_sdk_ssoadmin::Client::new(&self.config())
    }

    /// The environment a process needs to act in this account through the SDK's default chain.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_SESSION_TOKEN", self.session_token.clone()),
            ("AWS_REGION", REGION.to_string()),
            // No instance-metadata probing on a machine that is not in AWS.
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ]
    }
}
