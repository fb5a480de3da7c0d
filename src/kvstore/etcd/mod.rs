//! The etcd backend, over etcd-client: the store for production and for more than one
//! apiserver replica. Keys live under a configurable namespace; the epoch is the etcd
//! cluster id, pinned at connect and checked on every response, with the epoch marker
//! that [`epoch`] reads and writes.

mod convert;
mod epoch;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, TxnOpResponse,
};

use self::convert::{ClusterPin, Namespace, etcd_error, etcd_revision, lease_error};
use self::watch::EtcdWatch;
use super::{
    CasOutcome, Epoch, Expect, KeyValue, LeaseId, Listing, Store, StoreError, WatchStart,
    WatchStream,
};
use crate::model::Revision;

/// How long `connect` waits for the first answer unless configured otherwise.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP/2 pings on idle connections, so a dead etcd ends watches instead of hanging them.
pub const DEFAULT_KEEPALIVE: Keepalive = Keepalive {
    interval: Duration::from_secs(10),
    timeout: Duration::from_secs(5),
};

/// Keys per page of a list: keeps each answer well under the message limit with
/// Cilium-sized values (hundreds of bytes).
const LIST_PAGE: i64 = 1000;

/// Largest answer accepted: a page or a watch batch of unusually large values still fits.
const MAX_MESSAGE: usize = 64 << 20;

/// Where and how to reach etcd.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs, e.g. `https://etcd:2379`.
    pub endpoints: Vec<String>,
    /// Prepended to every key and stripped from every answer, so several stores share one
    /// etcd without seeing each other's keys; empty by default.
    pub namespace: String,
    /// Mutual TLS towards etcd; endpoints must then be `https://`.
    pub tls: Option<EtcdTls>,
    /// How long `connect` waits for the first answer.
    pub dial_timeout: Duration,
    /// HTTP/2 pings towards etcd.
    pub keepalive: Keepalive,
}

/// A client's HTTP/2 pings: one after `interval` with nothing read, and the connection
/// is closed if its answer takes longer than `timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            namespace: String::new(),
            tls: None,
            dial_timeout: DEFAULT_DIAL_TIMEOUT,
            keepalive: DEFAULT_KEEPALIVE,
        }
    }
}

/// PEM files for mutual TLS towards etcd.
#[derive(Clone, Debug)]
pub struct EtcdTls {
    /// The CA that signed etcd's server certificate.
    pub ca_file: PathBuf,
    /// This client's certificate.
    pub cert_file: PathBuf,
    /// This client's private key.
    pub key_file: PathBuf,
}

/// A [`Store`] over etcd. Cheap to clone: clones share one connection.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    namespace: Namespace,
    pin: ClusterPin,
    /// The revision the last epoch check read (see [`epoch`]); held during a check.
    checked: Arc<tokio::sync::Mutex<Option<Revision>>>,
}

impl EtcdStore {
    /// Connects and pins the epoch to the cluster id of etcd's first answer.
    pub async fn connect(config: EtcdConfig) -> Result<Self, StoreError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.dial_timeout)
            .with_keep_alive(config.keepalive.interval, config.keepalive.timeout)
            .with_keep_alive_while_idle(true);
        if let Some(tls) = &config.tls {
            options = options.with_tls(tls_options(tls).await?);
        }
        let dial = async {
            let mut client = Client::connect(&config.endpoints, Some(options))
                .await
                .map_err(etcd_error("connect"))?;
            // Status answers any authenticated client, whatever keys its role may read.
            let status = client.status().await.map_err(etcd_error("connect"))?;
            let header = status.header().ok_or_else(|| StoreError::EtcdProtocol {
                op: "connect",
                reason: "status answer without a header".to_owned(),
            })?;
            let pin = ClusterPin::new(header.cluster_id());
            Ok::<_, StoreError>((client, pin))
        };
        let (client, pin) = tokio::time::timeout(config.dial_timeout, dial)
            .await
            .map_err(|_| StoreError::EtcdProtocol {
                op: "connect",
                reason: format!(
                    "no answer from {:?} within {:?}",
                    config.endpoints, config.dial_timeout
                ),
            })??;
        Ok(EtcdStore {
            client,
            namespace: Namespace::new(config.namespace),
            pin,
            checked: Arc::default(),
        })
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE)
    }

    /// One page of `[start, end)` at `revision` (0: the latest).
    async fn list_page(
        &self,
        start: Vec<u8>,
        end: &[u8],
        revision: i64,
    ) -> Result<Page, StoreError> {
        let options = GetOptions::new()
            .with_range(end)
            .with_limit(LIST_PAGE)
            .with_revision(revision);
        let mut resp = self
            .kv()
            .get(start, Some(options))
            .await
            .map_err(etcd_error("list"))?;
        let revision = self.pin.check(resp.header(), "list")?;
        let raw = resp.take_kvs();
        // Resume after the last key etcd sent, even one that was skipped below.
        let next = match raw.last() {
            Some(last) if resp.more() => {
                let mut next = last.key().to_vec();
                next.push(0);
                Some(next)
            }
            _ => None,
        };
        let kvs = raw
            .into_iter()
            .filter_map(|kv| self.namespace.kv(kv))
            .collect();
        Ok(Page {
            revision,
            kvs,
            next,
        })
    }
}

/// One answer of a paginated list.
struct Page {
    revision: Revision,
    kvs: Vec<KeyValue>,
    /// Where the next page starts, if there is one.
    next: Option<Vec<u8>>,
}

