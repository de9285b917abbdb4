//! The shipped `broker-restart` scenario, end to end. In a binary of its own, with a
//! single test, because it stops the broker's application: cargo runs test binaries one
//! after another, so no other test runs against the broker while it is down.

mod common;

use common::{broker, host_rabbitmqctl, skip};
use nnmon_scenario::Summary;
use std::path::Path;

/// Brings the broker's application back even if the test fails while it is stopped.
struct RestartGuard;

impl Drop for RestartGuard {
    fn drop(&mut self) {
        host_rabbitmqctl(&["start_app"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_scenario_loses_and_duplicates_nothing() {
    let Some(broker) = broker().await else { return };
    if broker.in_container() || !host_rabbitmqctl(&["status"]) {
        skip(
            "rabbitmqctl cannot reach the broker at AMQP_URL (NNMON_RABBITMQCTL names another \
             command, e.g. `docker exec <container> rabbitmqctl`)",
        );
        return;
    }
    let _guard = RestartGuard;
    let out = tempfile::tempdir().expect("tempdir");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/broker-restart.toml");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_nnmon"))
        .args(["scenario", "run"])
        .arg(&file)
        .arg("--out")
        .arg(out.path())
        .env("AMQP_URL", &broker.url)
        .output()
        .await
        .expect("nnmon runs");
    let explain = format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{explain}");
    let text = std::fs::read_to_string(out.path().join("summary.json")).expect("summary");
    let summary: Summary = serde_json::from_str(&text).expect("a summary");
    assert!(
        summary.exactly_once && summary.hypothesis_held,
        "{summary:?}"
    );
    assert_eq!(summary.rows, summary.items_confirmed);
    assert!(
        summary
            .faults
            .iter()
            .any(|f| f.fault.starts_with("broker app stopped") && f.error.is_none()),
        "{summary:?}"
    );
}
