//! The lab's one error type.

use std::path::PathBuf;

/// Why a lab operation failed. Every variant names what was being done, so a caller can print
/// it as is; none of them is worth retrying without a change of input except [`LabError::Io`].
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// An I/O operation (bind, read a profile file) failed; may succeed on retry.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, e.g. `binding 127.0.0.1:9701`.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A latency profile CSV line could not be read.
    #[error("{file}:{line}: {reason}")]
    Profile {
        /// The profile file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A region has neither a figure in the profile nor known coordinates for the model.
    #[error(
        "no latency for {from} → {to}: not in the profile and no coordinates for `{missing}`; give the delay explicitly"
    )]
    UnknownRegion {
        /// Source region of the directed pair.
        from: String,
        /// Destination region of the directed pair.
        to: String,
        /// The region without coordinates.
        missing: String,
    },
    /// A scenario file is invalid.
    #[error("{file}: {reason}")]
    Scenario {
        /// The scenario file.
        file: String,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// The emulated world could not be started or driven (a child exited, was not ready in
    /// time, refused an admin call).
    #[error("{0}")]
    World(String),
    /// A textual specification (link, delay, control command) is malformed.
    #[error("`{input}`: {reason}")]
    Parse {
        /// The text as given.
        input: String,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// The HTTP client for a data node could not be built (TLS or resolver setup); retrying
    /// without a change to the machine will not help.
    #[error("building the HTTP client for {url}: {reason}")]
    Client {
        /// The node's base URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
}
