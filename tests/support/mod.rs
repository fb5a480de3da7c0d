//! Test support shared by every integration test. Declare `mod support;` in a test file
//! to use it.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod etcd;
pub mod etcd_api;
pub mod etcdctl;
pub mod fake_kube;
pub mod fleet;
pub mod mesh;
pub mod openmetrics;
pub mod oracle;
pub mod stuck_watcher;

pub use etcd::{EtcdHandle, LocalEtcd, ServerTls, etcd, mk_etcd_store};

/// A key prefix no other test uses, e.g. `t-3f9a0c1d2e4b5a6f/`.
pub fn unique_prefix() -> String {
    format!("t-{:016x}/", rand::random::<u64>())
}

/// Polls `done` every 50 ms until it holds; fails the test naming `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Polls the async `done` every 50 ms until it holds; fails the test naming `what`
/// after 10 s.
pub async fn wait_until_async<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
