//! The manifest directory as a live source: polled, re-converted on change, published on
//! a `watch` channel.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::Instrument;

use super::scan::{self, Fingerprint};
use super::{DEFAULT_MAX_FILE_BYTES, LastGood, ManifestError};
use crate::k8s::convert::{self, ConvertOptions};
use crate::model::Cluster;

// Shared by every source; re-exported here, where it used to live.
pub use crate::k8s::Snapshot;

/// How often the directory is polled by default. Polling rather than inotify because a
/// ConfigMap volume changes by swapping a symlink, which file watchers report poorly, and
/// because a second of delay is nothing next to the kubelet's own sync period.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A directory of Kubernetes manifests as the source of one cluster's state.
#[derive(Clone, Debug)]
pub struct ManifestSource {
    dir: PathBuf,
    cluster: Cluster,
    max_file_bytes: u64,
    options: ConvertOptions,
}

impl ManifestSource {
    pub fn new(dir: PathBuf, cluster: Cluster) -> Self {
        Self {
            dir,
            cluster,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            options: ConvertOptions::default(),
        }
    }

    /// Refuses (without reading) files larger than `bytes`.
    pub fn with_max_file_bytes(mut self, bytes: u64) -> Self {
        self.max_file_bytes = bytes;
        self
    }

    /// The same source, converting as `options` say.
    pub fn with_options(self, options: ConvertOptions) -> Self {
        Self { options, ..self }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads and converts the directory once (blocking file IO).
    pub fn snapshot(&self) -> Result<Snapshot, ManifestError> {
        let files = scan::scan(&self.dir, self.max_file_bytes)?;
        Ok(self.convert(&files, &mut LastGood::default()))
    }

    /// Publishes the directory's state and every change of it.
    ///
    /// The receiver holds `None` until the first successful read, then the latest
    /// [`Snapshot`]: the first one is the initial list. The directory is polled every
    /// `interval`; a new snapshot is published only when some file was added, removed or
    /// changed (a SHA-256 over paths and contents), and its problems are logged once, at
    /// warn level. A read that fails (the directory went missing) is logged and keeps the
    /// last snapshot: nothing already exported is lost because of it. The task stops when
    /// every receiver is dropped. Must be called inside a Tokio runtime.
    pub fn watch_rx(self, interval: Duration) -> watch::Receiver<Option<Snapshot>> {
        let (tx, rx) = watch::channel(None);
        let span = tracing::info_span!("manifests", dir = %self.dir.display());
        tokio::spawn(poll(Arc::new(self), interval, tx).instrument(span));
        rx
    }

    /// The snapshot of the directory, or `None` when its fingerprint is `last`. What no
    /// longer reads keeps its version in `memory`.
    fn read_if_changed(
        &self,
        last: Option<Fingerprint>,
        memory: &mut LastGood,
    ) -> Result<Option<(Fingerprint, Snapshot)>, ManifestError> {
        let files = scan::scan(&self.dir, self.max_file_bytes)?;
        let fingerprint = scan::fingerprint(&files);
        if last == Some(fingerprint) {
            return Ok(None);
        }
        Ok(Some((fingerprint, self.convert(&files, memory))))
    }

    fn convert(&self, files: &[scan::ManifestFile], memory: &mut LastGood) -> Snapshot {
        let loaded = memory.load(files);
        let (state, convert_problems) =
            convert::desired_state_with(&self.cluster, &loaded.objects, &self.options);
        let problems = loaded
            .problems
            .iter()
            .map(ToString::to_string)
            .chain(convert_problems.iter().map(ToString::to_string))
            .collect();
        Snapshot { state, problems }
    }
}

/// [`ManifestSource::watch_rx`] for a directory and a cluster.
pub fn watch(
    dir: PathBuf,
    cluster: Cluster,
    interval: Duration,
) -> watch::Receiver<Option<Snapshot>> {
    ManifestSource::new(dir, cluster).watch_rx(interval)
}

async fn poll(
    source: Arc<ManifestSource>,
    interval: Duration,
    tx: watch::Sender<Option<Snapshot>>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last: Option<Fingerprint> = None;
    let mut last_error: Option<String> = None;
    let mut memory = LastGood::default();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = tx.closed() => return,
        }
        let reader = Arc::clone(&source);
        let mut lent = std::mem::take(&mut memory);
        let read = tokio::task::spawn_blocking(move || {
            let read = reader.read_if_changed(last, &mut lent);
            (read, lent)
        })
        .await
        .map(|(read, lent)| {
            memory = lent;
            read
        });
        match read {
            Ok(Ok(changed)) => {
                last_error = None;
                let Some((fingerprint, snapshot)) = changed else {
                    continue;
                };
                last = Some(fingerprint);
                for problem in &snapshot.problems {
                    tracing::warn!(%problem, "manifest problem");
                }
                let state = &snapshot.state;
                tracing::info!(
                    nodes = state.nodes.len(),
                    services = state.services.len(),
                    workloads = state.workloads.len(),
                    problems = snapshot.problems.len(),
                    "manifests loaded"
                );
                if tx.send(Some(snapshot)).is_err() {
                    return;
                }
            }
            Ok(Err(e)) => {
                // Logged once per distinct failure, not once per poll.
                let message = with_causes(&e);
                if last_error.as_ref() != Some(&message) {
                    tracing::warn!(error = %message, "cannot read manifests; keeping the last snapshot");
                    last_error = Some(message);
                }
            }
            Err(e) => tracing::error!(error = %e, "manifest reader failed"),
        }
    }
}

