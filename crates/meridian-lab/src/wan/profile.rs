//! Latency profiles: one-way delay per directed region pair, from a CSV of measured round trips
//! (`../shared/data/latency_matrix.csv`) with a distance model for pairs without a figure.
//! Pure: parsing and lookup only; reading the file is the caller's single `read_to_string`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::error::LabError;

/// Approximate locations (latitude, longitude in degrees) of the cloud regions the model knows,
/// for the distance fallback. AWS names and the other datasets' city names.
pub const REGION_COORDINATES: &[(&str, f64, f64)] = &[
    ("us-east-1", 38.9, -77.4),
    ("us-east-2", 40.0, -83.0),
    ("us-west-1", 37.4, -122.0),
    ("us-west-2", 45.8, -119.7),
    ("ca-central-1", 45.5, -73.6),
    ("sa-east-1", -23.5, -46.6),
    ("eu-west-1", 53.3, -6.3),
    ("eu-west-2", 51.5, -0.1),
    ("eu-west-3", 48.9, 2.4),
    ("eu-central-1", 50.1, 8.7),
    ("eu-north-1", 59.3, 18.1),
    ("af-south-1", -33.9, 18.4),
    ("me-south-1", 26.1, 50.6),
    ("ap-south-1", 19.1, 72.9),
    ("ap-east-1", 22.3, 114.2),
    ("ap-southeast-1", 1.35, 103.8),
    ("ap-southeast-2", -33.9, 151.2),
    ("ap-northeast-1", 35.7, 139.7),
    ("ap-northeast-2", 37.6, 127.0),
    ("Washington DC", 38.9, -77.0),
    ("Dallas", 32.8, -96.8),
    ("London", 51.5, -0.1),
    ("Frankfurt", 50.1, 8.7),
    ("Tokyo", 35.7, 139.7),
    ("Sydney", -33.9, 151.2),
    ("Sao Paulo", -23.5, -46.6),
    ("East US", 37.4, -79.5),
    ("West US 2", 47.2, -119.9),
    ("North Europe", 53.3, -6.3),
    ("Germany West Central", 50.1, 8.7),
    ("Southeast Asia", 1.35, 103.8),
    ("Japan East", 35.7, 139.7),
    ("Brazil South", -23.5, -46.6),
];

/// Datasets of the CSV, most trusted first: a pair measured in several takes the first one
/// listed here (newer measurements first; the 2017 AWS table last, its Singapore–Europe figures
/// are high for today's routes). Datasets not listed rank after these, in file order.
pub const DATASET_PREFERENCE: &[&str] = &[
    "cloudping-snapshot",
    "ibm-cloud-2024-08",
    "azure-2023-p50",
    "aws-2017-avg",
];

/// Great-circle distance in km between two points given in degrees (haversine, R = 6371 km).
pub fn great_circle_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

/// The stand-in round trip for a distance: RTT ≈ 4 ms + km / 75 (ms).
pub fn model_rtt(km: f64) -> Duration {
    Duration::from_secs_f64((4.0 + km.max(0.0) / 75.0) / 1000.0)
}

/// Coordinates of a region named in [`REGION_COORDINATES`].
pub fn coordinates(region: &str) -> Option<(f64, f64)> {
    REGION_COORDINATES
        .iter()
        .find(|(name, _, _)| *name == region)
        .map(|(_, lat, lon)| (*lat, *lon))
}

/// One-way delays per directed pair. Lookup order: an explicit override, the measured figure
/// (one-way = RTT / 2), then the distance model (half of [`model_rtt`]). Empty by default: every
/// lookup then uses the model.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// Measured one-way delays per directed pair `(from, to)`, with the dataset's rank.
    measured: BTreeMap<(String, String), (usize, Duration)>,
    overrides: BTreeMap<(String, String), Duration>,
}

impl Profile {
    /// Reads a profile CSV file (see [`Profile::parse_csv`]).
    pub fn load(path: &Path) -> Result<Profile, LabError> {
        let text = std::fs::read_to_string(path).map_err(|source| LabError::Io {
            what: format!("reading the latency profile {}", path.display()),
            source,
        })?;
        Profile::parse_csv(path, &text)
    }

