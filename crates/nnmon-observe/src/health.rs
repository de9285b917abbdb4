use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether a service is doing its job: connected to the broker with its consumers (or
/// publisher) open. Cheap to clone; every clone sees the same state.
#[derive(Clone, Debug, Default)]
pub struct Health(Arc<AtomicBool>);

impl Health {
    /// Marks the service healthy (consuming) or not (connecting, reconnecting, stopping).
    pub fn set(&self, healthy: bool) {
        self.0.store(healthy, Ordering::Relaxed);
    }

    pub fn is_healthy(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
