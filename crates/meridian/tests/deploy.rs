//! The files in `deploy/` against the code: every metric the alerting rules and the dashboard
//! name is one the binary exports, and each systemd unit's command line is one it accepts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every `meridian_…` name in `text` (letters, digits and `_` after the prefix).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("meridian_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// The metric names the crates define: string literals `"meridian_…"` in their sources.
fn exported() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                for piece in text.split('"').skip(1).step_by(2) {
                    if piece.starts_with("meridian_") && metric_names(piece).contains(piece) {
                        out.insert(piece.to_string());
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    let crates = std::fs::read_dir(root().join("crates")).expect("the crates folder");
    for krate in crates.flatten() {
        let src = krate.path().join("src");
        if src.is_dir() {
            walk(&src, &mut out);
        }
    }
    out
}

#[test]
fn alerts_and_dashboard_name_only_exported_metrics() {
    let exported = exported();
    assert!(
        exported.contains("meridian_repl_lag_seconds") && exported.len() > 30,
        "the scan of the sources found {exported:?}"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/meridian.json")).expect("dashboard JSON");
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            assert!(!expr.trim().is_empty(), "{}", panel["title"]);
            exprs += expr;
            exprs.push('\n');
        }
    }
    let alerts = read("deploy/prometheus/alerts.yml");
    let rules = alerts.matches("- alert: ").count();
    assert!(rules >= 10, "{rules} rules");
    assert_eq!(
        rules,
        alerts.matches("\n        expr: ").count(),
        "one expr per rule"
    );
    for (file, text) in [("dashboard", &exprs), ("alerts.yml", &alerts)] {
        let named = metric_names(text);
        assert!(!named.is_empty(), "{file} names no metric");
        for name in named {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                exported.contains(&name) || exported.contains(base),
                "{file} names {name}, which no crate exports"
            );
        }
    }
}

/// Asserts that the binary takes command line `args` (from `what`): clap refuses an unknown
/// flag before it reaches `--help`, so exit 0 means every flag is one the command takes.
fn assert_accepted(what: &str, args: &[String]) {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run meridian");
    assert!(
        out.status.success(),
        "{what}: `meridian {}` is refused: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_units_run_command_lines_the_binary_accepts() {
    for (unit, role) in [
        ("meridian-region@.service", "region"),
        ("meridian-edge@.service", "edge"),
    ] {
        let text = read(&format!("deploy/systemd/{unit}"));
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit} has no ExecStart"));
        let mut args = exec.split_whitespace();
        assert_eq!(args.next(), Some("/usr/local/bin/meridian"), "{unit}");
        let args: Vec<String> = args.map(|a| a.replace("%i", "us-east-1")).collect();
        assert_eq!(args.first().map(String::as_str), Some(role), "{unit}");
        assert_accepted(unit, &args);
        assert!(text.contains("RestartPreventExitStatus=2"), "{unit}");
    }
}

/// `deploy/container/build.sh --context` assembles a root filesystem the binary runs in on its
/// own: the loader in it, asked where each library the binary needs would come from with only
/// the rootfs's folders to look in, finds every one inside the rootfs (a library the script
/// missed would come from this host, not from the image). The rootfs also has the image's
/// user, the Dockerfile and the CA bundle.
#[test]
fn container_context_holds_everything_the_binary_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path().join("ctx");
    let out = Command::new("bash")
        .arg(root().join("deploy/container/build.sh"))
        .arg("--context")
        .arg(&ctx)
        .env("MERIDIAN_BIN", env!("CARGO_BIN_EXE_meridian"))
        .output()
        .expect("run build.sh");
    assert!(
        out.status.success(),
        "build.sh --context: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rootfs = ctx.join("rootfs");
    let bin = rootfs.join("usr/local/bin/meridian");
    assert!(ctx.join("Dockerfile").is_file() && ctx.join("data").is_dir());
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).expect("etc/passwd");
    assert!(passwd.contains("meridian:x:65532:65532:"), "{passwd}");
    let dockerfile = std::fs::read_to_string(ctx.join("Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("USER 65532:65532"), "{dockerfile}");
    assert!(
        dockerfile.contains(r#"ENTRYPOINT ["/usr/local/bin/meridian"]"#),
        "{dockerfile}"
    );

    // The rootfs's folders holding shared libraries, and its loader.
    fn walk(dir: &Path, libs: &mut BTreeSet<PathBuf>, loader: &mut Option<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read rootfs").flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                walk(&path, libs, loader);
            } else if name.starts_with("ld-linux") {
                *loader = Some(path);
            } else if name.contains(".so") {
                libs.insert(dir.to_path_buf());
            }
        }
    }
    let (mut libs, mut loader) = (BTreeSet::new(), None);
    walk(&rootfs, &mut libs, &mut loader);
    let loader = loader.expect("the rootfs has the binary's loader");
    let path: Vec<String> = libs.iter().map(|d| d.display().to_string()).collect();
    let listed = Command::new(&loader)
        .arg("--inhibit-cache")
        .arg("--library-path")
        .arg(path.join(":"))
        .arg("--list")
        .arg(&bin)
        .env_clear()
        .output()
        .expect("run the rootfs's loader");
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    let resolved: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split("=> ").nth(1))
        .filter_map(|r| r.split_whitespace().next())
        .collect();
    assert!(!resolved.is_empty(), "the loader listed nothing: {listed}");
    let root_text = rootfs.display().to_string();
    for lib in resolved {
        assert!(
            lib.starts_with(&root_text),
            "{lib} comes from the host, not the image:\n{listed}"
        );
    }
    let version = Command::new(&loader)
        .arg("--inhibit-cache")
        .arg("--library-path")
        .arg(path.join(":"))
        .arg(&bin)
        .arg("--version")
        .env_clear()
        .output()
        .expect("run the rootfs's binary");
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("meridian "),
        "{version:?}"
    );
}

