//! Errors of the control API, and their one conversion to and from `tonic::Status`.

use essaim_core::allocator::AllocError;
use essaim_core::{LookupError, StateError};
use thiserror::Error;
use tonic::{Code, Status};

use crate::transport::LEADER_METADATA;

/// Why a control call failed. The message is for a person: it says what went wrong and, where
/// possible, what to do.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ControlError {
    /// The request itself is wrong (a bad flag value, a malformed token or address).
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    /// The object changed meanwhile, or already exists; read again and retry.
    #[error("{0}")]
    Conflict(String),
    /// The request is well formed but not possible now (not in a swarm, would lose quorum).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The managers cannot agree: too few of them are reachable.
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// The node or cluster could not be reached; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The request reached a manager that does not lead; the leader is at `leader_addr`.
    /// Callers that keep a connection to the leader (task sessions) go there.
    #[error("this manager is not the leader (the leader is at {leader_addr})")]
    NotLeader { leader_addr: String },
    /// The caller showed no certificate where one is needed.
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Internal(String),
}

impl ControlError {
    /// True when the same call may succeed later without any change.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ControlError::NoQuorum(_)
                | ControlError::Unavailable(_)
                | ControlError::Conflict(_)
                | ControlError::NotLeader { .. }
        )
    }

    /// The one answer of a node that is in no swarm, whatever was asked of it.
    pub fn not_in_swarm() -> ControlError {
        ControlError::FailedPrecondition(
            "this node is not part of a swarm: run 'essaim swarm init' to start one, or 'essaim \
             swarm join' to join one"
                .into(),
        )
    }
}

/// Marks the status messages that mean "no quorum", since gRPC has no code of its own for it.
const NO_QUORUM_PREFIX: &str = "no quorum: ";

impl From<ControlError> for Status {
    fn from(error: ControlError) -> Status {
        match error {
            ControlError::InvalidArgument(m) => Status::invalid_argument(m),
            ControlError::NotFound(m) => Status::not_found(m),
            ControlError::Conflict(m) => Status::aborted(m),
            ControlError::FailedPrecondition(m) => Status::failed_precondition(m),
            ControlError::NoQuorum(m) => Status::unavailable(format!("{NO_QUORUM_PREFIX}{m}")),
            ControlError::Unavailable(m) => Status::unavailable(m),
            ControlError::NotLeader { leader_addr } => {
                let mut status = Status::unavailable(format!(
                    "this manager is not the leader (the leader is at {leader_addr})"
                ));
                if let Ok(value) = tonic::metadata::MetadataValue::try_from(leader_addr.as_str()) {
                    status.metadata_mut().insert(LEADER_METADATA, value);
                }
                status
            }
            ControlError::Unauthenticated(m) => Status::unauthenticated(m),
            ControlError::PermissionDenied(m) => Status::permission_denied(m),
            ControlError::Internal(m) => Status::internal(m),
        }
    }
}

/// What a TLS failure somewhere under a transport error means for the user, if there is one.
fn tls_failure(status: &Status) -> Option<ControlError> {
    use rustls::{AlertDescription, CertificateError};
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = cause {
        // An io::Error's source() skips the error it wraps: look inside it by hand.
        let inner = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        let tls = error
            .downcast_ref::<rustls::Error>()
            .or_else(|| inner.and_then(|e| e.downcast_ref::<rustls::Error>()));
        if let Some(tls) = tls {
            let message = match tls {
                rustls::Error::AlertReceived(
                    AlertDescription::UnknownCA
                    | AlertDescription::BadCertificate
                    | AlertDescription::CertificateUnknown,
                ) => {
                    "the manager refused this certificate: it is not from this cluster's CA \
                      (get a current client bundle with 'essaim swarm ca issue-client' on a \
                      manager of this cluster)"
                }
                rustls::Error::AlertReceived(AlertDescription::CertificateExpired) => {
                    "the manager refused this certificate: it has expired (get a new client \
                     bundle with 'essaim swarm ca issue-client'; a node must leave and join again)"
                }
                rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::BadSignature,
                ) => {
                    "the manager's certificate is not signed by the CA this bundle trusts: it \
                      belongs to another cluster, or the cluster's CA was rotated since the \
                      bundle was made"
                }
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. },
                ) => "the manager's certificate has expired",
                rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
                | rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                    ..
                }) => "the node at that address is not a manager (its certificate says so)",
                other => return Some(ControlError::Unavailable(format!("TLS failure: {other}"))),
            };
            return Some(ControlError::PermissionDenied(message.to_string()));
        }
        cause = inner.or_else(|| error.source());
    }
    None
}

