//! The signals that stop a long-running command: Ctrl-C (SIGINT) at a terminal, SIGTERM
//! from Kubernetes (then SIGKILL after the pod's grace period, 30 s by default).

use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// How long the apiserver lets its gRPC watches end after a stop signal: well inside
/// Kubernetes' default 30 s grace period, so the process exits 0 before SIGKILL.
pub const GRPC_GRACE: Duration = Duration::from_secs(20);

/// Listens for the stop signals from the start, so one that arrives while the command is
/// still starting is not lost.
pub struct Stop {
    interrupt: Signal,
    terminate: Signal,
}

impl Stop {
    pub fn listen() -> anyhow::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }

    /// Waits for the first stop signal and names it.
    pub async fn received(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}
