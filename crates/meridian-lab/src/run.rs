//! One lab run, start to finish: launch the world, drive the load while applying the timeline,
//! recover (restart what is dead, heal every link), wait for convergence, read back every
//! acknowledged write, audit residency, count egress, and assemble the report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use crate::analysis::{self, Applied, Measured};
use crate::audit::{self, Canary};
use crate::cities::{self, CITIES};
use crate::error::LabError;
use crate::observe::{Observations, Observer, Targets};
use crate::progress::Progress;
use crate::report::model::{
    CityInfo, DnsReport, Egress, EgressLink, EntryCount, Finding, LostWrite, RegionInfo, Report,
    Residency, Rpo, Totals,
};
use crate::scenario::{Action, Disk, Scenario};
use crate::wan::{Profile, profile};
use crate::workload::{
    AckedWrite, Availability, CityDns, CityPlan, Counters, Entry, Outcome, Workload,
};
use crate::world::{World, WorldSpec};

/// How long the world may take to start.
pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the lab waits for every region to converge after the final recovery.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of inter-region traffic kept for the residency audit.
pub const CAPTURE_BYTES: u64 = 256 * 1024 * 1024;
/// Read-backs in flight at once.
const READ_CONCURRENCY: usize = 32;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where the report and the world's files go.
    pub report_dir: PathBuf,
    /// The `meridian` binary (children are started from it).
    pub binary: PathBuf,
    /// Inter-region latencies.
    pub profile: Profile,
    /// Print nothing while running.
    pub quiet: bool,
}

/// A finished run: its report and the world, still running (shut it down or keep it).
pub struct Finished {
    /// The report.
    pub report: Report,
    /// The world.
    pub world: World,
}

