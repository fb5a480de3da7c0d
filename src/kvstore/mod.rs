//! The kvstore: a small etcd-like interface ([`Store`]) with two backends — [`etcd`] for
//! production and more than one apiserver replica, [`memory`] embedded in the process
//! and the default — plus Cilium's key schema ([`keys`]) and value formats ([`codec`]).

pub mod codec;
pub mod etcd;
pub mod keys;
pub mod memory;
pub mod state_watch;
mod store;
pub mod timed;

pub use store::{
    CasOutcome, Epoch, Expect, KeyValue, LeaseId, Listing, Store, StoreError, WatchEvent,
    WatchStart, WatchStream,
};
