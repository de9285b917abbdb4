//! Log lines on stderr: `RUST_LOG` chooses what is shown (info and above by default), and
//! nothing written there can stop a service.

use std::io::{IsTerminal, Write};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// What is shown when `RUST_LOG` is unset or invalid. The AMQP client's own lines are off:
/// every failure it logs also comes back to nnmon as an error, which nnmon logs once with
/// its context (a refused login alone made lapin log three ERROR lines per attempt).
const DEFAULT_FILTER: &str = "info,lapin=off,amq_protocol=off,rustls_platform_verifier=off";

/// Installs the global subscriber. Call once, before anything logs.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let output = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_writer(|| LossyStderr);
    tracing_subscriber::registry()
        .with(filter)
        .with(frame_cap())
        .with(output)
        .init();
}

/// The most the AMQP client may show, whatever `RUST_LOG` asks: below debug it traces
/// whole frames, the login's credentials included.
fn frame_cap() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("lapin", LevelFilter::DEBUG)
        .with_target("amq_protocol", LevelFilter::DEBUG)
}

/// Standard error that drops what it cannot write. When the reader of stderr goes away
/// (a terminal's Ctrl-C kills `just up`'s `sed` first), the next log line fails with EPIPE;
/// tracing then reports that on stderr with `eprintln!`, which panics, in whichever task was
/// logging — the signal handler's included, so shutdown never happened. A lost log line
/// is the lesser harm.
struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn amqp_frames_are_never_traced() {
        let cap = frame_cap();
        for target in [
            "lapin",
            "lapin::io_loop",
            "amq_protocol",
            "amq_protocol_tcp",
        ] {
            assert!(!cap.would_enable(target, &Level::TRACE), "{target}");
            assert!(cap.would_enable(target, &Level::DEBUG), "{target}");
        }
        assert!(cap.would_enable("nnmon::services::plot", &Level::TRACE));
    }
}