/// Runs `scenario`. The world is left running in the result so `--keep` can keep it; on error
/// it is dropped, which kills every child.
pub async fn run(
    scenario: &Scenario,
    opts: &RunOptions,
    progress: &mut Progress,
) -> Result<Finished, LabError> {
    progress.event(&format!(
        "scenario `{}`: {} regions, {} s at {} req/s, {} timeline actions",
        scenario.name,
        scenario.regions.len(),
        scenario.duration.as_secs_f64(),
        scenario.rate,
        scenario.timeline.len()
    ));
    let started_at = wall_clock_rfc3339();
    let spec = WorldSpec {
        regions: scenario.regions.clone(),
        zones: scenario.zones.clone(),
        profile: opts.profile.clone(),
        jitter_ms: scenario.jitter_ms,
        bandwidth: scenario.bandwidth,
        seed: scenario.seed,
        dir: opts.report_dir.join("world"),
        binary: opts.binary.clone(),
        capture_bytes: CAPTURE_BYTES,
        dns: scenario.dns,
    };
    // Ports are reserved by binding port 0 and released for the children to bind; another
    // program may take one in between. A world whose child then fails to start is launched
    // once more on fresh ports before giving up.
    let mut world =
        match World::launch(spec.clone(), LAUNCH_TIMEOUT, &mut |m| progress.event(m)).await {
            Ok(w) => w,
            Err(LabError::World(why)) => {
                progress.event(&format!(
                    "the world did not start ({why}); once more on fresh ports"
                ));
                World::launch(spec, LAUNCH_TIMEOUT, &mut |m| progress.event(m)).await?
            }
            Err(e) => return Err(e),
        };
    for (a, b) in pairs(&scenario.regions) {
        let d = world.wan().shape(&a, &b)?.delay;
        progress.event(&format!(
            "link {a} → {b}: {:.1} ms one way",
            d.as_secs_f64() * 1000.0
        ));
    }

    let plans = city_plans(scenario, &world);
    let start = Instant::now() + Duration::from_secs(1);
    let targets = Targets {
        nodes: scenario
            .regions
            .iter()
            .map(|r| (r.clone(), world.node_url(r)))
            .collect(),
        admins: scenario
            .regions
            .iter()
            .map(|r| (r.clone(), world.admin_url(r)))
            .collect(),
        secret: world.secret().to_string(),
    };
    let observer = Observer::start(targets, start);
    let availability = Arc::new(Availability::default());
    let counters = Arc::new(Counters::default());
    let workload = Workload {
        cities: plans.clone(),
        mix: scenario.mix.clone(),
        rate: scenario.rate,
        seed: scenario.seed,
        zones: scenario
            .zones
            .iter()
            .map(|(z, r)| (z.clone(), r.clone()))
            .collect(),
    };
    let load = {
        let availability = availability.clone();
        let counters = counters.clone();
        let duration = scenario.duration;
        tokio::spawn(async move { workload.run(start, duration, availability, counters).await })
    };
    progress.event(&format!(
        "load: {} req/s from {} cities for {} s",
        scenario.rate,
        plans.len(),
        scenario.duration.as_secs()
    ));

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| LabError::World(format!("building an HTTP client: {e}")))?;
    let mut applied = Vec::new();
    let mut dead: BTreeSet<String> = BTreeSet::new();
    let mut recovering: BTreeSet<String> = BTreeSet::new();
    let mut steps = scenario.timeline.iter().peekable();
    let end = start + scenario.duration;
    let mut last = (Instant::now(), 0u64, 0u64);
    loop {
        let now = Instant::now();
        if let Some(step) = steps.peek()
            && now >= start + step.at
        {
            let at_s = start.elapsed().as_secs_f64();
            apply(&mut world, &client, &step.action, &availability).await?;
            match &step.action {
                Action::Kill(r) => {
                    dead.insert(r.clone());
                }
                Action::Restart(r, _) => {
                    dead.remove(r);
                    recovering.insert(r.clone());
                }
                _ => {}
            }
            progress.event(&format!("▶ {}", step.text));
            applied.push(Applied {
                at_s,
                step: (*step).clone(),
            });
            steps.next();
            continue;
        }
        let finished = load.is_finished();
        if finished {
            break;
        }
        recovering.retain(|r| {
            let up = observer.edges_see_up(r);
            if up {
                availability.set_down(r, false);
            }
            !up
        });
        if now.duration_since(last.0) >= Duration::from_millis(500) {
            let done = counters.done.load(Ordering::Relaxed);
            let errors = counters.errors.load(Ordering::Relaxed);
            let dt = now.duration_since(last.0).as_secs_f64();
            let phase = if now < start {
                "warm-up"
            } else if now < end {
                "load"
            } else {
                "draining"
            };
            progress.live(&format!(
                "{phase} {:>5.1}/{}s  {:>6.0} req/s  errors {:>4} (+{})  in flight {}  down: {}",
                start
                    .elapsed()
                    .as_secs_f64()
                    .min(scenario.duration.as_secs_f64()),
                scenario.duration.as_secs(),
                (done - last.1) as f64 / dt,
                errors,
                errors - last.2,
                counters.in_flight.load(Ordering::Relaxed),
                if dead.is_empty() {
                    "none".to_string()
                } else {
                    dead.iter().cloned().collect::<Vec<_>>().join(", ")
                }
            ));
            last = (now, done, errors);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recorded = load
        .await
        .map_err(|e| LabError::World(format!("the load generator failed: {e}")))?;
    let end_s = scenario.duration.as_secs_f64();
    progress.finish();
    progress.event(&format!(
        "load done: {} requests, {} acknowledged writes",
        recorded.records.len(),
        recorded.writes.len()
    ));

    write_requests_csv(
        &opts.report_dir.join("requests.csv"),
        &recorded.records,
        &plans,
    )?;

    // Final recovery: every region up, every link healed, then wait for convergence.
    for r in dead.iter() {
        world.restart_region(r)?;
        progress.event(&format!("recovery: restart {r}"));
    }
    world.wan().heal_all();
    let recovery_s = start.elapsed().as_secs_f64();
    progress.event("recovery: every link healed; waiting for every region to converge");
    let final_convergence_s = wait_converged(&observer, recovery_s, &scenario.regions).await;
    match final_convergence_s {
        Some(s) => progress.event(&format!("converged {s:.2} s after the recovery")),
        None => progress.event(&format!(
            "NOT converged within {} s",
            CONVERGE_TIMEOUT.as_secs()
        )),
    }

    progress.event(&format!(
        "reading back {} acknowledged writes in every region",
        recorded.writes.len()
    ));
    let (rpo_reads, lost) = read_back(&world, &client, &recorded.writes).await;
    progress.event("residency audit: data directories, captured inter-region bytes, the API");
    let residency = residency_audit(&world, &client, &recorded.writes).await?;
    let obs = observer.stop().await;

    let report = assemble(Assembly {
        scenario,
        started_at,
        plans: &plans,
        records: &recorded.records,
        writes: &recorded.writes,
        applied: &applied,
        obs: &obs,
        end_s,
        rpo_reads,
        lost,
        final_convergence_s,
        residency,
        egress: egress(&world, scenario),
        dns: scenario
            .dns
            .then_some((recorded.dns_lookups, recorded.dns_failures)),
    });
    Ok(Finished { report, world })
}

/// Every request as one CSV line (start time, city, operation, status, latency, serving region,
/// outcome), for whoever wants to dig below the report.
fn write_requests_csv(
    path: &std::path::Path,
    records: &[crate::workload::Record],
    plans: &[CityPlan],
) -> Result<(), LabError> {
    let mut out = String::from("t_s,city,operation,status,latency_ms,region,entry,outcome\n");
    for r in records {
        out.push_str(&format!(
            "{:.3},{},{},{},{:.2},{},{},{}\n",
            r.t_s,
            plans.get(r.city).map_or("?", |p| p.city.name),
            r.op.as_str(),
            r.status,
            r.latency_ms,
            r.region.as_deref().unwrap_or(""),
            r.entry,
            match r.outcome {
                Outcome::Ok => "ok",
                Outcome::Error => "error",
                Outcome::PinnedRefused => "pinned_refused",
            }
        ));
    }
    std::fs::write(path, out).map_err(|source| LabError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

/// Applies one timeline action to the world.
async fn apply(
    world: &mut World,
    client: &reqwest::Client,
    action: &Action,
    availability: &Availability,
) -> Result<(), LabError> {
    match action {
        Action::Kill(r) => {
            availability.set_down(r, true);
            world.kill_region(r).await?;
        }
        Action::Restart(r, Disk::Kept) => world.restart_region(r)?,
        Action::Restart(r, Disk::Lost) => world.restart_region_on_a_new_disk(r)?,
        Action::Partition(a, b) => world.wan().partition(a, b)?,
        Action::Cut(a, b) => world.wan().cut(a, b)?,
        Action::Heal(None) => world.wan().heal_all(),
        Action::Heal(Some((a, b))) => world.wan().heal(a, b)?,
        Action::Latency(a, b, d) => {
            world.wan().set_delay(a, b, *d)?;
            world.wan().set_delay(b, a, *d)?;
        }
        Action::Drain(r) => world.set_weight(client, r, 0).await?,
        Action::Weight(r, pct) => world.set_weight(client, r, *pct).await?,
    }
    Ok(())
}

fn pairs(regions: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for a in regions {
        for b in regions {
            if a < b {
                out.push((a.clone(), b.clone()));
            }
        }
    }
    out
}

/// Each city enters by the edge nearest to it (edges stand at the regions), or with GeoDNS
/// resolves the service at that edge's DNS and enters where the answer leads.
fn city_plans(scenario: &Scenario, world: &World) -> Vec<CityPlan> {
    let places: Vec<(f64, f64)> = scenario
        .regions
        .iter()
        .map(|r| profile::coordinates(r).unwrap_or((0.0, 0.0)))
        .collect();
    CITIES
        .iter()
        .filter_map(|c| {
            let (i, rtt) = cities::nearest(c, &places)?;
            let region = &scenario.regions[i];
            let dns = world.dns_addr(region).map(|server| CityDns {
                server,
                name: crate::world::topology::DNS_NAME.to_string(),
                zone_name: crate::world::topology::zone_dns_name(
                    scenario.zone_of(region).unwrap_or(region),
                ),
                entries: scenario
                    .regions
                    .iter()
                    .enumerate()
                    .map(|(j, r)| {
                        let km = profile::great_circle_km((c.lat, c.lon), places[j]);
                        let entry = Entry {
                            region: r.clone(),
                            edge_url: world.edge_url(r),
                            access_rtt: profile::model_rtt(km),
                        };
                        (crate::world::topology::region_address(j), entry)
                    })
                    .collect(),
            });
            Some(CityPlan {
                city: *c,
                edge_region: region.clone(),
                edge_url: world.edge_url(region),
                access_rtt: rtt,
                zone: scenario.zone_of(region).unwrap_or(region).to_string(),
                dns,
            })
        })
        .collect()
}

async fn wait_converged(observer: &Observer, t: f64, regions: &[String]) -> Option<f64> {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let obs = observer.snapshot();
        if let Some(s) = analysis::convergence_after(&obs, t, regions) {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Regions allowed to hold an acknowledged write.
fn allowed<'a>(w: &AckedWrite, world: &'a World) -> Vec<&'a String> {
    match &w.zone {
        Some(z) => world
            .zones()
            .get(z)
            .map(|m| m.iter().collect())
            .unwrap_or_default(),
        None => world.regions().iter().collect(),
    }
}

/// Reads every acknowledged write back from every region allowed to hold it (directly from the
/// nodes). Returns the number of reads and the writes missing somewhere.
async fn read_back(
    world: &World,
    client: &reqwest::Client,
    writes: &[AckedWrite],
) -> (u64, Vec<(AckedWrite, Vec<String>)>) {
    // Conversations are read once per region; other keys one by one.
    let mut jobs: Vec<(String, String, String)> = Vec::new();
    let mut seen = BTreeSet::new();
    for w in writes {
        for r in allowed(w, world) {
            let job = (r.clone(), w.keyspace.to_string(), w.key.clone());
            if seen.insert(job.clone()) {
                jobs.push(job);
            }
        }
    }
    let reads = jobs.len() as u64;
    let results: BTreeMap<(String, String, String), Option<serde_json::Value>> =
        futures_util::stream::iter(jobs.into_iter().map(|(region, ks, key)| {
            let url = kv_url(&world.node_url(&region), &ks, &key);
            let client = client.clone();
            async move {
                let value = match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => {
                        let bytes = r.bytes().await.unwrap_or_default();
                        Some(serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
                        }))
                    }
                    _ => None,
                };
                ((region, ks, key), value)
            }
        }))
        .buffer_unordered(READ_CONCURRENCY)
        .collect()
        .await;
    let mut lost = Vec::new();
    for w in writes {
        let missing: Vec<String> = allowed(w, world)
            .into_iter()
            .filter(|r| {
                let v = results.get(&((*r).clone(), w.keyspace.to_string(), w.key.clone()));
                match (v, &w.field) {
                    (Some(Some(map)), Some(field)) => map.get(field).is_none(),
                    (Some(Some(_)), None) => false,
                    _ => true,
                }
            })
            .cloned()
            .collect();
        if !missing.is_empty() {
            lost.push((w.clone(), missing));
        }
    }
    (reads, lost)
}

