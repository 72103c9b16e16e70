//! Catching up by copy: a node whose replication from some origin stays where it is while a
//! peer it is linked to says it has applied more of that origin's writes copies that peer's
//! records, as a join does, and takes the peer's heads as applied.
//!
//! Op streams deliver an origin's writes in order, from any op log that holds them. A store
//! that joined by copying (a new region, a replaced disk) holds no op-log entries of what it
//! adopted, so a region cut off while another joined gets those writes from the op logs of
//! the regions that had them — and when the last of those lost its disk too before the region
//! caught up, no stream can give them any more: the region's replication from that origin
//! would stop at the gap for good (turmoil seed 3013230). A copy mends it. It is only taken
//! after [`STUCK_AFTER`] without any progress on that origin while a linked peer is ahead, so
//! ordinary lag — which makes progress — never triggers one; a needless copy would cost
//! bandwidth, not correctness: every merge is idempotent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use meridian_core::version::VersionVector;

use super::dial::Dialer;
use super::join::{CopyTable, Heads, ask_heads, copy_from, peer_of, plan};
use crate::state::Node;

/// How long an origin's applied sequence must stay put, while a linked peer is ahead on it,
/// before the node copies from that peer.
pub const STUCK_AFTER: Duration = Duration::from_secs(30);
/// How often the node looks.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Per origin, the sequence this node had applied when it last saw it move (or stop being
/// behind), and when.
#[derive(Debug, Default)]
pub struct Progress(BTreeMap<String, (u64, Duration)>);

impl Progress {
    /// Notes what `region` has `applied` at `now`, given what each linked peer says it applied
    /// (`ahead`); returns the origins (never `region`) this node has applied nothing more of
    /// for at least `after` while some of those peers had applied more.
    pub fn stuck(
        &mut self,
        region: &str,
        applied: &VersionVector,
        ahead: &BTreeMap<String, VersionVector>,
        now: Duration,
        after: Duration,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let mut origins: Vec<&str> = ahead
            .values()
            .flat_map(|vv| vv.iter().map(|(o, _)| o))
            .filter(|o| *o != region)
            .collect();
        origins.sort_unstable();
        origins.dedup();
        let behind: Vec<&str> = origins
            .into_iter()
            .filter(|o| ahead.values().any(|vv| vv.get(o) > applied.get(o)))
            .collect();
        self.0.retain(|o, _| behind.contains(&o.as_str()));
        for origin in behind {
            let mine = applied.get(origin);
            let seen = self.0.entry(origin.to_string()).or_insert((mine, now));
            if seen.0 != mine {
                *seen = (mine, now);
            }
            if now.saturating_sub(seen.1) >= after {
                out.push(origin.to_string());
            }
        }
        out
    }
}

/// The peers to copy from for the `stuck` origins, best first: those ahead on the most of
/// them, then furthest ahead in all, then by name.
pub fn ranked(
    stuck: &[String],
    applied: &VersionVector,
    ahead: &BTreeMap<String, VersionVector>,
) -> Vec<String> {
    let mut peers: Vec<(usize, u128, &String)> = ahead
        .iter()
        .map(|(peer, vv)| {
            let on = stuck.iter().filter(|o| vv.get(o) > applied.get(o)).count();
            let total = stuck.iter().map(|o| u128::from(vv.get(o))).sum();
            (on, total, peer)
        })
        .filter(|(on, _, _)| *on > 0)
        .collect();
    peers.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2)));
    peers.into_iter().map(|(_, _, p)| p.clone()).collect()
}

/// Watches for stuck origins and catches up by copy; runs until dropped.
pub async fn run(node: Node, dialer: Arc<dyn Dialer>) {
    node.joined().await;
    // Tokio's clock, which a simulation drives.
    let started = tokio::time::Instant::now();
    let mut progress = Progress::default();
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let links = node.links();
        let ahead: BTreeMap<String, VersionVector> = node
            .acked()
            .borrow()
            .iter()
            .filter(|(peer, _)| links.get(*peer).is_some_and(|l| l.state == "up"))
            .map(|(peer, vv)| (peer.clone(), vv.clone()))
            .collect();
        let applied = node.applied().borrow().clone();
        let stuck = progress.stuck(
            node.region(),
            &applied,
            &ahead,
            started.elapsed(),
            STUCK_AFTER,
        );
        if stuck.is_empty() {
            continue;
        }
        let mut failures = Vec::new();
        for source in ranked(&stuck, &applied, &ahead) {
            tracing::warn!(
                stuck = %stuck.join(", "),
                %source,
                seconds = STUCK_AFTER.as_secs(),
                "no write of these origins arrived for a while though a peer has more of them \
                 (the op logs that held them may be gone): copying from the peer"
            );
            let done = catch_up(&node, &dialer, &source).await;
            crate::metrics::catch_up(done.is_ok());
            match done {
                Ok(changed) => {
                    tracing::info!(%source, records_changed = changed, "caught up by copy");
                    failures.clear();
                    break;
                }
                Err(e) => failures.push(format!("{source}: {e}")),
            }
        }
        if !failures.is_empty() {
            tracing::warn!(failures = %failures.join("; "), "catching up by copy failed; trying again later");
        }
        // Whatever happened, wait a whole STUCK_AFTER before the next copy.
        progress = Progress::default();
    }
}

