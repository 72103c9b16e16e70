//! The world launcher: an emulated multi-region deployment made of real child processes of the
//! `meridian` binary on loopback — per region a data node (`meridian region`), the demo app
//! (`meridian demo-app`) and an edge (`meridian edge`) — with every inter-region connection
//! (replication, an edge reaching another region's app, edges sharing health views) going
//! through the in-process WAN emulator.
//!
//! A region kill is a real SIGKILL of its node and app; a restart reopens the same data
//! directory. Edges are the global front door and stay up. [`World::shutdown`] stops every child
//! (SIGTERM, then SIGKILL after a grace period); dropping a `World` SIGKILLs whatever is left, so
//! nothing outlives the lab.

pub mod process;
pub mod topology;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::LabError;
use crate::wan::{Profile, Relay, Shape, Wan};
use process::Proc;
pub use topology::{RegionAddrs, WorldLayout, edge_name};

/// What to launch.
#[derive(Debug, Clone)]
pub struct WorldSpec {
    /// Regions, in order.
    pub regions: Vec<String>,
    /// Residency zones.
    pub zones: BTreeMap<String, Vec<String>>,
    /// Inter-region latencies.
    pub profile: Profile,
    /// Jitter on every link, ms.
    pub jitter_ms: f64,
    /// Bandwidth cap per link direction, bytes/s.
    pub bandwidth: Option<u64>,
    /// Seed of the emulator's jitter.
    pub seed: u64,
    /// Directory of the world: data, logs, topology files, secret. Emptied first.
    pub dir: PathBuf,
    /// The `meridian` binary to run children of.
    pub binary: PathBuf,
    /// Bytes of inter-region traffic to keep for the residency audit (0: none).
    pub capture_bytes: u64,
    /// Serve GeoDNS: every edge answers the zone [`topology::DNS_ZONE`] on its own listener.
    pub dns: bool,
}

/// A running world.
pub struct World {
    spec: WorldSpec,
    layout: WorldLayout,
    wan: Wan,
    secret: String,
    // Kept for their listeners: dropping a relay closes it.
    _relays: Vec<Relay>,
    nodes: BTreeMap<String, Proc>,
    apps: BTreeMap<String, Proc>,
    edges: BTreeMap<String, Proc>,
    /// `(from, to)` → the relay address `from`'s node uses to reach `to`'s node.
    peer_relays: BTreeMap<(String, String), SocketAddr>,
}

/// Reserves a free loopback port by binding port 0 and releasing it.
fn free_addr() -> Result<SocketAddr, LabError> {
    let io = |source| LabError::Io {
        what: "reserving a loopback port".into(),
        source,
    };
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(io)
}

