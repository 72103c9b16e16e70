//! Advice on a valid topology: settings that pass every check yet carry a risk an operator
//! should take knowingly. `meridian check` prints it and the roles log it when they start;
//! none of it stops anything.

use std::net::{IpAddr, SocketAddr};

use super::{Replication, Residency, Topology};

/// Each piece of advice on `topology`, as one sentence saying what the risk is and what
/// would avoid it; empty when there is none. Deterministic (file order).
pub fn advice(topology: &Topology) -> Vec<String> {
    let mut out = Vec::new();
    quorum_of_every_holder(topology, &mut out);
    regions_without_apps(topology, &mut out);
    unauthenticated_beyond_loopback(topology, &mut out);
    out
}

/// A sync keyspace whose quorum is every region that may hold its keys: one region down or cut
/// off fails every sync write.
fn quorum_of_every_holder(t: &Topology, out: &mut Vec<String>) {
    for k in &t.keyspaces {
        let (Replication::Sync, Some(quorum)) = (k.replication, k.quorum) else {
            continue;
        };
        let (holders, scope) = match &k.residency {
            None => (t.regions.len(), String::new()),
            Some(Residency::Regions(list)) => (list.len(), String::new()),
            Some(Residency::Zone(z)) => (
                t.zones
                    .iter()
                    .find(|zone| zone.name == *z)
                    .map_or(0, |zone| zone.regions.len()),
                format!(" (zone `{z}`)"),
            ),
            Some(Residency::HomeZone) => match t.zones.iter().min_by_key(|z| z.regions.len()) {
                Some(z) => (z.regions.len(), format!(" in its home zone `{}`", z.name)),
                None => (0, String::new()),
            },
        };
        if holders > 1 && quorum >= holders {
            out.push(format!(
                "keyspace `{}`: quorum {quorum} is every one of the {holders} regions that may \
                 hold its keys{scope}, so while any one of them is down or cut off every sync \
                 write fails (503 quorum_unavailable); quorum {} would tolerate one",
                k.name,
                holders - 1
            ));
        }
    }
}

/// A region with no app backends: edges never route clients to it.
fn regions_without_apps(t: &Topology, out: &mut Vec<String>) {
    if t.edges.is_empty() {
        return;
    }
    for r in t.regions.iter().filter(|r| r.app.is_empty()) {
        out.push(format!(
            "region `{}` has no app backends, so the edges never send it clients (it still \
             holds and replicates data); give it `app = [...]` if it should serve",
            r.name
        ));
    }
}

/// No cluster secret while something listens beyond loopback: anyone who reaches it may
/// replicate into a store or call an admin API.
fn unauthenticated_beyond_loopback(t: &Topology, out: &mut Vec<String>) {
    if t.cluster.secret_file.is_some() {
        return;
    }
    let exposed = t
        .regions
        .iter()
        .map(|r| {
            (
                format!("region `{}`'s node", r.name),
                r.node_addr().to_string(),
            )
        })
        .chain(t.edges.iter().flat_map(|e| {
            [
                (
                    format!("edge `{}`'s admin API", e.name),
                    e.admin.to_string(),
                ),
                (format!("edge `{}`'s proxy", e.name), e.listen.to_string()),
            ]
        }))
        .filter(|(_, addr)| !loopback(addr))
        .map(|(what, addr)| format!("{what} ({addr})"))
        .collect::<Vec<_>>();
    if !exposed.is_empty() {
        out.push(format!(
            "cluster.secret_file is not set, yet {} listen beyond loopback: anyone who reaches \
             a node can replicate writes into its store, and anyone who reaches an admin API \
             can drain regions; set secret_file (a file of 16 or more random bytes) on every \
             host",
            exposed.join(", ")
        ));
    }
}

/// Whether `addr` (`host:port`) is a loopback address; a name other than `localhost` is not.
fn loopback(addr: &str) -> bool {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return a.ip().is_loopback();
    }
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[cluster]\nname = \"t\"\nsecret_file = \"s\"\n\
        [zones]\neu = [\"a\", \"b\"]\n\
        [[region]]\nname = \"a\"\nnode = \"http://127.0.0.1:1\"\napp = [\"http://127.0.0.1:11\"]\n\
        [[region]]\nname = \"b\"\nnode = \"http://127.0.0.1:2\"\napp = [\"http://127.0.0.1:12\"]\n\
        [[region]]\nname = \"c\"\nnode = \"http://127.0.0.1:3\"\napp = [\"http://127.0.0.1:13\"]\n\
        [[edge]]\nname = \"e\"\nlisten = \"127.0.0.1:8080\"\nadmin = \"127.0.0.1:9080\"\n\
        [[keyspace]]\nname = \"orders\"\ntype = \"register\"\nreplication = \"sync\"\nquorum = 2\n";

    fn advice_of(text: &str) -> Vec<String> {
        advice(&crate::config::parse("t.toml", text).expect("topology"))
    }

    #[test]
    fn a_sound_topology_gets_none() {
        assert_eq!(advice_of(BASE), Vec::<String>::new());
    }

    #[test]
    fn a_quorum_of_every_holder_is_named() {
        let all = advice_of(&BASE.replace("quorum = 2", "quorum = 3"));
        assert_eq!(all.len(), 1, "{all:?}");
        assert!(
            all[0].contains("quorum 3 is every one of the 3 regions"),
            "{all:?}"
        );
        assert!(all[0].contains("quorum 2 would tolerate one"), "{all:?}");
        let zoned = advice_of(&BASE.replace("quorum = 2", "quorum = 2\nresidency = \"eu\""));
        assert!(zoned[0].contains("(zone `eu`)"), "{zoned:?}");
        let single = advice_of(&BASE.replace("quorum = 2", "quorum = 1\nresidency = [\"a\"]"));
        assert!(
            single.is_empty(),
            "one region holding it is not a risk of quorum: {single:?}"
        );
    }

    #[test]
    fn regions_without_apps_are_named_when_edges_route() {
        let text = BASE.replace("app = [\"http://127.0.0.1:13\"]\n", "");
        let all = advice_of(&text);
        assert_eq!(all.len(), 1, "{all:?}");
        assert!(
            all[0].starts_with("region `c` has no app backends"),
            "{all:?}"
        );
        let no_edges = text.replace(
            "[[edge]]\nname = \"e\"\nlisten = \"127.0.0.1:8080\"\nadmin = \"127.0.0.1:9080\"\n",
            "",
        );
        assert!(advice_of(&no_edges).is_empty());
    }

    #[test]
    fn no_secret_beyond_loopback_is_named() {
        let open = BASE.replace("secret_file = \"s\"\n", "");
        assert!(advice_of(&open).is_empty(), "loopback only");
        let exposed = open
            .replace("http://127.0.0.1:2", "http://10.0.0.2:2")
            .replace("admin = \"127.0.0.1:9080\"", "admin = \"0.0.0.0:9080\"");
        let all = advice_of(&exposed);
        assert_eq!(all.len(), 1, "{all:?}");
        assert!(
            all[0].contains("region `b`'s node (10.0.0.2:2), edge `e`'s admin API (0.0.0.0:9080)"),
            "{all:?}"
        );
        assert!(loopback("localhost:1") && loopback("[::1]:1") && !loopback("db.internal:1"));
    }
}
