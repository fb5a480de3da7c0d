//! The test kit: what the tests, `fleetmesh bench` and `fleetmesh demo` all need to run
//! fleetmesh for real on one machine, written once.
//!
//! - [`Pki`]: a CA minted in-process and the server and client certificates of a mesh's
//!   clusters, as files (the TLS code reads, and reloads, files).
//!
//! Everything here uses the production code paths; nothing is a stand-in.

mod pki;

pub use self::pki::Pki;
