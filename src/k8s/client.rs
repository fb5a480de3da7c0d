//! A client for a cluster's API server, as the kube source and the agent's EndpointSlice
//! writer both reach it.

use std::path::{Path, PathBuf};

use kube::config::{InferConfigError, KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};
use thiserror::Error;

/// Why no client could be made: a configuration problem, refused at start.
#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("cannot load kubeconfig {}", path.display())]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("no Kubernetes credentials found (neither a kubeconfig nor in-cluster)")]
    Infer(#[source] InferConfigError),
    #[error("cannot build a Kubernetes client")]
    Client(#[source] kube::Error),
}

/// A client for the API server: from `kubeconfig` when given (its current context), else
/// found as `kubectl` would (`$KUBECONFIG`, `~/.kube/config`), else the in-cluster service
/// account. Nothing is dialled yet.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<Client, ConnectError> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig_error = |source| ConnectError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            };
            let file = Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(kubeconfig_error)?
        }
        None => Config::infer().await.map_err(ConnectError::Infer)?,
    };
    Client::try_from(config).map_err(ConnectError::Client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\n\
                 clusters: [{{name: c, cluster: {{server: \"{server}\", insecure-skip-tls-verify: true}}}}]\n\
                 users: [{{name: u, user: {{token: t}}}}]\n\
                 contexts: [{{name: x, context: {{cluster: c, user: u}}}}]\n\
                 current-context: x\n"
            ),
        )
        .unwrap();
        path
    }

    #[tokio::test]
    async fn a_kubeconfig_for_an_https_server_makes_a_client() {
        let dir = tempfile::tempdir().unwrap();
        // Building the client builds its TLS configuration: this fails if no rustls
        // crypto provider can be chosen.
        connect(Some(&kubeconfig(dir.path(), "https://127.0.0.1:6443")))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_missing_kubeconfig_is_named() {
        let Err(err) = connect(Some(Path::new("/nonexistent/kubeconfig"))).await else {
            panic!("a client from a missing kubeconfig");
        };
        assert!(matches!(err, ConnectError::Kubeconfig { .. }), "{err:?}");
        let text = crate::report::error_chain(&err);
        assert!(
            text.starts_with("cannot load kubeconfig /nonexistent/kubeconfig: "),
            "{text}"
        );
    }
}
