//! End to end: the live page of `nnmon plot --http` in a real browser (Debian's headless
//! Chromium), on a real pipeline.
//!
//! One page load is watched over several refreshes: the row count it shows must grow
//! through `/events` without a reload, and every count it shows must be the one
//! `/api/summary` gave for the same refresh. Once the stream is over, the page, the API,
//! `summary.json` and the CSV must all agree, and a screenshot is taken: into the run's log
//! folder, or where `NNMON_LIVE_PAGE_SCREENSHOT` says (`docs/live-page.png` refreshes the
//! README's picture; a plain test run leaves the tree clean).

mod common;

use common::{MINUTE, Pipeline, api_summary, broker, skip};
use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Items streamed: about 20 s at `start_stream`'s 250 items/s, so rows arrive across
/// several refreshes.
const ITEMS: usize = 5000;
/// `plot --interval`, in seconds.
const INTERVAL_SECONDS: u64 = 1;
/// How long one page load may take to show three refreshes (a browser starts slowly on a
/// loaded machine).
const WATCH_AT_MOST: Duration = Duration::from_secs(60);

/// Chromium's path, installed with apt-get when missing (the test runs as root in CI);
/// `None`, after [`skip`], when it cannot be had.
fn chromium() -> Option<PathBuf> {
    let find = || {
        ["chromium", "chromium-browser"]
            .into_iter()
            .find_map(|name| {
                let out = Command::new("sh")
                    .args(["-c", &format!("command -v {name}")])
                    .output()
                    .ok()?;
                let path = String::from_utf8(out.stdout).ok()?;
                (out.status.success() && !path.trim().is_empty())
                    .then(|| PathBuf::from(path.trim()))
            })
    };
    if let Some(path) = find() {
        return Some(path);
    }
    eprintln!("installing chromium with apt-get");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !apt(&["install", "-y", "-q", "chromium"]) {
        apt(&["update", "-q"]);
        apt(&["install", "-y", "-q", "chromium"]);
    }
    let found = find();
    if found.is_none() {
        skip("Chromium is not installed and `apt-get install -y chromium` failed");
    }
    found
}

