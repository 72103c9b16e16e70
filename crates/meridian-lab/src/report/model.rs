//! The report of one lab run: what a person reads after a drill and what CI asserts on. It is
//! plain data (serde), written as JSON next to its terminal and HTML renderings; every time is
//! in seconds since the start of the run's load, every latency in milliseconds.

use serde::{Deserialize, Serialize};

/// Everything measured in one run. Built by the run, rendered by [`super::html`] and
/// [`super::terminal`], serialized as `report.json`. The default is an empty report (no
/// requests, no regions, zero duration) that did not pass.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// Seed of the workload's random choices (same seed, same request sequence).
    pub seed: u64,
    /// Wall-clock start of the run, RFC 3339 (UTC).
    pub started_at: String,
    /// Seconds of load (the scenario's duration).
    pub duration_s: f64,
    /// Offered load, requests per second.
    pub rate: f64,
    /// The regions of the world.
    pub regions: Vec<RegionInfo>,
    /// The cities virtual users came from.
    pub cities: Vec<CityInfo>,
    /// Request totals over the whole run.
    pub totals: Totals,
    /// Latency and errors per city of the users.
    pub by_city: Vec<LatencyRow>,
    /// Latency and errors per region that served (`unserved` for requests no region answered).
    pub by_region: Vec<LatencyRow>,
    /// Latency and errors per operation of the workload mix.
    pub by_operation: Vec<LatencyRow>,
    /// Requests over time, in buckets of `bucket_s` by start time.
    pub timeline: Vec<Bucket>,
    /// Width of a timeline bucket in seconds.
    pub bucket_s: f64,
    /// Every timeline action, in order, with what it did to the service.
    pub faults: Vec<FaultReport>,
    /// Acknowledged writes read back after the final heal.
    pub rpo: Rpo,
    /// Replication lag between each directed pair of regions over time.
    pub lag: Vec<LagSeries>,
    /// Pinned data searched for outside its zone.
    pub residency: Residency,
    /// Inter-region bytes and their estimated cost.
    pub egress: Egress,
    /// How users resolved the service, when the world served GeoDNS.
    #[serde(default)]
    pub dns: Option<DnsReport>,
    /// Each expectation of the scenario, checked.
    pub expectations: Vec<ExpectationResult>,
    /// True when every expectation passed (the exit code of `meridian lab run` follows it).
    pub passed: bool,
}

/// A region of the world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionInfo {
    /// Region name, e.g. `eu-west-1`.
    pub name: String,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// Its residency zone, if any.
    pub zone: Option<String>,
}

/// A city of virtual users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CityInfo {
    /// City name, e.g. `Frankfurt`.
    pub name: String,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
    /// The edge its users enter by (the nearest).
    pub edge: String,
    /// Emulated round trip from the city to that edge, ms (4 ms + km / 75).
    pub access_rtt_ms: f64,
}

/// Request totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Requests sent.
    pub requests: u64,
    /// Answered with a 2xx.
    pub ok: u64,
    /// Failed: no answer, timeout, or 5xx / unexpected status.
    pub errors: u64,
    /// Residency-pinned requests refused because no region of their zone was up — correct
    /// behaviour (fail closed), counted apart from errors.
    pub pinned_refused: u64,
}

/// Latency percentiles and errors of one group of requests (a city, a region, an operation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyRow {
    /// The group's name.
    pub name: String,
    /// Requests in the group.
    pub requests: u64,
    /// Failed requests in the group.
    pub errors: u64,
    /// Median latency of successful requests, ms (0 when none succeeded).
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

/// One timeline bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Start of the bucket, s.
    pub t_s: f64,
    /// Requests started in the bucket.
    pub requests: u64,
    /// Of which failed.
    pub errors: u64,
    /// Median latency of its successful requests, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

/// One action of the timeline and its measured effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultReport {
    /// When it was applied, s.
    pub at_s: f64,
    /// What it was, as written in the scenario, e.g. `kill eu-west-1`.
    pub action: String,
    /// Kind: `kill`, `restart`, `partition`, `cut`, `heal`, `latency`, `drain`, `weight`.
    pub kind: String,
    /// Time until every edge marked the affected region down (kills), s.
    pub detection_s: Option<f64>,
    /// Time until requests succeeded again at the normal rate (faults that break something), s;
    /// `None` when it had not recovered by the next action or the end.
    pub rto_s: Option<f64>,
    /// Failed requests between this action and the next.
    pub errors: u64,
    /// For heals and restarts: time until every write acknowledged before it was visible in
    /// every region, s; `None` if that did not happen within the run.
    pub convergence_s: Option<f64>,
}

