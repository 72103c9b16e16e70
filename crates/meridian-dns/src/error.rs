//! The one error type of `meridian-dns`.

/// Every way GeoDNS can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The topology has no `[dns]` section.
    #[error("the topology has no [dns] section")]
    NoZone,
    /// A name of the `[dns]` section is not a DNS name hickory can encode.
    #[error("[dns]: `{name}` is not a usable DNS name: {reason}")]
    Name {
        /// The name as written.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A record value could not be turned into record data.
    #[error("dns record `{name}`: value `{value}`: {reason}")]
    Record {
        /// The record's name.
        name: String,
        /// The value as written.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// An explain request named something that is not a question.
    #[error("{message}")]
    BadQuestion {
        /// What is wrong and what would be right.
        message: String,
    },
}
