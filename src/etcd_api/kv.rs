//! `KV`: `Range` from the cache; every write refused.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::key_cache::Record;
use super::range::KeyRange;
use super::wire::etcdserverpb::kv_server::Kv;
use super::wire::etcdserverpb::range_request::{SortOrder, SortTarget};
use super::wire::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use super::{EtcdApi, EtcdApiError};

#[tonic::async_trait]
impl Kv for EtcdApi {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let peer = self.authorize(&request)?;
        let req = request.into_inner();
        let range = KeyRange::from_request(req.key.clone(), req.range_end.clone());
        self.check_read(&peer, &range)?;
        self.ready().await?;
        Ok(Response::new(self.read(&range, &req)?))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Err(self.refuse_write(&request, "Put"))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Err(self.refuse_write(&request, "DeleteRange"))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(self.refuse_write(&request, "Txn"))
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Err(self.refuse_write(&request, "Compact"))
    }
}

impl EtcdApi {
    /// Answers a range request as etcd does: keys ascending unless another order is
    /// asked for, revision filters and the limit applied after the read, `count` the
    /// keys in the range at that revision.
    fn read(&self, range: &KeyRange, req: &RangeRequest) -> Result<RangeResponse, EtcdApiError> {
        let limit = usize::try_from(req.limit).unwrap_or(0);
        let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
        let mut order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
        if order == SortOrder::None && target != SortTarget::Key {
            order = SortOrder::Ascend;
        }
        let filtered = req.min_mod_revision > 0
            || req.max_mod_revision > 0
            || req.min_create_revision > 0
            || req.max_create_revision > 0;
        let by_key =
            matches!(order, SortOrder::None | SortOrder::Ascend) && target == SortTarget::Key;
        let simple = by_key && !filtered;

        let read = self
            .cache()
            .range(range, req.revision, if simple { limit } else { 0 })?;
        let mut kvs = read.kvs;
        let more = if simple {
            read.count > kvs.len()
        } else {
            kvs.retain(|kv| passes_filters(kv, req));
            sort(&mut kvs, target, order);
            let more = limit > 0 && kvs.len() > limit;
            if more {
                kvs.truncate(limit);
            }
            more
        };
        Ok(RangeResponse {
            header: Some(read.header),
            kvs: if req.count_only {
                Vec::new()
            } else {
                kvs.iter()
                    .map(|kv| {
                        let mut wire = kv.to_wire();
                        if req.keys_only {
                            wire.value = Default::default();
                        }
                        wire
                    })
                    .collect()
            },
            more,
            count: i64::try_from(read.count).unwrap_or(i64::MAX),
        })
    }
}

fn passes_filters(kv: &Record, req: &RangeRequest) -> bool {
    (req.min_mod_revision <= 0 || kv.mod_revision >= req.min_mod_revision)
        && (req.max_mod_revision <= 0 || kv.mod_revision <= req.max_mod_revision)
        && (req.min_create_revision <= 0 || kv.create_revision >= req.min_create_revision)
        && (req.max_create_revision <= 0 || kv.create_revision <= req.max_create_revision)
}

fn sort(kvs: &mut [Arc<Record>], target: SortTarget, order: SortOrder) {
    match target {
        SortTarget::Key => {} // Read in key order.
        SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
        SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
        SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
        SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
    }
    if order == SortOrder::Descend {
        kvs.reverse();
    }
}