/// Recovery point: what acknowledged writes survived.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rpo {
    /// Writes the service acknowledged (2xx) during the run.
    pub acknowledged: u64,
    /// Of which on `sync` keyspaces.
    pub acknowledged_sync: u64,
    /// Read-backs performed (each acknowledged write in each region allowed to hold it).
    pub reads: u64,
    /// Acknowledged async writes missing in at least one region after the heal.
    pub async_lost: Vec<LostWrite>,
    /// Acknowledged sync writes missing anywhere after the heal (must be empty).
    pub sync_lost: Vec<LostWrite>,
    /// Seconds after the last heal until every region had converged, if it did.
    pub final_convergence_s: Option<f64>,
    /// Whether every region converged before the read-back.
    pub converged: bool,
}

/// An acknowledged write that could not be read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LostWrite {
    /// Keyspace.
    pub keyspace: String,
    /// Key (and map field, as `key#field`).
    pub key: String,
    /// Region that acknowledged it.
    pub acked_by: String,
    /// When it was acknowledged, s.
    pub acked_at_s: f64,
    /// Regions where it is missing.
    pub missing_in: Vec<String>,
}

/// Replication lag from one region to another over time, measured with probe writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LagSeries {
    /// Origin of the writes.
    pub from: String,
    /// Where they became visible.
    pub to: String,
    /// `(t_s, lag_ms)`: when the probe was acknowledged and how long until `to` had it.
    pub points: Vec<(f64, f64)>,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// Median over probes acknowledged outside every fault window (from a kill, partition or
    /// cut until its region is back or its link healed and converged), ms: the lag of the
    /// healthy world.
    #[serde(default)]
    pub steady_p50_ms: f64,
    /// 99th percentile outside fault windows, ms.
    #[serde(default)]
    pub steady_p99_ms: f64,
}

/// The residency audit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Residency {
    /// Pinned canary values written.
    pub canaries: u64,
    /// Places searched: data directories and captured links, by name.
    pub searched: Vec<String>,
    /// Bytes searched in total.
    pub bytes_searched: u64,
    /// Canaries found outside their zone (must be empty).
    pub findings: Vec<Finding>,
}

/// A pinned value found where it must not be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The canary's zone.
    pub zone: String,
    /// The canary's key.
    pub key: String,
    /// Where it was found: a file path, `link FROM→TO`, or `api REGION`.
    pub place: String,
}

/// Inter-region traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Egress {
    /// Price per GB used for the estimate, USD.
    pub price_per_gb: f64,
    /// Per directed pair.
    pub links: Vec<EgressLink>,
    /// Total bytes.
    pub total_bytes: u64,
    /// Total estimated cost, USD.
    pub total_cost_usd: f64,
    /// Estimated cost per month at this run's rate, USD.
    pub monthly_cost_usd: f64,
}

/// Bytes over one directed region pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EgressLink {
    /// Sending region.
    pub from: String,
    /// Receiving region.
    pub to: String,
    /// Bytes delivered.
    pub bytes: u64,
    /// Estimated cost, USD.
    pub cost_usd: f64,
}

/// GeoDNS as the users saw it: lookups, and which edge each city entered by.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsReport {
    /// Lookups made (answers are cached for their TTL).
    pub lookups: u64,
    /// Lookups that failed (the user entered by the nearest edge).
    pub failures: u64,
    /// Requests per city and entry region.
    pub entries: Vec<EntryCount>,
}

/// Requests of one city that entered by one region's edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryCount {
    /// The city.
    pub city: String,
    /// The region whose edge they entered by.
    pub region: String,
    /// How many.
    pub requests: u64,
}

/// One expectation of the scenario, checked against the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpectationResult {
    /// Its name, as in the scenario (`sync_writes_lost`, `rto_max`, …).
    pub name: String,
    /// What was expected, e.g. `= 0` or `≤ 10s`.
    pub expected: String,
    /// What was measured.
    pub actual: String,
    /// Whether it held.
    pub passed: bool,
}