    /// Parses the latency matrix CSV: a header naming at least `dataset`, `region_a`,
    /// `region_b`, `rtt_ms` and optionally `reverse_rtt_ms`; fields may be double-quoted.
    /// `rtt_ms` (measured from a to b) gives a→b a one-way delay of `rtt_ms / 2`, and
    /// `reverse_rtt_ms` (measured from b) gives b→a `reverse_rtt_ms / 2`; without a reverse
    /// figure both directions use `rtt_ms / 2`. `file` only names the source in errors.
    pub fn parse_csv(file: &Path, text: &str) -> Result<Profile, LabError> {
        let err = |line: usize, reason: String| LabError::Profile {
            file: file.to_path_buf(),
            line,
            reason,
        };
        let mut lines = text.lines().enumerate();
        let (_, header) = lines
            .next()
            .ok_or_else(|| err(1, "empty file; expected a header line".into()))?;
        let header = split_csv_line(header);
        let col = |name: &str| header.iter().position(|h| h.trim() == name);
        let need = |name: &str| {
            col(name).ok_or_else(|| err(1, format!("no `{name}` column in the header")))
        };
        let (c_set, c_a, c_b, c_rtt) = (
            need("dataset")?,
            need("region_a")?,
            need("region_b")?,
            need("rtt_ms")?,
        );
        let c_rev = col("reverse_rtt_ms");
        let mut profile = Profile::default();
        let mut extra_ranks: Vec<String> = Vec::new();
        for (i, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let n = i + 1;
            let f = split_csv_line(line);
            let get = |c: usize| f.get(c).map(|s| s.trim()).unwrap_or("");
            let (set, a, b) = (get(c_set), get(c_a), get(c_b));
            if a.is_empty() || b.is_empty() {
                return Err(err(n, "region_a and region_b must not be empty".into()));
            }
            let ms = |s: &str| -> Result<Option<Duration>, LabError> {
                if s.is_empty() {
                    return Ok(None);
                }
                match s.parse::<f64>() {
                    Ok(v) if v.is_finite() && v >= 0.0 => {
                        Ok(Some(Duration::from_secs_f64(v / 2.0 / 1000.0)))
                    }
                    _ => Err(err(n, format!("`{s}` is not a round trip in ms"))),
                }
            };
            let Some(forward) = ms(get(c_rtt))? else {
                return Err(err(n, "rtt_ms is empty".into()));
            };
            let reverse = match c_rev {
                Some(c) => ms(get(c))?.unwrap_or(forward),
                None => forward,
            };
            let rank = match DATASET_PREFERENCE.iter().position(|d| *d == set) {
                Some(r) => r,
                None => {
                    let p = match extra_ranks.iter().position(|d| d == set) {
                        Some(p) => p,
                        None => {
                            extra_ranks.push(set.to_string());
                            extra_ranks.len() - 1
                        }
                    };
                    DATASET_PREFERENCE.len() + p
                }
            };
            profile.offer(a, b, rank, forward);
            profile.offer(b, a, rank, reverse);
        }
        Ok(profile)
    }

    fn offer(&mut self, from: &str, to: &str, rank: usize, one_way: Duration) {
        let key = (from.to_string(), to.to_string());
        match self.measured.get(&key) {
            Some((r, _)) if *r <= rank => {}
            _ => {
                self.measured.insert(key, (rank, one_way));
            }
        }
    }

    /// Sets the one-way delay of `from → to`, taking precedence over measured figures.
    pub fn set(&mut self, from: &str, to: &str, one_way: Duration) {
        self.overrides
            .insert((from.to_string(), to.to_string()), one_way);
    }

    /// The one-way delay of `from → to`: override, else measured RTT / 2, else half the
    /// distance model's RTT. Zero from a region to itself.
    pub fn one_way(&self, from: &str, to: &str) -> Result<Duration, LabError> {
        let key = (from.to_string(), to.to_string());
        if let Some(d) = self.overrides.get(&key) {
            return Ok(*d);
        }
        if let Some((_, d)) = self.measured.get(&key) {
            return Ok(*d);
        }
        if from == to {
            return Ok(Duration::ZERO);
        }
        let locate = |r: &str| {
            coordinates(r).ok_or_else(|| LabError::UnknownRegion {
                from: from.to_string(),
                to: to.to_string(),
                missing: r.to_string(),
            })
        };
        Ok(model_rtt(great_circle_km(locate(from)?, locate(to)?)) / 2)
    }
}