fn random_secret() -> String {
    use rand::{RngCore as _, SeedableRng as _};
    let mut bytes = [0u8; 24];
    rand::rngs::StdRng::from_os_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl World {
    /// Starts the WAN emulator, then every region's node, app and edge, and waits until every
    /// node and app is ready and every edge sees every region up (at most `within`).
    /// `progress` is told each step.
    pub async fn launch(
        spec: WorldSpec,
        within: Duration,
        progress: &mut dyn FnMut(&str),
    ) -> Result<World, LabError> {
        let io = |what: String| move |source| LabError::Io { what, source };
        if spec.dir.exists() {
            std::fs::remove_dir_all(&spec.dir)
                .map_err(io(format!("emptying {}", spec.dir.display())))?;
        }
        for sub in ["data", "logs"] {
            std::fs::create_dir_all(spec.dir.join(sub))
                .map_err(io(format!("creating {}", spec.dir.join(sub).display())))?;
        }
        let secret = random_secret();
        std::fs::write(spec.dir.join("cluster.secret"), &secret)
            .map_err(io("writing the cluster secret".into()))?;

        let wan = Wan::new(spec.profile.clone(), spec.seed);
        if spec.capture_bytes > 0 {
            wan.enable_capture(spec.capture_bytes);
        }
        for a in &spec.regions {
            for b in &spec.regions {
                if a != b {
                    let shape = Shape {
                        jitter: Duration::from_secs_f64(spec.jitter_ms / 1000.0),
                        bandwidth: spec.bandwidth,
                        ..wan.shape(a, b)?
                    };
                    wan.set_shape(a, b, shape)?;
                }
            }
        }

        let mut regions = Vec::new();
        for r in &spec.regions {
            let addrs = RegionAddrs {
                node: free_addr()?,
                app: free_addr()?,
                edge: free_addr()?,
                admin: free_addr()?,
            };
            regions.push((r.clone(), addrs));
        }
        let dns = if spec.dns {
            let mut m = BTreeMap::new();
            for (r, _) in &regions {
                m.insert(r.clone(), free_addr()?);
            }
            Some(m)
        } else {
            None
        };
        let layout = WorldLayout {
            regions,
            zones: spec.zones.clone(),
            secret_file: "cluster.secret".into(),
            dns,
        };
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut relays = Vec::new();
        let mut peer_relays = BTreeMap::new();
        let mut edge_via: BTreeMap<String, BTreeMap<String, (SocketAddr, SocketAddr)>> =
            BTreeMap::new();
        for (a, _) in &layout.regions {
            for (b, bt) in &layout.regions {
                if a == b {
                    continue;
                }
                let node = wan.relay(a, b, any, bt.node).await?;
                let app = wan.relay(a, b, any, bt.app).await?;
                let admin = wan.relay(a, b, any, bt.admin).await?;
                peer_relays.insert((a.clone(), b.clone()), node.addr());
                edge_via
                    .entry(a.clone())
                    .or_default()
                    .insert(b.clone(), (app.addr(), admin.addr()));
                relays.extend([node, app, admin]);
            }
        }
        progress(&format!(
            "WAN emulator: {} relays between {} regions",
            relays.len(),
            layout.regions.len()
        ));

        std::fs::write(spec.dir.join("topology.toml"), layout.node_topology())
            .map_err(io("writing the topology".into()))?;
        for (r, _) in &layout.regions {
            let via = edge_via.get(r).cloned().unwrap_or_default();
            std::fs::write(
                spec.dir.join(format!("topology-{}.toml", edge_name(r))),
                layout.edge_topology(r, &via),
            )
            .map_err(io("writing an edge topology".into()))?;
        }

        let mut world = World {
            spec,
            layout,
            wan,
            secret,
            _relays: relays,
            nodes: BTreeMap::new(),
            apps: BTreeMap::new(),
            edges: BTreeMap::new(),
            peer_relays,
        };
        let names: Vec<String> = world.regions().to_vec();
        for r in &names {
            world.start_region(r)?;
        }
        for r in &names {
            let edge = world.edge_proc(r);
            world.edges.insert(r.clone(), edge);
            if let Some(p) = world.edges.get_mut(r) {
                p.start()?;
            }
        }
        progress(&format!(
            "started {} region nodes, {} apps, {} edges (logs in {})",
            world.nodes.len(),
            world.apps.len(),
            world.edges.len(),
            world.spec.dir.join("logs").display()
        ));
        world.wait_ready(within).await?;
        progress("every node and app ready; every edge sees every region up");
        Ok(world)
    }

    fn region_proc(&self, region: &str) -> (Proc, Proc) {
        let dir = &self.spec.dir;
        let a = self.addrs(region);
        let mut node_args: Vec<String> = vec![
            "region".into(),
            "--config".into(),
            dir.join("topology.toml").display().to_string(),
            "--region".into(),
            region.into(),
            "--data".into(),
            self.data_dir(region).display().to_string(),
        ];
        for ((from, to), relay) in &self.peer_relays {
            if from == region {
                node_args.push("--peer".into());
                node_args.push(format!("{to}=http://{relay}"));
            }
        }
        let node = Proc::new(format!("node-{region}"), &self.spec.binary, node_args, dir);
        let app = Proc::new(
            format!("app-{region}"),
            &self.spec.binary,
            vec![
                "demo-app".into(),
                "--region".into(),
                region.into(),
                "--node".into(),
                format!("http://{}", a.node),
                "--listen".into(),
                a.app.to_string(),
            ],
            dir,
        );
        (node, app)
    }

    fn edge_proc(&self, region: &str) -> Proc {
        let dir = &self.spec.dir;
        let name = edge_name(region);
        Proc::new(
            name.clone(),
            &self.spec.binary,
            vec![
                "edge".into(),
                "--config".into(),
                dir.join(format!("topology-{name}.toml"))
                    .display()
                    .to_string(),
                "--edge".into(),
                name.clone(),
            ],
            dir,
        )
    }

    fn start_region(&mut self, region: &str) -> Result<(), LabError> {
        let (mut node, mut app) = self.region_proc(region);
        node.start()?;
        app.start()?;
        self.nodes.insert(region.to_string(), node);
        self.apps.insert(region.to_string(), app);
        Ok(())
    }

    async fn wait_ready(&mut self, within: Duration) -> Result<(), LabError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .map_err(|e| LabError::World(format!("building an HTTP client: {e}")))?;
        let deadline = Instant::now() + within;
        let names: Vec<String> = self.regions().to_vec();
        loop {
            let mut waiting = Vec::new();
            for r in &names {
                for (what, url) in [
                    ("node", format!("{}/health/ready", self.node_url(r))),
                    ("app", format!("{}/health/ready", self.app_url(r))),
                ] {
                    let ok = client
                        .get(&url)
                        .send()
                        .await
                        .is_ok_and(|resp| resp.status().is_success());
                    if !ok {
                        waiting.push(format!("{what} {r}"));
                    }
                }
                match self.edge_status(&client, r).await {
                    Ok(up) if up.values().all(|u| *u) && up.len() == names.len() => {}
                    _ => waiting.push(format!("edge {r}")),
                }
            }
            let all = self
                .nodes
                .values_mut()
                .chain(self.apps.values_mut())
                .chain(self.edges.values_mut());
            for p in all {
                if let Some(code) = p.exited()? {
                    return Err(LabError::World(format!(
                        "{} exited ({code}) while starting; see {}",
                        p.name(),
                        p.log().display()
                    )));
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::World(format!(
                    "not ready after {within:?}: {}; logs in {}",
                    waiting.join(", "),
                    self.spec.dir.join("logs").display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Which regions the edge in `region` sees up (its `/v1/status`).
    pub async fn edge_status(
        &self,
        client: &reqwest::Client,
        region: &str,
    ) -> Result<BTreeMap<String, bool>, LabError> {
        let url = format!("{}/v1/status", self.admin_url(region));
        let body: serde_json::Value = client
            .get(&url)
            .bearer_auth(&self.secret)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| LabError::World(format!("{url}: {e}")))?
            .json()
            .await
            .map_err(|e| LabError::World(format!("{url}: {e}")))?;
        let mut up = BTreeMap::new();
        for r in body["regions"].as_array().into_iter().flatten() {
            if let Some(name) = r["name"].as_str() {
                up.insert(name.to_string(), r["up"].as_bool().unwrap_or(false));
            }
        }
        Ok(up)
    }

    /// Sets `region`'s weight at every edge (0 drains it).
    pub async fn set_weight(
        &self,
        client: &reqwest::Client,
        region: &str,
        pct: u8,
    ) -> Result<(), LabError> {
        for r in self.regions() {
            let url = format!("{}/v1/regions/{region}/weight", self.admin_url(r));
            client
                .put(&url)
                .bearer_auth(&self.secret)
                .json(&serde_json::json!({ "weight": pct }))
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|e| LabError::World(format!("{url}: {e}")))?;
        }
        Ok(())
    }

    /// SIGKILLs the node and app of `region` and waits until they are gone.
    pub async fn kill_region(&mut self, region: &str) -> Result<(), LabError> {
        for p in [self.nodes.get_mut(region), self.apps.get_mut(region)]
            .into_iter()
            .flatten()
        {
            p.kill().await?;
        }
        Ok(())
    }

    /// Starts the node and app of `region` again, on the same data directory and ports.
    pub fn restart_region(&mut self, region: &str) -> Result<(), LabError> {
        for p in [self.nodes.get_mut(region), self.apps.get_mut(region)]
            .into_iter()
            .flatten()
        {
            p.start()?;
        }
        Ok(())
    }

    /// Deletes the data directory of killed `region`, as a lost disk would, and starts its node
    /// and app again: the node's new store joins its peers before it serves.
    pub fn restart_region_on_a_new_disk(&mut self, region: &str) -> Result<(), LabError> {
        let dir = self.data_dir(region);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(LabError::Io {
                    what: format!("deleting {}", dir.display()),
                    source,
                });
            }
        }
        self.restart_region(region)
    }

    /// Whether `region`'s node process is running.
    pub fn is_running(&mut self, region: &str) -> bool {
        self.nodes
            .get_mut(region)
            .is_some_and(|p| matches!(p.exited(), Ok(None)) && p.pid().is_some())
    }

    /// Stops every child: SIGTERM, then SIGKILL for any still running after `grace`.
    pub async fn shutdown(mut self, grace: Duration) {
        let all = self
            .edges
            .values_mut()
            .chain(self.apps.values_mut())
            .chain(self.nodes.values_mut());
        let mut procs: Vec<&mut Proc> = all.collect();
        for p in procs.iter_mut() {
            p.terminate();
        }
        let deadline = Instant::now() + grace;
        for p in procs.iter_mut() {
            p.wait_until(deadline).await;
        }
    }

    /// The regions, in order.
    pub fn regions(&self) -> &[String] {
        &self.spec.regions
    }

    /// The residency zones.
    pub fn zones(&self) -> &BTreeMap<String, Vec<String>> {
        &self.spec.zones
    }

    /// The WAN emulator carrying every inter-region connection.
    pub fn wan(&self) -> &Wan {
        &self.wan
    }

    /// The cluster secret (admin and replication token).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The world's directory.
    pub fn dir(&self) -> &Path {
        &self.spec.dir
    }

    /// Data directory of `region`'s node.
    pub fn data_dir(&self, region: &str) -> PathBuf {
        self.spec.dir.join("data").join(region)
    }

    fn addrs(&self, region: &str) -> RegionAddrs {
        self.layout
            .regions
            .iter()
            .find(|(r, _)| r == region)
            .map(|(_, a)| *a)
            // invariant: callers pass regions of this world (checked by the scenario)
            .expect("a region of this world")
    }

    /// URL of `region`'s data node (direct, not through the WAN: the lab's own view).
    pub fn node_url(&self, region: &str) -> String {
        format!("http://{}", self.addrs(region).node)
    }

    /// URL of `region`'s demo app (direct).
    pub fn app_url(&self, region: &str) -> String {
        format!("http://{}", self.addrs(region).app)
    }

    /// URL of the edge placed in `region` (where users enter).
    pub fn edge_url(&self, region: &str) -> String {
        format!("http://{}", self.addrs(region).edge)
    }

    /// Where the DNS of the edge placed in `region` listens, when the world serves GeoDNS.
    pub fn dns_addr(&self, region: &str) -> Option<SocketAddr> {
        self.layout.dns.as_ref()?.get(region).copied()
    }

    /// URL of the admin API of the edge placed in `region`.
    pub fn admin_url(&self, region: &str) -> String {
        format!("http://{}", self.addrs(region).admin)
    }
}
