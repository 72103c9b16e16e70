//! The `meridian` binary: argument parsing and wiring only. Exit codes: 0 success, 1 runtime
//! failure, 2 bad usage or bad config.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use meridian_core::config::Topology;

/// mimalloc instead of glibc's malloc: the edge allocates and frees small blocks (header maps,
/// bodies, futures) on every request, on several threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Meridian makes a web application deployed in several regions behave as one global service:
/// a geo-replicated key-value store per region, a global front door, and a lab that measures
/// outages. Everything is driven by one topology file (see docs/config.md).
#[derive(Parser, Debug)]
#[command(name = "meridian", version, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

// Parsed once at start and matched at once: the edge's many options cost nothing to carry.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a topology file and print the resolved topology.
    ///
    /// Every problem is reported with file, line and column, what is wrong and what would be
    /// right; the exit code is 2 when the file is invalid. The files it names are checked too:
    /// the cluster secret (readable, at least 16 characters) and each edge's GeoIP database.
    ///
    /// Example: meridian check --config examples/meridian.toml
    Check {
        /// The topology file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run one region's data node: the durable key-value store and its HTTP data API.
    ///
    /// The node listens on the address of the region's `node` URL in the topology (or
    /// `--listen`), keeps its data in `--data`, and acknowledges a write only once it is on
    /// disk. Stop it with Ctrl-C or SIGTERM; in-flight requests finish first.
    ///
    /// Example: meridian region --config examples/meridian.toml --region us-east-1
    Region {
        /// The topology file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Which region of the topology this node serves.
        #[arg(long, value_name = "NAME")]
        region: String,
        /// Data directory [default: ./data/<region>].
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Listen on this address instead of the one in the region's `node` URL.
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// Reach peer REGION at URL instead of its `node` URL (repeatable), e.g. to send
        /// replication through a WAN emulator: --peer eu-west-1=http://127.0.0.1:9702
        #[arg(long = "peer", value_name = "REGION=URL", value_parser = parse_peer)]
        peers: Vec<(String, String)>,
        /// A new data directory first joins the peers (docs/replication.md). When every peer
        /// refuses connections it waits until one answers — a disk lost while every peer is
        /// down must not be taken for the cluster's first start, whose write numbers would
        /// reuse the lost store's. With this, it takes the start for the cluster's first once
        /// no peer answered for DURATION: for starting one region of a topology alone (a
        /// trial, the first region of a new cluster), e.g. --join-wait 5s.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
        join_wait: Option<std::time::Duration>,
    },
    /// Run a WAN emulator: a relay per directed region link, each delaying every chunk by the
    /// link's one-way latency, until Ctrl-C.
    ///
    /// Point a region node's link at a relay with `meridian region --peer TO=http://127.0.0.1:LISTEN`.
    /// Bytes FROM sends take the FROM→TO delay, the answers the TO→FROM delay. Delays come from
    /// the profile (one way = RTT / 2; 4 ms + km/75 for pairs without a figure) unless `--delay`
    /// gives them. Partitions hold bytes until healed; switch them at run time on the control
    /// port, one command a line: `cut FROM TO`, `partition A B`, `isolate REGION`,
    /// `heal [FROM TO]`, `delay FROM TO MS`, `bytes` (e.g. `echo 'isolate eu-west-1' | nc -q1 127.0.0.1 9799`).
    ///
    /// Example: meridian wan --delay us-east-1:eu-west-1:40 --link us-east-1:eu-west-1:9701:7602 --link eu-west-1:us-east-1:9702:7601 --control 127.0.0.1:9799
    Wan {
        /// Latency profile CSV (columns dataset, region_a, region_b, rtt_ms[, reverse_rtt_ms]);
        /// `default` is ../shared/data/latency_matrix.csv, or the distance model alone if absent.
        #[arg(long, value_name = "FILE", default_value = "default")]
        profile: String,
        /// A relay FROM:TO:LISTEN_PORT:UPSTREAM_PORT on 127.0.0.1 (repeatable).
        #[arg(long = "link", value_name = "FROM:TO:LISTEN:UPSTREAM", required = true, value_parser = |s: &str| meridian_lab::wan::spec::LinkSpec::parse(s).map_err(|e| e.to_string()))]
        links: Vec<meridian_lab::wan::spec::LinkSpec>,
        /// One-way delay A:B:MS for both directions between A and B, overriding the profile
        /// (repeatable).
        #[arg(long = "delay", value_name = "A:B:MS", value_parser = |s: &str| meridian_lab::wan::spec::parse_delay(s).map_err(|e| e.to_string()))]
        delays: Vec<(String, String, std::time::Duration)>,
        /// Jitter in ms on every link: each chunk's delay varies within ±jitter, order kept.
        #[arg(long, value_name = "MS", default_value_t = 0.0)]
        jitter: f64,
        /// Bandwidth cap per direction of every link, bytes/s [default: unlimited].
        #[arg(long, value_name = "BYTES_PER_S")]
        bandwidth: Option<u64>,
        /// Seed of the jitter's RNG.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Control port for partitions and counters (loopback address) [default: none].
        #[arg(long, value_name = "ADDR")]
        control: Option<std::net::SocketAddr>,
    },
    /// Run one edge: the global front door in front of every region's app backends.
    ///
    /// Listens on the edge's `listen` address (proxy) and `admin` address (admin API, token
    /// from `cluster.secret_file`), probes every app backend per `[health]`, and routes by
    /// `[routing]`. SIGHUP re-reads the topology file (with its GeoIP database), the TLS
    /// certificate and key, and the token public keys: valid ones are swapped in without
    /// dropping connections, bad ones are refused and the old ones kept. Ctrl-C or SIGTERM
    /// stop it; in-flight requests finish first.
    ///
    /// Example: meridian edge --config examples/meridian.toml --edge edge-local
    Edge {
        /// The topology file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Which `[[edge]]` of the topology this process is.
        #[arg(long, value_name = "NAME")]
        edge: String,
        /// PEM certificate chain (leaf first) for TLS on the public listener; needs --tls-key.
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key for --tls-cert.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        #[command(flatten)]
        tokens: TokenArgs,
        /// PEM bundle of the CA certificates that sign the `https://` app backends'
        /// certificates (a private CA). Default: the system's trust store.
        #[arg(long, value_name = "FILE")]
        backend_ca: Option<PathBuf>,
        /// PEM certificate chain the edge presents to `https://` backends that ask for a
        /// client certificate (mutual TLS); needs --backend-key.
        #[arg(long, value_name = "FILE", requires = "backend_key")]
        backend_cert: Option<PathBuf>,
        /// PEM private key for --backend-cert.
        #[arg(long, value_name = "FILE", requires = "backend_cert")]
        backend_key: Option<PathBuf>,
        /// Proxy threads, each with its own single-threaded runtime, listener (SO_REUSEPORT)
        /// and backend connections, so a request never changes threads; the first also runs
        /// the admin API, probes and GeoDNS over TCP. Default: one per CPU core. On a machine
        /// shared with the app, give the edge the cores it may use.
        #[arg(long, value_name = "N")]
        threads: Option<std::num::NonZeroUsize>,
        /// Bind the proxy on this address instead of the edge's `listen` (in a container or
        /// behind NAT: e.g. 0.0.0.0:8080, while the topology keeps the address clients use).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// Bind the admin API on this address instead of the edge's `admin`, which the other
        /// edges keep using to reach it (publish or forward it there).
        #[arg(long, value_name = "ADDR")]
        admin_listen: Option<std::net::SocketAddr>,
        /// Bind GeoDNS (UDP and TCP) on this address instead of `[dns] listen`.
        #[arg(long, value_name = "ADDR")]
        dns_listen: Option<std::net::SocketAddr>,
    },
    /// Run the demo: an emulated three-region world on this machine, an outage drill, and the
    /// report.
    ///
    /// Starts real processes on loopback — a data node, the demo app and an edge in each of
    /// us-east-1, eu-west-1 and ap-southeast-1 — connected by a WAN emulator with the measured
    /// latencies between those regions. Virtual users in ten cities drive conversations,
    /// checkouts, profiles and sessions through their nearest edge while eu-west-1 is killed
    /// (SIGKILL) and restarted, and us-east-1 and ap-southeast-1 are partitioned and healed. Then
    /// every acknowledged write is read back, pinned data is searched for outside its zone, and
    /// the report is written (report.txt, report.json, report.html) and summarised here.
    ///
    /// Exit code 0 when every expectation held (no sync write lost, no residency finding, every
    /// outage recovered within 10 s, every region converged), 1 otherwise.
    ///
    /// Example: meridian demo --duration 60s --report meridian-report
    Demo {
        /// Duration of the load (at least 30s; the faults are placed in proportion).
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_demo_duration)]
        duration: std::time::Duration,
        #[command(flatten)]
        output: LabOutput,
    },
    /// The lab: run any scenario against an emulated world (see docs/lab.md).
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
    /// Run the lab's demo app for one region, in front of that region's data node.
    ///
    /// The sample application the lab deploys in every region: chat conversations, an
    /// idempotent checkout, user profiles pinned to their home zone and expiring sessions. It
    /// talks to its node over HTTP like any app would, so the topology needs four keyspaces:
    /// `conversations` (map), `orders` (register, replication = "sync"), `profiles` (register,
    /// residency = "home-zone") and `sessions` (register with a ttl). Routes:
    /// POST /conversations/{id}/messages, GET /conversations/{id}, POST /checkout (needs an
    /// Idempotency-Key), GET /orders/{id}, PUT and GET /profiles/{user}, POST /sessions,
    /// GET /sessions/{id}, GET /health/live and /health/ready.
    ///
    /// When the node is unreachable, times out or fails (a sync write without its quorum
    /// included) the app answers 503 `node_unavailable` and /health/ready turns 503, so an edge
    /// fails over to another region; a key that belongs elsewhere is answered 421 with
    /// `Meridian-Replay: region=<there>`, which an edge replays in that region. Ctrl-C or
    /// SIGTERM stop it; in-flight requests finish first. See docs/lab.md.
    ///
    /// Example: meridian demo-app --region us-east-1 --node http://127.0.0.1:7601 --listen 127.0.0.1:8601
    DemoApp {
        /// The region this app serves: named in every answer's `Meridian-Region`, and the home
        /// region of the sessions (and, by default, the profiles) it writes.
        #[arg(long, value_name = "NAME", value_parser = |s: &str| meridian_lab::app::check_region(s).map(|()| s.to_string()).map_err(|e| e.to_string()))]
        region: String,
        /// The region's data node, `http://host:port` (its `node` URL in the topology).
        #[arg(long, value_name = "URL", value_parser = |s: &str| meridian_lab::app::parse_node_url(s).map_err(|e| e.to_string()))]
        node: String,
        /// Address to listen on, e.g. 127.0.0.1:8601 (one of the region's `app` URLs).
        #[arg(long, value_name = "ADDR")]
        listen: std::net::SocketAddr,
    },
    /// Talk to an edge's admin API.
    ///
    /// Exit code 2 when the edge refuses the call as asked (a 4xx: a missing or wrong token,
    /// an unknown region, a bad argument), 1 when the call failed (the edge unreachable or
    /// erring).
    ///
    /// Example: meridian ctl --admin http://127.0.0.1:9080 explain --ip 203.0.113.7
    Ctl {
        /// The edge's admin URL (its `[[edge]]`'s `admin` address), e.g. http://127.0.0.1:9080.
        #[arg(long, value_name = "URL", value_parser = parse_admin_url)]
        admin: String,
        /// File holding the cluster secret (the admin bearer token), e.g. the topology's
        /// `cluster.secret_file` [default: no token].
        #[arg(long, value_name = "FILE", env = "MERIDIAN_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        #[command(subcommand)]
        command: CtlCommand,
    },
}

