//! A broker restart mid-stream. Kept in its own test binary, with a single test, so that
//! nothing else runs against the shared broker while it is down (cargo runs test binaries
//! one after another). With `AMQP_URL` unset the test has a RabbitMQ container of its own,
//! restarted through `docker exec` (its exit code checked).

mod common;

use common::{Pipeline, broker, host_rabbitmqctl, skip, stream_through};
use std::time::Duration;

/// Brings the host broker's application back even if the test fails while it is stopped. A
/// container broker needs none: it is removed with the test.
struct RestartGuard {
    host_broker: bool,
}

impl Drop for RestartGuard {
    fn drop(&mut self) {
        if self.host_broker {
            host_rabbitmqctl(&["start_app"]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_and_duplicates_nothing() {
    let Some(broker) = broker().await else { return };
    if !broker.rabbitmqctl(&["status"]).await {
        assert!(
            !broker.in_container(),
            "rabbitmqctl status failed in the broker's container"
        );
        skip(
            "rabbitmqctl cannot reach the broker at AMQP_URL, so it cannot be restarted \
             (NNMON_RABBITMQCTL names another command, e.g. `docker exec <container> rabbitmqctl`)",
        );
        return;
    }
    let _guard = RestartGuard {
        host_broker: !broker.in_container(),
    };
    let mut pipeline = Pipeline::new(&broker, "restart");
    pipeline.start("plot", &["plot", "--interval", "0.5"]);
    stream_through(&mut pipeline, 1200, async |p: &mut Pipeline| {
        assert!(broker.rabbitmqctl(&["stop_app"]).await, "stop_app failed");
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Checked while the broker is still down: once it is back, features may finish its
        // stream (and exit 0, which stream_through checks) before a slow `await_startup`
        // returns, as it did in a container under `docker exec`.
        for service in ["features", "model", "metric", "plot"] {
            assert!(
                p.is_running(service),
                "{service} exited while the broker was down\n{}",
                p.logs()
            );
        }
        assert!(broker.rabbitmqctl(&["start_app"]).await, "start_app failed");
        assert!(broker.rabbitmqctl(&["await_startup"]).await);
    })
    .await;
    for service in ["model", "metric", "plot"] {
        assert!(
            pipeline.is_running(service),
            "{service} died\n{}",
            pipeline.logs()
        );
    }
    let logs = pipeline.logs();
    assert!(logs.contains("lost the broker; reconnecting"), "{logs}");
}
