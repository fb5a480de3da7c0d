//! Allocations in an embedded database file (redb) in the apiserver's state directory:
//! two tables kept in step by one transaction per change, number → labels and labels →
//! number. Each commit is durable before the claim returns, so a number is never exported
//! before it is on disk.

// redb's error type is large; it is boxed as soon as it leaves this module, and the
// closures that return it run once per allocation, not per event.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};

use super::{Claim, IdentityLedger, LedgerError};
use crate::model::{IdentityId, Labels};

/// The file's name inside the state directory.
pub const LEDGER_FILE: &str = "identities.redb";

const BY_ID: TableDefinition<u32, &str> = TableDefinition::new("identity_by_id");
const BY_LABELS: TableDefinition<&str, u32> = TableDefinition::new("identity_by_labels");

/// How long opening waits for a previous holder of the file to let go: an apiserver
/// restarted in one process, whose old tasks are still being dropped.
const OPEN_PATIENCE: Duration = Duration::from_secs(5);
const OPEN_RETRY: Duration = Duration::from_millis(50);

pub struct RedbLedger {
    db: Arc<Database>,
    path: PathBuf,
}

impl RedbLedger {
    /// Opens (or creates) the ledger in `state_dir`, creating the directory if needed.
    pub async fn open(state_dir: &Path) -> Result<Self, LedgerError> {
        std::fs::create_dir_all(state_dir).map_err(|source| LedgerError::StateDir {
            path: state_dir.display().to_string(),
            source,
        })?;
        let path = state_dir.join(LEDGER_FILE);
        let deadline = tokio::time::Instant::now() + OPEN_PATIENCE;
        let db = loop {
            let opening = path.clone();
            match tokio::task::spawn_blocking(move || Database::create(opening)).await? {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(OPEN_RETRY).await;
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(LedgerError::FileInUse {
                        path: path.display().to_string(),
                    });
                }
                Err(err) => return Err(file_error(&path, err)),
            }
        };
        let ledger = Self {
            db: Arc::new(db),
            path,
        };
        // Both tables exist from the start, so readers never meet a missing table.
        ledger
            .write(|tx| {
                tx.open_table(BY_ID)?;
                tx.open_table(BY_LABELS)?;
                Ok(())
            })
            .await?;
        Ok(ledger)
    }

    /// Runs `change` in one write transaction, committed (durably) if it succeeds.
    async fn write<T, F>(&self, change: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        let done = tokio::task::spawn_blocking(move || {
            let tx = db.begin_write()?;
            let out = change(&tx)?;
            tx.commit()?;
            Ok::<_, redb::Error>(out)
        })
        .await?;
        done.map_err(|err| file_error(&self.path, err))
    }

    async fn read<T, F>(&self, look: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        let done = tokio::task::spawn_blocking(move || look(&db.begin_read()?)).await?;
        done.map_err(|err| file_error(&self.path, err))
    }
}

fn file_error(path: &Path, err: impl Into<redb::Error>) -> LedgerError {
    LedgerError::File {
        path: path.display().to_string(),
        source: Box::new(err.into()),
    }
}

#[async_trait]
impl IdentityLedger for RedbLedger {
    async fn allocations(&self) -> Result<Vec<(IdentityId, Labels)>, LedgerError> {
        let rows = self
            .read(|tx| {
                let table = tx.open_table(BY_ID)?;
                let mut rows = Vec::new();
                for row in table.iter()? {
                    let (id, labels) = row?;
                    rows.push((id.value(), labels.value().to_string()));
                }
                Ok(rows)
            })
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, labels) in rows {
            match (IdentityId::new(id), Labels::parse_kvstore_string(&labels)) {
                (Ok(id), Ok(labels)) => out.push((id, labels)),
                _ => tracing::warn!(path = %self.path.display(), id, %labels,
                    "ignoring an unreadable identity allocation"),
            }
        }
        Ok(out)
    }

    async fn taken_ids(&self) -> Result<Vec<u32>, LedgerError> {
        self.read(|tx| {
            let table = tx.open_table(BY_ID)?;
            let mut ids = Vec::new();
            for row in table.iter()? {
                ids.push(row?.0.value());
            }
            Ok(ids)
        })
        .await
    }

    async fn claim(&self, id: IdentityId, labels: &Labels) -> Result<Claim, LedgerError> {
        let labels = labels.to_kvstore_string();
        self.write(move |tx| {
            let mut by_labels = tx.open_table(BY_LABELS)?;
            let held = by_labels.get(labels.as_str())?.map(|v| v.value());
            if let Some(held) = held {
                // A stored number outside the model's range cannot be exported: give the
                // labels a new one.
                if let Ok(held) = IdentityId::new(held) {
                    return Ok(if held == id {
                        Claim::Granted
                    } else {
                        Claim::LabelsHold(held)
                    });
                }
            }
            let mut by_id = tx.open_table(BY_ID)?;
            if by_id.get(id.get())?.is_some() {
                return Ok(Claim::IdTaken);
            }
            by_id.insert(id.get(), labels.as_str())?;
            by_labels.insert(labels.as_str(), id.get())?;
            Ok(Claim::Granted)
        })
        .await
    }

    async fn release(&self, id: IdentityId, labels: &Labels) -> Result<(), LedgerError> {
        let labels = labels.to_kvstore_string();
        self.write(move |tx| {
            let mut by_id = tx.open_table(BY_ID)?;
            let names_labels = by_id
                .get(id.get())?
                .is_some_and(|v| v.value() == labels.as_str());
            if names_labels {
                by_id.remove(id.get())?;
                tx.open_table(BY_LABELS)?.remove(labels.as_str())?;
            }
            Ok(())
        })
        .await
    }
}
