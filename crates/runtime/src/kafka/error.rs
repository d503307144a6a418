//! The errors of the Kafka runtime, and their classification in one place.
//!
//! Every error names what was being done (`opening state …/p3`, `committing the transaction`) and never
//! carries a secret: Kafka client errors, which may quote configuration values, pass through
//! [`StreamError::client`], which hides the values of secret-looking properties; configuration errors
//! are scrubbed where they are made (`config`).
//!
//! [`StreamError::class`] is what callers act on, never the message: a record that cannot be decoded is
//! not an error here at all (the runner dead-letters it), so what reaches a caller is configuration,
//! broker trouble, local state, or something only a restart or an operator can fix.

use grantwatch_core::stage::StageError;
use grantwatch_state::StateError;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::kafka::config::{ConfigError, KafkaConfig};

/// What to do about a [`StreamError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The configuration is wrong (or names something that does not exist): fix it, then restart.
    Config,
    /// The broker is unreachable or refused for now; the runner already retried what it could retry in
    /// place. Nothing uncommitted is lost: a restart resumes from the last commit.
    Transient,
    /// Local state cannot be read or written (corrupt value, engine or disk error): operator action.
    State,
    /// A stop was requested while waiting: a clean exit.
    Stopped,
    /// Anything else (fencing, a Kafka fatal error, an inconsistency): exit non-zero, commit nothing.
    Fatal,
}

/// Asked to stop while waiting for the broker: nothing uncommitted is lost (it is redone on restart),
/// so services treat this as a clean exit.
#[derive(Debug, thiserror::Error)]
#[error("stopped while waiting for the Kafka broker")]
pub struct Stopped;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Stopped(#[from] Stopped),
    /// A Kafka call failed.
    #[error("{what}: {source}")]
    Kafka {
        what: String,
        #[source]
        source: KafkaError,
    },
    /// Creating a Kafka client failed; the message has secret property values hidden.
    #[error("{what}: {message}")]
    Client { what: String, message: String },
    /// A transaction did not go through (aborted, or records refused outside it).
    #[error("{what}: {why}")]
    Transaction { what: String, why: String },
    #[error("creating topic {name}: {code}")]
    Topic { name: String, code: RDKafkaErrorCode },
    #[error("state: {0}")]
    State(#[from] StateError),
    #[error("opening state {}: {source}", dir.display())]
    OpenState {
        dir: std::path::PathBuf,
        #[source]
        source: StateError,
    },
    #[error("stage: {0}")]
    Stage(#[from] StageError),
    /// Local IO: state directories, the metrics listener, signal handlers, threads.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// What the protocol rules out happened (Kafka refused records it was never sent, no group
    /// metadata while consuming in a group).
    #[error("{0}")]
    Inconsistent(String),
    /// A source of input could not be read (a watched directory, an IAM snapshot, stdin,
    /// LookupEvents), or the catalog it is normalized with could not be loaded.
    #[error("{what}: {source}")]
    Source {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("metrics listen address {addr:?}: {source}")]
    ListenAddress {
        addr: String,
        #[source]
        source: std::net::AddrParseError,
    },
}

pub type Result<T, E = StreamError> = std::result::Result<T, E>;

impl StreamError {
    /// The one place errors are classified.
    pub fn class(&self) -> ErrorClass {
        match self {
            StreamError::Config(_) | StreamError::Client { .. } | StreamError::ListenAddress { .. } => {
                ErrorClass::Config
            }
            StreamError::Stopped(_) => ErrorClass::Stopped,
            StreamError::Kafka { source, .. } => kafka_class(source),
            StreamError::Transaction { .. } => ErrorClass::Transient,
            StreamError::Topic { code, .. } => match code {
                RDKafkaErrorCode::InvalidReplicationFactor
                | RDKafkaErrorCode::InvalidPartitions
                | RDKafkaErrorCode::InvalidConfig
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed => ErrorClass::Config,
                _ => ErrorClass::Fatal,
            },
            StreamError::State(_) | StreamError::OpenState { .. } | StreamError::Stage(_) => ErrorClass::State,
            // Crash-only: a restart resumes from the last committed checkpoint and reads it again.
            StreamError::Source { .. } => ErrorClass::Transient,
            StreamError::Io { .. } | StreamError::Inconsistent(_) => ErrorClass::Fatal,
        }
    }

    pub fn kafka(what: impl Into<String>, source: KafkaError) -> StreamError {
        StreamError::Kafka { what: what.into(), source }
    }

    pub fn source<E>(what: impl Into<String>) -> impl FnOnce(E) -> StreamError
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let what = what.into();
        move |source| StreamError::Source { what, source: source.into() }
    }

    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StreamError {
        let what = what.into();
        move |source| StreamError::Io { what, source }
    }

    /// A client-creation error of a client made from `kafka`. librdkafka quotes the value of a property
    /// it refuses, so the values of secret-looking properties are hidden from the message.
    pub fn client(kafka: &KafkaConfig, what: impl Into<String>, source: KafkaError) -> StreamError {
        let mut message = source.to_string();
        for (name, value) in &kafka.properties {
            if crate::kafka::config::is_secret(name) && !value.is_empty() {
                message = message.replace(value.as_str(), "<hidden>");
            }
        }
        StreamError::Client { what: what.into(), message }
    }
}

/// Broker-side trouble that goes away (timeouts, transport, a coordinator moving) is transient; a
/// client misconfigured is configuration; the rest is fatal.
fn kafka_class(e: &KafkaError) -> ErrorClass {
    if let KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) = e {
        return ErrorClass::Config;
    }
    if crate::kafka::client::retriable(e) {
        return ErrorClass::Transient;
    }
    match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::CoordinatorLoadInProgress
            | RDKafkaErrorCode::CoordinatorNotAvailable
            | RDKafkaErrorCode::NotCoordinator
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::NotLeaderForPartition
            | RDKafkaErrorCode::RebalanceInProgress,
        ) => ErrorClass::Transient,
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::TopicAuthorizationFailed) => {
            ErrorClass::Config
        }
        _ => ErrorClass::Fatal,
    }
}