/// An error and its sources on one line.
fn with_causes(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClusterId, ClusterName, IdMode};
    use std::fs;

    /// Polls fast so the tests take milliseconds.
    const TEST_INTERVAL: Duration = Duration::from_millis(20);
    /// Long enough for many polls, short enough to fail fast.
    const WAIT: Duration = Duration::from_secs(10);

    fn mk_cluster() -> Cluster {
        Cluster::new(
            ClusterName::new("cluster1").unwrap(),
            ClusterId::new(1, IdMode::Normal).unwrap(),
            IdMode::Normal,
        )
    }

    fn mk_global_service(name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: shop\n  \
             annotations:\n    service.cilium.io/global: \"true\"\n\
             spec:\n  clusterIP: 10.96.0.10\n  ports:\n  - name: http\n    port: 80\n"
        )
    }

    async fn next_services(rx: &mut watch::Receiver<Option<Snapshot>>) -> Vec<String> {
        let snapshot = tokio::time::timeout(WAIT, async {
            rx.changed().await.unwrap();
            rx.borrow_and_update().clone()
        })
        .await
        .expect("no snapshot published in time")
        .expect("a published snapshot is never None");
        snapshot
            .state
            .services
            .iter()
            .map(|s| s.name.to_string())
            .collect()
    }

    #[tokio::test]
    async fn a_changed_file_publishes_a_new_snapshot_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.yaml"), mk_global_service("a")).unwrap();
        let mut rx = watch(dir.path().to_path_buf(), mk_cluster(), TEST_INTERVAL);
        assert_eq!(next_services(&mut rx).await, ["shop/a"]);

        // Unchanged files are not re-published.
        tokio::time::sleep(TEST_INTERVAL * 5).await;
        assert!(!rx.has_changed().unwrap());

        let two = format!("{}---\n{}", mk_global_service("a"), mk_global_service("b"));
        fs::write(dir.path().join("a.yaml"), two).unwrap();
        assert_eq!(next_services(&mut rx).await, ["shop/a", "shop/b"]);

        fs::remove_file(dir.path().join("a.yaml")).unwrap();
        assert!(next_services(&mut rx).await.is_empty());
    }

    #[tokio::test]
    async fn a_missing_directory_keeps_the_last_snapshot_until_it_returns() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("manifests");
        let mut rx = watch(dir.clone(), mk_cluster(), TEST_INTERVAL);
        tokio::time::sleep(TEST_INTERVAL * 5).await;
        assert!(rx.borrow().is_none());

        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("a.yaml"), mk_global_service("a")).unwrap();
        assert_eq!(next_services(&mut rx).await, ["shop/a"]);

        fs::remove_dir_all(&dir).unwrap();
        tokio::time::sleep(TEST_INTERVAL * 5).await;
        assert!(!rx.has_changed().unwrap());
        assert!(rx.borrow().is_some());
    }

    /// A ConfigMap volume: real files under `..<version>/`, `..data` pointing at the
    /// current version, visible names pointing through `..data`. An update swaps `..data`.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_configmap_symlink_swap_is_seen_once() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("..v1")).unwrap();
        fs::write(root.join("..v1/svc.yaml"), mk_global_service("a")).unwrap();
        symlink("..v1", root.join("..data")).unwrap();
        symlink("..data/svc.yaml", root.join("svc.yaml")).unwrap();

        let mut rx = watch(root.to_path_buf(), mk_cluster(), TEST_INTERVAL);
        assert_eq!(next_services(&mut rx).await, ["shop/a"]);

        fs::create_dir(root.join("..v2")).unwrap();
        fs::write(root.join("..v2/svc.yaml"), mk_global_service("b")).unwrap();
        symlink("..v2", root.join("..data_tmp")).unwrap();
        fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        assert_eq!(next_services(&mut rx).await, ["shop/b"]);
    }

    #[test]
    fn a_snapshot_collects_manifest_and_conversion_problems() {
        let dir = tempfile::tempdir().unwrap();
        let bad_affinity = mk_global_service("a").replace(
            "    service.cilium.io/global: \"true\"\n",
            "    service.cilium.io/global: \"true\"\n    service.cilium.io/affinity: nearest\n",
        );
        fs::write(
            dir.path().join("a.yaml"),
            format!("{bad_affinity}---\nkind: [\n"),
        )
        .unwrap();
        let source = ManifestSource::new(dir.path().to_path_buf(), mk_cluster());
        let snapshot = source.snapshot().unwrap();
        assert_eq!(snapshot.state.services.len(), 1);
        assert_eq!(snapshot.problems.len(), 2, "{:?}", snapshot.problems);
        assert!(
            snapshot.problems[0].contains("a.yaml: document 1:"),
            "{}",
            snapshot.problems[0]
        );
        assert!(
            snapshot.problems[1]
                .starts_with("Service shop/a: metadata.annotations[service.cilium.io/affinity]"),
            "{}",
            snapshot.problems[1]
        );
    }
}
