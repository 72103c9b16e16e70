//! Scenario files: the world to emulate, the load to drive through it, a timeline of faults, and
//! the expectations that decide the exit code of `meridian lab run`.
//!
//! ```toml
//! name = "region-outage"
//! duration = "60s"              # of load; the timeline's times are from its start
//! rate = 100                    # requests per second, over all cities
//! seed = 1
//! regions = ["us-east-1", "eu-west-1", "ap-southeast-1"]
//! profile = "default"           # latency CSV, or the shared matrix / distance model
//! jitter_ms = 1.0
//! price_per_gb = 0.02
//! dns = true                    # users resolve the service by the edges' GeoDNS
//!
//! [mix]                         # relative weights of the operations
//! conversation_append = 30
//! conversation_read = 40
//! checkout = 10
//!
//! [[timeline]]
//! at = "15s"
//! action = "kill eu-west-1"     # kill R | restart R [empty] | partition A B | cut A B
//!                               # heal [A B] | latency A B MS | drain R | weight R PCT
//! [expect]
//! sync_writes_lost = 0
//! rto_max = "10s"
//! ```
//!
//! Parsing is strict: unknown keys, unknown regions and malformed actions are errors naming the
//! line and what would be right.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use meridian_core::config::{format_duration, parse_duration};
use serde::Deserialize;

use crate::error::LabError;
use crate::wan::profile;

/// One operation of the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Append a message to a shared conversation (map keyspace, async, concurrent appends merge).
    ConversationAppend,
    /// Read a conversation.
    ConversationRead,
    /// Check out (sync keyspace, with an idempotency key).
    Checkout,
    /// Write the user's profile (pinned to the user's zone), holding a residency canary.
    ProfileWrite,
    /// Read the user's profile.
    ProfileRead,
    /// Create a session (TTL, async).
    SessionCreate,
    /// Read a session.
    SessionRead,
}

impl Operation {
    /// Every operation, in mix order.
    pub const ALL: [Operation; 7] = [
        Operation::ConversationAppend,
        Operation::ConversationRead,
        Operation::Checkout,
        Operation::ProfileWrite,
        Operation::ProfileRead,
        Operation::SessionCreate,
        Operation::SessionRead,
    ];

    /// Its name in scenario files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::ConversationAppend => "conversation_append",
            Operation::ConversationRead => "conversation_read",
            Operation::Checkout => "checkout",
            Operation::ProfileWrite => "profile_write",
            Operation::ProfileRead => "profile_read",
            Operation::SessionCreate => "session_create",
            Operation::SessionRead => "session_read",
        }
    }

    /// Whether it changes data (and so must be read back after the run).
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Operation::ConversationAppend
                | Operation::Checkout
                | Operation::ProfileWrite
                | Operation::SessionCreate
        )
    }
}

/// What a restarted region's node finds in its data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disk {
    /// Its store as the kill left it.
    Kept,
    /// Nothing: the directory is deleted before the start, as when a disk is lost or replaced.
    Lost,
}

/// One action of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// SIGKILL a region's node and app.
    Kill(String),
    /// Start a killed region again: on its data directory, or on a new, empty one (its disk
    /// lost, so its node joins its peers before it serves).
    Restart(String, Disk),
    /// Cut both directions between two regions.
    Partition(String, String),
    /// Cut one direction.
    Cut(String, String),
    /// Heal one direction, or everything.
    Heal(Option<(String, String)>),
    /// Set the one-way delay between two regions (both directions).
    Latency(String, String, Duration),
    /// Drain a region at every edge (weight 0).
    Drain(String),
    /// Set a region's weight at every edge.
    Weight(String, u8),
}

