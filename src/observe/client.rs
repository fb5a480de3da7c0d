//! The query API's client, used by `fleetmesh status`, `services` and `lookup`: plain
//! HTTP/1 to an agent (the API listens on loopback or inside the pod network), one
//! request per call with a timeout, errors that name the URL.

use std::error::Error as StdError;
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::mesh::{IpcacheEntryView, ServiceView};

use super::report::{ErrorBody, StatusReport};

/// Where the CLI looks for an agent unless told otherwise: the API's default listener.
pub const DEFAULT_AGENT_URL: &str = "http://127.0.0.1:9890";

/// A local agent answers in milliseconds; one that takes this long is stuck.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("{url:?} is not an agent URL: expected http://host:port")]
    Url { url: String },
    #[error("cannot reach the agent at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("the agent at {url} did not answer within {} s", REQUEST_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error("{url}: the agent answered {status}: {message}")]
    Api {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url}: the agent's answer is not what this client understands")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A client of one agent's query API.
pub struct AgentClient {
    base: String,
    http: Client<HttpConnector, Empty<Bytes>>,
}

impl AgentClient {
    /// A client of the agent at `base` (`http://host:port`, a trailing `/` allowed).
    pub fn new(base: &str) -> Result<Self, ClientError> {
        let trimmed = base.trim_end_matches('/');
        let uri: Uri = trimmed.parse().map_err(|_| ClientError::Url {
            url: base.to_string(),
        })?;
        let bare = uri.path() == "/" || uri.path().is_empty();
        if uri.scheme_str() != Some("http") || uri.host().is_none() || !bare {
            return Err(ClientError::Url {
                url: base.to_string(),
            });
        }
        Ok(Self {
            base: trimmed.to_string(),
            http: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<StatusReport, ClientError> {
        self.get("/v1/status").await
    }

    /// `GET /v1/services`.
    pub async fn services(&self) -> Result<Vec<ServiceView>, ClientError> {
        self.get("/v1/services").await
    }

    /// `GET /v1/explain/services/{ns}/{name}`.
    pub async fn explain_service(
        &self,
        name: &crate::model::ServiceName,
    ) -> Result<super::ServiceExplanation, ClientError> {
        self.get(&format!(
            "/v1/explain/services/{}/{}",
            name.namespace(),
            name.name()
        ))
        .await
    }

    /// `GET /v1/explain/ip/{ip}`.
    pub async fn explain_ip(&self, ip: IpAddr) -> Result<super::IpExplanation, ClientError> {
        self.get(&format!("/v1/explain/ip/{ip}")).await
    }

    /// `GET /v1/ipcache/{ip}`.
    pub async fn lookup(&self, ip: IpAddr) -> Result<IpcacheEntryView, ClientError> {
        self.get(&format!("/v1/ipcache/{ip}")).await
    }

    /// `GET /v1/status` of an apiserver's health port (this client pointed at it).
    pub async fn apiserver_status(&self) -> Result<crate::apiserver::ApiserverStatus, ClientError> {
        self.get("/v1/status").await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let uri: Uri = url
            .parse()
            .map_err(|_| ClientError::Url { url: url.clone() })?;
        let exchange = async {
            let response = self
                .http
                .get(uri)
                .await
                .map_err(|e| ClientError::Unreachable {
                    url: self.base.clone(),
                    source: root_cause(e),
                })?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Unreachable {
                    url: self.base.clone(),
                    source: Box::new(e),
                })?
                .to_bytes();
            Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                url: self.base.clone(),
            })??;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_string());
            return Err(ClientError::Api {
                url,
                status: status.as_u16(),
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|source| ClientError::Decode { url, source })
    }
}

/// The operating system's error behind a failed request ("Connection refused"), which
/// says more to a user than the client's layers of wrapping; the whole error otherwise.
fn root_cause(err: hyper_util::client::legacy::Error) -> Box<dyn StdError + Send + Sync> {
    let mut source = err.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Box::new(std::io::Error::new(io.kind(), io.to_string()));
        }
        source = s.source();
    }
    Box::new(err)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parking_lot::RwLock;

    use super::*;
    use crate::mesh::{MeshView, StalePolicy};
    use crate::model::{Cluster, ClusterId, ClusterName, IdMode};
    use crate::observe::{ApiState, LinkReport, Links, router};

    struct NoLinks;

    impl Links for NoLinks {
        fn reports(&self) -> Vec<LinkReport> {
            Vec::new()
        }
    }

    #[test]
    fn only_plain_http_base_urls_are_accepted() {
        assert!(AgentClient::new("http://127.0.0.1:9890/").is_ok());
        for bad in [
            "127.0.0.1:9890",
            "https://a:1",
            "http://a:1/v1",
            "ftp://x",
            "",
        ] {
            let err = AgentClient::new(bad).err().unwrap().to_string();
            assert!(err.contains("is not an agent URL"), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn an_agent_that_is_not_there_is_named_with_the_reason() {
        // Bind then drop: the port is closed now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let err = AgentClient::new(&url).unwrap().status().await.unwrap_err();
        let text = crate::report::error_chain(&err);
        assert!(
            text.starts_with(&format!("cannot reach the agent at {url}: ")),
            "{text}"
        );
        assert!(text.to_lowercase().contains("refused"), "{text}");
    }

    #[tokio::test]
    async fn reads_documents_and_api_errors_from_a_real_server() {
        let local = Cluster::new(
            ClusterName::new("c1").unwrap(),
            ClusterId::new(1, IdMode::Normal).unwrap(),
            IdMode::Normal,
        );
        let view = Arc::new(RwLock::new(MeshView::new(local, StalePolicy::default())));
        let app = router(ApiState::new(view, Arc::new(NoLinks)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        let client = AgentClient::new(&format!("http://{addr}")).unwrap();
        let status = client.status().await.unwrap();
        assert_eq!(status.cluster.as_str(), "c1");
        assert!(status.ready);
        assert!(client.services().await.unwrap().is_empty());
        let err = client
            .lookup("10.0.0.1".parse().unwrap())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "http://{addr}/v1/ipcache/10.0.0.1: the agent answered 404: no cluster owns 10.0.0.1"
            )
        );
        server.abort();
    }
}
