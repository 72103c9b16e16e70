//! The one error type of `meridian-edge`. Every error says who failed ([`Origin`]) and whether
//! the request may go to another region ([`RetryClass`]), so failover never parses strings.

use std::time::Duration;

/// Who failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// An app backend (or the network to it).
    Upstream,
    /// The client (or the network to it).
    Downstream,
    /// The edge itself: configuration, binding, invariants.
    Internal,
}

/// Whether a failed attempt may be tried again elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryClass {
    /// The request never reached the app (e.g. connection refused): any request may be retried.
    NotSent,
    /// The request may have reached the app: only safe or idempotent requests may be retried.
    MaybeReached,
    /// Retrying cannot help (client or configuration error).
    Never,
}

/// Every way the edge can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection to the backend could be made; nothing was sent.
    #[error("connecting to backend {backend}: {source}")]
    Connect {
        /// The backend's URL.
        backend: String,
        /// Why: refused, unreachable, timed out, or closed before the request was written.
        source: std::io::Error,
    },
    /// The exchange with the backend failed after the request may have been sent.
    #[error("backend {backend} failed during the exchange: {source}")]
    Exchange {
        /// The backend's URL.
        backend: String,
        /// Why: a write or read failed, the backend closed the connection before its response
        /// head, or the head was malformed.
        source: std::io::Error,
    },
    /// A backend's response body was cut short or malformed after its head was passed on.
    #[error("backend response body: {source}")]
    ResponseBody {
        /// What was wrong with the body.
        source: std::io::Error,
    },
    /// The backend did not answer in time.
    #[error("backend {backend} did not answer within {timeout:?}")]
    Timeout {
        /// The backend's URL.
        backend: String,
        /// The limit that passed.
        timeout: Duration,
    },
    /// The client's request body could not be read.
    #[error("reading the request body: {source}")]
    RequestBody {
        /// hyper's error.
        source: hyper::Error,
    },
    /// A streamed `application/grpc-web-text` request body is not base64.
    #[error("the gRPC-Web text request body is not base64: {message}")]
    GrpcWebText {
        /// What was wrong.
        message: String,
    },
    /// A bearer token did not verify.
    #[error("token rejected: {message}")]
    Token {
        /// What was wrong.
        message: String,
    },
    /// A bearer token names a key ID (`kid`) none of the edge's identity-provider keys has.
    #[error("token rejected: no key has kid `{kid}`")]
    TokenKeyUnknown {
        /// The token's `kid`.
        kid: String,
    },
    /// The topology cannot be served by this edge (unknown edge name, bad backend URL, …).
    #[error("{message}")]
    Config {
        /// What is wrong and what would be right.
        message: String,
    },
    /// A listener could not be bound or accepted on.
    #[error("listener {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Error {
    /// Who failed.
    pub fn origin(&self) -> Origin {
        match self {
            Error::Connect { .. }
            | Error::Exchange { .. }
            | Error::ResponseBody { .. }
            | Error::Timeout { .. } => Origin::Upstream,
            Error::RequestBody { .. }
            | Error::GrpcWebText { .. }
            | Error::Token { .. }
            | Error::TokenKeyUnknown { .. } => Origin::Downstream,
            Error::Config { .. } | Error::Listen { .. } => Origin::Internal,
        }
    }

    /// Whether the failed attempt may be tried in another region.
    pub fn retry_class(&self) -> RetryClass {
        match self {
            Error::Connect { .. } => RetryClass::NotSent,
            Error::Exchange { .. } | Error::Timeout { .. } => RetryClass::MaybeReached,
            _ => RetryClass::Never,
        }
    }
}
