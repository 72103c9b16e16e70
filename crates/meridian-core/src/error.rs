//! The one error type of `meridian-core`.

use crate::KeyspaceType;

/// Every way a pure decision of this crate can refuse its input. Each message says what was
/// wrong and what would be right, so callers can show it to a user unchanged.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The topology file is invalid; the diagnostics say where and what would be right.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),

    /// A remote timestamp lies further in the future than the allowed clock offset; the local
    /// clock was left unchanged.
    #[error(
        "clock skew: a remote timestamp is at {remote_ms} ms since the epoch but the local wall \
         clock reads {wall_ms} ms, more than the allowed {max_offset_ms} ms ahead; check the \
         sending region's clock synchronisation (NTP)"
    )]
    ClockSkew {
        /// Milliseconds part of the rejected remote timestamp.
        remote_ms: u64,
        /// The local wall clock when the timestamp was received.
        wall_ms: u64,
        /// The largest offset a remote timestamp may be ahead of the local wall clock.
        max_offset_ms: u64,
    },

    /// A textual token (version vector, context) could not be parsed.
    #[error("bad token: {message}")]
    BadToken {
        /// What is wrong and the expected form.
        message: String,
    },

    /// Two values of different keyspace types were combined.
    #[error(
        "type mismatch: expected a {expected} value but found a {found} value; a key keeps the \
         type of its keyspace"
    )]
    TypeMismatch {
        /// The type the operation required.
        expected: KeyspaceType,
        /// The type that was found.
        found: KeyspaceType,
    },

    /// The operation does not exist for this keyspace type.
    #[error("operation `{op}` is not supported on a {kind} keyspace; {hint}")]
    OpNotSupported {
        /// The operation's name (see `Op::name`).
        op: &'static str,
        /// The keyspace type that refused it.
        kind: KeyspaceType,
        /// Which operations this type takes.
        hint: &'static str,
    },

    /// A value or argument is not acceptable for the operation.
    #[error("invalid value: {message}; {hint}")]
    InvalidValue {
        /// What was wrong.
        message: String,
        /// What would be right.
        hint: String,
    },

    /// Stored or received bytes are not a record this build can read.
    #[error("cannot decode record: {message}")]
    Decode {
        /// What was wrong with the bytes.
        message: String,
    },

    /// A backend's answer to a gRPC health check is not one `grpc.health.v1`
    /// `HealthCheckResponse` message.
    #[error(
        "bad gRPC health-check answer: {message}; the backend should serve grpc.health.v1.Health"
    )]
    GrpcHealth {
        /// What was wrong with the bytes.
        message: String,
    },
}