/// The Kubernetes manifests (`deploy/kubernetes`): the topology passes `meridian check` where
/// the pods mount it (with the secret where they mount it), names the region and edge the
/// kustomization gives the pods, and each container's `args` is a command line the binary
/// accepts. Where `kubectl` is installed, `kubectl kustomize` renders the whole.
#[test]
fn kubernetes_manifests_run_what_the_binary_accepts() {
    let kustomization = read("deploy/kubernetes/kustomization.yaml");
    let literal = |key: &str| {
        kustomization
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("- {key}=")))
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or_else(|| panic!("kustomization.yaml has no `{key}=` literal"))
            .to_string()
    };
    let (region, edge) = (literal("region"), literal("edge"));

    // As the pods see it: the topology in topology/, the Secret in secret/ beside it.
    let dir = tempfile::tempdir().expect("tempdir");
    for sub in ["topology", "secret"] {
        std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
    }
    let config = dir.path().join("topology/meridian.toml");
    std::fs::write(&config, read("deploy/kubernetes/meridian.toml")).expect("write");
    std::fs::write(
        dir.path().join("secret/cluster.secret"),
        "0123456789abcdef0123\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("run meridian check");
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "meridian check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The summary lists each region and edge first on a line of its own.
    for name in [&region, &edge] {
        assert!(
            summary
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name.as_str())),
            "{name} is not in the topology:\n{summary}"
        );
    }

    let mut seen = 0;
    for file in ["region.yaml", "edge.yaml"] {
        let text = read(&format!("deploy/kubernetes/{file}"));
        for want in [
            "mountPath: /etc/meridian/topology",
            "mountPath: /etc/meridian/secret",
            "runAsUser: 65532",
            "readOnlyRootFilesystem: true",
        ] {
            assert!(text.contains(want), "{file} lacks `{want}`");
        }
        for line in text.lines().filter_map(|l| l.trim().strip_prefix("args: ")) {
            let args: Vec<String> = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{file}: args are one JSON-style list: {e}"));
            let args: Vec<String> = args
                .into_iter()
                .map(|a| match a.as_str() {
                    "$(MERIDIAN_REGION)" => region.clone(),
                    "$(MERIDIAN_EDGE)" => edge.clone(),
                    "/etc/meridian/topology/meridian.toml" => config.display().to_string(),
                    _ => a,
                })
                .collect();
            assert_accepted(file, &args);
            seen += 1;
        }
    }
    assert_eq!(
        seen, 2,
        "one container command in each of region.yaml and edge.yaml"
    );

    let rendered = Command::new("kubectl")
        .args(["kustomize"])
        .arg(root().join("deploy/kubernetes"))
        .output();
    match rendered {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "kubectl kustomize: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            for want in [
                "kind: StatefulSet",
                "kind: Deployment",
                "image: meridian:dev",
            ] {
                assert!(text.contains(want), "the rendering lacks `{want}`:\n{text}");
            }
        }
        Err(e) => eprintln!("kubectl is not installed here ({e}): rendering not checked"),
    }
}
