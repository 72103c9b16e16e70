//! Whether the process may open the file descriptors its connection limit needs: a server
//! that runs out of descriptors fails at what it needs them for besides its clients — an
//! edge's backend connects (read by passive health as the regions failing), a node's store
//! files (a failed commit stops the store).

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

/// Logs a warning when this process's soft descriptor limit is below `needed`, saying what
/// needs them (`why`, e.g. "max_connections = 10000 (a client and a backend connection each,
/// plus 256)"); silent where the limit cannot be read (not Linux).
pub fn check(needed: u64, why: &str) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let Some(soft) = soft_open_files(&limits) else {
        return;
    };
    if soft < needed {
        tracing::warn!(
            soft_limit = soft,
            needed,
            "the process may open {soft} files, but {why} can need {needed}: raise the limit \
             (systemd LimitNOFILE=, `ulimit -n`) or lower the connection limit"
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
}