/// Splits one CSV line into fields; `"…"` quotes commas, `""` inside quotes is a quote.
fn split_csv_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "dataset,region_a,region_b,aws_analog_a,aws_analog_b,rtt_ms,reverse_rtt_ms,statistic,period,source\n\
        aws-2017-avg,us-east-1,eu-west-1,x,y,80.00,82.00,mean,2017,\"a, quoted \"\"source\"\"\"\n\
        aws-2017-avg,eu-west-1,ap-southeast-1,x,y,180.0,,mean,2017,s\n\
        cloudping-snapshot,eu-west-1,ap-southeast-1,x,y,160.0,,p50,2025,s\n";

    fn ms(d: Duration) -> f64 {
        d.as_secs_f64() * 1000.0
    }

    #[test]
    fn one_way_is_half_the_round_trip_per_direction() {
        let p = Profile::parse_csv(Path::new("t.csv"), CSV).expect("parse");
        assert!((ms(p.one_way("us-east-1", "eu-west-1").expect("a")) - 40.0).abs() < 1e-9);
        assert!((ms(p.one_way("eu-west-1", "us-east-1").expect("b")) - 41.0).abs() < 1e-9);
    }

    #[test]
    fn newer_dataset_wins_whatever_the_order() {
        let p = Profile::parse_csv(Path::new("t.csv"), CSV).expect("parse");
        assert!((ms(p.one_way("ap-southeast-1", "eu-west-1").expect("x")) - 80.0).abs() < 1e-9);
    }

    #[test]
    fn overrides_win_and_model_fills_gaps() {
        let mut p = Profile::parse_csv(Path::new("t.csv"), CSV).expect("parse");
        p.set("us-east-1", "eu-west-1", Duration::from_millis(7));
        assert_eq!(
            p.one_way("us-east-1", "eu-west-1").expect("o"),
            Duration::from_millis(7)
        );
        // Tokyo–Sydney ≈ 7,800 km: RTT ≈ 4 + 104 ms, one way ≈ 54 ms.
        let d = ms(p
            .one_way("ap-northeast-1", "ap-southeast-2")
            .expect("model"));
        assert!((50.0..58.0).contains(&d), "{d}");
        assert!(matches!(
            p.one_way("mars-1", "us-east-1"),
            Err(LabError::UnknownRegion { missing, .. }) if missing == "mars-1"
        ));
    }

    #[test]
    fn model_and_distance_are_right() {
        assert_eq!(model_rtt(0.0), Duration::from_millis(4));
        assert!((ms(model_rtt(7500.0)) - 104.0).abs() < 1e-9);
        // London–New York ≈ 5,570 km.
        let km = great_circle_km((51.5, -0.13), (40.71, -74.0));
        assert!((5500.0..5650.0).contains(&km), "{km}");
        assert!(great_circle_km((10.0, 10.0), (10.0, 10.0)).abs() < 1e-9);
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let bad = "dataset,region_a,region_b,rtt_ms\nd,a,b,fast\n";
        let e = Profile::parse_csv(Path::new("p.csv"), bad).expect_err("bad");
        assert!(e.to_string().starts_with("p.csv:2:"), "{e}");
        let e = Profile::parse_csv(Path::new("p.csv"), "dataset,region_a\n").expect_err("hdr");
        assert!(e.to_string().contains("region_b"), "{e}");
    }

    #[test]
    fn the_shared_matrix_loads() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/latency_matrix.csv");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return; // The shared data lives beside the repository; absent in a bare checkout.
        };
        let p = Profile::parse_csv(&path, &text).expect("the shared matrix parses");
        let d = ms(p.one_way("us-east-1", "eu-west-1").expect("measured"));
        assert!((30.0..60.0).contains(&d), "{d}");
    }
}
