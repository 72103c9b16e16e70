//! Waiting for a region node the test started in-process: a new store first joins its peers
//! before `/health/ready` answers 200.

use std::time::{Duration, Instant};

/// Waits until the node at `base` (`http://host:port`) answers `/health/ready` 200; panics
/// after 20 s with the last answer.
pub async fn wait_ready(base: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = client
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .map(|r| r.status());
        if status.as_ref().is_ok_and(|s| s.is_success()) {
            return;
        }
        assert!(Instant::now() < deadline, "{base} is not ready: {status:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