/// The data API URL of `keyspace/key` on the node at `base`, the key as one path segment
/// (percent-encoded as needed).
fn kv_url(base: &str, keyspace: &str, key: &str) -> String {
    match reqwest::Url::parse(base) {
        Ok(mut url) => {
            if let Ok(mut path) = url.path_segments_mut() {
                path.extend(["v1", "kv", keyspace, key]);
            }
            url.into()
        }
        // The world's node URLs are always `http://127.0.0.1:PORT`; a bad base cannot be
        // fetched either way, so the failed read says so.
        Err(_) => format!("{base}/v1/kv/{keyspace}/{key}"),
    }
}

/// The residency audit: every pinned canary searched for in the data directory of every region
/// outside its zone, in every inter-region byte captured on its way to such a region, and asked
/// for through the API of such a region.
async fn residency_audit(
    world: &World,
    client: &reqwest::Client,
    writes: &[AckedWrite],
) -> Result<Residency, LabError> {
    let canaries: Vec<Canary> = writes
        .iter()
        .filter_map(|w| {
            Some(Canary {
                zone: w.zone.clone()?,
                key: w.key.clone(),
                needle: w.canary.clone()?.into_bytes(),
                allowed: allowed(w, world).into_iter().cloned().collect(),
            })
        })
        .collect();
    let dirs: Vec<(String, PathBuf)> = world
        .regions()
        .iter()
        .map(|r| (r.clone(), world.data_dir(r)))
        .collect();
    let captures = world.wan().captures();
    let mut residency = tokio::task::block_in_place(|| audit::audit(&canaries, &dirs, &captures))?;
    residency.canaries = canaries.len() as u64;
    let outside: Vec<(&AckedWrite, String)> = writes
        .iter()
        .filter(|w| w.canary.is_some())
        .flat_map(|w| {
            let allowed = allowed(w, world);
            world
                .regions()
                .iter()
                .filter(move |r| !allowed.contains(r))
                .map(move |r| (w, r.clone()))
        })
        .collect();
    let findings: Vec<Option<Finding>> =
        futures_util::stream::iter(outside.iter().map(|(w, r)| {
            let url = kv_url(&world.node_url(r), w.keyspace, &w.key);
            let client = client.clone();
            async move {
                let body = match client.get(&url).send().await {
                    Ok(resp) => resp.bytes().await.unwrap_or_default(),
                    Err(_) => return None,
                };
                let canary = w.canary.as_deref().unwrap_or_default();
                (!audit::search_bytes(&body, &[canary.as_bytes()]).is_empty()).then(|| Finding {
                    zone: w.zone.clone().unwrap_or_default(),
                    key: w.key.clone(),
                    place: format!("api {r}"),
                })
            }
        }))
        .buffer_unordered(READ_CONCURRENCY)
        .collect()
        .await;
    for r in world.regions() {
        residency.searched.push(format!("api {r}"));
    }
    residency.findings.extend(findings.into_iter().flatten());
    Ok(residency)
}

