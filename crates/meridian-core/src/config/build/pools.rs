//! `[routing.pool.<name>]`: the inner levels of a routing policy tree, and the rule every
//! reference into the tree follows — a geo map, an `order` or a pool's `members` names only
//! members of its own level.

use std::collections::HashMap;

use super::super::model::{GeoMap, Policy, Pool, Region};
use super::{Cx, Known, Sp, Tbl, check_name, geo_map, policy, scalar};

const POOL_KEYS: &[&str] = &["members", "policy", "geo"];

/// Reads every pool of `[routing.pool]` (`t`), checking names, members, the tree's shape and
/// each pool's policy. `None` only when a diagnostic has been recorded.
pub(super) fn read(
    cx: &mut Cx<'_>,
    t: &Tbl<'_>,
    known: &Known,
    regions: &[Region],
) -> Option<Vec<Pool>> {
    let mut ok = true;
    let mut tables = Vec::new();
    for (key, key_span, node) in t.keys() {
        let name = Sp {
            v: key.to_string(),
            span: key_span.clone(),
        };
        ok &= check_name(cx, "pool", &name, false);
        if known.regions.contains(&name.v) {
            ok = false;
            cx.error(
                &key_span,
                format!("pool `{key}` has the name of a region"),
                Some("pools and regions share one namespace; rename the pool".to_string()),
            );
        }
        match super::read::as_table(cx, node, format!("pool `{key}`"), &key_span) {
            Some(p) => tables.push((name, p)),
            None => ok = false,
        }
    }
    let names: Vec<String> = tables.iter().map(|(n, _)| n.v.clone()).collect();

    let mut pools = Vec::new();
    let mut parent: HashMap<String, String> = HashMap::new();
    for (name, p) in &tables {
        p.allow(cx, POOL_KEYS);
        let Some(members) = p.str_array(cx, "members") else {
            if !p.has("members") {
                p.missing(cx, "members", "members = [\"eu-west-1\", \"eu-central-1\"]");
            }
            ok = false;
            continue;
        };
        if members.v.is_empty() {
            ok = false;
            cx.error(
                &members.span,
                format!("{}: members is empty", p.label),
                Some("list the regions (or pools) this pool groups".to_string()),
            );
        }
        let mut listed = Vec::new();
        for m in &members.v {
            if !exists(cx, known, &names, &format!("{}: members name", p.label), m) {
                ok = false;
            } else if m.v == name.v {
                ok = false;
                cx.error(
                    &m.span,
                    format!("{} lists itself", p.label),
                    Some("a pool's members are regions or other pools".to_string()),
                );
            } else if let Some(other) = parent.get(&m.v) {
                ok = false;
                let hint = "a region or pool belongs to at most one pool; remove it from one";
                cx.error(
                    &m.span,
                    if other == &name.v {
                        format!("{} lists `{}` twice", p.label, m.v)
                    } else {
                        format!(
                            "`{}` is a member of two pools, `{other}` and `{}`",
                            m.v, name.v
                        )
                    },
                    Some(hint.to_string()),
                );
            } else {
                parent.insert(m.v.clone(), name.v.clone());
                listed.push(m.v.clone());
            }
        }
        pools.push(Pool {
            name: name.v.clone(),
            members: listed,
            policy: Policy::Latency,
            geo: GeoMap::default(),
        });
    }

    for (name, _) in &tables {
        let mut seen = vec![name.v.as_str()];
        let mut cur = name.v.as_str();
        while let Some(up) = parent.get(cur) {
            if seen.contains(&up.as_str()) {
                ok = false;
                seen.push(up);
                cx.error(
                    &name.span,
                    format!("pool `{}` contains itself: {}", name.v, seen.join(" → ")),
                    Some("pools form a tree; remove one of these memberships".to_string()),
                );
                break;
            }
            seen.push(up);
            cur = up;
        }
    }
    if !ok {
        return None;
    }

    for (i, (_, p)) in tables.iter().enumerate() {
        let pol = policy(cx, p);
        ok &= pol.is_some() || !p.has("policy");
        let level = Some(pools[i].name.as_str());
        let geo = match p.table(cx, "geo", format!("{}: geo", p.label)) {
            Some(g) => {
                let check = |cx: &mut Cx<'_>, what: &str, n: &Sp<String>| {
                    member(cx, known, &pools, what, n, level)
                };
                geo_map(cx, &g, &check)
            }
            None => None,
        };
        ok &= geo.is_some() || !p.has("geo");
        let policy = pol.as_ref().map_or(Policy::Latency, |p| p.v);
        let span = pol.as_ref().map_or(p.span.clone(), |p| p.span.clone());
        if policy == Policy::Geo && geo.as_ref().is_none_or(|g| g.default.is_none()) {
            ok = false;
            cx.error(
                &span,
                format!(
                    "{}: policy = \"geo\" needs a geo map with a `default` member",
                    p.label
                ),
                Some("add `geo = { EU = \"<member>\", default = \"<member>\" }`".to_string()),
            );
        }
        if policy != Policy::Geo && p.has("geo") {
            ok = false;
            cx.error(
                &p.span_of("geo"),
                format!("{}: geo is only meaningful with policy = \"geo\"", p.label),
                Some("remove `geo`, or set policy = \"geo\"".to_string()),
            );
        }
        if policy == Policy::Proximity {
            ok &= located(cx, &pools, regions, &pools[i].name, &span, &p.label);
        }
        let pool = &mut pools[i];
        pool.policy = policy;
        pool.geo = geo.unwrap_or_default();
    }
    ok.then_some(pools)
}

