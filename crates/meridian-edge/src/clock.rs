//! The edge's only access to wall-clock time (token expiry, access-log timestamps).
//! Everything else uses monotonic time passed into the pure decisions of `meridian-core`.

/// Seconds since the Unix epoch; 0 if the clock is before 1970.
#[allow(clippy::disallowed_methods)]
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds since the Unix epoch with milliseconds, for the access log; 0 before 1970.
#[allow(clippy::disallowed_methods)]
pub fn unix_now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_millis() as f64 / 1000.0)
}