fn egress(world: &World, scenario: &Scenario) -> Egress {
    let price = scenario.price_per_gb;
    let links: Vec<EgressLink> = world
        .wan()
        .counters()
        .into_iter()
        .map(|((from, to), bytes)| EgressLink {
            from,
            to,
            bytes,
            cost_usd: bytes as f64 / 1e9 * price,
        })
        .collect();
    let total_bytes: u64 = links.iter().map(|l| l.bytes).sum();
    let total_cost_usd = total_bytes as f64 / 1e9 * price;
    let month = 30.0 * 86_400.0;
    Egress {
        price_per_gb: price,
        links,
        total_bytes,
        total_cost_usd,
        monthly_cost_usd: total_cost_usd * month / scenario.duration.as_secs_f64(),
    }
}

struct Assembly<'a> {
    scenario: &'a Scenario,
    started_at: String,
    plans: &'a [CityPlan],
    records: &'a [crate::workload::Record],
    writes: &'a [AckedWrite],
    applied: &'a [Applied],
    obs: &'a Observations,
    end_s: f64,
    rpo_reads: u64,
    lost: Vec<(AckedWrite, Vec<String>)>,
    final_convergence_s: Option<f64>,
    residency: Residency,
    egress: Egress,
    dns: Option<(u64, u64)>,
}

