//! Certificates for the mesh, minted with rcgen: a CA, server and client leaves for a
//! cluster, trust bundles for CA rollover, and atomic PEM files.
//!
//! # Identity convention
//!
//! A fleetmesh certificate names its cluster in exactly one URI SAN
//! `spiffe://fleetmesh/cluster/<cluster-name>` (see [`crate::tls::identity`], which owns
//! the format and is the only reader). Besides that:
//!
//! | leaf | subject CN | SANs | extended key usage |
//! | --- | --- | --- | --- |
//! | server (an apiserver) | `apiserver-<cluster>` | the URI, plus the DNS names and IP addresses peers dial | serverAuth |
//! | client (an agent or cache dialing peers) | `remote-<cluster>` (Cilium's cluster `authMode` convention) | the URI | clientAuth |
//!
//! The CN is informative only: a peer is identified by its URI SAN, never by its CN.
//!
//! # Rotation
//!
//! Leaves are short-lived and re-issued by the same [`Ca`]. A CA is rolled over with a
//! trust bundle ([`bundle::trust_bundle`]): every member first trusts old + new CA (a
//! `ca.crt` holding both certificates), then leaves are re-issued by the new CA, then
//! the old one is dropped from the bundle. [`rotate`] does each step over a directory of
//! member certificates (renewal, rollover, retirement), safe to re-run from a CronJob;
//! [`inspect`] shows what a directory holds and which bundle trusts what.

pub mod bundle;
mod ca;
mod error;
pub mod files;
pub mod inspect;
mod leaf;
pub mod rotate;
pub mod scan;

pub use ca::Ca;
pub use error::CertError;
pub use leaf::{IssuedCert, LeafRole, Validity};
