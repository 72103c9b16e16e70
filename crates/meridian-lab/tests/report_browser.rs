//! The HTML report in a real browser: headless Chromium loads the fixture's page, its DOM has the
//! three charts with drawn lines, and a screenshot shows the p99 and lag lines in their colours.
//!
//! Without a Chromium binary the test is skipped with a notice, unless `CI` is set: then it
//! fails, saying to install one. Set `REPORT_SCREENSHOT_OUT` to keep a copy of the screenshot.

#[path = "common/report_fixture.rs"]
mod report_fixture;

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meridian_lab::report::html;

/// Binaries tried, in order, on `PATH`.
const BROWSERS: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];
/// Chromium is killed after this long.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The screenshot's size.
const WIDTH: u32 = 1400;
const HEIGHT: u32 = 3000;
/// The p99 line colour and the first lag line colour (`charts::P99_COLOR`, `LAG_COLORS[0]`):
/// nothing else on the page is drawn in them.
const P99_RGB: [u8; 3] = [0x1d, 0x4e, 0xd8];
const LAG0_RGB: [u8; 3] = [0x0f, 0x76, 0x6e];

fn find_browser() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    BROWSERS
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// Runs `browser` with the common headless flags plus `args`, stdout to `stdout`, killing it
/// after [`TIMEOUT`]; panics on a timeout or a failed exit.
fn run(browser: &Path, profile: &Path, args: &[String], stdout: &Path) {
    let log = stdout.with_extension("stderr");
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-color-profile=srgb",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={WIDTH},{HEIGHT}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(stdout).expect("stdout file"))
        .stderr(File::create(&log).expect("stderr file"))
        .spawn()
        .expect("spawn chromium");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait chromium") {
            break status;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish within {TIMEOUT:?}; stderr:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "chromium {args:?} failed ({status}); stderr:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// The text of the element `<svg … id="{id}" …>…</svg>` in `dom`.
fn svg_by_id<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!(r#"id="{id}""#))
        .unwrap_or_else(|| panic!("no #{id} in the DOM"));
    let start = dom[..at].rfind("<svg").expect("svg start");
    let end = at + dom[at..].find("</svg>").expect("svg end");
    &dom[start..end]
}

/// Decoded RGBA pixels of a PNG, with its size.
fn decode(png_path: &Path) -> (u32, u32, Vec<[u8; 4]>) {
    let file = BufReader::new(File::open(png_path).expect("open screenshot"));
    let mut decoder = png::Decoder::new(file);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size().expect("buffer size")];
    let info = reader.next_frame(&mut buf).expect("png frame");
    let bytes = &buf[..info.buffer_size()];
    let pixels = match info.color_type {
        png::ColorType::Rgba => bytes
            .chunks_exact(4)
            .map(|p| [p[0], p[1], p[2], p[3]])
            .collect(),
        png::ColorType::Rgb => bytes
            .chunks_exact(3)
            .map(|p| [p[0], p[1], p[2], 255])
            .collect(),
        other => panic!("unexpected screenshot colour type {other:?}"),
    };
    (info.width, info.height, pixels)
}

#[test]
fn the_report_renders_in_headless_chromium() {
    let Some(browser) = find_browser() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but no Chromium was found (tried {BROWSERS:?} on PATH): install chromium \
             (Debian: apt-get install -y chromium) so the HTML report is checked in a browser"
        );
        eprintln!(
            "SKIPPED: no Chromium found (tried {BROWSERS:?} on PATH); install chromium to run"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("report.html");
    std::fs::write(&page, html::render(&report_fixture::sample())).expect("write html");
    let url = format!("file://{}", page.display());
    let profile = dir.path().join("profile");

    let dom_path = dir.path().join("dom.html");
    run(
        &browser,
        &profile,
        &["--dump-dom".into(), url.clone()],
        &dom_path,
    );
    let dom = std::fs::read_to_string(&dom_path).expect("dom");
    assert!(
        dom.contains(report_fixture::SCENARIO),
        "the page did not load:\n{dom:.2000}"
    );
    assert_eq!(
        dom.matches(r#"class="chart""#).count(),
        3,
        "three svg.chart elements"
    );
    for (id, lines) in [("chart-latency", 2), ("chart-lag", 6), ("chart-map", 0)] {
        let svg = svg_by_id(&dom, id);
        assert!(
            svg.contains(r#"class="chart""#),
            "#{id} is not an svg.chart"
        );
        let drawn = svg.matches(r#"<path d="M"#).count();
        assert!(
            drawn >= lines,
            "#{id}: {drawn} non-empty paths, want {lines}"
        );
        assert!(svg.contains("<line"), "#{id} has no axis or link lines");
    }
    assert!(svg_by_id(&dom, "chart-map").matches("<circle").count() >= 11);

    let shot = dir.path().join("report.png");
    run(
        &browser,
        &profile,
        &[format!("--screenshot={}", shot.display()), url],
        &dir.path().join("screenshot.out"),
    );
    if let Some(keep) = std::env::var_os("REPORT_SCREENSHOT_OUT") {
        std::fs::copy(&shot, keep).expect("copy screenshot");
    }
    let (width, height, pixels) = decode(&shot);
    assert_eq!((width, height), (WIDTH, HEIGHT));
    let count = |rgb: [u8; 3]| pixels.iter().filter(|p| p[..3] == rgb).count();
    let background = count([0xf8, 0xfa, 0xfc]) + count([0xff, 0xff, 0xff]);
    let drawn = pixels.len() - background;
    assert!(
        drawn > pixels.len() / 20,
        "screenshot looks blank: {drawn} non-background pixels"
    );
    let (p99, lag) = (count(P99_RGB), count(LAG0_RGB));
    // A 2.5-unit line across ~900 units of chart covers thousands of pixels; the legend's
    // sample alone is under 100.
    assert!(p99 > 1_000, "p99 line: {p99} pixels of #1d4ed8");
    assert!(lag > 500, "first lag line: {lag} pixels of #0f766e");
}
