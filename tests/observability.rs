//! What a scraper sees: every service's `/metrics` (parsed as Prometheus text) agrees
//! with the CSV, and `/healthz` says whether the service is connected.

mod common;

use common::{MINUTE, Pipeline, broker, free_port};
use prometheus_parse::{Sample, Scrape, Value};
use std::time::{Duration, Instant};

/// `GET http://addr/path`: the status and the body.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut response = ureq::get(&format!("http://{addr}{path}"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.body_mut().read_to_string().ok()?))
}

fn scrape(addr: &str) -> Scrape {
    let (status, body) = get(addr, "/metrics").expect("the metrics endpoint answers");
    assert_eq!(status, 200, "{body}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text")
}

/// The value of the sample `name` whose labels include `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s: &&Sample| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// Waits until `/healthz` of `addr` answers `want`.
async fn wait_health(addr: &str, want: u16) {
    let deadline = Instant::now() + MINUTE;
    loop {
        let status = get(addr, "/healthz").map(|(status, _)| status);
        if status == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz of {addr}: {status:?}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_match_the_csv_and_health_follows_the_broker() {
    const ITEMS: usize = 300;
    let Some(broker) = broker().await else { return };
    let mut pipeline = Pipeline::new(&broker, "metrics");
    pipeline.set_env("NNMON_STATUS_INTERVAL", "0.2");
    let (model_addr, metric_addr) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    pipeline.start(
        "model",
        &[
            "model",
            "--metrics-addr",
            &model_addr,
            "--drift-window",
            "100",
        ],
    );
    pipeline.start("metric", &["metric", "--metrics-addr", &metric_addr]);
    wait_health(&model_addr, 200).await;
    wait_health(&metric_addr, 200).await;
    let count = ITEMS.to_string();
    let status = pipeline
        .run(
            "features",
            &["features", "--delay", "0.002", "--count", &count],
            MINUTE,
        )
        .await;
    assert!(status.success(), "{}", pipeline.logs());
    let rows = pipeline.wait_for_rows(ITEMS, MINUTE).await;
    // Gauges follow within a status interval.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let metric = scrape(&metric_addr);
    let q = &pipeline.queues;
    let n = ITEMS as f64;
    assert_eq!(value(&metric, "nnmon_rows_total", &[]), Some(n));
    assert_eq!(
        value(
            &metric,
            "nnmon_messages_consumed_total",
            &[("queue", &q.y_true)]
        ),
        Some(n)
    );
    assert_eq!(
        value(
            &metric,
            "nnmon_messages_consumed_total",
            &[("queue", &q.y_pred)]
        ),
        Some(n)
    );
    assert_eq!(
        value(&metric, "nnmon_join_pending", &[("side", "y_true")]),
        Some(0.0)
    );
    assert_eq!(value(&metric, "nnmon_absolute_error_count", &[]), Some(n));
    assert_eq!(
        value(&metric, "nnmon_row_latency_seconds_count", &[]),
        Some(n)
    );
    assert_eq!(value(&metric, "nnmon_error_drift_alarm", &[]), Some(0.0));
    // The window (1 000 rows) holds every row: its MAE and bias are the CSV's.
    let mae = rows.iter().map(|r| r.absolute_error).sum::<f64>() / n;
    let bias = rows.iter().map(|r| r.y_pred - r.y_true).sum::<f64>() / n;
    let close =
        |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() <= 1e-9 * b.abs().max(1.0));
    assert!(
        close(value(&metric, "nnmon_window_mae", &[]), mae),
        "MAE {mae}"
    );
    assert!(
        close(value(&metric, "nnmon_window_bias", &[]), bias),
        "bias {bias}"
    );

    let model = scrape(&model_addr);
    assert_eq!(
        value(
            &model,
            "nnmon_messages_published_total",
            &[("queue", &q.y_pred)]
        ),
        Some(n)
    );
    assert_eq!(
        value(
            &model,
            "nnmon_messages_consumed_total",
            &[("queue", &q.features)]
        ),
        Some(n)
    );
    for feature in [
        "age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6",
    ] {
        let score = value(&model, "nnmon_feature_drift_score", &[("feature", feature)]);
        assert!(
            score.is_some_and(|s| (0.0..=1.0).contains(&s)),
            "{feature}: {score:?}"
        );
        assert_eq!(
            value(&model, "nnmon_feature_drift_alarm", &[("feature", feature)]),
            Some(0.0),
            "{feature} drifted on undrifted data"
        );
    }
    // Every name is a low-cardinality label set: no ID anywhere in a scrape.
    for sample in metric.samples.iter().chain(&model.samples) {
        for (_, label) in sample.labels.iter() {
            assert!(!rows.iter().any(|r| r.id == *label), "an ID as a label");
        }
    }

    // The status files for plot's page are there and say the same.
    let status: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(pipeline.log_dir().join("metric_status.json"))
            .expect("metric_status.json"),
    )
    .expect("JSON");
    assert_eq!(status["rows"].as_u64(), Some(ITEMS as u64), "{status}");
    assert!(pipeline.log_dir().join("feature_drift.json").exists());

    // A metric that cannot reach its broker is up but not healthy.
    let lonely = format!("127.0.0.1:{}", free_port());
    let mut stranded = pipeline.command("stranded", &["metric", "--metrics-addr", &lonely]);
    let dir = tempfile::tempdir().expect("tempdir");
    stranded
        .env(
            "AMQP_URL",
            format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port()),
        )
        .env("NNMON_LOG_DIR", dir.path());
    let mut child = stranded.spawn().expect("spawn");
    wait_health(&lonely, 503).await;
    let _ = child.kill();
    let _ = child.wait();
}
