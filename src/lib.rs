//! fleetmesh: a multi-cluster mesh state synchronizer.
//!
//! Each member cluster runs an **apiserver** that exports its identities, endpoints,
//! services and nodes into a kvstore in Cilium's key layout and serves them over gRPC
//! with mutual TLS; **agents** in peer clusters watch every cluster they may see and
//! merge them into one cross-cluster view. Data flows one way:
//!
//! ```text
//! source (k8s watchers | manifest dir) ─► k8s::convert ─► export ─► kvstore (etcd | memory)
//!   ─► cache ─► grpc (mTLS) ═══► remote ─► mesh view ─► observe (API, metrics, web)
//! ```
//!
//! | module | owns |
//! | --- | --- |
//! | [`model`] | validated domain types |
//! | [`kvstore`] | the `Store` trait, its etcd and embedded backends, Cilium's key schema and value formats |
//! | [`k8s`] | Kubernetes objects → model, and the sources that read them |
//! | [`export`] | the apiserver's writer: desired state → store |
//! | [`cache`] | the apiserver's watch cache: state, revision log, encode-once fan-out |
//! | [`proto`] | the wire types and model ⇄ wire conversions |
//! | [`grpc`] | the `Info`/`Watch` server, authorized by the peer's certificate |
//! | [`tls`] | rustls configs from PEM files, reload, peer identity from a certificate |
//! | [`certs`] | CA and leaf issuance with rcgen |
//! | [`fleet`] | mesh profiles → validated plan → per-member configs and certificates, with a what-if |
//! | [`remote`] | the agent's link per peer: reconnect, validate, resume, mark and sweep |
//! | [`cache_keys`] | the agent's Cilium cache keys (KVStoreMesh's part): a sink of what its links apply, served by the etcd API |
//! | [`mesh`] | the merged view: global services with affinity and failover, ipcache, identities, nodes, link status |
//! | [`observe`] | the agent's query/status API, metrics, web page and CLI tables |
//! | [`exposition`] | Prometheus metrics of both binaries, OpenMetrics text |
//! | [`config`] | the `cluster:` block every config file shares |
//! | [`report`] | errors told to people: one line with every cause |
//! | [`testkit`] | what tests, bench and demo share to run fleetmesh for real |
//! | [`bench`] | `fleetmesh bench`: the production paths measured side by side with etcd-direct agents, results checked |
//! | [`apiserver`], [`agent`], [`demo`], [`cli`] | wiring only |

pub mod agent;
pub mod apiserver;
pub mod bench;
pub mod cache;
pub mod cache_keys;
pub mod certs;
pub mod cli;
pub mod config;
pub mod demo;
pub mod etcd_api;
pub mod export;
pub mod exposition;
pub mod fleet;
pub mod grpc;
pub mod k8s;
pub mod kvstore;
pub mod mesh;
pub mod model;
pub mod observe;
pub mod proto;
pub mod remote;
pub mod report;
pub mod testkit;
pub mod tls;