/// Whether `e`, or any error in its source chain, is a requested stop.
pub fn is_stop(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.is::<Stopped>() || c.downcast_ref::<StreamError>().is_some_and(|s| s.class() == ErrorClass::Stopped) {
            return true;
        }
        cur = c.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_hide_secret_values_and_are_configuration() {
        let mut kafka = KafkaConfig::default();
        kafka.properties.insert("sasl.password".into(), "hunter2-secret".into());
        // An invalid value librdkafka quotes back: the same text as the secret.
        kafka.properties.insert("security.protocol".into(), "hunter2-secret".into());
        let made: std::result::Result<rdkafka::producer::BaseProducer, _> =
            crate::kafka::client::client_config(&kafka).create();
        let Err(e) = made else { panic!("librdkafka accepted security.protocol=hunter2-secret") };
        let e = StreamError::client(&kafka, "creating the producer", e);
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("creating the producer") && shown.contains("<hidden>"), "{shown}");
        assert_eq!(e.class(), ErrorClass::Config);
    }

    #[test]
    fn classes() {
        assert_eq!(StreamError::from(Stopped).class(), ErrorClass::Stopped);
        let corrupt = StateError::Corrupt { table: "meta", key: "rt:max-time".into(), reason: "short".into() };
        assert_eq!(StreamError::from(corrupt).class(), ErrorClass::State);
        let timeout = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert_eq!(StreamError::kafka("producing", timeout).class(), ErrorClass::Transient);
        let fenced = KafkaError::MessageProduction(RDKafkaErrorCode::Fatal);
        assert_eq!(StreamError::kafka("producing", fenced).class(), ErrorClass::Fatal);
        let topic = StreamError::Topic { name: "t".into(), code: RDKafkaErrorCode::InvalidReplicationFactor };
        assert_eq!(topic.class(), ErrorClass::Config);
    }

    #[test]
    fn a_stop_is_found_through_wrapping() {
        let e = StreamError::from(Stopped);
        assert!(is_stop(&e));
        // As a service's context wrapper holds it.
        #[derive(Debug, thiserror::Error)]
        #[error("running the detector")]
        struct Context(#[source] StreamError);
        assert!(is_stop(&Context(StreamError::from(Stopped))));
        assert!(!is_stop(&StreamError::Transaction { what: "x".into(), why: "y".into() }));
    }
}
