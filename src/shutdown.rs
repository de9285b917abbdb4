//! Shutdown on SIGINT or SIGTERM: the first cancels a token that every service watches (it
//! finishes its in-flight work), a second one exits at once.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A token cancelled on the first SIGINT or SIGTERM; a second one exits the process at once
/// with the shell's code for it (130 or 143). The handlers are in place when this returns.
pub fn on_signal() -> CancellationToken {
    let cancel = CancellationToken::new();
    if let Err(error) = listen(cancel.clone()) {
        warn!(%error, "cannot listen for shutdown signals; stop with SIGKILL");
    }
    cancel
}

/// Watches the signals on a thread of its own, with its own small runtime: the service's
/// runtime thread may be busy, or blocked writing to a stalled stderr, and a second signal
/// must still be seen.
fn listen(cancel: CancellationToken) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (interrupt, terminate) = {
        let _context = runtime.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        )
    };
    std::thread::Builder::new()
        .name("nnmon-signals".into())
        .spawn(move || runtime.block_on(watch(interrupt, terminate, cancel)))?;
    Ok(())
}

async fn watch(mut interrupt: Signal, mut terminate: Signal, cancel: CancellationToken) {
    let mut asked = false;
    loop {
        // The exit code of a process the signal killed: 128 + its number.
        let (name, code) = tokio::select! {
            Some(()) = interrupt.recv() => ("SIGINT", 130),
            Some(()) = terminate.recv() => ("SIGTERM", 143),
            else => return,
        };
        if asked {
            // Asked twice: the operator prefers stopping now to finishing the work. That is
            // like a crash, which nnmon survives: what was not acked goes back to its queue.
            std::process::exit(code);
        }
        asked = true;
        cancel.cancel();
        // Logged from a thread of its own: if stderr is stalled, writing blocks, and this
        // thread must stay free to see the second signal.
        std::thread::spawn(move || {
            info!(
                signal = name,
                "shutting down: finishing in-flight work (send it again to stop at once)"
            )
        });
    }
}
