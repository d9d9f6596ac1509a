//! Shutdown on SIGTERM: drain first, so load balancers stop sending before the gateway stops
//! accepting.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};

use crate::handles::Shared;
use crate::observability;

/// On SIGTERM: fail `/ready` first, give load balancers `unready_seconds` to notice, then let
/// Pingora stop accepting and drain; exit as soon as no request is in flight (or at the grace
/// deadline, whichever is first).
pub(super) struct DrainFirst {
    pub(super) shared: Arc<Shared>,
}

#[async_trait]
impl ShutdownSignalWatch for DrainFirst {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => ShutdownSignal::FastShutdown,
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
            _ = term.recv() => {
                self.shared.ready.store(false, Ordering::Release);
                let unready = Duration::from_secs(self.shared.config.unready_seconds);
                tracing::info!(unready_seconds = unready.as_secs(), grace_seconds = self.shared.config.grace_seconds, "SIGTERM: /ready now fails; draining");
                tokio::time::sleep(unready).await;
                let in_flight = self.shared.in_flight.clone();
                let grace = Duration::from_secs(self.shared.config.grace_seconds);
                std::thread::spawn(move || {
                    let start = std::time::Instant::now();
                    let mut idle_checks = 0;
                    while start.elapsed() < grace {
                        std::thread::sleep(Duration::from_millis(100));
                        if in_flight.load(Ordering::Relaxed) == 0 {
                            idle_checks += 1;
                            if idle_checks >= 3 {
                                tracing::info!(after_ms = start.elapsed().as_millis() as u64, "drained: no request in flight; exiting");
                                observability::flush_logs();
                                std::process::exit(0);
                            }
                        } else {
                            idle_checks = 0;
                        }
                    }
                });
                ShutdownSignal::GracefulTerminate
            }
        }
    }
}
