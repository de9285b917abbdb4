//! The live page: `/`, `/api/summary`, `/events` (server-sent events) and
//! `/error_distribution.png`, served with axum from the latest [`Snapshot`].
//!
//! The page and its chart library (uPlot, MIT, vendored in `assets/uplot/`) are compiled
//! into the binary: there is no frontend build step and nothing to install beside `nnmon`.

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{Stream, StreamExt};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// What the server hands out, replaced whole at each refresh.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// `/api/summary`: every statistic.
    pub summary_json: String,
    /// Each `/events` message: the summary plus the time series and recent pairs.
    pub update_json: String,
    /// `/error_distribution.png`.
    pub png: Bytes,
}

type Latest = watch::Receiver<Arc<Snapshot>>;

#[derive(Clone)]
struct AppState {
    latest: Latest,
    cancel: CancellationToken,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

const INDEX: &[u8] = include_bytes!("assets/index.html");
/// The files under `/assets/`: name, body, media type.
const ASSETS: &[(&str, &[u8], &str)] = &[
    ("app.js", include_bytes!("assets/app.js"), JS),
    ("style.css", include_bytes!("assets/style.css"), CSS),
    (
        "uPlot.iife.min.js",
        include_bytes!("assets/uplot/uPlot.iife.min.js"),
        JS,
    ),
    (
        "uPlot.min.css",
        include_bytes!("assets/uplot/uPlot.min.css"),
        CSS,
    ),
    (
        "uPlot-LICENSE.txt",
        include_bytes!("assets/uplot/LICENSE"),
        TEXT,
    ),
];

/// Binds `addr` now (so a taken port fails the start), then serves until `cancel` fires.
pub async fn serve(
    addr: SocketAddr,
    latest: Latest,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr} for the live page"))?;
    let local = listener.local_addr().unwrap_or(addr);
    info!(url = %format!("http://{local}/"), "serving the live page");
    let app = router(latest, cancel.clone());
    Ok(tokio::spawn(async move {
        axum::serve(nnmon_observe::LimitedListener::new(listener), app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await
            .context("serving the live page")
    }))
}

fn router(latest: Latest, cancel: CancellationToken) -> Router {
    let mut router = Router::new()
        .route("/", get(index))
        .route("/api/summary", get(summary))
        .route("/events", get(events))
        .route("/error_distribution.png", get(chart));
    for &(name, body, content_type) in ASSETS {
        let response = move || async move {
            (
                [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
                body,
            )
        };
        router = router.route(&format!("/assets/{name}"), get(response));
    }
    router.with_state(AppState { latest, cancel })
}

/// Figures change at every refresh: no cache may keep them.
fn fresh(content_type: &'static str, body: impl IntoResponse) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// Where the page takes the latest update inlined, so that its first paint has data.
const INITIAL_MARK: &str = "<!--INITIAL-->";

/// The page, with the latest update inlined.
async fn index(State(state): State<AppState>) -> Response {
    let snapshot = state.latest.borrow().clone();
    let page = String::from_utf8_lossy(INDEX);
    let initial = if snapshot.update_json.is_empty() {
        String::new()
    } else {
        // `\u003c` is `<` in JSON, and cannot open or close an element inside the script.
        format!(
            r#"<script id="initial" type="application/json">{}</script>"#,
            snapshot.update_json.replace('<', r"\u003c")
        )
    };
    fresh(HTML, page.replacen(INITIAL_MARK, &initial, 1))
}

/// The latest snapshot's `part`, or 503 before the first refresh has finished.
fn latest_part<T: IntoResponse>(
    state: &AppState,
    content_type: &'static str,
    part: impl FnOnce(&Snapshot) -> Option<T>,
) -> Response {
    let snapshot = state.latest.borrow().clone();
    match part(&snapshot) {
        Some(body) => fresh(content_type, body),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the first refresh is still running",
        )
            .into_response(),
    }
}

async fn summary(State(state): State<AppState>) -> Response {
    latest_part(&state, "application/json", |s| {
        (!s.summary_json.is_empty()).then(|| s.summary_json.clone())
    })
}

async fn chart(State(state): State<AppState>) -> Response {
    latest_part(&state, "image/png", |s| {
        (!s.png.is_empty()).then(|| s.png.clone())
    })
}

/// One `update` event now and one after every refresh, until shutdown (an open event
/// stream would otherwise hold graceful shutdown forever).
async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut latest = state.latest.clone();
    latest.mark_changed();
    let updates = futures_util::stream::unfold(latest, |mut latest| async move {
        latest.changed().await.ok()?;
        let snapshot = latest.borrow_and_update().clone();
        Some((snapshot, latest))
    })
    .filter(|snapshot| std::future::ready(!snapshot.update_json.is_empty()))
    .map(|snapshot| {
        Ok(Event::default()
            .event("update")
            .data(snapshot.update_json.as_str()))
    })
    .take_until(state.cancel.cancelled_owned());
    Sse::new(updates).keep_alive(KeepAlive::default())
}
