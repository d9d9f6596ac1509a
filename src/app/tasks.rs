//! The gateway's background work in one supervised place. Every task has a name; a periodic
//! task whose step panics is logged by name and runs again at its next tick, a long-running one
//! that panics or ends is logged by name; and all of them stop together when the server stops.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// The named background tasks of one gateway, on the runtime they were started on.
pub struct Tasks {
    runtime: Handle,
    running: Mutex<Vec<(&'static str, JoinHandle<()>)>>,
}

impl Tasks {
    pub fn new(runtime: Handle) -> Self {
        Tasks {
            runtime,
            running: Mutex::new(Vec::new()),
        }
    }

    /// Runs `step` at once and then every `period`. A step that panics is logged and counted
    /// as that step's end: the task goes on at its next tick. A step that overruns its period
    /// delays the next one instead of piling them up.
    pub fn every<F, Fut>(&self, name: &'static str, period: Duration, mut step: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.start(name, async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if AssertUnwindSafe(step()).catch_unwind().await.is_err() {
                    tracing::error!(
                        task = name,
                        "background task panicked; it runs again at its next tick"
                    );
                }
            }
        });
    }

    /// Runs `work` (a listener, a signal handler, a keeper) until it ends or the server stops.
    /// Its end is logged: at error level when it panicked.
    pub fn spawn<Fut>(&self, name: &'static str, work: Fut)
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.start(name, async move {
            match AssertUnwindSafe(work).catch_unwind().await {
                Ok(()) => tracing::debug!(task = name, "background task finished"),
                Err(_) => tracing::error!(task = name, "background task panicked and stopped"),
            }
        });
    }

    fn start(&self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.runtime.spawn(task);
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.retain(|(_, h)| !h.is_finished());
        running.push((name, handle));
    }

    /// The names of the tasks still running, in the order they started.
    pub fn names(&self) -> Vec<&'static str> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .iter()
            .filter(|(_, h)| !h.is_finished())
            .map(|(n, _)| *n)
            .collect()
    }

    /// Stops every task (each at its next await point).
    pub fn stop(&self) {
        let running = std::mem::take(&mut *self.running.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, handle) in &running {
            handle.abort();
        }
        tracing::debug!(tasks = running.len(), "background tasks stopped");
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_step_that_panics_runs_again_and_stop_ends_every_task() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let tasks = Tasks::new(rt.handle().clone());
        let steps = Arc::new(AtomicU32::new(0));
        let s = steps.clone();
        tasks.every("flaky", Duration::from_secs(1), move || {
            let n = s.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 1 {
                    panic!("the second step fails");
                }
            }
        });
        tasks.spawn("forever", std::future::pending());
        tasks.spawn("short", async {});
        // Time is paused: the runtime jumps to each tick instead of waiting for it.
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(3500)).await });
        assert_eq!(
            steps.load(Ordering::SeqCst),
            4,
            "steps at 0, 1 (panics), 2 and 3 s"
        );
        assert_eq!(tasks.names(), vec!["flaky", "forever"]);
        tasks.stop();
        rt.block_on(tokio::task::yield_now());
        assert!(tasks.names().is_empty());
        rt.block_on(async { tokio::time::sleep(Duration::from_secs(5)).await });
        assert_eq!(
            steps.load(Ordering::SeqCst),
            4,
            "a stopped task takes no more steps"
        );
    }
}
