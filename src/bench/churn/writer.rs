//! The open-loop writer: write `i` is due at `start + i / rate` and goes out then,
//! whether or not the writes before it are done, so a stall anywhere shows as latency
//! instead of slowing the load down. It runs on its own thread and runtime, as the
//! exporter would in its own process, so the agents' work cannot delay it.
//!
//! Writes of one key never overlap: a write waits for the one before it on its key
//! (rarely needed — keys are picked at random among thousands), so the store applies
//! every key's writes in the order the plan made them, which is what the agents must see.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::plan::StoreWrites;
use crate::kvstore::Store;

/// Before the first write: time for the thread to start.
const LEAD: Duration = Duration::from_millis(50);
/// The first wait before sending again a write an overloaded etcd shed
/// ([`is_overloaded`](crate::kvstore::StoreError::is_overloaded)); it doubles up to
/// [`OVERLOAD_RETRY_MAX`]. etcd-direct's source meets this at 2,000 writes/s, and a
/// client is expected to retry; the wait counts in the write's latency, as everything
/// after its due time does.
const OVERLOAD_RETRY_FIRST: Duration = Duration::from_millis(5);
const OVERLOAD_RETRY_MAX: Duration = Duration::from_millis(200);
/// How long one write keeps retrying before the run fails with etcd's refusal.
const OVERLOAD_GIVE_UP: Duration = Duration::from_secs(30);

/// One write to send: its key's number and its store writes.
pub struct Prepared {
    pub key: u32,
    pub writes: StoreWrites,
}

/// What the writer did.
pub struct Written {
    /// When write 0 was due.
    pub start: Instant,
    /// Per write, when the store acknowledged it (all of its keys); `None`: it failed.
    pub acks: Vec<Option<Instant>>,
    /// The first failure, if any.
    pub failure: Option<String>,
    /// The most a write went out after its due time (the writer's own lag).
    pub max_send_lag: Duration,
}

/// Starts writing `prepared` into `store` at `rate` per second, on a thread of its own;
/// `keys` is how many key numbers there are.
pub fn spawn_writer(
    store: Arc<dyn Store>,
    prepared: Vec<Prepared>,
    keys: usize,
    rate: f64,
) -> anyhow::Result<oneshot::Receiver<Written>> {
    let (done_tx, done_rx) = oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build the writer's runtime")?;
    std::thread::Builder::new()
        .name("bench-writer".into())
        .spawn(move || {
            let written = runtime.block_on(write_all(store, prepared, keys, rate));
            // The bench stopped waiting: nothing to report to.
            let _ = done_tx.send(written);
        })
        .context("cannot start the writer thread")?;
    Ok(done_rx)
}

async fn write_all(
    store: Arc<dyn Store>,
    prepared: Vec<Prepared>,
    keys: usize,
    rate: f64,
) -> Written {
    let start = Instant::now() + LEAD;
    let count = prepared.len();
    // Per key, the completion of its last write: the next one waits for it.
    let mut last: Vec<Option<oneshot::Receiver<()>>> = (0..keys).map(|_| None).collect();
    let mut tasks = JoinSet::new();
    let mut max_send_lag = Duration::ZERO;
    for (i, op) in prepared.into_iter().enumerate() {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        max_send_lag = max_send_lag.max(Instant::now().saturating_duration_since(due));
        let (done_tx, done_rx) = oneshot::channel();
        let before = last
            .get_mut(op.key as usize)
            .and_then(|slot| slot.replace(done_rx));
        let store = store.clone();
        tasks.spawn(async move {
            if let Some(before) = before {
                // A failed predecessor still frees its key.
                let _ = before.await;
            }
            let result = write(store.as_ref(), op.writes).await;
            let _ = done_tx.send(());
            (i, result.map(|()| Instant::now()))
        });
    }
    let mut acks = vec![None; count];
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, Ok(at))) => acks[i] = Some(at),
            Ok((i, Err(err))) => {
                failure.get_or_insert(format!("write {i}: {err:#}"));
            }
            Err(err) => {
                failure.get_or_insert(format!("a write task failed: {err}"));
            }
        }
    }
    Written {
        start,
        acks,
        failure,
        max_send_lag,
    }
}

async fn write(store: &dyn Store, writes: StoreWrites) -> anyhow::Result<()> {
    for (key, value) in writes {
        let started = Instant::now();
        let mut wait = OVERLOAD_RETRY_FIRST;
        loop {
            let result = match &value {
                Some(value) => store.put(&key, value.clone(), None).await.map(drop),
                None => store.delete(&key).await.map(drop),
            };
            match result {
                Err(e) if e.is_overloaded() && started.elapsed() < OVERLOAD_GIVE_UP => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(OVERLOAD_RETRY_MAX);
                }
                result => break result.with_context(|| format!("cannot write {key}"))?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvstore::memory::MemoryStore;

    #[tokio::test]
    async fn writes_go_out_at_their_rate_in_key_order() {
        let store = MemoryStore::new();
        let put = |key: u32, value: &str| Prepared {
            key,
            writes: vec![(
                format!("k{key}"),
                Some(bytes::Bytes::from(value.to_string())),
            )],
        };
        let prepared = vec![put(0, "a"), put(1, "b"), put(0, "c"), put(0, "d")];
        let started = Instant::now();
        let written = spawn_writer(store.clone(), prepared, 2, 100.0)
            .unwrap()
            .await
            .unwrap();
        assert!(written.failure.is_none());
        // Write 3 was due 30 ms after write 0.
        assert!(started.elapsed() >= Duration::from_millis(30));
        let acks: Vec<Instant> = written.acks.iter().map(|a| a.unwrap()).collect();
        assert!(acks[3] >= written.start + Duration::from_millis(30));
        let value = store.get("k0").await.unwrap().unwrap().value;
        assert_eq!(value, "d");
    }
}
