//! The progress line on stderr while a phase runs: how many of its units are done and
//! for how long it has been running, rewritten in place.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How often the line is rewritten: lively, and cheap next to what is measured.
const PERIOD: Duration = Duration::from_millis(250);

/// A running progress line; `stop` clears it.
pub struct Progress {
    stop_tx: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    /// Shows `what: done/total` every period when `enabled`.
    pub fn start(enabled: bool, what: &str, total: usize, done: Arc<AtomicUsize>) -> Self {
        if !enabled {
            return Self {
                stop_tx: None,
                task: None,
            };
        }
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let what = what.to_string();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(PERIOD);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = &mut stop_rx => break,
                }
                let line = format!(
                    "\r{what}: {}/{total} done, {:.1} s ",
                    done.load(Ordering::Relaxed),
                    started.elapsed().as_secs_f64()
                );
                // A closed stderr only loses the progress line.
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            let _ = std::io::stderr().write_all(b"\r\x1b[2K");
        });
        Self {
            stop_tx: Some(stop_tx),
            task: Some(task),
        }
    }

    /// Clears the line.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop_tx.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
