//! The demo app's only access to wall-clock time: the `at_ms` of messages and the `created_ms`
//! of sessions. Everything else takes the time from [`super::AppOptions::now_ms`].

/// Milliseconds since the Unix epoch, as the operating system says now; 0 before 1970.
#[allow(clippy::disallowed_methods)] // invariant: this is the clock module
pub fn system_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
