//! The topology file (`meridian.toml`, DESIGN §1): parsing, validation and the resolved model.
//!
//! [`parse`] takes the file's text (this crate does no I/O) and returns either a [`Topology`] —
//! every default filled in, every rule checked — or a [`ConfigError`] listing *every* problem
//! found, each with file, line and column, what is wrong and what would be right.
//!
//! The keys of the file are a public contract; `docs/config.md` documents each one.

mod advice;
mod build;
mod diag;
mod model;
mod read;
mod scalar;
mod summary;
mod terms;

pub use advice::advice;
pub use diag::{ConfigError, Diagnostic};
pub use model::{
    AllDown, AppProtocol, CONTINENT_CODES, Cluster, Dns, DnsRecord, EDGE_CLIENT_HEADER_TIMEOUT,
    EDGE_MAX_CONNECTIONS, EDGE_TUNNEL_IDLE_TIMEOUT, EDGE_UPSTREAM_TIMEOUT, Edge, GeoMap, Health,
    Keyspace, LatLon, Limits, MAX_REQUESTS_PER_BACKEND, Policy, Pool, RecordType, Region,
    Replication, Residency, Routing, Topology, Writer, Writes, Zone,
};
pub use scalar::{duration as parse_duration, format_duration};
pub use terms::{TermsDiff, compare as compare_terms, replication_terms};

/// Parses and validates a topology file.
///
/// `source_name` is only used to label diagnostics (pass the path the text was read from).
/// Checks TOML syntax, unknown keys, value types and every semantic rule of DESIGN §1; on failure
/// the error holds all problems found (a TOML syntax error stops parsing, so it comes alone).
/// Never panics, whatever the input.
pub fn parse(source_name: &str, text: &str) -> Result<Topology, ConfigError> {
    let mut cx = diag::Cx::new(source_name, text);
    let doc = match toml_edit::Document::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim_end().to_string();
            cx.error(
                &span,
                format!("invalid TOML: {message}"),
                Some("see https://toml.io for the syntax; strings need double quotes".to_string()),
            );
            return Err(cx.finish().expect("invariant: an error was just recorded"));
        }
    };
    let topology = build::build(&mut cx, doc.as_table());
    match cx.finish() {
        Some(err) => Err(err),
        None => {
            Ok(topology.expect("invariant: build returns None only after recording a diagnostic"))
        }
    }
}
