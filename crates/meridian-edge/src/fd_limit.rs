//! Whether the process may open the file descriptors `max_connections` needs: each client
//! connection can hold a backend connection too, and a flood that takes every descriptor
//! makes backend connects fail — which passive health would read as the regions failing.

/// Descriptors kept for what is not a proxied connection: listeners, the GeoIP database,
/// logs, probes, DNS sockets, the admin API.
pub const RESERVED: u64 = 256;

/// Descriptors `max_connections` client connections may need: one for the client, one for
/// its backend connection, and [`RESERVED`].
pub fn needed(max_connections: usize) -> u64 {
    (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(RESERVED)
}

/// The soft "Max open files" limit in a `/proc/self/limits` text; `None` when the line is
/// missing or unparsable, and for `unlimited`.
pub fn soft_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Logs a warning when this process's soft descriptor limit is below [`needed`]; silent
/// where the limit cannot be read (not Linux).
pub fn check(max_connections: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let Some(soft) = soft_open_files(&limits) else {
        return;
    };
    let needed = needed(max_connections);
    if soft < needed {
        tracing::warn!(
            soft_limit = soft,
            max_connections,
            needed,
            "the process may open {soft} files, but max_connections = {max_connections} can \
             need {needed} (a client and a backend connection each, plus {RESERVED}): raise \
             the limit (systemd LimitNOFILE=, `ulimit -n`) or lower [[edge]] max_connections"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
        Max processes             96365                96365                processes \n\
        Max open files            1024                 524288               files     \n";

    #[test]
    fn reads_the_soft_open_files_limit() {
        assert_eq!(soft_open_files(LIMITS), Some(1024));
        let unlimited = LIMITS.replace("1024 ", "unlimited ");
        assert_eq!(soft_open_files(&unlimited), None);
        assert_eq!(soft_open_files("Max processes 1 1 processes\n"), None);
    }

    #[test]
    fn two_descriptors_per_connection_and_the_reserve() {
        assert_eq!(needed(10_000), 20_256);
        assert_eq!(needed(usize::MAX), u64::MAX);
    }
}
