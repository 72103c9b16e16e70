//! The one error type of `meridian-core`.

/// Every way a pure decision of this crate can refuse its input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The topology file is invalid; the diagnostics say where and what would be right.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}
