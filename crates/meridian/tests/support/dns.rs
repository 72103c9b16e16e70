//! What the GeoDNS end-to-end tests share: free ports, child processes killed on drop, a
//! stand-in app backend, and `dig` run and parsed.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The command `meridian edge --config <cfg> --edge e`, its output discarded (a caller may
/// redirect it or add arguments).
pub fn edge_command(cfg: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_meridian"));
    c.args([
        "edge",
        "--config",
        cfg.to_str().expect("utf8"),
        "--edge",
        "e",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

/// [`edge_command`] as a child process, killed when the returned guard drops.
pub fn start_edge(cfg: &std::path::Path) -> Kill {
    Kill(edge_command(cfg).spawn().expect("spawn the edge"))
}

/// A stand-in app backend: answers every HTTP request 200 and closes; stopping it closes the
/// listener, so probes get "connection refused".
pub struct App {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl App {
    pub fn start(port: u16) -> App {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind app");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                        let mut buf = [0u8; 2048];
                        let _ = s.read(&mut buf);
                        let _ = s.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        App {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn dig_available() -> bool {
    Command::new("dig")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[derive(Debug, Default)]
pub struct Dig {
    pub status: String,
    pub flags: String,
    /// (name, ttl, type, data)
    pub answer: Vec<(String, u32, String, String)>,
    pub authority: Vec<(String, u32, String, String)>,
    /// The CLIENT-SUBNET line of the OPT pseudo-section (`addr/source/scope`).
    pub ecs: Option<String>,
    pub raw: String,
}

impl Dig {
    pub fn data(&self) -> Vec<&str> {
        self.answer.iter().map(|r| r.3.as_str()).collect()
    }
}

pub fn dig(port: u16, args: &[&str]) -> Dig {
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+norec",
            "+time=2",
            "+tries=1",
        ])
        .args(args)
        .output()
        .expect("run dig");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut d = Dig {
        raw: raw.clone(),
        ..Dig::default()
    };
    let mut section = "";
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            d.status = rest.split(',').next().unwrap_or("").to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            d.flags = rest.split(';').next().unwrap_or("").to_string();
        }
        if let Some(rest) = line.strip_prefix("; CLIENT-SUBNET: ") {
            d.ecs = Some(rest.trim().to_string());
        }
        if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
            continue;
        }
        if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
            continue;
        }
        if line.trim().is_empty() || line.starts_with(';') {
            section = "";
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            continue;
        }
        let rec = (
            f[0].to_string(),
            f[1].parse().unwrap_or(0),
            f[3].to_string(),
            f[4..].join(" "),
        );
        match section {
            "answer" => d.answer.push(rec),
            "authority" => d.authority.push(rec),
            _ => {}
        }
    }
    d
}
