use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{Instrument, info, info_span, warn};

use super::{FromTlsMaterial, TlsError, TlsFiles, TlsMaterial};
use crate::report::error_chain;

/// A sensible poll period: kubelet refreshes mounted secrets within about a minute, so
/// ten seconds adds little to that, and hashing three small files is cheap.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// The current config for one set of TLS files, kept up to date by a background task.
///
/// New connections should take [`current`](Self::current) (or borrow from
/// [`config_rx`](Self::config_rx)) when they start; established connections keep the
/// config they were made with, so a reload never drops a healthy stream. The task stops
/// once this and every receiver handed out are dropped.
pub struct Reloading<C> {
    rx: watch::Receiver<Arc<C>>,
}

/// The apiserver's reloading server config.
pub type ReloadingServerConfig = Reloading<ServerConfig>;
/// A peer's reloading client config.
pub type ReloadingClientConfig = Reloading<ClientConfig>;

impl<C> Reloading<C> {
    /// A receiver of the config, for [`super::server::incoming`] and
    /// [`super::client::channel`].
    pub fn config_rx(&self) -> watch::Receiver<Arc<C>> {
        self.rx.clone()
    }

    /// The config to use now.
    pub fn current(&self) -> Arc<C> {
        self.rx.borrow().clone()
    }
}

/// Loads `files` now and then checks them every `interval`, publishing a new config when
/// their content changes. Fails closed: if the files do not load now, the error is
/// returned and nothing is published. Later a file that does not load is logged (naming
/// it and what is wrong) and the previous config stays in use.
///
/// Must be called within a tokio runtime.
pub fn spawn_reload<C: FromTlsMaterial>(
    files: TlsFiles,
    interval: Duration,
) -> Result<Reloading<C>, TlsError> {
    let material = TlsMaterial::read(&files)?;
    let config = C::from_material(&material)?;
    let (tx, rx) = watch::channel(config);
    let span = info_span!("tls_reload", role = C::ROLE, cert = %files.cert.display());
    tokio::spawn(reload_loop(files, interval, tx, material.digest()).instrument(span));
    Ok(Reloading { rx })
}

async fn reload_loop<C: FromTlsMaterial>(
    files: TlsFiles,
    interval: Duration,
    tx: watch::Sender<Arc<C>>,
    mut loaded: [u8; 32],
) {
    let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The last problem reported, so a file that stays bad is logged once, not every tick.
    let mut problem: Option<String> = None;
    loop {
        tokio::select! {
            () = tx.closed() => return,
            _ = ticks.tick() => {}
        }
        let read = {
            let files = files.clone();
            tokio::task::spawn_blocking(move || TlsMaterial::read(&files)).await
        };
        let outcome = match read {
            Ok(Ok(material)) => {
                let digest = material.digest();
                if digest == loaded {
                    Ok(())
                } else {
                    C::from_material(&material).map(|config| {
                        loaded = digest;
                        tx.send_replace(config);
                        info!("TLS files changed: new {} config in use", C::ROLE);
                    })
                }
            }
            Ok(Err(e)) => Err(e),
            Err(join) => {
                // Only a panic in a file read could get here; try again next tick.
                warn!(error = %join, "reading the TLS files failed");
                continue;
            }
        };
        match outcome {
            Ok(()) => problem = None,
            Err(e) => {
                let text = error_chain(&e);
                if problem.as_ref() != Some(&text) {
                    warn!(error = %text, "TLS files not reloaded; the previous config stays in use");
                    problem = Some(text);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{Ca, files::write_pem_files};
    use crate::model::ClusterName;

    const HOUR: Duration = Duration::from_secs(3600);
    const TICK: Duration = Duration::from_millis(20);

    fn mk_client_files(dir: &std::path::Path, ca: &Ca) -> TlsFiles {
        let leaf = ca
            .issue_client(&ClusterName::new("east").unwrap(), HOUR)
            .unwrap();
        let files = write_pem_files(dir, "client", &leaf).unwrap();
        std::fs::write(dir.join("ca.crt"), ca.cert_pem()).unwrap();
        TlsFiles {
            cert: files.cert,
            key: files.key,
            ca: dir.join("ca.crt"),
        }
    }

    /// Waits until the published config is not `old`, or gives up.
    async fn changed_from(
        rx: &mut watch::Receiver<Arc<ClientConfig>>,
        old: &Arc<ClientConfig>,
    ) -> bool {
        let wait = rx.wait_for(|c| !Arc::ptr_eq(c, old));
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn nothing_is_published_until_the_files_load() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            ca: dir.path().join("ca.crt"),
        };
        let err = spawn_reload::<ClientConfig>(files, TICK).err().unwrap();
        assert!(
            matches!(
                err,
                TlsError::Read {
                    what: "certificate",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn changed_files_publish_a_new_config_and_bad_ones_keep_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("ca", HOUR).unwrap();
        let files = mk_client_files(dir.path(), &ca);
        let reloading: ReloadingClientConfig = spawn_reload(files.clone(), TICK).unwrap();
        let mut rx = reloading.config_rx();
        let first = reloading.current();

        // Unchanged files: the same config stays.
        tokio::time::sleep(TICK * 5).await;
        assert!(Arc::ptr_eq(&first, &reloading.current()));

        // Garbage in the key file: logged, the old config stays.
        std::fs::write(&files.key, "garbage").unwrap();
        tokio::time::sleep(TICK * 5).await;
        assert!(Arc::ptr_eq(&first, &reloading.current()));

        // A new, good leaf: picked up.
        mk_client_files(dir.path(), &ca);
        assert!(
            changed_from(&mut rx, &first).await,
            "new files were not picked up"
        );
        let second = reloading.current();

        // A missing file: the good config stays.
        std::fs::remove_file(&files.ca).unwrap();
        tokio::time::sleep(TICK * 5).await;
        assert!(Arc::ptr_eq(&second, &reloading.current()));
    }

    #[tokio::test]
    async fn the_task_stops_when_every_receiver_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::generate("ca", HOUR).unwrap();
        let files = mk_client_files(dir.path(), &ca);
        let reloading: ReloadingClientConfig = spawn_reload(files, TICK).unwrap();
        let metrics = tokio::runtime::Handle::current().metrics();
        assert_eq!(metrics.num_alive_tasks(), 1);
        drop(reloading);
        let stopped = async {
            while metrics.num_alive_tasks() > 0 {
                tokio::time::sleep(TICK).await;
            }
        };
        assert!(
            tokio::time::timeout(Duration::from_secs(5), stopped)
                .await
                .is_ok()
        );
    }
}
