//! Graceful shutdown: SIGINT or SIGTERM cancels a token that every service watches.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A token cancelled on the first SIGINT or SIGTERM. Must be called inside the runtime.
pub fn on_signal() -> CancellationToken {
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    tokio::spawn(async move {
        let (mut interrupt, mut terminate) = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(i), Ok(t)) => (i, t),
            (Err(error), _) | (_, Err(error)) => {
                warn!(%error, "cannot listen for shutdown signals; stop with SIGKILL");
                return;
            }
        };
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        info!(signal = name, "shutting down: finishing in-flight work");
        token.cancel();
    });
    cancel
}
