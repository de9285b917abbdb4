//! End to end: the four services as separate processes on a real RabbitMQ.

mod common;

use common::{Pipeline, broker, declare_transient, publish_raw};
use lapin::options::BasicGetOptions;
use nnmon_model::{LinearModel, diabetes};
use std::collections::HashSet;
use std::time::Duration;

const ITEMS: usize = 200;

/// Every (y_true, y_pred) a correct pipeline can log: a row's target and its OLS prediction.
fn possible_pairs() -> HashSet<(u64, u64)> {
    let model = LinearModel::default_ols().expect("built-in model");
    diabetes()
        .iter()
        .map(|s| (s.target.to_bits(), model.predict(&s.features).to_bits()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_200_items_end_to_end() {
    let Some(broker) = broker().await else { return };
    let mut pipeline = Pipeline::new(&broker, "stream");
    pipeline.start("model", &["model"]);
    pipeline.start("metric", &["metric"]);
    pipeline.start("plot", &["plot", "--interval", "0.2"]);
    let count = ITEMS.to_string();
    let status = pipeline
        .run(
            "features",
            &["features", "--delay", "0", "--count", &count, "--seed", "7"],
            Duration::from_secs(60),
        )
        .await;
    assert!(
        status.success(),
        "features failed: {status}\n{}",
        pipeline.logs()
    );

    let rows = pipeline.wait_for_rows(ITEMS, Duration::from_secs(60)).await;
    // Give a stray duplicate the chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = if pipeline.rows().len() > rows.len() {
        pipeline.rows()
    } else {
        rows
    };
    assert_eq!(rows.len(), ITEMS, "{}", pipeline.logs());
    let ids: HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), ITEMS, "IDs must be distinct");
    let possible = possible_pairs();
    for row in &rows {
        assert_eq!(
            row.absolute_error,
            (row.y_true - row.y_pred).abs(),
            "{row:?}"
        );
        assert!(
            possible.contains(&(row.y_true.to_bits(), row.y_pred.to_bits())),
            "not a data set row and its prediction: {row:?}"
        );
        assert!(
            uuid::Uuid::parse_str(&row.id).is_ok_and(|id| id.get_version_num() == 7),
            "{row:?}"
        );
        assert!(row.latency_us.is_some(), "{row:?}");
    }

    // The chart catches up with the log: a PNG of the promised size.
    let chart = pipeline.log_dir().join("error_distribution.png");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(bytes) = std::fs::read(&chart) {
            let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
            let reader = decoder.read_info().expect("a valid PNG");
            assert_eq!((reader.info().width, reader.info().height), (1000, 600));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no chart\n{}",
            pipeline.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for service in ["model", "metric", "plot"] {
        assert!(
            pipeline.is_running(service),
            "{service} died\n{}",
            pipeline.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_streams_the_same_rows() {
    let Some(broker) = broker().await else { return };
    let mut targets = Vec::new();
    for run in 0..2 {
        let mut pipeline = Pipeline::new(&broker, &format!("seed{run}"));
        pipeline.start("model", &["model"]);
        pipeline.start("metric", &["metric"]);
        let status = pipeline
            .run(
                "features",
                &["features", "--delay", "0", "--count", "30", "--seed", "42"],
                Duration::from_secs(60),
            )
            .await;
        assert!(status.success());
        let mut rows = pipeline.wait_for_rows(30, Duration::from_secs(60)).await;
        // UUIDv7 IDs sort in publish order.
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        targets.push(rows.iter().map(|r| r.y_true.to_bits()).collect::<Vec<_>>());
    }
    assert_eq!(targets[0], targets[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaks_the_seed_wire_format_over_its_transient_queues() {
    let Some(broker) = broker().await else { return };
    let mut pipeline = Pipeline::new(&broker, "seedwire");
    let connection = pipeline.connect().await;
    // A seed deployment declared these queues first, transient.
    for queue in [
        &pipeline.queues.features,
        &pipeline.queues.y_true,
        &pipeline.queues.y_pred,
    ] {
        declare_transient(&connection, queue).await;
    }
    let sample = diabetes()[0];
    let features: Vec<String> = sample.features.iter().map(|x| x.to_string()).collect();
    let seed_features = format!(
        r#"{{"id": 1700000000.25, "body": [{}]}}"#,
        features.join(", ")
    );

    // A seed `features` feeding nnmon `model`: the prediction comes back in the seed's format.
    pipeline.start("model", &["model"]);
    publish_raw(
        &connection,
        &pipeline.queues.features,
        seed_features.as_bytes(),
    )
    .await;
    let channel = connection.create_channel().await.expect("channel");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let prediction = loop {
        if let Some(message) = channel
            .basic_get(
                pipeline.queues.y_pred.as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("get")
        {
            break message;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no prediction\n{}",
            pipeline.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let json: serde_json::Value = serde_json::from_slice(&prediction.delivery.data).expect("JSON");
    let expected = LinearModel::default_ols()
        .expect("model")
        .predict(&sample.features);
    assert_eq!(json["id"].as_f64(), Some(1700000000.25), "{json}");
    assert_eq!(json["body"].as_f64(), Some(expected), "{json}");
    let properties = &prediction.delivery.properties;
    assert_eq!(
        properties.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    assert_eq!(
        properties.message_id().as_ref().map(|m| m.as_str()),
        Some("1700000000.25")
    );
    assert!(properties.timestamp().is_some());
    assert!(
        pipeline.is_running("model"),
        "model must accept the transient queues\n{}",
        pipeline.logs()
    );

    // Seed `features` and seed `model` feeding nnmon `metric`.
    pipeline.start("metric", &["metric"]);
    publish_raw(
        &connection,
        &pipeline.queues.y_pred,
        &prediction.delivery.data,
    )
    .await;
    publish_raw(
        &connection,
        &pipeline.queues.y_true,
        br#"{"id": 1700000000.25, "body": 151.0}"#,
    )
    .await;
    let rows = pipeline.wait_for_rows(1, Duration::from_secs(30)).await;
    assert_eq!(rows[0].id, "1700000000.25");
    assert_eq!((rows[0].y_true, rows[0].y_pred), (151.0, expected));
    assert_eq!(rows[0].latency_us, None, "the seed sends no publish time");
    let logs = pipeline.logs();
    assert!(
        logs.contains("queue exists with other properties"),
        "{logs}"
    );
}