async fn tls_options(tls: &EtcdTls) -> Result<TlsOptions, StoreError> {
    async fn read(path: &Path, what: &str) -> Result<Vec<u8>, StoreError> {
        tokio::fs::read(path)
            .await
            .map_err(|err| StoreError::EtcdProtocol {
                op: "connect",
                reason: format!("reading TLS {what} {}: {err}", path.display()),
            })
    }
    let ca = read(&tls.ca_file, "CA").await?;
    let cert = read(&tls.cert_file, "certificate").await?;
    let key = read(&tls.key_file, "key").await?;
    Ok(TlsOptions::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key)))
}

#[async_trait]
impl Store for EtcdStore {
    fn epoch(&self) -> Epoch {
        self.pin.epoch()
    }

    async fn check_epoch(&self) -> Result<Epoch, StoreError> {
        self.check_marker().await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let mut resp = self
            .kv()
            .get(self.namespace.key(key), None)
            .await
            .map_err(etcd_error("get"))?;
        self.pin.check(resp.header(), "get")?;
        Ok(resp
            .take_kvs()
            .into_iter()
            .next()
            .and_then(|kv| self.namespace.kv(kv)))
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let (start, end) = self.namespace.range(prefix);
        let first = self.list_page(start, &end, 0).await?;
        let (revision, mut kvs, mut next) = (first.revision, first.kvs, first.next);
        // Later pages read at the first page's revision, so the whole list is one snapshot.
        let at = etcd_revision(revision, "list")?;
        while let Some(start) = next {
            let page = self.list_page(start, &end, at).await?;
            kvs.extend(page.kvs);
            next = page.next;
        }
        Ok(Listing { revision, kvs })
    }

    async fn put(
        &self,
        key: &str,
        value: Bytes,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        let options = lease.map(|LeaseId(id)| PutOptions::new().with_lease(id));
        let resp = self
            .kv()
            .put(self.namespace.key(key), Vec::from(value), options)
            .await
            .map_err(|err| match lease {
                Some(id) => lease_error("put", id)(err),
                None => etcd_error("put")(err),
            })?;
        self.pin.check(resp.header(), "put")
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let resp = self
            .kv()
            .delete(self.namespace.key(key), None)
            .await
            .map_err(etcd_error("delete"))?;
        self.pin.check(resp.header(), "delete")?;
        Ok(resp.deleted() > 0)
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: Option<Bytes>,
        lease: Option<LeaseId>,
    ) -> Result<CasOutcome, StoreError> {
        let full = self.namespace.key(key);
        let when = match expect {
            Expect::Absent => vec![Compare::create_revision(full.clone(), CompareOp::Equal, 0)],
            // etcd compares a missing key's mod_revision as 0; the contract wants it to exist.
            Expect::ModRevision(rev) => vec![
                Compare::create_revision(full.clone(), CompareOp::Greater, 0),
                Compare::mod_revision(full.clone(), CompareOp::Equal, etcd_revision(rev, "cas")?),
            ],
            // etcd fails a value comparison on a missing key, as the contract wants.
            Expect::Value(expected) => {
                vec![Compare::value(
                    full.clone(),
                    CompareOp::Equal,
                    Vec::from(expected),
                )]
            }
        };
        let write = match value {
            Some(value) => TxnOp::put(
                full.clone(),
                Vec::from(value),
                lease.map(|LeaseId(id)| PutOptions::new().with_lease(id)),
            ),
            None => TxnOp::delete(full.clone(), None),
        };
        let txn = Txn::new()
            .when(when)
            .and_then(vec![write])
            .or_else(vec![TxnOp::get(full, None)]);
        let resp = self.kv().txn(txn).await.map_err(|err| match lease {
            Some(id) => lease_error("cas", id)(err),
            None => etcd_error("cas")(err),
        })?;
        let revision = self.pin.check(resp.header(), "cas")?;
        if resp.succeeded() {
            return Ok(CasOutcome::Swapped(revision));
        }
        let current = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
            _ => None,
        });
        Ok(CasOutcome::Failed(
            current.and_then(|kv| self.namespace.kv(kv)),
        ))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        // etcd counts whole seconds (and raises short TTLs to its minimum itself).
        let secs = i64::try_from(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0))
            .unwrap_or(i64::MAX)
            .max(1);
        let resp = self
            .client
            .lease_client()
            .grant(secs, None)
            .await
            .map_err(etcd_error("grant lease"))?;
        self.pin.check(resp.header(), "grant lease")?;
        if !resp.error().is_empty() {
            return Err(StoreError::EtcdProtocol {
                op: "grant lease",
                reason: resp.error().to_owned(),
            });
        }
        Ok(LeaseId(resp.id()))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        // One request and its answer; etcd-client reports an answer with TTL 0 (the lease
        // is gone) as an error, which `lease_error` maps to `LeaseNotFound`. It consumes
        // that answer, so its header cannot be checked here; the next write will be.
        self.client
            .lease_client()
            .keep_alive(lease.0)
            .await
            .map_err(lease_error("keep alive", lease))?;
        Ok(())
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let resp = self
            .client
            .lease_client()
            .revoke(lease.0)
            .await
            .map_err(lease_error("revoke lease", lease))?;
        self.pin.check(resp.header(), "revoke lease")?;
        Ok(())
    }

    async fn watch(&self, prefix: &str, start: WatchStart) -> Result<WatchStream, StoreError> {
        let watch = EtcdWatch::start(self.clone(), prefix, start).await?;
        Ok(watch.into_stream())
    }
}