impl Action {
    /// Parses the text form (see the module docs), checking region names against `regions`.
    pub fn parse(text: &str, regions: &[String]) -> Result<Action, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let region = |w: &str| -> Result<String, String> {
            if regions.iter().any(|r| r == w) {
                Ok(w.to_string())
            } else {
                Err(format!(
                    "`{w}` is not a region of this scenario; its regions are: {}",
                    regions.join(", ")
                ))
            }
        };
        let two = |a: &str, b: &str| -> Result<(String, String), String> {
            if a == b {
                return Err(format!("`{a}` twice: expected two different regions"));
            }
            Ok((region(a)?, region(b)?))
        };
        Ok(match words.as_slice() {
            ["kill", r] => Action::Kill(region(r)?),
            ["restart", r] => Action::Restart(region(r)?, Disk::Kept),
            ["restart", r, "empty"] => Action::Restart(region(r)?, Disk::Lost),
            ["partition", a, b] => {
                let (a, b) = two(a, b)?;
                Action::Partition(a, b)
            }
            ["cut", a, b] => {
                let (a, b) = two(a, b)?;
                Action::Cut(a, b)
            }
            ["heal"] => Action::Heal(None),
            ["heal", a, b] => Action::Heal(Some(two(a, b)?)),
            ["latency", a, b, ms] => {
                let (a, b) = two(a, b)?;
                let ms: f64 = ms
                    .parse()
                    .ok()
                    .filter(|v: &f64| v.is_finite() && (0.0..=10_000.0).contains(v))
                    .ok_or_else(|| format!("`{ms}`: expected a one-way delay in ms, 0..10000"))?;
                Action::Latency(a, b, Duration::from_secs_f64(ms / 1000.0))
            }
            ["drain", r] => Action::Drain(region(r)?),
            ["weight", r, pct] => {
                let pct: u8 = pct
                    .parse()
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| format!("`{pct}`: expected a percentage 0..100"))?;
                Action::Weight(region(r)?, pct)
            }
            _ => {
                return Err(format!(
                    "`{text}`: expected one of `kill R`, `restart R`, `restart R empty`, \
                     `partition A B`, `cut A B`, \
                     `heal`, `heal A B`, `latency A B MS`, `drain R`, `weight R PCT`"
                ));
            }
        })
    }

    /// Its kind, as the report names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Kill(_) => "kill",
            Action::Restart(_, Disk::Kept) => "restart",
            Action::Restart(_, Disk::Lost) => "restart-empty",
            Action::Partition(..) => "partition",
            Action::Cut(..) => "cut",
            Action::Heal(_) => "heal",
            Action::Latency(..) => "latency",
            Action::Drain(_) => "drain",
            Action::Weight(..) => "weight",
        }
    }
}

/// A timeline entry: an action at a time since the load started.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// When.
    pub at: Duration,
    /// What, parsed.
    pub action: Action,
    /// What, as written.
    pub text: String,
}

/// What must hold for the run to pass. Absent fields are not checked.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// Acknowledged sync writes missing after the heal: at most this many (normally 0).
    pub sync_writes_lost: Option<u64>,
    /// Acknowledged async writes missing after the heal: at most this many.
    pub async_writes_lost: Option<u64>,
    /// Residency findings: at most this many (normally 0).
    pub residency_findings: Option<u64>,
    /// Every fault's RTO at most this (a fault that never recovered fails it).
    #[serde(default, deserialize_with = "de_duration_opt")]
    pub rto_max: Option<Duration>,
    /// Every kill detected by every edge within this.
    #[serde(default, deserialize_with = "de_duration_opt")]
    pub detection_max: Option<Duration>,
    /// Every region converged after the final heal.
    pub converged: Option<bool>,
    /// Convergence after each heal or restart within this.
    #[serde(default, deserialize_with = "de_duration_opt")]
    pub convergence_max: Option<Duration>,
    /// Share of failed requests over the whole run at most this (0..1).
    pub error_rate_max: Option<f64>,
}

/// A validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// Duration of the load.
    pub duration: Duration,
    /// Requests per second over all cities.
    pub rate: f64,
    /// Seed of every random choice of the workload.
    pub seed: u64,
    /// The regions (each with known coordinates).
    pub regions: Vec<String>,
    /// Residency zones: zone → regions. Default: one zone per region, named after it.
    pub zones: BTreeMap<String, Vec<String>>,
    /// Latency profile: `default` or a CSV path.
    pub profile: String,
    /// Jitter on every link, ms.
    pub jitter_ms: f64,
    /// Bandwidth cap per link direction, bytes/s.
    pub bandwidth: Option<u64>,
    /// Egress price, USD per GB.
    pub price_per_gb: f64,
    /// Users resolve the service's name with GeoDNS (served by the edges) and enter by the
    /// edge of the region it answers, instead of always by their nearest edge.
    pub dns: bool,
    /// Relative weights of the operations (all positive, at least one).
    pub mix: Vec<(Operation, u32)>,
    /// The timeline, sorted by time.
    pub timeline: Vec<Step>,
    /// The expectations.
    pub expect: Expectations,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(deserialize_with = "de_duration")]
    duration: Duration,
    rate: f64,
    #[serde(default = "default_seed")]
    seed: u64,
    regions: Vec<String>,
    #[serde(default)]
    zones: BTreeMap<String, Vec<String>>,
    #[serde(default = "default_profile")]
    profile: String,
    #[serde(default)]
    jitter_ms: f64,
    bandwidth: Option<u64>,
    #[serde(default = "default_price")]
    price_per_gb: f64,
    #[serde(default)]
    dns: bool,
    #[serde(default)]
    mix: BTreeMap<String, u32>,
    #[serde(default)]
    timeline: Vec<RawStep>,
    #[serde(default)]
    expect: Expectations,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(deserialize_with = "de_duration")]
    at: Duration,
    action: String,
}

