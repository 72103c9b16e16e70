//! A realistic report for rendering tests: three regions, eight cities, 60 s of load in 1 s
//! buckets, `eu-west-1` killed at 20 s (an error burst while edges notice) and restarted at 40 s,
//! lag probes between every pair (none from or to the dead region while it is down, a catch-up
//! spike after the restart), one acknowledged async write lost, egress on every link.
//!
//! Deterministic: the same report on every call.

use meridian_lab::report::model::*;

/// The fixture's scenario name.
pub const SCENARIO: &str = "kill-eu-west";

const KILL_AT: f64 = 20.0;
const RESTART_AT: f64 = 40.0;
const RATE: u64 = 50;

/// Great-circle distance in km.
fn km((lat1, lon1): (f64, f64), (lat2, lon2): (f64, f64)) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * a.sqrt().asin()
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// The sample report described in the module documentation.
pub fn sample() -> Report {
    let regions = vec![
        RegionInfo {
            name: "us-east-1".into(),
            lat: 38.9,
            lon: -77.4,
            zone: None,
        },
        RegionInfo {
            name: "eu-west-1".into(),
            lat: 53.35,
            lon: -6.26,
            zone: Some("eu".into()),
        },
        RegionInfo {
            name: "ap-southeast-1".into(),
            lat: 1.35,
            lon: 103.82,
            zone: None,
        },
    ];
    let coords = |name: &str| {
        let r = regions
            .iter()
            .find(|r| r.name == name)
            .expect("fixture region");
        (r.lat, r.lon)
    };
    let city = |name: &str, lat: f64, lon: f64, edge: &str| CityInfo {
        name: name.into(),
        lat,
        lon,
        edge: edge.into(),
        access_rtt_ms: 4.0 + km((lat, lon), coords(edge)) / 75.0,
    };
    let cities = vec![
        city("New York", 40.71, -74.01, "us-east-1"),
        city("Chicago", 41.88, -87.63, "us-east-1"),
        city("São Paulo", -23.55, -46.63, "us-east-1"),
        city("London", 51.51, -0.13, "eu-west-1"),
        city("Frankfurt", 50.11, 8.68, "eu-west-1"),
        city("Lagos", 6.52, 3.38, "eu-west-1"),
        city("Singapore", 1.29, 103.85, "ap-southeast-1"),
        city("Sydney", -33.87, 151.21, "ap-southeast-1"),
    ];

    let burst = [40, 35, 18, 6];
    let timeline: Vec<Bucket> = (0..60)
        .map(|i| {
            let t = f64::from(i);
            let wobble = (t * 0.7).sin() * 3.0;
            let degraded = (KILL_AT..RESTART_AT).contains(&t);
            let errors = if t >= KILL_AT {
                burst.get(i as usize - 20).copied().unwrap_or(0)
            } else {
                0
            };
            Bucket {
                t_s: t,
                requests: RATE,
                errors,
                p50_ms: if degraded { 68.0 } else { 42.0 } + wobble,
                p99_ms: if degraded { 265.0 } else { 180.0 } + 4.0 * wobble,
            }
        })
        .collect();
    let requests: u64 = timeline.iter().map(|b| b.requests).sum();
    let errors: u64 = timeline.iter().map(|b| b.errors).sum();

    let by_city: Vec<LatencyRow> = cities
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let eu = c.edge == "eu-west-1";
            let base = c.access_rtt_ms + 30.0;
            LatencyRow {
                name: c.name.clone(),
                requests: requests / 8,
                errors: if eu {
                    errors / 3 + u64::from(i == 3) * (errors % 3)
                } else {
                    0
                },
                p50_ms: base + if eu { 20.0 } else { 0.0 },
                p95_ms: base * 2.4,
                p99_ms: base * 3.5,
            }
        })
        .collect();
    let by_region = vec![
        row("us-east-1", 1_650, 0, 38.0, 120.0, 190.0),
        row("eu-west-1", 800, 0, 31.0, 95.0, 150.0),
        row("ap-southeast-1", 450, 0, 35.0, 110.0, 175.0),
        row("unserved", errors, errors, 0.0, 0.0, 0.0),
    ];
    let by_operation = vec![
        row("get", 2_100, 70, 36.0, 110.0, 180.0),
        row("put", 600, 22, 44.0, 140.0, 230.0),
        row("list", 300, 7, 52.0, 160.0, 260.0),
    ];

    let faults = vec![
        FaultReport {
            at_s: KILL_AT,
            action: "kill eu-west-1".into(),
            kind: "kill".into(),
            detection_s: Some(2.1),
            rto_s: Some(4.0),
            errors,
            convergence_s: None,
        },
        FaultReport {
            at_s: RESTART_AT,
            action: "restart eu-west-1".into(),
            kind: "restart".into(),
            detection_s: None,
            rto_s: None,
            errors: 0,
            convergence_s: Some(3.2),
        },
    ];

    let one_way = |a: &str, b: &str| km(coords(a), coords(b)) / 100.0 + 5.0;
    let mut lag = Vec::new();
    for from in ["us-east-1", "eu-west-1", "ap-southeast-1"] {
        for to in ["us-east-1", "eu-west-1", "ap-southeast-1"] {
            if from == to {
                continue;
            }
            let touches_eu = from == "eu-west-1" || to == "eu-west-1";
            let points: Vec<(f64, f64)> = (0..30)
                .map(|i| f64::from(i) * 2.0 + 0.5)
                .filter(|t| !(touches_eu && (KILL_AT..RESTART_AT).contains(t)))
                .map(|t| {
                    // Each direction its own phase and queueing, so no two lines coincide.
                    let phase = lag.len() as f64;
                    let jitter = (t * 1.3 + phase).cos().abs() * 12.0 + phase * 6.0;
                    let catch_up = if touches_eu && (RESTART_AT..RESTART_AT + 4.0).contains(&t) {
                        1_400.0 - (t - RESTART_AT) * 300.0
                    } else {
                        0.0
                    };
                    (t, one_way(from, to) + jitter + catch_up)
                })
                .collect();
            let lags: Vec<f64> = points.iter().map(|p| p.1).collect();
            lag.push(LagSeries {
                from: from.into(),
                to: to.into(),
                p50_ms: percentile(&lags, 0.5),
                p99_ms: percentile(&lags, 0.99),
                max_ms: lags.iter().copied().fold(0.0, f64::max),
                steady_p50_ms: percentile(&lags, 0.5),
                steady_p99_ms: percentile(&lags, 0.9),
                points,
            });
        }
    }

    let price_per_gb = 0.02;
    let links: Vec<EgressLink> = lag
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let bytes = 4_000_000 + 1_750_000 * i as u64;
            EgressLink {
                from: s.from.clone(),
                to: s.to.clone(),
                bytes,
                cost_usd: bytes as f64 / 1e9 * price_per_gb,
            }
        })
        .collect();
    let total_bytes: u64 = links.iter().map(|l| l.bytes).sum();
    let total_cost_usd = total_bytes as f64 / 1e9 * price_per_gb;

    let expect = |name: &str, expected: &str, actual: &str| ExpectationResult {
        name: name.into(),
        expected: expected.into(),
        actual: actual.into(),
        passed: true,
    };
    Report {
        scenario: SCENARIO.into(),
        seed: 42,
        started_at: "2025-06-01T12:00:00Z".into(),
        duration_s: 60.0,
        rate: RATE as f64,
        regions,
        cities,
        totals: Totals {
            requests,
            ok: requests - errors,
            errors,
            pinned_refused: 3,
        },
        by_city,
        by_region,
        by_operation,
        timeline,
        bucket_s: 1.0,
        faults,
        rpo: Rpo {
            acknowledged: 600,
            acknowledged_sync: 150,
            reads: 1_650,
            async_lost: vec![LostWrite {
                keyspace: "sessions".into(),
                key: "session:4f2a#cart".into(),
                acked_by: "eu-west-1".into(),
                acked_at_s: 19.8,
                missing_in: vec!["us-east-1".into(), "ap-southeast-1".into()],
            }],
            sync_lost: vec![],
            final_convergence_s: Some(3.2),
            converged: true,
        },
        lag,
        residency: Residency {
            canaries: 24,
            searched: vec![
                "data/us-east-1".into(),
                "data/ap-southeast-1".into(),
                "link eu-west-1→us-east-1".into(),
                "link eu-west-1→ap-southeast-1".into(),
                "api us-east-1".into(),
                "api ap-southeast-1".into(),
            ],
            bytes_searched: 48_300_000,
            findings: vec![],
        },
        egress: Egress {
            price_per_gb,
            links,
            total_bytes,
            total_cost_usd,
            monthly_cost_usd: total_cost_usd * 30.0 * 86_400.0 / 60.0,
        },
        dns: Some(DnsReport {
            lookups: 412,
            failures: 1,
            entries: vec![
                EntryCount {
                    city: "London".into(),
                    region: "eu-west-1".into(),
                    requests: 700,
                },
                EntryCount {
                    city: "London".into(),
                    region: "us-east-1".into(),
                    requests: 120,
                },
            ],
        }),
        expectations: vec![
            expect("sync_writes_lost", "= 0", "0"),
            expect("async_writes_lost", "≤ 5", "1"),
            expect("detection_max", "≤ 5s", "2.1s"),
            expect("rto_max", "≤ 10s", "4.0s"),
            expect("residency_findings", "= 0", "0"),
        ],
        passed: true,
    }
}

fn row(name: &str, requests: u64, errors: u64, p50: f64, p95: f64, p99: f64) -> LatencyRow {
    LatencyRow {
        name: name.into(),
        requests,
        errors,
        p50_ms: p50,
        p95_ms: p95,
        p99_ms: p99,
    }
}
