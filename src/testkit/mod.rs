//! The test kit: what the tests, `fleetmesh bench` and `fleetmesh demo` all need to run
//! fleetmesh for real on one machine, written once.
//!
//! - [`Pki`]: a CA minted in-process and the server and client certificates of a mesh's
//!   clusters, as files (the TLS code reads, and reloads, files).
//! - [`LocalEtcd`]: a throwaway etcd on loopback that can be killed and restarted on its
//!   data, or wiped.
//! - [`LocalApiserver`]: a member's apiserver in-process (state watch → watch cache →
//!   gRPC behind mutual TLS, optionally the etcd API) that stops like a process dies.
//! - [`free_port`]: a port to name before its server starts, outside the range the
//!   kernel hands out to other sockets meanwhile.
//!
//! Everything here uses the production code paths; nothing is a stand-in.

mod apiserver;
mod etcd;
mod pki;
mod ports;

pub use self::apiserver::{APISERVER_THREADS, LocalApiserver, LocalApiserverError, ServeOptions};
pub use self::etcd::{EtcdServerTls, LocalEtcd, LocalEtcdError, LocalEtcdSettings};
pub use self::pki::Pki;
pub use self::ports::{free_port, free_ports};
