use crate::{Health, LimitedListener, Metrics};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The OpenMetrics text format's media type.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} for --metrics-addr")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    health: Health,
}

/// Listens on `addr` and serves `/metrics` and `/healthz` in the background until
/// `cancel` fires. Returns the address bound (useful with port 0). A port that cannot be
/// bound is an error at once, not a silent absence.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Health,
    cancel: CancellationToken,
) -> Result<SocketAddr, ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .with_state(Shared { metrics, health });
    info!(address = %bound, "serving /metrics and /healthz");
    tokio::spawn(async move {
        let served = axum::serve(LimitedListener::new(listener), app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(error) = served {
            warn!(%error, "the metrics endpoint stopped");
        }
    });
    Ok(bound)
}

async fn scrape(State(shared): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        shared.metrics.encode(),
    )
}

async fn healthz(State(shared): State<Shared>) -> impl IntoResponse {
    if shared.health.is_healthy() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to the broker\n",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let metrics = Arc::new(Metrics::new(crate::Service::Metric));
        metrics.rows.inc();
        let health = Health::default();
        let cancel = CancellationToken::new();
        let addr = serve(
            "127.0.0.1:0".parse().expect("addr"),
            metrics,
            health.clone(),
            cancel.clone(),
        )
        .await
        .expect("serve");
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 503"));
        health.set(true);
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        let scrape = get(addr, "/metrics").await;
        assert!(scrape.contains("application/openmetrics-text"), "{scrape}");
        assert!(scrape.contains("nnmon_rows_total 1"), "{scrape}");
        cancel.cancel();
    }

    #[tokio::test]
    async fn idle_connections_beyond_the_limit_wait_instead_of_exhausting_the_service() {
        let metrics = Arc::new(Metrics::new(crate::Service::Metric));
        let cancel = CancellationToken::new();
        let addr = serve(
            "127.0.0.1:0".parse().expect("addr"),
            metrics,
            Health::default(),
            cancel.clone(),
        )
        .await
        .expect("serve");
        let mut idle = Vec::new();
        for _ in 0..crate::MAX_CONNECTIONS {
            idle.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        }
        // Give the server time to accept them all.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(300), get(addr, "/healthz"))
                .await;
        assert!(waiting.is_err(), "served past the limit");
        idle.pop();
        let served = tokio::time::timeout(std::time::Duration::from_secs(5), get(addr, "/healthz"))
            .await
            .expect("served once a place is free");
        assert!(served.starts_with("HTTP/1.1 503"), "{served}");
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_taken_port_is_an_error() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = taken.local_addr().expect("addr");
        let error = serve(
            addr,
            Arc::new(Metrics::new(crate::Service::Metric)),
            Health::default(),
            CancellationToken::new(),
        )
        .await
        .expect_err("taken");
        assert!(error.to_string().contains(&addr.to_string()));
    }
}