/// Where a lab run's report goes and what happens to its world afterwards.
#[derive(clap::Args, Debug)]
struct LabOutput {
    /// Directory for the report and the world's data and logs (emptied first).
    #[arg(long, value_name = "DIR", default_value = "meridian-report")]
    report: PathBuf,
    /// Leave the world running after the report and print its URLs, until Ctrl-C.
    #[arg(long)]
    keep: bool,
    /// No progress output, only the final summary.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum LabCommand {
    /// Run a scenario file: launch its world, drive its load, apply its timeline, write the
    /// report, and exit 1 if an expectation failed.
    ///
    /// Example: meridian lab run examples/lab/outage.toml --report lab-report
    Run {
        /// The scenario file (TOML; see docs/lab.md).
        scenario: PathBuf,
        #[command(flatten)]
        output: LabOutput,
    },
}

#[derive(Subcommand, Debug)]
enum CtlCommand {
    /// Regions and backends with health, weights and RTT.
    Status,
    /// Set a region's traffic dial in percent (0 drains it).
    Weight {
        /// The region.
        region: String,
        /// Percent, 0..=100.
        #[arg(value_parser = clap::value_parser!(u8).range(0..=100))]
        pct: u8,
    },
    /// Drain a region: weight 0, in-flight requests finish.
    Drain {
        /// The region.
        region: String,
    },
    /// Explain the routing decision for a client.
    Explain {
        /// The client's IP address.
        #[arg(long)]
        ip: std::net::IpAddr,
        /// The HTTP method [default: GET].
        #[arg(long)]
        method: Option<String>,
        /// The request path [default: /].
        #[arg(long)]
        path: Option<String>,
        /// A residency bearer token the client would send.
        #[arg(long)]
        token: Option<String>,
    },
    /// Explain the GeoDNS answer a resolver gets (the edge's topology needs a [dns] section).
    ///
    /// Example: meridian ctl --admin http://127.0.0.1:9080 explain-dns api --ip 192.0.2.1 --subnet 81.2.69.0/24
    ExplainDns {
        /// The name asked, relative to the zone (`www`) or absolute (`www.example.test.`).
        name: String,
        /// The record type [default: A].
        #[arg(long = "type")]
        qtype: Option<String>,
        /// The resolver's address.
        #[arg(long)]
        ip: std::net::IpAddr,
        /// The EDNS Client Subnet the resolver sends (`addr/prefix`).
        #[arg(long)]
        subnet: Option<String>,
    },
}