fn assemble(a: Assembly<'_>) -> Report {
    let s = a.scenario;
    let count = |o: Outcome| a.records.iter().filter(|r| r.outcome == o).count() as u64;
    let totals = Totals {
        requests: a.records.len() as u64,
        ok: count(Outcome::Ok),
        errors: count(Outcome::Error),
        pinned_refused: count(Outcome::PinnedRefused),
    };
    let lost_write = |(w, missing): &(AckedWrite, Vec<String>)| LostWrite {
        keyspace: w.keyspace.to_string(),
        key: match &w.field {
            Some(f) => format!("{}#{f}", w.key),
            None => w.key.clone(),
        },
        acked_by: w.region.clone(),
        acked_at_s: w.acked_at_s,
        missing_in: missing.clone(),
    };
    let rpo = Rpo {
        acknowledged: a.writes.len() as u64,
        acknowledged_sync: a.writes.iter().filter(|w| w.sync).count() as u64,
        reads: a.rpo_reads,
        async_lost: a
            .lost
            .iter()
            .filter(|(w, _)| !w.sync)
            .map(lost_write)
            .collect(),
        sync_lost: a
            .lost
            .iter()
            .filter(|(w, _)| w.sync)
            .map(lost_write)
            .collect(),
        final_convergence_s: a.final_convergence_s,
        converged: a.final_convergence_s.is_some(),
    };
    let faults = analysis::faults(a.applied, a.records, a.obs, &s.regions, a.end_s);
    let windows = analysis::fault_windows(a.applied, &faults, a.end_s);
    let measured = Measured {
        sync_lost: rpo.sync_lost.len() as u64,
        async_lost: rpo.async_lost.len() as u64,
        residency_findings: a.residency.findings.len() as u64,
        converged: rpo.converged,
        error_rate: if totals.requests == 0 {
            0.0
        } else {
            totals.errors as f64 / totals.requests as f64
        },
    };
    let expectations = analysis::check(&s.expect, &measured, &faults);
    let city_name = |i: usize| a.plans.get(i).map_or("?", |p| p.city.name).to_string();
    Report {
        scenario: s.name.clone(),
        seed: s.seed,
        started_at: a.started_at,
        duration_s: a.end_s,
        rate: s.rate,
        regions: s
            .regions
            .iter()
            .map(|r| {
                let (lat, lon) = profile::coordinates(r).unwrap_or((0.0, 0.0));
                RegionInfo {
                    name: r.clone(),
                    lat,
                    lon,
                    zone: s.zone_of(r).map(str::to_string),
                }
            })
            .collect(),
        cities: a
            .plans
            .iter()
            .map(|p| CityInfo {
                name: p.city.name.to_string(),
                lat: p.city.lat,
                lon: p.city.lon,
                edge: crate::world::edge_name(&p.edge_region),
                access_rtt_ms: p.access_rtt.as_secs_f64() * 1000.0,
            })
            .collect(),
        totals,
        by_city: analysis::rows_by(a.records, |r| city_name(r.city)),
        by_region: analysis::rows_by(a.records, |r| {
            r.region.clone().unwrap_or_else(|| "unserved".into())
        }),
        by_operation: analysis::rows_by(a.records, |r| r.op.as_str().to_string()),
        timeline: analysis::timeline(a.records, a.end_s, 1.0),
        bucket_s: 1.0,
        faults,
        rpo,
        lag: analysis::lag_series(a.obs, &windows),
        residency: a.residency,
        egress: a.egress,
        dns: a.dns.map(|(lookups, failures)| {
            let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
            for r in a.records {
                *counts
                    .entry((city_name(r.city), r.entry.clone()))
                    .or_default() += 1;
            }
            DnsReport {
                lookups,
                failures,
                entries: counts
                    .into_iter()
                    .map(|((city, region), requests)| EntryCount {
                        city,
                        region,
                        requests,
                    })
                    .collect(),
            }
        }),
        passed: expectations.iter().all(|e| e.passed),
        expectations,
    }
}

/// The wall-clock time as RFC 3339 UTC, for the report's header only.
#[allow(clippy::disallowed_methods)] // a label for people, never an input to a decision
fn wall_clock_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_percent_encoded_path_segment() {
        let base = "http://127.0.0.1:7601";
        assert_eq!(
            kv_url(base, "orders", "o-1"),
            "http://127.0.0.1:7601/v1/kv/orders/o-1"
        );
        assert_eq!(
            kv_url(base, "profiles", "a/b c"),
            "http://127.0.0.1:7601/v1/kv/profiles/a%2Fb%20c"
        );
    }

    #[test]
    fn the_wall_clock_is_rfc3339() {
        let t = wall_clock_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