/// Copies from `source` every keyspace this region may hold (all of them from it, or none),
/// then takes its heads as applied and reopens the links; returns the records it changed here.
async fn catch_up(node: &Node, dialer: &Arc<dyn Dialer>, source: &str) -> Result<usize, String> {
    let peer = peer_of(node, dialer, source)?;
    let heads = ask_heads(node, &peer).await.map_err(|e| e.to_string())?;
    if heads.joining {
        return Err("it is joining itself".to_string());
    }
    let answers: BTreeMap<String, Option<Heads>> = super::peer_urls(node)
        .into_iter()
        .map(|(region, _)| {
            let answer = (region == source).then(|| heads.clone());
            (region, answer)
        })
        .collect();
    let plan = plan(node.topology(), node.region(), &answers);
    if !plan.unsourced.is_empty() {
        let keyspaces: Vec<&String> = plan.unsourced.keys().collect();
        return Err(format!(
            "it does not hold all this region may hold of {keyspaces:?}"
        ));
    }
    let mut copied = 0;
    for ks in plan.sources.keys() {
        for table in CopyTable::ALL {
            let n = copy_from(node, &peer, ks, table).await?;
            if table == CopyTable::Data {
                copied += n;
            }
        }
    }
    raise(node, &heads.applied).await?;
    node.resync();
    Ok(copied)
}

/// Takes `heads` (a peer's applied version vector, whose records this node now holds) as
/// applied for every origin but this region, where it is ahead.
async fn raise(node: &Node, heads: &VersionVector) -> Result<(), String> {
    let region = node.region().to_string();
    let heads = heads.clone();
    let raised = node
        .store()
        .transact(move |txn| super::join::raise_applied(txn, &region, &heads))
        .await
        .map_err(|e| e.to_string())??;
    node.applied_remote(&raised);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vv(s: &str) -> VersionVector {
        VersionVector::parse_token(s).expect("token")
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn an_origin_is_stuck_only_after_standing_still_behind_a_peer_for_the_whole_wait() {
        let mut p = Progress::default();
        let ahead = BTreeMap::from([("b".to_string(), vv("c:9,a:5"))]);
        // Behind on c (3 < 9); a is this region.
        assert!(
            p.stuck("a", &vv("c:3"), &ahead, Duration::ZERO, 30 * S)
                .is_empty()
        );
        assert!(p.stuck("a", &vv("c:3"), &ahead, 29 * S, 30 * S).is_empty());
        assert_eq!(p.stuck("a", &vv("c:3"), &ahead, 30 * S, 30 * S), ["c"]);
        // Progress restarts the wait.
        assert!(p.stuck("a", &vv("c:4"), &ahead, 31 * S, 30 * S).is_empty());
        assert!(p.stuck("a", &vv("c:4"), &ahead, 60 * S, 30 * S).is_empty());
        assert_eq!(p.stuck("a", &vv("c:4"), &ahead, 61 * S, 30 * S), ["c"]);
        // Caught up: forgotten; behind again later starts a new wait.
        assert!(p.stuck("a", &vv("c:9"), &ahead, 62 * S, 30 * S).is_empty());
        assert!(
            p.stuck(
                "a",
                &vv("c:8"),
                &BTreeMap::from([("b".to_string(), vv("c:12"))]),
                63 * S,
                30 * S
            )
            .is_empty()
        );
        // No linked peer ahead: nothing is stuck, however long.
        let mut p = Progress::default();
        assert!(
            p.stuck("a", &vv("c:3"), &BTreeMap::new(), Duration::ZERO, 30 * S)
                .is_empty()
        );
        assert!(
            p.stuck("a", &vv("c:3"), &BTreeMap::new(), 99 * S, 30 * S)
                .is_empty()
        );
    }

    #[test]
    fn the_peer_ahead_on_most_stuck_origins_is_tried_first() {
        let ahead = BTreeMap::from([
            ("b".to_string(), vv("x:9")),
            ("c".to_string(), vv("x:5,y:7")),
            ("d".to_string(), vv("x:2,y:1")),
        ]);
        let stuck = ["x".to_string(), "y".to_string()];
        assert_eq!(ranked(&stuck, &vv("x:3,y:1"), &ahead), ["c", "b"]);
        assert_eq!(ranked(&stuck[..1], &vv("x:3"), &ahead), ["b", "c"]);
    }
}
