//! The `fleetmesh.v1.Mesh` service: authorization first, then `Info` or a watch stream.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::authz::authorize;
use super::frames::Frames;
use super::stall::Watched;
use super::{GrpcError, GrpcServer, WatchSource};
use crate::cache::{KindSet, ResumePoint};
use crate::model::ClusterName;
use crate::proto::v1::mesh_server::Mesh;
use crate::proto::{
    CAP_BACKEND_CONDITIONS, CAP_KIND_FILTER, CAP_RESUME, CAP_SERVICE_EXPORTS, PROTOCOL_VERSION,
    ServerInfo, WatchFrame, kind_from_wire, v1,
};
use crate::report::error_chain;
use crate::tls::server::PeerInfo;

/// What `Info` announces.
const CAPABILITIES: [&str; 4] = [
    CAP_RESUME,
    CAP_BACKEND_CONDITIONS,
    CAP_KIND_FILTER,
    CAP_SERVICE_EXPORTS,
];

/// A watch's frames, as tonic sends them.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchFrame, Status>> + Send>>;

impl<S: WatchSource> GrpcServer<S> {
    /// The calling peer's cluster if it may `action` this cluster; a refusal is logged
    /// and counted.
    fn authorize<T>(
        &self,
        request: &Request<T>,
        action: &'static str,
    ) -> Result<ClusterName, Status> {
        let peer = request.extensions().get::<PeerInfo>();
        authorize(peer, &self.allowed, &self.cluster.name, action)
            .map_err(|err| self.refuse(peer, err))
    }

    fn refuse(&self, peer: Option<&PeerInfo>, err: GrpcError) -> Status {
        self.stats.count_error(&err);
        let addr = peer.map(|p| p.addr.to_string()).unwrap_or_default();
        warn!(peer = %addr, reason = %error_chain(&err), "call refused");
        err.into()
    }
}

/// The kinds a request asks for: empty means the original four (a peer that predates
/// service exports names no kind and must not get one it cannot decode); an unknown
/// one is refused.
fn requested_kinds(kinds: &[i32]) -> Result<KindSet, GrpcError> {
    if kinds.is_empty() {
        return Ok(KindSet::ORIGINAL);
    }
    kinds
        .iter()
        .map(|k| kind_from_wire("kinds", *k))
        .collect::<Result<KindSet, _>>()
        .map_err(|source| GrpcError::InvalidRequest { source })
}

#[tonic::async_trait]
impl<S: WatchSource> Mesh for GrpcServer<S> {
    async fn info(
        &self,
        request: Request<v1::InfoRequest>,
    ) -> Result<Response<v1::InfoResponse>, Status> {
        self.authorize(&request, "query")?;
        let info = ServerInfo {
            cluster: self.cluster.clone(),
            protocol_version: PROTOCOL_VERSION,
            epoch: self
                .source
                .epoch()
                .map(|e| e.to_string())
                .unwrap_or_default(),
            capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
        };
        Ok(Response::new(v1::InfoResponse::from(&info)))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let peer = self.authorize(&request, "watch")?;
        let peer_info = request.extensions().get::<PeerInfo>().cloned();
        let req = request.into_inner();
        let kinds =
            requested_kinds(&req.kinds).map_err(|err| self.refuse(peer_info.as_ref(), err))?;
        let resume = req.resume.map(|r| ResumePoint {
            epoch: r.epoch,
            revision: r.revision,
        });
        info!(%peer, %kinds, ?resume, "watch started");

        // Answer at once; the stream itself waits until the cache has synced.
        let source = Arc::clone(&self.source);
        let stats = self.stats.clone();
        let active = stats.watch_started(&peer.to_string(), &kinds.to_string());
        let heartbeat = self.heartbeat.clone();
        let subscribed = async move {
            let sub = source.subscribe(kinds, resume).await;
            Frames::new(sub, active, heartbeat)
        };
        let stats = self.stats.clone();
        let frames = futures::stream::once(subscribed).flat_map(|frames| {
            futures::stream::unfold(frames, |mut frames| async move {
                frames.next().await.map(|item| (item, frames))
            })
        });
        let mut stopping = self.stopping.subscribe();
        let stopped = futures::stream::once(async move {
            // A server dropped without stopping ends its watches the same way.
            let _ = stopping.wait_for(|stopping| *stopping).await;
            Err::<WatchFrame, _>(GrpcError::Stopping)
        });
        let closer = peer_info.map(|p| p.closer);
        let watched_peer = peer.clone();
        let stream = futures::stream::select(frames, stopped).map(move |item| {
            item.map_err(|err| {
                stats.count_error(&err);
                match err {
                    GrpcError::Stopping => info!(%peer, "watch ended: the server is stopping"),
                    _ => warn!(%peer, reason = %err, "watch ended"),
                }
                Status::from(err)
            })
        });
        let stream = Watched::new(Box::pin(stream), watched_peer, closer, self.stats.clone());
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;
    use crate::proto::kind_to_wire;

    #[test]
    fn kinds_default_to_the_original_four_and_unknown_ones_are_invalid() {
        assert_eq!(requested_kinds(&[]).unwrap(), KindSet::ORIGINAL);
        assert!(!requested_kinds(&[]).unwrap().contains(Kind::ServiceExport));
        let all: Vec<i32> = Kind::ALL
            .iter()
            .map(|k| i32::from(kind_to_wire(*k)))
            .collect();
        assert_eq!(requested_kinds(&all).unwrap(), KindSet::ALL);
        let endpoints = i32::from(v1::Kind::Endpoint);
        let set = requested_kinds(&[endpoints]).unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), [Kind::Endpoint]);
        for bad in [0, 42] {
            let err = requested_kinds(&[endpoints, bad]).unwrap_err();
            assert_eq!(Status::from(err).code(), tonic::Code::InvalidArgument);
        }
    }
}