impl From<Status> for ControlError {
    fn from(status: Status) -> ControlError {
        if let Some(failure) = tls_failure(&status) {
            return failure;
        }
        let message = status.message().to_string();
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => ControlError::InvalidArgument(message),
            Code::NotFound => ControlError::NotFound(message),
            Code::Aborted | Code::AlreadyExists => ControlError::Conflict(message),
            Code::FailedPrecondition => ControlError::FailedPrecondition(message),
            Code::Unavailable if status.metadata().contains_key(LEADER_METADATA) => {
                ControlError::NotLeader {
                    leader_addr: status
                        .metadata()
                        .get(LEADER_METADATA)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string(),
                }
            }
            Code::Unavailable => match message.strip_prefix(NO_QUORUM_PREFIX) {
                Some(rest) => ControlError::NoQuorum(rest.to_string()),
                None if message.is_empty() => {
                    ControlError::Unavailable("the node could not be reached".to_string())
                }
                None => ControlError::Unavailable(message),
            },
            Code::DeadlineExceeded => ControlError::Unavailable(format!("timed out: {message}")),
            Code::Unauthenticated => ControlError::Unauthenticated(message),
            Code::PermissionDenied => ControlError::PermissionDenied(message),
            _ => ControlError::Internal(message),
        }
    }
}

impl From<StateError> for ControlError {
    fn from(error: StateError) -> ControlError {
        let message = error.to_string();
        match error {
            StateError::NotFound { .. } => ControlError::NotFound(message),
            StateError::VersionConflict { .. }
            | StateError::AlreadyExists { .. }
            | StateError::UpdateStatusChanged { .. } => ControlError::Conflict(message),
            StateError::StateRegression { .. } => ControlError::FailedPrecondition(message),
            StateError::Invalid(_) => ControlError::InvalidArgument(message),
            // Not retryable: the holder lets go of the lock when it chooses, or when it dies.
            StateError::LockHeld { .. } => ControlError::FailedPrecondition(message),
            StateError::LockNotHeld { .. } => ControlError::NotFound(message),
            StateError::NetworkInUse { .. } | StateError::FileInUse { .. } => {
                ControlError::FailedPrecondition(message)
            }
        }
    }
}

impl From<AllocError> for ControlError {
    fn from(error: AllocError) -> ControlError {
        let message = error.to_string();
        match error {
            AllocError::UnknownNetwork { .. } => ControlError::NotFound(message),
            AllocError::PoolExhausted { .. } | AllocError::NoVxlanId | AllocError::NoFreePort => {
                ControlError::FailedPrecondition(message)
            }
            _ => ControlError::InvalidArgument(message),
        }
    }
}

impl From<LookupError> for ControlError {
    fn from(error: LookupError) -> ControlError {
        match error {
            LookupError::NotFound { .. } => ControlError::NotFound(error.to_string()),
            LookupError::Ambiguous { .. } => ControlError::InvalidArgument(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_survives_the_trip_through_a_status() {
        let all = [
            ControlError::InvalidArgument("a".into()),
            ControlError::NotFound("b".into()),
            ControlError::Conflict("c".into()),
            ControlError::FailedPrecondition("d".into()),
            ControlError::NoQuorum("e".into()),
            ControlError::Unavailable("f".into()),
            ControlError::PermissionDenied("g".into()),
            ControlError::Unauthenticated("i".into()),
            ControlError::NotLeader {
                leader_addr: "127.0.0.1:4242".into(),
            },
            ControlError::Internal("h".into()),
        ];
        for error in all {
            assert_eq!(ControlError::from(Status::from(error.clone())), error);
        }
    }
}
