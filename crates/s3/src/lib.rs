//! `grantwatch-s3`: CloudTrail read straight from an S3 bucket, through the file reader every local
//! file goes through.
//!
//! What it is: [`S3Source`] lists the objects under an `s3://bucket[/prefix]` (ListObjectsV2, every
//! page) into the same [`Discovery`] a directory walk gives (the name rules are
//! [`grantwatch_files::discover_objects`]'), and opens one object as a blocking [`Read`] of its body
//! ([`ObjectReader`]), which `grantwatch_files::read_records_from` reads as it reads a local file:
//! gzip detection, the streaming scanner, both caps, the fingerprint.
//!
//! The SDK is async and the readers are plain threads, so `S3Source` owns a small tokio runtime (one
//! worker drives the connections) and each reader thread blocks on its own request: a GetObject body
//! is pulled one network chunk at a time as the scanner asks for bytes, never buffered whole.
//!
//! Settings: region and credentials come from the SDK's default chains (environment, profile, web
//! identity, ECS/EC2 metadata), the region and the endpoint may be overridden ([`S3Config`];
//! `AWS_ENDPOINT_URL`/`AWS_ENDPOINT_URL_S3` are honoured by the SDK itself). With a custom endpoint
//! (moto, MinIO, ...) requests use path-style addressing. Nothing here logs or prints credentials, and
//! errors carry only the S3 error code and message.
//!
//! What it deliberately is not: no writes (the IAM policy it needs is `s3:ListBucket` and
//! `s3:GetObject`, plus `kms:Decrypt` for SSE-KMS), no caching or copying of objects, no state: which
//! objects are already ingested is the runner's business.

use std::fmt;
use std::io::{self, Read};

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use grantwatch_files::{Discovery, ListedObject, S3Object, S3Prefix};

/// Where to reach S3. Everything else (credentials, and the region when not given) comes from the
/// SDK's default chains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    /// An S3-compatible endpoint (`http://127.0.0.1:9000`) instead of AWS's; also taken from
    /// `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` by the SDK.
    pub endpoint_url: Option<String>,
    /// The bucket's region, over the default chain's (`AWS_REGION`, the profile's).
    pub region: Option<String>,
}

/// What went wrong talking to S3. `Display` names the bucket (and key, or prefix).
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// No region in the settings or the default chain (S3 signs requests for a region).
    #[error("no AWS region for S3: set --s3-region or AWS_REGION")]
    NoRegion,
    /// The tokio runtime the client needs could not start.
    #[error("starting the S3 client: {0}")]
    Runtime(io::Error),
    /// A request failed. `what` says which (`listing s3://b/p`, `reading s3://b/k`).
    #[error("{what}: {kind}")]
    Request { what: String, kind: S3ErrorKind },
    /// The prefix holds no object at all (a mistyped prefix would otherwise analyze nothing).
    #[error("s3://{bucket}/{prefix}: no objects under this prefix")]
    Empty { bucket: String, prefix: String },
}

impl S3Error {
    /// True when no later object can succeed either (missing bucket, access or credentials refused,
    /// wrong region): the run must stop. Otherwise the error concerns one object (deleted or rewritten
    /// since the listing, archived, a connection that broke off), which is quarantined while the run
    /// goes on; it is not marked ingested, so the next run tries it again.
    pub fn is_fatal(&self) -> bool {
        match self {
            S3Error::Request { kind, .. } => kind.is_fatal(),
            S3Error::NoRegion | S3Error::Runtime(_) | S3Error::Empty { .. } => true,
        }
    }
}

/// How a request failed.
#[derive(Debug)]
pub enum S3ErrorKind {
    /// S3 answered with an error: its HTTP status, code and message.
    Service { status: Option<u16>, code: Option<String>, message: Option<String> },
    /// The request could not be built or signed (typically: no credentials in the default chain).
    Request(String),
    /// The request could not be sent or its answer could not be read (connection, timeout).
    Transport(String),
}