fn default_seed() -> u64 {
    1
}

fn default_profile() -> String {
    "default".into()
}

fn default_price() -> f64 {
    0.02
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn de_duration_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

/// The default operation mix: mostly reads and conversation appends, some checkouts, profiles
/// and sessions.
pub const DEFAULT_MIX: [(Operation, u32); 7] = [
    (Operation::ConversationAppend, 25),
    (Operation::ConversationRead, 35),
    (Operation::Checkout, 10),
    (Operation::ProfileWrite, 5),
    (Operation::ProfileRead, 10),
    (Operation::SessionCreate, 5),
    (Operation::SessionRead, 10),
];

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, LabError> {
        let text = std::fs::read_to_string(path).map_err(|source| LabError::Io {
            what: format!("reading the scenario {}", path.display()),
            source,
        })?;
        Scenario::parse(&text).map_err(|reason| LabError::Scenario {
            file: path.display().to_string(),
            reason,
        })
    }

    /// Parses and validates scenario text; the error says what is wrong and what would be right.
    pub fn parse(text: &str) -> Result<Scenario, String> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| e.to_string())?;
        Scenario::validate(raw)
    }

    fn validate(raw: RawScenario) -> Result<Scenario, String> {
        if raw.name.trim().is_empty() {
            return Err("`name` is empty: give the scenario a name".into());
        }
        if raw.duration < Duration::from_secs(1) || raw.duration > Duration::from_secs(3600) {
            return Err(format!(
                "duration = \"{}\": expected 1s..1h",
                format_duration(raw.duration)
            ));
        }
        if !(raw.rate.is_finite() && (1.0..=5000.0).contains(&raw.rate)) {
            return Err(format!(
                "rate = {}: expected requests per second, 1..5000",
                raw.rate
            ));
        }
        if raw.regions.len() < 2 {
            return Err("regions: expected at least two regions".into());
        }
        for (i, r) in raw.regions.iter().enumerate() {
            if profile::coordinates(r).is_none() {
                return Err(format!(
                    "regions: `{r}` has no known location; known regions: {}",
                    known_regions()
                ));
            }
            if raw.regions[..i].contains(r) {
                return Err(format!("regions: `{r}` is listed twice"));
            }
        }
        let zones = if raw.zones.is_empty() {
            raw.regions
                .iter()
                .map(|r| (r.clone(), vec![r.clone()]))
                .collect()
        } else {
            let mut seen: Vec<&String> = Vec::new();
            for (zone, members) in &raw.zones {
                if members.is_empty() {
                    return Err(format!("zones.{zone}: empty; list its regions"));
                }
                for m in members {
                    if !raw.regions.contains(m) {
                        return Err(format!("zones.{zone}: `{m}` is not in `regions`"));
                    }
                    if seen.contains(&m) {
                        return Err(format!("zones.{zone}: `{m}` is already in another zone"));
                    }
                    seen.push(m);
                }
            }
            if let Some(r) = raw.regions.iter().find(|r| !seen.contains(r)) {
                return Err(format!(
                    "zones: region `{r}` is in no zone; with [zones] every region needs one"
                ));
            }
            raw.zones
        };
        if !(raw.jitter_ms.is_finite() && (0.0..=1000.0).contains(&raw.jitter_ms)) {
            return Err(format!("jitter_ms = {}: expected 0..1000", raw.jitter_ms));
        }
        if raw.bandwidth == Some(0) {
            return Err("bandwidth = 0: expected bytes per second > 0, or leave it out".into());
        }
        if !(raw.price_per_gb.is_finite() && raw.price_per_gb >= 0.0) {
            return Err(format!(
                "price_per_gb = {}: expected USD ≥ 0",
                raw.price_per_gb
            ));
        }
        let mix = if raw.mix.is_empty() {
            DEFAULT_MIX.to_vec()
        } else {
            let mut mix = Vec::new();
            for (name, weight) in &raw.mix {
                let op = Operation::ALL
                    .into_iter()
                    .find(|o| o.as_str() == name)
                    .ok_or_else(|| {
                        format!(
                            "mix.{name}: unknown operation; expected one of {}",
                            Operation::ALL.map(Operation::as_str).join(", ")
                        )
                    })?;
                if *weight > 0 {
                    mix.push((op, *weight));
                }
            }
            if mix.is_empty() {
                return Err("mix: every weight is 0; give at least one operation a weight".into());
            }
            mix.sort();
            mix
        };
        let mut timeline = Vec::new();
        for (i, s) in raw.timeline.iter().enumerate() {
            if s.at > raw.duration {
                return Err(format!(
                    "timeline[{i}] at = \"{}\": after the end of the run ({})",
                    format_duration(s.at),
                    format_duration(raw.duration)
                ));
            }
            let action = Action::parse(&s.action, &raw.regions)
                .map_err(|e| format!("timeline[{i}] action: {e}"))?;
            timeline.push(Step {
                at: s.at,
                action,
                text: s.action.split_whitespace().collect::<Vec<_>>().join(" "),
            });
        }
        timeline.sort_by_key(|s| s.at);
        check_timeline(&timeline, &raw.regions)?;
        if let Some(r) = raw.expect.error_rate_max
            && !(r.is_finite() && (0.0..=1.0).contains(&r))
        {
            return Err(format!("expect.error_rate_max = {r}: expected 0..1"));
        }
        Ok(Scenario {
            name: raw.name,
            duration: raw.duration,
            rate: raw.rate,
            seed: raw.seed,
            regions: raw.regions,
            zones,
            profile: raw.profile,
            jitter_ms: raw.jitter_ms,
            bandwidth: raw.bandwidth,
            price_per_gb: raw.price_per_gb,
            dns: raw.dns,
            mix,
            timeline,
            expect: raw.expect,
        })
    }

    /// The scenario `meridian demo` runs: three regions, a kill and restart, a partition and
    /// its heal, over `duration` (at least 30 s; the faults scale with it).
    pub fn demo(duration: Duration) -> Scenario {
        let d = duration.max(Duration::from_secs(30));
        let at = |f: f64| Duration::from_secs_f64((d.as_secs_f64() * f).round());
        let text = format!(
            r#"
name = "demo: region outage and partition"
duration = "{secs}s"
rate = 100
regions = ["us-east-1", "eu-west-1", "ap-southeast-1"]
jitter_ms = 1.0
dns = true

[zones]
us = ["us-east-1"]
eu = ["eu-west-1"]
apac = ["ap-southeast-1"]

[[timeline]]
at = "{kill}s"
action = "kill eu-west-1"

[[timeline]]
at = "{restart}s"
action = "restart eu-west-1"

[[timeline]]
at = "{partition}s"
action = "partition us-east-1 ap-southeast-1"

[[timeline]]
at = "{heal}s"
action = "heal"

[expect]
sync_writes_lost = 0
residency_findings = 0
rto_max = "10s"
converged = true
"#,
            secs = d.as_secs(),
            kill = at(0.2).as_secs(),
            restart = at(0.45).as_secs(),
            partition = at(0.6).as_secs(),
            heal = at(0.8).as_secs(),
        );
        // invariant: the text above is a valid scenario for every duration ≥ 30 s (tested)
        Scenario::parse(&text).expect("the built-in demo scenario is valid")
    }

    /// The zone of `region`.
    pub fn zone_of(&self, region: &str) -> Option<&str> {
        self.zones
            .iter()
            .find(|(_, members)| members.iter().any(|m| m == region))
            .map(|(z, _)| z.as_str())
    }
}

