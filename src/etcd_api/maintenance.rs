//! `Maintenance.Status`: what etcd's status checkers and `etcdctl endpoint status` read.

use tonic::{Request, Response, Status};

use super::wire::etcdserverpb::maintenance_server::Maintenance;
use super::wire::etcdserverpb::{StatusRequest, StatusResponse};
use super::{EtcdApi, EtcdApiError};

/// The etcd version announced: the API level served, marked as fleetmesh's.
pub const VERSION: &str = "3.6.0-fleetmesh";

#[tonic::async_trait]
impl Maintenance for EtcdApi {
    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        self.authorize(&request)?;
        self.ready().await?;
        let status = self.cache().status().map_err(EtcdApiError::from)?;
        let revision = u64::try_from(status.header.revision).unwrap_or(0);
        let size = i64::try_from(status.bytes).unwrap_or(i64::MAX);
        Ok(Response::new(StatusResponse {
            version: VERSION.to_string(),
            db_size: size,
            // The only member is the leader: itself.
            leader: status.header.member_id,
            raft_index: revision,
            raft_term: status.header.raft_term,
            raft_applied_index: revision,
            errors: Vec::new(),
            db_size_in_use: size,
            is_learner: false,
            header: Some(status.header),
        }))
    }
}
