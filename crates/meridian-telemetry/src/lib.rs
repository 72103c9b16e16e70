//! The one Prometheus recorder of a Meridian process. Every component (region node, edge) that
//! records `meridian_*` metrics and serves `/metrics` goes through here, so a process hosting
//! several components (tests, an embedding program) has a single registry that all of them
//! record into and render from.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets of every `*_seconds` metric: 100 µs to 10 s.
pub const BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// The histogram of replication delay (`meridian_repl_delay_seconds`): from a write at its
/// origin until it is durably applied in another region. Finer than [`BUCKETS`] where WAN
/// delays lie (tens to hundreds of milliseconds), so a p99 read from it is within a few ms.
pub const REPL_DELAY: &str = "meridian_repl_delay_seconds";

/// Buckets of [`REPL_DELAY`]: 1 ms to 2 min; 5 ms apart from 10 to 100 ms, 10 ms apart to
/// 160 ms, coarser beyond.
pub const REPL_DELAY_BUCKETS: [f64; 46] = [
    0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.045, 0.05, 0.055, 0.06,
    0.065, 0.07, 0.075, 0.08, 0.085, 0.09, 0.095, 0.1, 0.11, 0.12, 0.13, 0.14, 0.15, 0.16, 0.18,
    0.2, 0.22, 0.25, 0.275, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 5.0, 10.0, 30.0, 120.0,
];

/// How often the upkeep thread drains histogram samples into their buckets. Between scrapes the
/// recorder keeps every sample it was given; without upkeep an unscraped process would hold
/// them all (about 18 bytes per request served, without bound).
pub const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The name of the thread that runs the recorder's upkeep (at most 15 bytes: Linux keeps no more).
pub const UPKEEP_THREAD: &str = "metrics-upkeep";

fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(REPL_DELAY.into()), &REPL_DELAY_BUCKETS)
            })
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Only fails if some other code installed a global recorder first; metrics recorded
        // there are then not ours to render, and this handle renders an empty registry.
        let _ = metrics::set_global_recorder(recorder);
        let upkept = handle.clone();
        let spawned = std::thread::Builder::new()
            .name(UPKEEP_THREAD.into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkept.run_upkeep();
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(
                %error,
                "metrics upkeep thread not started: histogram samples are drained only when \
                 /metrics is scraped"
            );
        }
        handle
    })
}

/// Installs the process's recorder; call at start so early events are not lost. Idempotent.
pub fn install() {
    handle();
}

/// The Prometheus text exposition of every metric recorded in this process.
pub fn render() -> String {
    handle().render()
}

#[cfg(test)]
mod tests {
    /// One upkeep thread, however often `install` is called. (A new thread names itself once
    /// it runs, so the test waits for the name, up to 5 s.)
    #[test]
    fn installing_starts_one_upkeep_thread() {
        super::install();
        super::install();
        let upkeep_threads = || {
            std::fs::read_dir("/proc/self/task")
                .expect("procfs")
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
                .filter(|comm| comm.trim_end() == super::UPKEEP_THREAD)
                .count()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while upkeep_threads() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(upkeep_threads(), 1);
    }

    #[test]
    fn what_any_component_records_is_rendered_once() {
        super::install();
        super::install();
        metrics::counter!("meridian_telemetry_test_total", "component" => "a").increment(2);
        metrics::counter!("meridian_telemetry_test_total", "component" => "b").increment(3);
        let text = super::render();
        assert!(
            text.contains("meridian_telemetry_test_total{component=\"a\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("meridian_telemetry_test_total{component=\"b\"} 3"),
            "{text}"
        );
    }
}
