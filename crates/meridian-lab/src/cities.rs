//! The cities virtual users come from, and their emulated access latency: a user reaches the
//! nearest edge with a round trip of 4 ms + distance_km / 75 (fibre paths are longer than great
//! circles, and the last mile costs a few ms).

use std::time::Duration;

use crate::wan::profile::{great_circle_km, model_rtt};

/// A city of virtual users.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct City {
    /// Its name.
    pub name: &'static str,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Relative share of the users.
    pub weight: u32,
}

/// Ten cities on five continents, weighted roughly by the traffic of a global consumer app.
pub const CITIES: [City; 10] = [
    City {
        name: "New York",
        lat: 40.7,
        lon: -74.0,
        weight: 14,
    },
    City {
        name: "San Francisco",
        lat: 37.8,
        lon: -122.4,
        weight: 10,
    },
    City {
        name: "São Paulo",
        lat: -23.5,
        lon: -46.6,
        weight: 8,
    },
    City {
        name: "London",
        lat: 51.5,
        lon: -0.1,
        weight: 12,
    },
    City {
        name: "Frankfurt",
        lat: 50.1,
        lon: 8.7,
        weight: 10,
    },
    City {
        name: "Lagos",
        lat: 6.5,
        lon: 3.4,
        weight: 6,
    },
    City {
        name: "Mumbai",
        lat: 19.1,
        lon: 72.9,
        weight: 10,
    },
    City {
        name: "Singapore",
        lat: 1.35,
        lon: 103.8,
        weight: 10,
    },
    City {
        name: "Tokyo",
        lat: 35.7,
        lon: 139.7,
        weight: 12,
    },
    City {
        name: "Sydney",
        lat: -33.9,
        lon: 151.2,
        weight: 8,
    },
];

/// The index of the location nearest to `city` among `places` (`(lat, lon)`), with the
/// emulated round trip to it. `None` when `places` is empty.
pub fn nearest(city: &City, places: &[(f64, f64)]) -> Option<(usize, Duration)> {
    places
        .iter()
        .enumerate()
        .map(|(i, p)| (i, great_circle_km((city.lat, city.lon), *p)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, km)| (i, model_rtt(km)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cities_go_to_the_nearest_place_with_the_model_latency() {
        let places = [(38.9, -77.4), (53.3, -6.3), (1.35, 103.8)];
        let by = |name: &str| {
            let c = CITIES.iter().find(|c| c.name == name).expect("city");
            nearest(c, &places).expect("places")
        };
        assert_eq!(by("New York").0, 0);
        assert_eq!(by("Frankfurt").0, 1);
        assert_eq!(by("Tokyo").0, 2);
        let (i, rtt) = by("Singapore");
        assert_eq!(i, 2);
        assert!(
            rtt >= Duration::from_millis(4) && rtt < Duration::from_millis(5),
            "{rtt:?}"
        );
        let (_, rtt) = by("Sydney");
        assert!(rtt > Duration::from_millis(80), "{rtt:?}");
        assert!(nearest(&CITIES[0], &[]).is_none());
        assert!(CITIES.len() >= 8);
    }
}