impl S3ErrorKind {
    fn is_fatal(&self) -> bool {
        match self {
            S3ErrorKind::Service { status, code, .. } => {
                // These concern one object (an archived object is refused with a 403, too).
                if matches!(code.as_deref(), Some("NoSuchKey" | "PreconditionFailed" | "InvalidObjectState")) {
                    return false;
                }
                matches!(status, Some(301 | 401 | 403))
                    || matches!(
                        code.as_deref(),
                        Some(
                            "NoSuchBucket"
                                | "AccessDenied"
                                | "AllAccessDisabled"
                                | "AuthorizationHeaderMalformed"
                                | "PermanentRedirect"
                                | "InvalidAccessKeyId"
                                | "SignatureDoesNotMatch"
                                | "ExpiredToken"
                                | "InvalidToken"
                                | "KMS.AccessDeniedException"
                        )
                    )
            }
            S3ErrorKind::Request(_) => true,
            S3ErrorKind::Transport(_) => false,
        }
    }
}

impl fmt::Display for S3ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            S3ErrorKind::Service { status, code, message } => {
                let code = code.as_deref().unwrap_or("error");
                match code {
                    "NoSuchBucket" => write!(f, "the bucket does not exist (NoSuchBucket)")?,
                    "AccessDenied" => write!(
                        f,
                        "access denied (AccessDenied): grantwatch needs s3:ListBucket on the bucket for this prefix, \
                         s3:GetObject on its objects, and kms:Decrypt on the key of SSE-KMS objects"
                    )?,
                    "PermanentRedirect" | "AuthorizationHeaderMalformed" => {
                        write!(f, "the bucket is in another region ({code}): set --s3-region")?;
                    }
                    "PreconditionFailed" => write!(f, "the object changed since it was listed (PreconditionFailed)")?,
                    _ => write!(f, "{code}")?,
                }
                if let Some(m) = message.as_deref().filter(|m| !m.is_empty()) {
                    write!(f, ": {m}")?;
                }
                if let Some(s) = status {
                    write!(f, " (HTTP {s})")?;
                }
                Ok(())
            }
            S3ErrorKind::Request(m) => write!(f, "the request could not be made (credentials?): {m}"),
            S3ErrorKind::Transport(m) => write!(f, "{m}"),
        }
    }
}

fn kind_of<E>(err: SdkError<E, HttpResponse>) -> S3ErrorKind
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &err {
        SdkError::ServiceError(s) => S3ErrorKind::Service {
            status: Some(s.raw().status().as_u16()),
            code: s.err().code().map(str::to_string),
            message: s.err().message().map(str::to_string),
        },
        SdkError::ConstructionFailure(_) => S3ErrorKind::Request(error_chain(&err)),
        _ => {
            // A response the SDK could not parse is still S3's answer: keep its status and code.
            let status = err.raw_response().map(|r| r.status().as_u16());
            match (status, err.code()) {
                (Some(_), code) | (None, code @ Some(_)) => S3ErrorKind::Service {
                    status,
                    code: code.map(str::to_string),
                    message: err.message().map(str::to_string),
                },
                (None, None) => S3ErrorKind::Transport(error_chain(&err)),
            }
        }
    }
}

/// An error and its sources on one line (the SDK's own `Display` says only "dispatch failure").
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// An S3 client for the reader threads: lists prefixes and opens objects, blocking.
pub struct S3Source {
    client: aws_sdk_s3::Client,
    // Declared after the client, so that the client (and its connections) is dropped first.
    runtime: tokio::runtime::Runtime,
}

impl fmt::Debug for S3Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately not the client's config: it holds the credentials provider.
        f.debug_struct("S3Source").finish_non_exhaustive()
    }
}