/// Checks that kills and restarts alternate per region (a restart needs an earlier kill; a
/// kill of a dead region is a mistake), so the run's bookkeeping matches the world.
fn check_timeline(timeline: &[Step], regions: &[String]) -> Result<(), String> {
    let mut dead: Vec<&str> = Vec::new();
    for s in timeline {
        match &s.action {
            Action::Kill(r) => {
                if dead.contains(&r.as_str()) {
                    return Err(format!(
                        "timeline at {}: `kill {r}` but {r} is already killed",
                        format_duration(s.at)
                    ));
                }
                dead.push(r);
                if dead.len() == regions.len() {
                    return Err(format!(
                        "timeline at {}: every region would be dead; keep at least one alive",
                        format_duration(s.at)
                    ));
                }
            }
            Action::Restart(r, _) => {
                if !dead.contains(&r.as_str()) {
                    return Err(format!(
                        "timeline at {}: `restart {r}` but {r} was not killed before",
                        format_duration(s.at)
                    ));
                }
                dead.retain(|d| d != r);
            }
            _ => {}
        }
    }
    Ok(())
}

fn known_regions() -> String {
    profile::REGION_COORDINATES
        .iter()
        .map(|(n, _, _)| *n)
        .filter(|n| n.contains('-'))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
duration = "20s"
rate = 50
regions = ["us-east-1", "eu-west-1"]
"#;

    #[test]
    fn minimal_scenario_gets_defaults() {
        let s = Scenario::parse(MINIMAL).expect("valid");
        assert_eq!(s.duration, Duration::from_secs(20));
        assert_eq!(s.mix, DEFAULT_MIX.to_vec());
        assert_eq!(s.zone_of("eu-west-1"), Some("eu-west-1"));
        assert_eq!(s.price_per_gb, 0.02);
        assert!(s.timeline.is_empty());
    }

    #[test]
    fn timeline_actions_parse_and_sort() {
        let text = format!(
            "{MINIMAL}\n[[timeline]]\nat = \"10s\"\naction = \"restart eu-west-1\"\n\
             [[timeline]]\nat = \"5s\"\naction = \"kill  eu-west-1\"\n\
             [[timeline]]\nat = \"12s\"\naction = \"latency us-east-1 eu-west-1 150\"\n\
             [[timeline]]\nat = \"13s\"\naction = \"kill eu-west-1\"\n\
             [[timeline]]\nat = \"14s\"\naction = \"restart eu-west-1 empty\"\n"
        );
        let s = Scenario::parse(&text).expect("valid");
        assert_eq!(s.timeline[0].action, Action::Kill("eu-west-1".into()));
        assert_eq!(s.timeline[0].text, "kill eu-west-1");
        assert_eq!(s.timeline[1].action.kind(), "restart");
        assert_eq!(
            s.timeline[4].action,
            Action::Restart("eu-west-1".into(), Disk::Lost)
        );
        assert_eq!(s.timeline[4].action.kind(), "restart-empty");
        assert_eq!(
            s.timeline[2].action,
            Action::Latency(
                "us-east-1".into(),
                "eu-west-1".into(),
                Duration::from_millis(150)
            )
        );
    }

    #[test]
    fn bad_scenarios_say_what_is_wrong() {
        let cases = [
            (
                "name = \"t\"\nduration = \"20s\"\nrate = 5\nregions = [\"us-east-1\", \"mars-1\"]\n",
                "no known location",
            ),
            (&format!("{MINIMAL}bogus = 1\n"), "unknown field"),
            (
                &format!("{MINIMAL}[[timeline]]\nat = \"5s\"\naction = \"kill ap-southeast-1\"\n"),
                "not a region of this scenario",
            ),
            (
                &format!("{MINIMAL}[[timeline]]\nat = \"5s\"\naction = \"restart eu-west-1\"\n"),
                "was not killed",
            ),
            (
                &format!("{MINIMAL}[[timeline]]\nat = \"50s\"\naction = \"heal\"\n"),
                "after the end",
            ),
            (
                &format!("{MINIMAL}[[timeline]]\nat = \"5s\"\naction = \"explode\"\n"),
                "expected one of",
            ),
            (
                &format!(
                    "{MINIMAL}[[timeline]]\nat = \"5s\"\naction = \"kill eu-west-1\"\n[[timeline]]\nat = \"6s\"\naction = \"restart eu-west-1 full\"\n"
                ),
                "`restart R empty`",
            ),
            (
                &format!("{MINIMAL}[mix]\nteleport = 3\n"),
                "unknown operation",
            ),
            (&format!("{MINIMAL}[expect]\nrto_max = \"soon\"\n"), "soon"),
            (
                &format!(
                    "{MINIMAL}[[timeline]]\nat = \"5s\"\naction = \"kill us-east-1\"\n[[timeline]]\nat = \"6s\"\naction = \"kill eu-west-1\"\n"
                ),
                "every region would be dead",
            ),
            (
                "name = \"t\"\nduration = \"20s\"\nrate = 0\nregions = [\"us-east-1\", \"eu-west-1\"]\n",
                "rate = 0",
            ),
        ];
        for (text, want) in cases {
            let err = Scenario::parse(text).expect_err(text);
            assert!(err.contains(want), "{text}\n→ {err}\n(wanted `{want}`)");
        }
    }

    /// Every example scenario in `examples/lab/` is valid.
    #[test]
    fn the_example_scenarios_are_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/lab");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("examples/lab") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("read");
            Scenario::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
        assert!(n >= 2, "{n} example scenarios");
    }

    #[test]
    fn the_demo_scenario_is_valid_at_every_duration() {
        for secs in [1, 30, 45, 60, 120, 600] {
            let s = Scenario::demo(Duration::from_secs(secs));
            assert_eq!(s.timeline.len(), 4);
            assert!(s.timeline.windows(2).all(|w| w[0].at < w[1].at), "{secs}");
        }
    }
}