/// Whether `name` is a region or a pool of `pools`, reporting an unknown one.
fn exists(cx: &mut Cx<'_>, known: &Known, pools: &[String], what: &str, name: &Sp<String>) -> bool {
    if known.regions.contains(&name.v) || pools.contains(&name.v) {
        return true;
    }
    if pools.is_empty() {
        return known.region(cx, what, name);
    }
    let all = known.regions.iter().chain(pools).map(String::as_str);
    let hint = match scalar::closest(&name.v, all) {
        Some(near) => format!("did you mean `{near}`?"),
        None => format!(
            "regions: {}; pools: {}",
            known.regions.join(", "),
            pools.join(", ")
        ),
    };
    cx.error(
        &name.span,
        format!("{what} unknown region or pool `{}`", name.v),
        Some(hint),
    );
    false
}

/// Whether `name` is a member of `level` — the pool of that name, or the top level for
/// `None` (regions outside every pool and pools inside no other) — reporting why not.
pub(super) fn member(
    cx: &mut Cx<'_>,
    known: &Known,
    pools: &[Pool],
    what: &str,
    name: &Sp<String>,
    level: Option<&str>,
) -> bool {
    let names: Vec<String> = pools.iter().map(|p| p.name.clone()).collect();
    if !exists(cx, known, &names, what, name) {
        return false;
    }
    let parent_of = |m: &str| {
        pools
            .iter()
            .find(|p| p.members.iter().any(|x| x == m))
            .map(|p| p.name.as_str())
    };
    let parent = parent_of(&name.v);
    if parent == level {
        return true;
    }
    let hint = match level {
        None => {
            let mut top = name.v.as_str();
            while let Some(up) = parent_of(top) {
                top = up;
            }
            format!("name `{top}` here; the policy of each pool orders the pool's own members")
        }
        Some(l) => {
            let members = pools
                .iter()
                .find(|p| p.name == l)
                .map(|p| p.members.join(", "))
                .unwrap_or_default();
            format!("members of pool `{l}`: {members}")
        }
    };
    let place = match parent {
        Some(p) => format!("a member of pool `{p}`"),
        None => "at the top level".to_string(),
    };
    cx.error(
        &name.span,
        format!("{what} `{}`, which is {place}", name.v),
        Some(hint),
    );
    false
}

/// The members of the top level in file order: each region outside every pool, and each
/// top-level pool where its first region is.
pub(super) fn top_level(pools: &[Pool], regions: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in regions {
        let mut top = r.as_str();
        while let Some(p) = pools.iter().find(|p| p.members.iter().any(|m| m == top)) {
            top = &p.name;
        }
        if !out.iter().any(|o| o == top) {
            out.push(top.to_string());
        }
    }
    out
}

/// The regions at or below `name` (a region or a pool), in the pools' member order.
pub(super) fn regions_under(pools: &[Pool], name: &str) -> Vec<String> {
    match pools.iter().find(|p| p.name == name) {
        None => vec![name.to_string()],
        Some(p) => p
            .members
            .iter()
            .flat_map(|m| regions_under(pools, m))
            .collect(),
    }
}

/// Whether every region below `level` has a `location` (needed by `proximity`), reporting
/// those without.
pub(super) fn located(
    cx: &mut Cx<'_>,
    pools: &[Pool],
    regions: &[Region],
    level: &str,
    span: &super::Span,
    label: &str,
) -> bool {
    let under = regions_under(pools, level);
    let missing: Vec<String> = regions
        .iter()
        .filter(|r| under.contains(&r.name) && r.location.is_none())
        .map(|r| format!("`{}`", r.name))
        .collect();
    if missing.is_empty() {
        return true;
    }
    cx.error(
        span,
        format!(
            "{label}: policy = \"proximity\" needs the location of every region it orders, but {} has none",
            missing.join(", ")
        ),
        Some("add `location = { lat = …, lon = … }` to those regions".to_string()),
    );
    false
}