/// Headless Chromium with a fresh profile, as quiet as it can be made.
fn browser(chromium: &Path, profile: &Path) -> Command {
    let mut command = Command::new(chromium);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1400,1480",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .stdin(Stdio::null());
    command
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn field(summary: &serde_json::Value, name: &str) -> u64 {
    summary[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {summary}"))
}

/// One update the page logged to its console: `nnmon update: rows=N updated_ms=T shown=S`.
#[derive(Debug)]
struct Shown {
    rows: u64,
    updated_ms: u64,
    text: String,
}

fn console_updates(log: &str) -> Vec<Shown> {
    log.lines()
        .filter_map(|line| {
            let rest = &line[line.find("nnmon update: ")? + "nnmon update: ".len()..];
            let value = |key: &str| {
                let start = rest.find(key)? + key.len();
                let end = rest[start..]
                    .find([' ', '"'])
                    .map_or(rest.len(), |e| start + e);
                Some(&rest[start..end])
            };
            let text_start = rest.find("shown=")? + "shown=".len();
            let text_end = rest[text_start..]
                .find('"')
                .map_or(rest.len(), |e| text_start + e);
            Some(Shown {
                rows: value("rows=")?.parse().ok()?,
                updated_ms: value("updated_ms=")?.parse().ok()?,
                text: rest[text_start..text_end].to_owned(),
            })
        })
        .collect()
}

/// The page's rows as drawn: digits grouped by thin spaces.
fn digits(text: &str) -> String {
    text.chars().filter(|c| c.is_ascii_digit()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_shows_the_rows_growing_and_matching_the_api() {
    let Some(chromium) = chromium() else { return };
    let Some(broker) = broker().await else { return };
    let mut pipeline = Pipeline::new(&broker, "live_page");
    let addr = format!("127.0.0.1:{}", free_port());
    let base = format!("http://{addr}");
    let interval = INTERVAL_SECONDS.to_string();
    pipeline.start("plot", &["plot", "--interval", &interval, "--http", &addr]);
    pipeline.start_stream(ITEMS);
    pipeline.wait_for_rows(100, MINUTE).await;

    // One page load watched over several refreshes, while rows keep coming.
    let profile = tempfile::tempdir().expect("tempdir");
    let console = pipeline.log_dir().join("chromium-console.log");
    let mut page = browser(&chromium, profile.path())
        .args(["--enable-logging=stderr", "--v=0"])
        .arg(format!("{base}/"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&console).expect("console log"))
        .spawn()
        .expect("start chromium");
    // Every refresh the API gave while the page was open, by its time; the page is watched
    // until it has shown three refreshes (its inlined one and two more through /events),
    // however long a loaded machine takes to start the browser.
    let mut api_rows: HashMap<u64, u64> = HashMap::new();
    let deadline = Instant::now() + WATCH_AT_MOST;
    let (log, shown) = loop {
        if let Some(s) = api_summary(&base) {
            api_rows.insert(field(&s, "updated_ms"), field(&s, "rows"));
        }
        let log = std::fs::read_to_string(&console).unwrap_or_default();
        let shown = console_updates(&log);
        let refreshes: HashSet<u64> = shown.iter().map(|u| u.updated_ms).collect();
        if refreshes.len() >= 3 || Instant::now() > deadline {
            break (log, shown);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    let _ = page.kill();
    let _ = page.wait();
    let refreshes: HashSet<u64> = shown.iter().map(|u| u.updated_ms).collect();
    assert!(
        refreshes.len() >= 3,
        "the page showed {} refreshes in {WATCH_AT_MOST:?}, not 3\n{log}",
        refreshes.len()
    );
    let (first, last) = (&shown[0], &shown[shown.len() - 1]);
    assert!(
        last.rows > first.rows,
        "the page's rows did not grow without a reload: {shown:?}"
    );
    let mut matched = 0;
    for update in &shown {
        assert_eq!(digits(&update.text), update.rows.to_string(), "{update:?}");
        if let Some(&rows) = api_rows.get(&update.updated_ms) {
            assert_eq!(
                update.rows, rows,
                "page and /api/summary differ for {update:?}"
            );
            matched += 1;
        }
    }
    assert!(
        matched >= 2,
        "too few page updates seen in /api/summary too: {shown:?} vs {api_rows:?}"
    );

    // The stream is over: page, API, summary.json and CSV agree.
    let rows = pipeline.wait_for_rows(ITEMS, 2 * MINUTE).await.len() as u64;
    let deadline = Instant::now() + MINUTE;
    let api = loop {
        match api_summary(&base) {
            Some(s) if field(&s, "rows") == rows => break s,
            _ if Instant::now() > deadline => panic!("/api/summary never reached {rows} rows"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let dom = browser(&chromium, profile.path())
        .args(["--dump-dom", &format!("{base}/")])
        .stderr(Stdio::null())
        .output()
        .expect("chromium --dump-dom");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains(&format!(r#"data-rows="{rows}""#)),
        "the page does not show {rows} rows (API: {}):\n{dom}",
        field(&api, "rows")
    );
    let file: serde_json::Value = serde_json::from_slice(
        &std::fs::read(pipeline.log_dir().join("summary.json")).expect("summary.json"),
    )
    .expect("summary.json parses");
    assert_eq!(field(&file, "rows"), rows);

    let screenshot = match std::env::var_os("NNMON_LIVE_PAGE_SCREENSHOT") {
        Some(path) => Path::new(env!("CARGO_MANIFEST_DIR")).join(path),
        None => pipeline.log_dir().join("live-page.png"),
    };
    let status = browser(&chromium, profile.path())
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(format!("{base}/"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("chromium --screenshot");
    assert!(status.success(), "chromium --screenshot failed: {status}");
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG"),
        "not a PNG: {}",
        screenshot.display()
    );
}