/// A failure that means "bad usage or bad config": exit code 2.
#[derive(Debug)]
struct BadConfig(String);

impl std::fmt::Display for BadConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadConfig {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<BadConfig>().is_some() => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: LogFormat) {
    const DEFAULT: &str = "info,fjall=warn,lsm_tree=warn";
    let (filter, refused) = match tracing_subscriber::EnvFilter::try_from_env("MERIDIAN_LOG") {
        Ok(filter) => (filter, None),
        Err(e) => {
            // Unset is the usual case; anything else set but unparsable is worth a word.
            let set = std::env::var_os("MERIDIAN_LOG").is_some();
            (
                tracing_subscriber::EnvFilter::new(DEFAULT),
                set.then(|| e.to_string()),
            )
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Some(error) = refused {
        tracing::warn!(
            %error,
            "MERIDIAN_LOG is not a log filter, so the default `{DEFAULT}` is used; write \
             directives like `info`, `debug,fjall=warn` or `meridian_edge=debug`"
        );
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Check { config } => {
            let topology = load_topology(&config)?;
            // What the roles read at start besides the file: a process must not fail on what
            // `check` passed.
            read_secret(&config, &topology)?;
            for edge in &topology.edges {
                open_geoip(&config, &topology, &edge.name)?;
            }
            print!("{}", topology.render_summary());
            let advice = meridian_core::config::advice(&topology);
            if !advice.is_empty() {
                println!("\nadvice ({}: valid, but consider)", advice.len());
                for a in &advice {
                    println!("  - {a}");
                }
            }
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::Region {
            config,
            region,
            data,
            listen,
            peers,
            join_wait,
        } => {
            let topology = Arc::new(load_topology(&config)?);
            let Some(r) = topology.region(&region) else {
                let known: Vec<&str> = topology.regions.iter().map(|r| r.name.as_str()).collect();
                return Err(BadConfig(format!(
                    "--region {region}: no such region in {}; its regions are: {}",
                    config.display(),
                    known.join(", ")
                ))
                .into());
            };
            let addr = match listen {
                Some(a) => a.to_string(),
                None => r.node_addr().to_string(),
            };
            let data = data.unwrap_or_else(|| PathBuf::from("data").join(&region));
            for (peer, _) in &peers {
                if topology.region(peer).is_none() || *peer == region {
                    return Err(BadConfig(format!(
                        "--peer {peer}=…: `{peer}` is not another region of {}",
                        config.display()
                    ))
                    .into());
                }
            }
            let node_config = meridian_node::NodeConfig {
                secret: read_secret(&config, &topology)?,
                peer_urls: peers.into_iter().collect(),
                join_wait,
            };
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(serve_region(topology, region, data, addr, node_config))
        }
        Command::Edge {
            config,
            edge,
            tls_cert,
            tls_key,
            tokens,
            backend_ca,
            backend_cert,
            backend_key,
            threads,
            listen,
            admin_listen,
            dns_listen,
        } => {
            let topology = Arc::new(load_topology(&config)?);
            if dns_listen.is_some() && topology.dns.is_none() {
                return Err(BadConfig(format!(
                    "--dns-listen: {} has no [dns] section, so the edge serves no GeoDNS",
                    config.display()
                ))
                .into());
            }
            let secret = read_secret(&config, &topology)?;
            let mut opts = meridian_edge::EdgeOptions::new(&edge);
            opts.secret = secret;
            opts.geoip = open_geoip(&config, &topology, &edge)?;
            if let Some(e) = topology.edge(&edge) {
                opts.client_header_timeout = e.client_header_timeout;
                opts.tunnel_idle_timeout = e.tunnel_idle_timeout;
                opts.upstream_timeout = e.upstream_timeout;
                opts.max_connections = e.max_connections;
                if let Some(path) = &e.access_log {
                    let path = if path.as_os_str() == "-" {
                        path.clone()
                    } else {
                        config.parent().unwrap_or(Path::new(".")).join(path)
                    };
                    let log = meridian_edge::access_log::AccessLog::open(&path).map_err(|e| {
                        BadConfig(format!(
                            "access_log {}: {e}; give a file the edge may append to, or `-` for standard output",
                            path.display()
                        ))
                    })?;
                    opts.access_log = Some(Arc::new(log));
                }
            }
            opts.backend_tls = Some(
                meridian_edge::tls::backend_client_config(
                    backend_ca.as_deref(),
                    backend_cert.as_deref().zip(backend_key.as_deref()),
                )
                .map_err(|e| BadConfig(e.to_string()))?,
            );
            opts.token_public_keys = tokens.read_files().map_err(BadConfig)?;
            opts.token_jwks = tokens.jwks_urls();
            if let Some(ca) = &tokens.token_jwks_ca {
                opts.token_jwks_tls = Some(
                    meridian_edge::tls::backend_client_config(Some(ca), None)
                        .map_err(|e| BadConfig(format!("--token-jwks-ca: {e}")))?,
                );
            }
            opts.token_jwks_refresh = tokens.token_jwks_refresh;
            opts.token_expect = meridian_edge::token::Expect {
                issuer: tokens.token_issuer.clone(),
                audiences: tokens.token_audience.clone(),
            };
            let mut certs = None;
            if let (Some(cert), Some(key)) = (&tls_cert, &tls_key) {
                let files = meridian_edge::tls::CertFiles::load(cert, key)
                    .map_err(|e| BadConfig(e.to_string()))?;
                opts.tls = Some(
                    files
                        .server_config()
                        .map_err(|e| BadConfig(e.to_string()))?,
                );
                certs = Some(files);
            }
            opts.seed = random_seed();
            let e = meridian_edge::Edge::new(topology, opts)
                .map_err(|e| BadConfig(format!("{}: {e}", config.display())))?;
            let threads = threads
                .or_else(|| std::thread::available_parallelism().ok())
                .map_or(1, std::num::NonZeroUsize::get);
            // A current-thread runtime here (proxy thread 1, admin API, probes, GeoDNS TCP,
            // signals) and one per further proxy thread: no hand-offs between threads.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let binds = EdgeBinds {
                proxy: listen,
                admin: admin_listen,
                dns: dns_listen,
            };
            runtime.block_on(serve_edge(e, config, threads, certs, binds, tokens))
        }
        Command::Ctl {
            admin,
            token_file,
            command,
        } => {
            let token = match token_file {
                Some(f) => Some(
                    std::fs::read_to_string(&f)
                        .map_err(|e| BadConfig(format!("--token-file {}: {e}", f.display())))?
                        .trim()
                        .to_string(),
                ),
                None => None,
            };
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(ctl(admin.trim_end_matches('/'), token, command))
        }
        Command::Demo { duration, output } => {
            lab_run(meridian_lab::scenario::Scenario::demo(duration), output)
        }
        Command::Lab {
            command: LabCommand::Run { scenario, output },
        } => {
            let scenario = meridian_lab::scenario::Scenario::load(&scenario)
                .map_err(|e| BadConfig(e.to_string()))?;
            lab_run(scenario, output)
        }
        Command::DemoApp {
            region,
            node,
            listen,
        } => {
            let mut opts = meridian_lab::app::AppOptions::new(&region, &node)
                .map_err(|e| BadConfig(e.to_string()))?;
            opts.seed = random_seed();
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(serve_demo_app(opts, listen))
        }
        Command::Wan {
            profile,
            links,
            delays,
            jitter,
            bandwidth,
            seed,
            control,
        } => {
            let mut p = load_profile(&profile)?;
            for (a, b, d) in delays {
                p.set(&a, &b, d);
                p.set(&b, &a, d);
            }
            if !(jitter.is_finite() && jitter >= 0.0) {
                return Err(
                    BadConfig(format!("--jitter {jitter}: expected milliseconds ≥ 0")).into(),
                );
            }
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(serve_wan(p, links, jitter, bandwidth, seed, control))
        }
    }
}

/// The edge's GeoIP database, read into memory from the path its `geoip` names (relative to
/// the topology file); `None` when it names none.
fn open_geoip(
    config: &Path,
    topology: &meridian_core::config::Topology,
    edge: &str,
) -> Result<Option<Arc<meridian_edge::geo::GeoIp>>, BadConfig> {
    let Some(db) = topology.edge(edge).and_then(|e| e.geoip.as_ref()) else {
        return Ok(None);
    };
    let path = config.parent().unwrap_or(Path::new(".")).join(db);
    meridian_edge::geo::GeoIp::open(&path)
        .map(|g| Some(Arc::new(g)))
        .map_err(|e| BadConfig(e.to_string()))
}

/// Addresses `meridian edge` binds instead of the topology's (`--listen`, `--admin-listen`,
/// `--dns-listen`).
/// Identity providers whose residency tokens `meridian edge` accepts besides HS256 tokens of
/// the cluster secret, and what those tokens must claim.
#[derive(clap::Args, Debug, Clone)]
struct TokenArgs {
    /// PEM public key (`openssl pkey -pubout`) of an identity provider whose residency
    /// tokens the edge accepts besides HS256 tokens of the cluster secret: Ed25519
    /// (EdDSA), RSA of 2048+ bits (RS256) or P-256 (ES256). Repeat it to accept an old and
    /// a new key while the provider rotates.
    #[arg(long, value_name = "FILE")]
    token_public_key: Vec<PathBuf>,
    /// An identity provider's JSON Web Key Set: its JWKS URL (https://, or http://), fetched
    /// at start, every --token-jwks-refresh, and sooner (at most every 30s) when a token names
    /// a key ID (`kid`) the set lacks — a failed fetch keeps the last good keys; or a JWKS file,
    /// re-read on SIGHUP. Its Ed25519, RSA (2048+ bits) and P-256 signing keys are used, and a
    /// token's `kid` picks among them. Repeatable.
    #[arg(long, value_name = "URL|FILE")]
    token_jwks: Vec<String>,
    /// PEM bundle of the CA certificates that sign the https:// JWKS URLs' certificates (a
    /// private identity provider). Default: the system's trust store.
    #[arg(long, value_name = "FILE")]
    token_jwks_ca: Option<PathBuf>,
    /// How often each JWKS URL is fetched again (at least 30s).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_jwks_refresh)]
    token_jwks_refresh: std::time::Duration,
    /// The `iss` claim an identity provider's tokens must carry to count (e.g. your OpenID
    /// provider's issuer URL). HS256 tokens of the cluster secret are not checked.
    #[arg(long, value_name = "ISS")]
    token_issuer: Option<String>,
    /// An audience this edge's tokens are made for: an identity provider's token counts only
    /// when its `aud` claim names one of the given ones. Repeatable. Default: any.
    #[arg(long, value_name = "AUD")]
    token_audience: Vec<String>,
}

impl TokenArgs {
    /// The `--token-jwks` values that are URLs.
    fn jwks_urls(&self) -> Vec<String> {
        self.token_jwks
            .iter()
            .filter(|s| is_url(s))
            .cloned()
            .collect()
    }

    /// Whether any key comes from a file (re-read on SIGHUP).
    fn has_files(&self) -> bool {
        !self.token_public_key.is_empty() || self.token_jwks.iter().any(|s| !is_url(s))
    }

    /// The keys of every `--token-public-key` file and `--token-jwks` file, or the first
    /// file's error.
    fn read_files(&self) -> Result<Vec<meridian_edge::token::NamedKey>, String> {
        let mut keys = Vec::new();
        for p in &self.token_public_key {
            let key = meridian_edge::token::PublicKey::from_pem(p).map_err(|e| e.to_string())?;
            keys.push(key.into());
        }
        for f in self.token_jwks.iter().filter(|s| !is_url(s)) {
            let bytes = std::fs::read(f).map_err(|e| {
                format!("--token-jwks {f}: {e}; give a JWKS file or an https:// URL")
            })?;
            let set = meridian_edge::token::jwks::parse(&bytes)
                .map_err(|e| format!("--token-jwks {f}: {e}"))?;
            for why in &set.skipped {
                tracing::warn!(file = %f, "--token-jwks: {why}: left out");
            }
            keys.extend(set.keys);
        }
        Ok(keys)
    }
}

/// Whether a `--token-jwks` value is a URL (else a file path).
fn is_url(s: &str) -> bool {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

fn parse_jwks_refresh(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration_arg(s)?;
    if d < meridian_edge::jwks::MIN_REFETCH {
        return Err(format!(
            "at least {}s, so the identity provider is not asked more often than that",
            meridian_edge::jwks::MIN_REFETCH.as_secs()
        ));
    }
    Ok(d)
}

struct EdgeBinds {
    proxy: Option<std::net::SocketAddr>,
    admin: Option<std::net::SocketAddr>,
    dns: Option<std::net::SocketAddr>,
}

async fn serve_edge(
    edge: meridian_edge::Edge,
    config: PathBuf,
    threads: usize,
    certs: Option<Arc<meridian_edge::tls::CertFiles>>,
    binds: EdgeBinds,
    tokens: TokenArgs,
) -> anyhow::Result<()> {
    let topo = edge.topology();
    let me = topo
        .edge(&edge.options().name)
        .context("invariant: Edge::new checked the edge exists")?
        .clone();
    let busy =
        |a: std::net::SocketAddr| format!("binding {a} (is another process listening there?)");
    let proxy_addr = binds.proxy.unwrap_or(me.listen);
    let admin_addr = binds.admin.unwrap_or(me.admin);
    let listeners =
        meridian_edge::bind_proxy(proxy_addr, threads).with_context(|| busy(proxy_addr))?;
    let admin = tokio::net::TcpListener::bind(admin_addr)
        .await
        .with_context(|| busy(admin_addr))?;
    tracing::info!(edge = %me.name, "edge listening on http://{proxy_addr}, admin on http://{admin_addr}");
    if edge.options().secret.is_none() {
        tracing::warn!(
            "cluster.secret_file is not set: the admin API (weights, drains) answers anyone who reaches {admin_addr}"
        );
    }
    log_advice(&topo);
    let dns = match &topo.dns {
        Some(d) => {
            let addr = binds.dns.unwrap_or(d.listen);
            // SO_REUSEPORT: the server opens one more socket per core on this address.
            let udp = meridian_edge::bind_dns_udp(addr)
                .and_then(tokio::net::UdpSocket::from_std)
                .with_context(|| format!("dns udp: {}", busy(addr)))?;
            let tcp = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("dns tcp: {}", busy(addr)))?;
            tracing::info!(zone = %d.zone, "GeoDNS listening on {addr} (udp and tcp)");
            Some(tokio::spawn(meridian_edge::serve_dns(
                edge.clone(),
                udp,
                tcp,
                std::future::pending(),
            )))
        }
        None => None,
    };
    #[cfg(unix)]
    {
        let reloader = edge.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let name = reloader.options().name.clone();
                let loaded = load_topology(&config)
                    .map_err(|e| e.to_string())
                    .and_then(|t| {
                        let geoip = open_geoip(&config, &t, &name).map_err(|e| e.0)?;
                        Ok((t, geoip))
                    });
                match loaded.and_then(|(t, g)| {
                    reloader
                        .reload_with_geoip(Arc::new(t), g)
                        .map_err(|e| e.to_string())
                }) {
                    Ok(()) => tracing::info!("SIGHUP: topology (and GeoIP database) reloaded"),
                    Err(e) => tracing::error!("SIGHUP: new topology refused, old one kept: {e}"),
                }
                if let Some(log) = &reloader.options().access_log {
                    log.reopen();
                }
                if tokens.has_files() {
                    match tokens.read_files() {
                        Ok(keys) => {
                            reloader.set_token_keys(keys);
                            tracing::info!("SIGHUP: token public keys reloaded");
                        }
                        Err(e) => tracing::error!(
                            "SIGHUP: token public keys refused, the old ones kept: {e}"
                        ),
                    }
                }
                if let Some(c) = &certs {
                    match c.reload() {
                        Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                        Err(e) => tracing::error!(
                            "SIGHUP: new TLS certificate refused, old one kept: {e}"
                        ),
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (config, certs, tokens);
    let served = meridian_edge::serve_threads(edge, listeners, admin, shutdown_signal()).await;
    if let Some(dns) = dns {
        dns.abort();
    }
    served?;
    tracing::info!("edge stopped");
    Ok(())
}

async fn ctl(admin: &str, token: Option<String>, command: CtlCommand) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let auth = |rb: reqwest::RequestBuilder| match &token {
        Some(t) => rb.bearer_auth(t),
        None => rb,
    };
    let req = match &command {
        CtlCommand::Status => client.get(format!("{admin}/v1/status")),
        CtlCommand::Weight { region, pct } => client
            .put(format!("{admin}/v1/regions/{region}/weight"))
            .json(&serde_json::json!({ "weight": pct })),
        CtlCommand::Drain { region } => client.post(format!("{admin}/v1/regions/{region}/drain")),
        CtlCommand::Explain {
            ip,
            method,
            path,
            token,
        } => {
            let mut q = vec![("ip", ip.to_string())];
            q.extend(method.clone().map(|m| ("method", m)));
            q.extend(path.clone().map(|p| ("path", p)));
            q.extend(token.clone().map(|t| ("token", t)));
            let q: Vec<String> = q
                .iter()
                .map(|(k, v)| format!("{k}={}", url_encode(v)))
                .collect();
            client.get(format!("{admin}/v1/explain?{}", q.join("&")))
        }
        CtlCommand::ExplainDns {
            name,
            qtype,
            ip,
            subnet,
        } => {
            let mut q = vec![("name", name.clone()), ("ip", ip.to_string())];
            q.extend(qtype.clone().map(|t| ("type", t)));
            q.extend(subnet.clone().map(|s| ("subnet", s)));
            let q: Vec<String> = q
                .iter()
                .map(|(k, v)| format!("{k}={}", url_encode(v)))
                .collect();
            client.get(format!("{admin}/v1/explain/dns?{}", q.join("&")))
        }
    };
    let resp = auth(req)
        .send()
        .await
        .with_context(|| format!("calling the admin API at {admin}"))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .context("reading the admin API's answer")?;
    let Ok(body) = serde_json::from_str::<serde_json::Value>(&text) else {
        let shown: String = text.trim().chars().take(200).collect();
        anyhow::bail!(
            "{status}: the answer is not JSON ({shown:?}); is {admin} an edge's `admin` address?"
        );
    };
    if !status.is_success() {
        let error = &body["error"];
        let refusal = format!(
            "{status}: {}{}",
            error["message"].as_str().unwrap_or("no message"),
            error["hint"]
                .as_str()
                .map(|h| format!("\nhint: {h}"))
                .unwrap_or_default()
        );
        // A 4xx refuses the call as it was asked: bad usage, exit 2.
        if status.is_client_error() {
            return Err(BadConfig(refusal).into());
        }
        anyhow::bail!(refusal);
    }
    match command {
        CtlCommand::Status => {
            println!(
                "edge {}  policy {}",
                body["edge"].as_str().unwrap_or("?"),
                body["policy"].as_str().unwrap_or("?")
            );
            for r in body["regions"].as_array().map_or(&[][..], Vec::as_slice) {
                let rtt = r["rtt_ms"]
                    .as_f64()
                    .map_or("-".to_string(), |v| format!("{v:.1}ms"));
                println!(
                    "{:<20} {:<5} local {:<5} weight {:>3}%  rtt {rtt}",
                    r["name"].as_str().unwrap_or("?"),
                    if r["up"].as_bool() == Some(true) {
                        "up"
                    } else {
                        "DOWN"
                    },
                    if r["local_up"].as_bool() == Some(true) {
                        "up"
                    } else {
                        "down"
                    },
                    r["weight"].as_u64().unwrap_or(0),
                );
                for b in r["backends"].as_array().map_or(&[][..], Vec::as_slice) {
                    println!(
                        "    {:<30} {:<5} in flight {:>4} {}",
                        b["url"].as_str().unwrap_or("?"),
                        b["state"].as_str().unwrap_or("?"),
                        b["in_flight"].as_u64().unwrap_or(0),
                        if b["available"].as_bool() == Some(true) {
                            ""
                        } else {
                            "unavailable"
                        }
                    );
                }
            }
        }
        CtlCommand::Explain { .. } => {
            let client = &body["client"];
            println!(
                "client {} {} from {} ({}): {}",
                client["method"].as_str().unwrap_or("?"),
                client["path"].as_str().unwrap_or("/"),
                client["ip"].as_str().unwrap_or("?"),
                if client["retryable"].as_bool() == Some(true) {
                    "retried in the next region on failure"
                } else {
                    "never retried once it may have reached the app"
                },
                match (client["country"].as_str(), client["continent"].as_str()) {
                    (None, None) => "not located".to_string(),
                    (country, continent) => format!(
                        "country {} continent {}",
                        country.unwrap_or("?"),
                        continent.unwrap_or("?")
                    ),
                }
            );
            for line in body["explanation"]
                .as_array()
                .map_or(&[][..], Vec::as_slice)
            {
                println!("- {}", line.as_str().unwrap_or(""));
            }
            println!(
                "=> {} {}",
                body["outcome"].as_str().unwrap_or("?"),
                body["regions"]
            );
        }
        CtlCommand::ExplainDns { .. } => {
            println!(
                "{} {} from {}{}: located {} ({} {}, GeoIP network /{})",
                body["name"].as_str().unwrap_or("?"),
                body["qtype"].as_str().unwrap_or("?"),
                body["resolver"].as_str().unwrap_or("?"),
                body["subnet"]
                    .as_str()
                    .map_or(String::new(), |s| format!(" subnet {s}")),
                body["located"].as_str().unwrap_or("-"),
                body["country"].as_str().unwrap_or("?"),
                body["continent"].as_str().unwrap_or("?"),
                body["network_prefix"]
                    .as_u64()
                    .map_or("-".to_string(), |p| p.to_string()),
            );
            for p in body["policy"].as_array().map_or(&[][..], Vec::as_slice) {
                for line in p["explanation"].as_array().map_or(&[][..], Vec::as_slice) {
                    println!("- {}", line.as_str().unwrap_or(""));
                }
                println!(
                    "  {} {}: {} {} ttl {} scope /{}",
                    p["name"].as_str().unwrap_or("?"),
                    p["rtype"].as_str().unwrap_or("?"),
                    p["outcome"].as_str().unwrap_or("?"),
                    p["regions"],
                    p["ttl"],
                    p["scope"]
                );
            }
            println!("=> {}", body["rcode"].as_str().unwrap_or("?"));
            for a in body["answers"].as_array().map_or(&[][..], Vec::as_slice) {
                println!("   {}", a.as_str().unwrap_or(""));
            }
            for a in body["authority"].as_array().map_or(&[][..], Vec::as_slice) {
                println!("   (authority) {}", a.as_str().unwrap_or(""));
            }
        }
        CtlCommand::Weight { .. } | CtlCommand::Drain { .. } => {
            println!(
                "{}: weight {}",
                body["region"].as_str().unwrap_or("?"),
                body["weight"]
            );
        }
    }
    Ok(())
}

async fn serve_region(
    topology: Arc<Topology>,
    region: String,
    data: PathBuf,
    addr: String,
    node_config: meridian_node::NodeConfig,
) -> anyhow::Result<()> {
    if node_config.secret.is_none() {
        tracing::warn!(
            "cluster.secret_file is not set: replication peers and admin calls are not authenticated"
        );
    }
    log_advice(&topology);
    let node = meridian_node::open(topology, &region, &data, node_config)
        .with_context(|| format!("opening the data directory {}", data.display()))?;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr} (is another process listening there?)"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    tracing::info!(%region, data = %data.display(), "region node listening on http://{bound}");
    meridian_node::serve(node, listener, shutdown_signal()).await;
    tracing::info!(%region, "region node stopped");
    Ok(())
}

async fn serve_demo_app(
    opts: meridian_lab::app::AppOptions,
    listen: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen} (is another process listening there?)"))?;
    let region = opts.region.clone();
    tracing::info!(%region, node = %opts.node, "demo app listening on http://{listen}");
    meridian_lab::app::serve(opts, listener, shutdown_signal()).await?;
    tracing::info!(%region, "demo app stopped");
    Ok(())
}

async fn serve_wan(
    profile: meridian_lab::wan::Profile,
    links: Vec<meridian_lab::wan::spec::LinkSpec>,
    jitter_ms: f64,
    bandwidth: Option<u64>,
    seed: u64,
    control: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    let wan = meridian_lab::wan::Wan::new(profile, seed);
    let mut relays = Vec::new();
    for l in &links {
        for (from, to) in [(&l.from, &l.to), (&l.to, &l.from)] {
            let shape = meridian_lab::wan::Shape {
                jitter: std::time::Duration::from_secs_f64(jitter_ms / 1000.0),
                bandwidth,
                ..wan.shape(from, to).map_err(|e| BadConfig(e.to_string()))?
            };
            wan.set_shape(from, to, shape)
                .map_err(|e| BadConfig(e.to_string()))?;
        }
        let relay = wan.relay(&l.from, &l.to, l.listen, l.upstream).await?;
        let shape = wan.shape(&l.from, &l.to)?;
        tracing::info!(from = %l.from, to = %l.to, listen = %relay.addr(), upstream = %l.upstream,
            one_way = ?shape.delay, back = ?wan.shape(&l.to, &l.from)?.delay, "relay up");
        relays.push(relay);
    }
    let _control = match control {
        Some(addr) => {
            let (bound, task) = meridian_lab::wan::control::serve(wan.clone(), addr).await?;
            tracing::info!("WAN control on {bound}");
            Some(task)
        }
        None => None,
    };
    shutdown_signal().await;
    for ((from, to), bytes) in wan.counters() {
        println!("{from} -> {to}: {bytes} bytes");
    }
    drop(relays);
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Completes on Ctrl-C (SIGINT). The handler is installed by this call, not on the first poll
/// (as `tokio::signal::ctrl_c` does), so a Ctrl-C that comes while the caller's other work is
/// still starting is seen, never the default action of killing the process. Needs a runtime.
fn interrupt_registered_now() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("installing the Ctrl-C handler")?;
        Ok(async move {
            sigint.recv().await;
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// A seed that differs per process, for the RNGs of the edge and the demo app.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// Parses `REGION=URL` of `--peer`.
/// The latency profile `name`: `default` is the shared measured matrix when present, else the
/// distance model alone; anything else is a CSV path.
fn load_profile(name: &str) -> anyhow::Result<meridian_lab::wan::Profile> {
    if name == "default" {
        let path = Path::new(DEFAULT_PROFILE);
        if path.exists() {
            return Ok(
                meridian_lab::wan::Profile::load(path).map_err(|e| BadConfig(e.to_string()))?
            );
        }
        tracing::info!(
            "{} not found: delays from the distance model",
            path.display()
        );
        return Ok(meridian_lab::wan::Profile::default());
    }
    Ok(meridian_lab::wan::Profile::load(Path::new(name)).map_err(|e| BadConfig(e.to_string()))?)
}

/// Where the measured inter-region latency matrix lives, relative to the project root.
const DEFAULT_PROFILE: &str = "../shared/data/latency_matrix.csv";

/// Logs each piece of `meridian check`'s advice on the topology as a warning.
fn log_advice(topology: &Topology) {
    for advice in meridian_core::config::advice(topology) {
        tracing::warn!("topology advice: {advice}");
    }
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    meridian_core::config::parse_duration(s)
}

/// The shortest demo: its kill, restart, partition and heal need room between them.
const MIN_DEMO: std::time::Duration = std::time::Duration::from_secs(30);

fn parse_demo_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration_arg(s)?;
    if d < MIN_DEMO {
        return Err(format!(
            "the demo needs at least {}s of load, so its kill, restart, partition and heal \
             have room between them; e.g. --duration 60s",
            MIN_DEMO.as_secs()
        ));
    }
    Ok(d)
}

/// An edge's admin URL: `http://` or `https://`, a host, nothing after the authority but `/`.
fn parse_admin_url(s: &str) -> Result<String, String> {
    let bad =
        |why: String| format!("{why}; expected the edge's admin URL, e.g. http://127.0.0.1:9080");
    let url = reqwest::Url::parse(s).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "scheme `{}` is not http or https",
            url.scheme()
        )));
    }
    if url.host().is_none() || url.path() != "/" || url.query().is_some() {
        return Err(bad(
            "it must be a host and port, with no path or query".to_string()
        ));
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// Runs a lab scenario to its report; exit 1 when an expectation failed.
fn lab_run(scenario: meridian_lab::scenario::Scenario, output: LabOutput) -> anyhow::Result<()> {
    let LabOutput {
        report: report_dir,
        keep,
        quiet,
    } = output;
    let profile = load_profile(&scenario.profile)?;
    let binary = std::env::current_exe().context("locating the meridian binary")?;
    let opts = meridian_lab::run::RunOptions {
        report_dir: report_dir.clone(),
        binary,
        profile,
        quiet,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut progress = meridian_lab::progress::Progress::new(quiet);
        let interrupted = interrupt_registered_now()?;
        let finished = tokio::select! {
            r = meridian_lab::run::run(&scenario, &opts, &mut progress) => r?,
            () = interrupted => {
                anyhow::bail!("interrupted: every process of the world was stopped");
            }
        };
        let report = &finished.report;
        let paths = meridian_lab::report::write_all(report, &report_dir)?;
        print!(
            "{}",
            meridian_lab::report::terminal::render_with(report, std::io::stdout().is_terminal())
        );
        println!(
            "report: {}  {}  {}",
            paths.html.display(),
            paths.json.display(),
            paths.text.display()
        );
        if keep {
            println!("the world is running; Ctrl-C stops it");
            for r in finished.world.regions() {
                println!(
                    "  {r}: edge {}  app {}  node {}  edge admin {}",
                    finished.world.edge_url(r),
                    finished.world.app_url(r),
                    finished.world.node_url(r),
                    finished.world.admin_url(r)
                );
            }
            println!(
                "  admin token: {}",
                finished.world.dir().join("cluster.secret").display()
            );
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
        }
        finished
            .world
            .shutdown(std::time::Duration::from_secs(5))
            .await;
        if report.passed {
            Ok(())
        } else {
            anyhow::bail!("expectations failed; see {}", paths.html.display())
        }
    })
}

fn parse_peer(s: &str) -> Result<(String, String), String> {
    let (region, url) = s
        .split_once('=')
        .ok_or("expected REGION=URL, e.g. eu-west-1=http://127.0.0.1:9702")?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("`{url}` is not an http:// or https:// URL"));
    }
    Ok((region.to_string(), url.trim_end_matches('/').to_string()))
}

fn load_topology(path: &Path) -> anyhow::Result<Topology> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        BadConfig(format!(
            "{}: cannot read the topology file: {e}",
            path.display()
        ))
    })?;
    meridian_core::config::parse(&path.display().to_string(), &text)
        .map_err(|e| BadConfig(e.to_string()).into())
}

/// Reads `cluster.secret_file` (relative to the topology file), trimmed.
fn read_secret(config: &Path, topology: &Topology) -> anyhow::Result<Option<String>> {
    let Some(file) = &topology.cluster.secret_file else {
        return Ok(None);
    };
    let path = config.parent().unwrap_or(Path::new(".")).join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        BadConfig(format!(
            "{}: cluster.secret_file {}: {e}; create it with a long random token, e.g. `openssl rand -hex 32 > {}`",
            config.display(),
            path.display(),
            path.display()
        ))
    })?;
    let secret = text.trim().to_string();
    if secret.len() < 16 {
        return Err(BadConfig(format!(
            "{}: the cluster secret is {} characters; use at least 16 random characters",
            path.display(),
            secret.len()
        ))
        .into());
    }
    Ok(Some(secret))
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for a query value.
fn url_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
