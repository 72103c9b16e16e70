//! What two regions' topologies must agree on for the data they replicate to mean the same in
//! both: the zones, and every keyspace's definition. Each node states its terms when a peer
//! opens a replication stream; the peer compares them with its own, so a topology rolled out
//! to some regions and not yet to others — or diverged by mistake — is reported by name
//! instead of showing up later as data that merges differently in different places.
//!
//! The terms are `zones:<hash>` followed by `<keyspace>:<hash>` for each keyspace, comma
//! separated, each hash 16 hex digits of xxh3 over a canonical text that names every setting
//! explicitly (not Rust's `Debug`), so they stay comparable across builds.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Keyspace, Residency, Topology};

/// The label of the zones' entry (keyspace names cannot contain a `:`, so it never collides).
const ZONES: &str = "zones";
/// Most entries accepted from a peer (a keyspace each, and the zones).
const MAX_ENTRIES: usize = 10_000;

/// `topology`'s terms, as described in the module documentation.
pub fn replication_terms(topology: &Topology) -> String {
    let mut zones: Vec<(&str, Vec<&str>)> = topology
        .zones
        .iter()
        .map(|z| {
            let mut regions: Vec<&str> = z.regions.iter().map(String::as_str).collect();
            regions.sort_unstable();
            (z.name.as_str(), regions)
        })
        .collect();
    zones.sort_unstable();
    let zones_text = zones
        .iter()
        .map(|(name, regions)| format!("{name}={}", regions.join("+")))
        .collect::<Vec<_>>()
        .join(";");
    let mut out = format!("{ZONES}:{:016x}", hash(&zones_text));
    let mut keyspaces: Vec<&Keyspace> = topology.keyspaces.iter().collect();
    keyspaces.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    for k in keyspaces {
        let _ = write!(out, ",{}:{:016x}", k.name, hash(&canonical(k)));
    }
    out
}

/// Every setting of `k` that changes what its replicated data means or where it may go.
fn canonical(k: &Keyspace) -> String {
    let residency = match &k.residency {
        None => "everywhere".to_string(),
        Some(Residency::Zone(z)) => format!("zone={z}"),
        Some(Residency::HomeZone) => "home-zone".to_string(),
        Some(Residency::Regions(regions)) => {
            let mut regions: Vec<&str> = regions.iter().map(String::as_str).collect();
            regions.sort_unstable();
            format!("regions={}", regions.join("+"))
        }
    };
    format!(
        "type={};replication={};quorum={};sync_timeout_ms={};writer={};forward={};ttl_ms={};\
         residency={residency}",
        k.kind.as_str(),
        k.replication.as_str(),
        k.quorum.map_or(0, |q| q),
        k.sync_timeout.as_millis(),
        k.writer.as_str(),
        k.forward,
        k.ttl.map_or(0, |t| t.as_millis()),
    )
}

fn hash(text: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

/// How a peer's terms differ from this node's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TermsDiff {
    /// The zones (names or members) differ.
    pub zones: bool,
    /// Keyspaces both define, differently; sorted.
    pub differ: Vec<String>,
    /// Keyspaces only this node defines; sorted.
    pub only_here: Vec<String>,
    /// Keyspaces only the peer defines; sorted.
    pub only_there: Vec<String>,
}

impl TermsDiff {
    /// True when the two topologies agree on everything the terms cover.
    pub fn is_empty(&self) -> bool {
        !self.zones
            && self.differ.is_empty()
            && self.only_here.is_empty()
            && self.only_there.is_empty()
    }
}

impl std::fmt::Display for TermsDiff {
    /// `same`, or each difference in words, `; `-separated.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("same");
        }
        let mut parts = Vec::new();
        if self.zones {
            parts.push("the zones differ".to_string());
        }
        let list = |names: &[String]| {
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.differ.is_empty() {
            parts.push(format!("defined differently: {}", list(&self.differ)));
        }
        if !self.only_here.is_empty() {
            parts.push(format!("only here: {}", list(&self.only_here)));
        }
        if !self.only_there.is_empty() {
            parts.push(format!("only there: {}", list(&self.only_there)));
        }
        f.write_str(&parts.join("; "))
    }
}

