//! The one Prometheus recorder of a Meridian process. Every component (region node, edge) that
//! records `meridian_*` metrics and serves `/metrics` goes through here, so a process hosting
//! several components (tests, an embedding program) has a single registry that all of them
//! record into and render from.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Histogram buckets of every `*_seconds` metric: 100 µs to 10 s.
pub const BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Only fails if some other code installed a global recorder first; metrics recorded
        // there are then not ours to render, and this handle renders an empty registry.
        let _ = metrics::set_global_recorder(recorder);
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
