//! Which regions may hold a key, and where a request for it must go instead.

use meridian_core::config::{Keyspace, Residency, Topology};

/// The regions allowed to hold a key of `keyspace` whose home region is `home`; `None` when the
/// keyspace is not pinned. For `home-zone`, a key without a home falls back to `fallback_home`
/// (the region taking the write).
pub fn allowed_regions(
    topology: &Topology,
    keyspace: &Keyspace,
    home: Option<&str>,
    fallback_home: &str,
) -> Option<Vec<String>> {
    match keyspace.residency.as_ref()? {
        Residency::Regions(list) => Some(list.clone()),
        Residency::Zone(zone) => Some(topology.zone_regions(zone).to_vec()),
        Residency::HomeZone => {
            let home = home.unwrap_or(fallback_home);
            Some(topology.zone_of(home).map(|z| topology.zone_regions(z).to_vec()).unwrap_or_default())
        }
    }
}