/// Compares this node's terms (`ours`, from [`replication_terms`]) with a peer's. Fails, saying
/// what is wrong, when `theirs` is not terms as [`replication_terms`] writes them.
pub fn compare(ours: &str, theirs: &str) -> Result<TermsDiff, String> {
    let ours = entries(ours)?;
    let theirs = entries(theirs)?;
    let mut diff = TermsDiff {
        zones: ours.get(ZONES) != theirs.get(ZONES),
        ..TermsDiff::default()
    };
    for (name, hash) in &ours {
        match theirs.get(name) {
            _ if *name == ZONES => {}
            Some(h) if h == hash => {}
            Some(_) => diff.differ.push((*name).to_string()),
            None => diff.only_here.push((*name).to_string()),
        }
    }
    diff.only_there = theirs
        .keys()
        .filter(|n| **n != ZONES && !ours.contains_key(*n))
        .map(|n| (*n).to_string())
        .collect();
    Ok(diff)
}

/// The `name:hash` entries of `terms`, each name once.
fn entries(terms: &str) -> Result<BTreeMap<&str, &str>, String> {
    let mut out = BTreeMap::new();
    for (i, entry) in terms.split(',').enumerate() {
        if i >= MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} entries"));
        }
        let Some((name, hash)) = entry.split_once(':') else {
            return Err(format!("entry {entry:?} is not `name:hash`"));
        };
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok || hash.len() != 16 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "entry {entry:?} is not a name and 16 hex digits separated by `:`"
            ));
        }
        if out.insert(name, hash).is_some() {
            return Err(format!("`{name}` is named twice"));
        }
    }
    if !out.contains_key(ZONES) {
        return Err(format!("no `{ZONES}` entry"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BASE: &str = "[cluster]\nname = \"t\"\n[zones]\neu = [\"b\", \"a\"]\n\
        [[region]]\nname = \"a\"\nnode = \"http://127.0.0.1:1\"\n\
        [[region]]\nname = \"b\"\nnode = \"http://127.0.0.1:2\"\n\
        [[region]]\nname = \"c\"\nnode = \"http://127.0.0.1:3\"\n\
        [[keyspace]]\nname = \"carts\"\ntype = \"counter\"\n\
        [[keyspace]]\nname = \"orders\"\ntype = \"register\"\nresidency = \"eu\"\n";

    fn terms(text: &str) -> String {
        replication_terms(&crate::config::parse("t.toml", text).expect("topology"))
    }

    #[test]
    fn the_same_topology_agrees_with_itself_whatever_the_order() {
        let reordered = BASE
            .replace("eu = [\"b\", \"a\"]", "eu = [\"a\", \"b\"]")
            .replace("[[keyspace]]\nname = \"carts\"\ntype = \"counter\"\n", "")
            + "[[keyspace]]\nname = \"carts\"\ntype = \"counter\"\n";
        let diff = compare(&terms(BASE), &terms(&reordered)).expect("terms");
        assert!(diff.is_empty(), "{diff}");
        assert_eq!(diff.to_string(), "same");
    }

    #[test]
    fn a_changed_type_residency_or_zone_is_named() {
        let ours = terms(BASE);
        let retyped = BASE.replace("type = \"counter\"", "type = \"register\"");
        let diff = compare(&ours, &terms(&retyped)).expect("terms");
        assert_eq!(diff.differ, vec!["carts".to_string()]);
        assert!(!diff.zones);
        let moved = BASE.replace("residency = \"eu\"", "residency = [\"c\"]");
        assert_eq!(
            compare(&ours, &terms(&moved)).expect("terms").differ,
            vec!["orders".to_string()]
        );
        let rezoned = BASE.replace("eu = [\"b\", \"a\"]", "eu = [\"a\", \"c\"]");
        let diff = compare(&ours, &terms(&rezoned)).expect("terms");
        assert!(diff.zones, "{diff}");
        assert_eq!(diff.to_string(), "the zones differ");
    }

    #[test]
    fn keyspaces_on_one_side_only_are_named() {
        let more = format!("{BASE}[[keyspace]]\nname = \"tags\"\ntype = \"set\"\n");
        let diff = compare(&terms(BASE), &terms(&more)).expect("terms");
        assert_eq!(diff.only_there, vec!["tags".to_string()]);
        assert!(diff.only_here.is_empty() && diff.differ.is_empty());
        let diff = compare(&terms(&more), &terms(BASE)).expect("terms");
        assert_eq!(diff.only_here, vec!["tags".to_string()]);
        assert_eq!(diff.to_string(), "only here: `tags`");
    }

    /// A topology of `keyspaces` (name index, type index) over three regions.
    fn topology_of(keyspaces: &[(usize, usize)]) -> String {
        const TYPES: [&str; 5] = ["register", "mvregister", "counter", "set", "map"];
        let mut text = String::from(
            "[cluster]\nname = \"t\"\n\
             [[region]]\nname = \"a\"\nnode = \"http://127.0.0.1:1\"\n\
             [[region]]\nname = \"b\"\nnode = \"http://127.0.0.1:2\"\n",
        );
        for (name, kind) in keyspaces {
            text += &format!(
                "[[keyspace]]\nname = \"k{name}\"\ntype = \"{}\"\n",
                TYPES[*kind]
            );
        }
        text
    }

    proptest! {
        /// For two random sets of keyspaces, the comparison puts each name where set logic
        /// says (only here, only there, defined differently), sorted, and mirrors when the
        /// sides swap.
        #[test]
        fn the_comparison_is_set_logic_and_symmetric(
            ours in proptest::collection::btree_map(0usize..12, 0usize..5, 0..8),
            theirs in proptest::collection::btree_map(0usize..12, 0usize..5, 0..8),
        ) {
            let text = |m: &std::collections::BTreeMap<usize, usize>| {
                terms(&topology_of(&m.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>()))
            };
            let (a, b) = (text(&ours), text(&theirs));
            let diff = compare(&a, &b).expect("terms");
            let names = |pick: &dyn Fn(&usize) -> bool, from: &std::collections::BTreeMap<usize, usize>| {
                let mut v: Vec<String> = from.keys().filter(|k| pick(k)).map(|k| format!("k{k}")).collect();
                v.sort();
                v
            };
            prop_assert_eq!(&diff.only_here, &names(&|k| !theirs.contains_key(k), &ours));
            prop_assert_eq!(&diff.only_there, &names(&|k| !ours.contains_key(k), &theirs));
            prop_assert_eq!(
                &diff.differ,
                &names(&|k| theirs.get(k).is_some_and(|t| Some(t) != ours.get(k)), &ours)
            );
            prop_assert!(!diff.zones);
            let back = compare(&b, &a).expect("terms");
            prop_assert_eq!(back.only_here, diff.only_there);
            prop_assert_eq!(back.differ, diff.differ);
            prop_assert!(compare(&a, &a).expect("terms").is_empty());
        }
    }

    #[test]
    fn malformed_terms_are_refused_with_the_reason() {
        let ours = terms(BASE);
        for (bad, why) in [
            ("", "not `name:hash`"),
            ("zones:00", "16 hex digits"),
            ("carts:0123456789abcdef", "no `zones` entry"),
            (
                "zones:0123456789abcdef,zones:0123456789abcdef",
                "named twice",
            ),
            (
                "zones:0123456789abcdef,a b:0123456789abcdef",
                "16 hex digits",
            ),
        ] {
            let e = compare(&ours, bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
