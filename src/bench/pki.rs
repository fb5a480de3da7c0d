//! The bench's certificates: the test kit's [`Pki`] in a temporary directory of the
//! bench's (which also holds etcd's data), valid for longer than any run.

use std::time::Duration;

use anyhow::Context;

use crate::testkit::Pki;

/// Certificates outlive any bench run.
const VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// A fresh CA in a fresh temporary directory, removed when dropped.
pub fn bench_pki() -> anyhow::Result<Pki> {
    Pki::temporary("fleetmesh-bench-", "fleetmesh bench CA", VALIDITY)
        .context("cannot mint the bench's certificates")
}