impl S3Source {
    /// Resolves region and endpoint and builds the client. Credentials are resolved lazily, on the
    /// first request (an error then names it).
    pub fn connect(cfg: &S3Config) -> Result<S3Source, S3Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("gw-s3")
            .enable_all()
            .build()
            .map_err(S3Error::Runtime)?;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &cfg.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &cfg.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let sdk = runtime.block_on(loader.load());
        if sdk.region().is_none() {
            return Err(S3Error::NoRegion);
        }
        // S3-compatible endpoints (moto, MinIO) serve buckets by path, not by host name.
        let custom_endpoint = sdk.endpoint_url().is_some();
        let conf = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(custom_endpoint).build();
        tracing::info!(region = sdk.region().map_or("", |r| r.as_ref()), custom_endpoint, "S3 client ready.");
        Ok(S3Source { client: aws_sdk_s3::Client::from_conf(conf), runtime })
    }

    /// Lists every object under `root` (all pages) and applies the discovery rules. A prefix that
    /// holds no object at all is [`S3Error::Empty`]; any failed request fails the listing.
    pub fn list(&self, root: &S3Prefix) -> Result<Discovery, S3Error> {
        let mut listed = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let req = self
                .client
                .list_objects_v2()
                .bucket(&root.bucket)
                .prefix(&root.prefix)
                .set_continuation_token(token.take());
            let page = self
                .runtime
                .block_on(req.send())
                .map_err(|e| S3Error::Request { what: format!("listing {root}"), kind: kind_of(e) })?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                listed.push(ListedObject {
                    object: S3Object {
                        bucket: root.bucket.clone(),
                        key: key.to_string(),
                        etag: o.e_tag().map(str::to_string),
                        last_modified_ms: o.last_modified().and_then(|t| t.to_millis().ok()),
                    },
                    size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                });
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        if listed.is_empty() {
            return Err(S3Error::Empty { bucket: root.bucket.clone(), prefix: root.prefix.clone() });
        }
        let found = grantwatch_files::discover_objects(root, listed);
        tracing::info!(
            prefix = %root,
            objects = found.files.len(),
            digests = found.ignored.digest,
            hidden = found.ignored.hidden,
            other = found.ignored.other,
            "S3 prefix listed."
        );
        Ok(found)
    }

    /// Opens `object` for reading: GetObject of exactly the listed version (`If-Match` its ETag, so
    /// that the bytes read are the ones the ETag stands for), its body streamed as it is read.
    pub fn open(&self, object: &S3Object) -> Result<ObjectReader, S3Error> {
        let req = self.client.get_object().bucket(&object.bucket).key(&object.key).set_if_match(object.etag.clone());
        let what = || format!("reading s3://{}/{}", object.bucket, object.key);
        let out = self.runtime.block_on(req.send()).map_err(|e| S3Error::Request { what: what(), kind: kind_of(e) })?;
        Ok(ObjectReader {
            body: out.body,
            chunk: bytes::Bytes::new(),
            runtime: self.runtime.handle().clone(),
            name: what(),
        })
    }
}

/// An object's body as a blocking [`Read`]: holds one network chunk at a time.
pub struct ObjectReader {
    body: ByteStream,
    chunk: bytes::Bytes,
    runtime: tokio::runtime::Handle,
    name: String,
}

impl fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectReader").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Read for ObjectReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.chunk.is_empty() {
            match self.runtime.block_on(self.body.next()) {
                None => return Ok(0),
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(io::Error::other(format!("the body broke off: {}", error_chain(&e)))),
            }
        }
        let n = out.len().min(self.chunk.len());
        out.get_mut(..n).unwrap_or_default().copy_from_slice(self.chunk.get(..n).unwrap_or_default());
        let _consumed = self.chunk.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(status: u16, code: &str) -> S3ErrorKind {
        S3ErrorKind::Service { status: Some(status), code: Some(code.into()), message: Some("m".into()) }
    }

    #[test]
    fn what_stops_a_run_and_what_only_quarantines_an_object() {
        assert!(service(404, "NoSuchBucket").is_fatal());
        assert!(service(403, "AccessDenied").is_fatal());
        assert!(service(400, "AuthorizationHeaderMalformed").is_fatal());
        assert!(service(301, "PermanentRedirect").is_fatal());
        assert!(S3ErrorKind::Request("no credentials".into()).is_fatal());
        assert!(!service(404, "NoSuchKey").is_fatal());
        assert!(!service(412, "PreconditionFailed").is_fatal());
        assert!(!service(403, "InvalidObjectState").is_fatal());
        assert!(service(403, "SomethingNew").is_fatal());
        assert!(!service(503, "SlowDown").is_fatal());
        assert!(!S3ErrorKind::Transport("connection reset".into()).is_fatal());
    }

    #[test]
    fn errors_name_the_object_and_say_what_to_do() {
        let e = S3Error::Request { what: "listing s3://b/AWSLogs/".into(), kind: service(403, "AccessDenied") };
        let s = e.to_string();
        assert!(s.starts_with("listing s3://b/AWSLogs/: access denied"), "{s}");
        assert!(s.contains("s3:ListBucket") && s.contains("kms:Decrypt") && s.contains("HTTP 403"), "{s}");
        let e = S3Error::Request { what: "listing s3://nope/".into(), kind: service(404, "NoSuchBucket") };
        assert_eq!(e.to_string(), "listing s3://nope/: the bucket does not exist (NoSuchBucket): m (HTTP 404)");
        assert!(S3Error::Empty { bucket: "b".into(), prefix: "p/".into() }.to_string().contains("s3://b/p/"));
    }
}
