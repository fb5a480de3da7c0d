//! The etcd agents' own runtime: its threads carry one name, so the agents' CPU is
//! measured apart from the writer's, the apiserver's and the bench's own tasks — the
//! same agents cost the same in both etcd systems, and that cost is reported.

use anyhow::Context;
use tokio::runtime::{Handle, Runtime};

/// The name of the agents' threads (the kernel keeps at most 15 bytes).
pub const CLIENT_THREADS: &str = "bench-clients";

/// A runtime for etcd agents; its tasks end when it is dropped.
pub struct Clients {
    handle: Handle,
    /// Taken when dropped.
    runtime: Option<Runtime>,
}

impl Clients {
    /// As many workers as the machine has cores, as the agents' processes would use.
    pub fn start() -> anyhow::Result<Self> {
        let workers = std::thread::available_parallelism().map_or(2, usize::from);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(CLIENT_THREADS)
            .enable_all()
            .build()
            .context("cannot build the agents' runtime")?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        // Dropped from async code, a runtime must not wait for its tasks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
