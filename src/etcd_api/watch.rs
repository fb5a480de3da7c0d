//! `Watch`: one task per stream, following the cache's broadcast for every watch the
//! stream holds.
//!
//! Creates are answered in order, each with a new `watch_id`; a watch from an earlier
//! revision first gets the log's changes since then, or — if the log no longer holds
//! them — is canceled with the compact revision, as etcd does. Then each broadcast
//! batch goes to every watch whose range it touches, its header at the batch's last
//! revision (every change up to it delivered); a stream whose client reads slower than
//! batches come finds several waiting when it is let on, and sends them as one fuller
//! response per watch — at saturation, a response's worth. A stream that falls behind the
//! broadcast catches up from the log, or has its watches canceled if the log has moved
//! past it; it never holds up the feed or the other streams.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use futures::stream::BoxStream;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use super::error::WATCH_PERMISSION_DENIED;
use super::key_cache::{Batch, CacheError, CatchUp, Change, Notice, Position, body_of};
use super::range::KeyRange;
use super::wire::etcdserverpb::watch_create_request::FilterType;
use super::wire::etcdserverpb::watch_request::RequestUnion;
use super::wire::etcdserverpb::watch_server::Watch;
use super::wire::etcdserverpb::{WatchCreateRequest, WatchRequest};
use super::wire::{WatchFrame, encode_event_field, encode_header_field};
use super::{EtcdApi, EtcdApiError};
use crate::model::ClusterName;

/// Responses queued towards one stream's client before the stream waits for it (and,
/// if it waits too long, falls behind the broadcast). Few: what waits in the broadcast
/// instead is sent merged into fuller responses.
const OUTBOX: usize = 4;
/// Most events in one response: etcd's clients take many, and fewer, fuller responses
/// cost them less; this bounds a response of a catch-up.
const MAX_RESPONSE_EVENTS: usize = 1000;
/// Most bytes of events in one response, far below the clients' receive limits.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// How often a watch created with `progress_notify` is told the current revision
/// (etcd's default).
const PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);
/// `watch_id` of responses that answer for the whole stream (a progress request).
const STREAM_WATCH_ID: i64 = -1;

type Outbox = mpsc::Sender<Result<WatchFrame, Status>>;

#[tonic::async_trait]
impl Watch for EtcdApi {
    type WatchStream = BoxStream<'static, Result<WatchFrame, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let peer = self.authorize(&request)?;
        self.ready().await?;
        let (rx, position) = self.cache().subscribe().map_err(EtcdApiError::from)?;
        self.stats().count_watch_stream();
        let (out, out_rx) = mpsc::channel(OUTBOX);
        let session = Session {
            api: self.clone(),
            peer,
            watches: BTreeMap::new(),
            next_id: 0,
            position,
            out,
        };
        tokio::spawn(session.run(request.into_inner(), rx));
        let stream: std::pin::Pin<Box<dyn Stream<Item = _> + Send>> =
            Box::pin(ReceiverStream::new(out_rx));
        Ok(Response::new(stream))
    }
}

/// One watch of a stream.
struct Watcher {
    id: i64,
    range: KeyRange,
    /// The first revision it reports.
    start: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
}

impl Watcher {
    fn wants(&self, change: &Change) -> bool {
        let filtered = if change.is_delete() {
            self.no_delete
        } else {
            self.no_put
        };
        change.revision >= self.start && self.range.contains(&change.key) && !filtered
    }

    /// Whether its responses are the same as every other plain watch of its range.
    fn is_plain(&self) -> bool {
        !self.prev_kv && !self.no_put && !self.no_delete
    }

    fn event_field(&self, change: &Change) -> Bytes {
        if self.prev_kv {
            encode_event_field(&change.to_wire(true))
        } else {
            change.field().clone()
        }
    }
}

/// `first` and the batches already waiting behind it, up to a response's worth of
/// changes; and what stopped the draining other than an empty queue (a restart, a lag,
/// the end), to be handled next.
fn drain_ready(
    first: Arc<Batch>,
    rx: &mut broadcast::Receiver<Notice>,
) -> (Vec<Arc<Batch>>, Option<Result<Notice, RecvError>>) {
    let size = |batch: &Batch| {
        let bytes = batch.changes.iter().map(|c| c.field().len()).sum::<usize>();
        (batch.changes.len(), bytes)
    };
    let (mut changes, mut bytes) = size(&first);
    let mut batches = vec![first];
    while changes < MAX_RESPONSE_EVENTS && bytes < MAX_RESPONSE_BYTES {
        match rx.try_recv() {
            Ok(Notice::Changes(batch)) => {
                let (more, more_bytes) = size(&batch);
                changes += more;
                bytes += more_bytes;
                batches.push(batch);
            }
            Ok(other) => return (batches, Some(Ok(other))),
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Lagged(n)) => return (batches, Some(Err(RecvError::Lagged(n)))),
            Err(TryRecvError::Closed) => return (batches, Some(Err(RecvError::Closed))),
        }
    }
    (batches, None)
}

/// The client went away: the stream ends.
struct Gone;

struct Session {
    api: EtcdApi,
    peer: ClusterName,
    watches: BTreeMap<i64, Watcher>,
    next_id: i64,
    /// The history followed and the revision every watch has had every change up to.
    position: Position,
    out: Outbox,
}

impl Session {
    async fn run(
        mut self,
        mut requests: Streaming<WatchRequest>,
        mut rx: broadcast::Receiver<Notice>,
    ) {
        let mut progress = tokio::time::interval(PROGRESS_NOTIFY_INTERVAL);
        progress.reset();
        let result: Result<std::convert::Infallible, Gone> = async {
            loop {
                tokio::select! {
                    request = requests.message() => match request {
                        Ok(Some(request)) => self.handle(request).await?,
                        // The client closed its side, or broke the stream.
                        Ok(None) | Err(_) => return Err(Gone),
                    },
                    notice = rx.recv() => self.follow(notice, &mut rx).await?,
                    _ = progress.tick() => self.notify_progress().await?,
                }
            }
        }
        .await;
        let Err(Gone) = result;
        debug!(peer = %self.peer, "etcd watch stream ended");
    }

    async fn send(&self, frame: WatchFrame) -> Result<(), Gone> {
        self.out.send(Ok(frame)).await.map_err(|_| Gone)
    }

    fn header_field(&self, revision: i64) -> Bytes {
        encode_header_field(&self.api.cache().header(self.position.cluster_id, revision))
    }

    async fn handle(&mut self, request: WatchRequest) -> Result<(), Gone> {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                if self.watches.remove(&cancel.watch_id).is_none() {
                    return Ok(());
                }
                self.send(WatchFrame {
                    watch_id: cancel.watch_id,
                    canceled: true,
                    body: self.header_field(self.position.revision),
                    ..Default::default()
                })
                .await
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // Everything up to the position is delivered: it is the progress.
                self.send(WatchFrame {
                    watch_id: STREAM_WATCH_ID,
                    body: self.header_field(self.position.revision),
                    ..Default::default()
                })
                .await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, create: WatchCreateRequest) -> Result<(), Gone> {
        let range = KeyRange::from_request(create.key.clone(), create.range_end.clone());
        if self.api.check_read(&self.peer, &range).is_err() {
            return self
                .send(WatchFrame {
                    watch_id: STREAM_WATCH_ID,
                    created: true,
                    canceled: true,
                    cancel_reason: WATCH_PERMISSION_DENIED.to_string(),
                    body: self.header_field(self.position.revision),
                    ..Default::default()
                })
                .await;
        }
        let id = if create.watch_id > 0 {
            if self.watches.contains_key(&create.watch_id) {
                return self
                    .send(WatchFrame {
                        watch_id: STREAM_WATCH_ID,
                        created: true,
                        canceled: true,
                        cancel_reason:
                            "etcdserver: mvcc: duplicate watch ID provided on the WatchStream"
                                .to_string(),
                        body: self.header_field(self.position.revision),
                        ..Default::default()
                    })
                    .await;
            }
            create.watch_id
        } else {
            while self.watches.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        self.next_id = self.next_id.max(id + 1);
        let now = self.position.revision;
        let start = if create.start_revision > 0 {
            create.start_revision
        } else {
            now + 1
        };
        let filters: Vec<_> = create
            .filters
            .iter()
            .filter_map(|f| FilterType::try_from(*f).ok())
            .collect();
        let watcher = Watcher {
            id,
            range,
            start,
            prev_kv: create.prev_kv,
            no_put: filters.contains(&FilterType::Noput),
            no_delete: filters.contains(&FilterType::Nodelete),
            progress_notify: create.progress_notify,
        };
        self.api.stats().count_watch_created();
        // The header of `created` never runs ahead of what the watch will get next.
        self.send(WatchFrame {
            watch_id: id,
            created: true,
            body: self.header_field(now.min(start - 1).max(0)),
            ..Default::default()
        })
        .await?;
        if start <= now {
            match self
                .api
                .cache()
                .replay(self.position.generation, start, now)
            {
                Ok(changes) => self.replay(&watcher, &changes, now).await?,
                Err(
                    CacheError::Compacted {
                        compact_revision, ..
                    }
                    | CacheError::Restarted { compact_revision },
                ) => return self.cancel(id, compact_revision).await,
                Err(CacheError::NotReady | CacheError::FutureRevision { .. }) => {
                    return self.cancel(id, 0).await;
                }
            }
        }
        self.watches.insert(id, watcher);
        Ok(())
    }

    /// Sends `watcher` the changes it wants among `changes` (all through `through`), in
    /// responses of bounded size; the last one's header is at `through`.
    async fn replay(
        &self,
        watcher: &Watcher,
        changes: &[Arc<Change>],
        through: i64,
    ) -> Result<(), Gone> {
        let wanted: Vec<&Arc<Change>> = changes.iter().filter(|c| watcher.wants(c)).collect();
        let mut events = BytesMut::new();
        let mut count = 0;
        for (i, change) in wanted.iter().enumerate() {
            events.extend_from_slice(&watcher.event_field(change));
            count += 1;
            let last = i + 1 == wanted.len();
            if last || count >= MAX_RESPONSE_EVENTS || events.len() >= MAX_RESPONSE_BYTES {
                // A response that ends inside a revision claims only the one before.
                let revision = match wanted.get(i + 1) {
                    None => through,
                    Some(next) if next.revision == change.revision => change.revision - 1,
                    Some(_) => change.revision,
                };
                let mut body = BytesMut::from(&self.header_field(revision)[..]);
                body.extend_from_slice(&events);
                self.send(WatchFrame {
                    watch_id: watcher.id,
                    body: body.freeze(),
                    ..Default::default()
                })
                .await?;
                events.clear();
                count = 0;
            }
        }
        Ok(())
    }

    /// Handles `notice`, and with a batch, every batch already waiting behind it.
    async fn follow(
        &mut self,
        notice: Result<Notice, RecvError>,
        rx: &mut broadcast::Receiver<Notice>,
    ) -> Result<(), Gone> {
        let mut notice = notice;
        loop {
            notice = match notice {
                Ok(Notice::Changes(batch)) => {
                    let (batches, next) = drain_ready(batch, rx);
                    self.deliver(&batches).await?;
                    match next {
                        Some(next) => next,
                        None => return Ok(()),
                    }
                }
                Ok(Notice::Restarted {
                    position,
                    compact_revision,
                }) => {
                    self.position = position;
                    return self.cancel_all(compact_revision).await;
                }
                Err(RecvError::Lagged(_)) => {
                    *rx = self.catch_up().await?;
                    return Ok(());
                }
                Err(RecvError::Closed) => return Err(Gone),
            }
        }
    }

    /// Sends each watch the changes of `batches` it wants, in one response: one
    /// batch's body is shared by the plain watches of a range; several batches (the
    /// stream was behind) make one fuller response per watch.
    async fn deliver(&mut self, batches: &[Arc<Batch>]) -> Result<(), Gone> {
        let fresh: Vec<&Arc<Batch>> = batches
            .iter()
            .filter(|b| b.revision > self.position.revision)
            .collect();
        match fresh[..] {
            [] => Ok(()),
            [batch] => self.deliver_one(batch).await,
            [.., last] => {
                self.position.revision = last.revision;
                for watcher in self.watches.values() {
                    let mut body: Option<BytesMut> = None;
                    let changes = fresh.iter().flat_map(|b| b.changes.iter());
                    for change in changes.filter(|c| watcher.wants(c)) {
                        body.get_or_insert_with(|| BytesMut::from(&last.header_field[..]))
                            .extend_from_slice(&watcher.event_field(change));
                    }
                    if let Some(body) = body {
                        self.send(WatchFrame {
                            watch_id: watcher.id,
                            body: body.freeze(),
                            ..Default::default()
                        })
                        .await?;
                    }
                }
                Ok(())
            }
        }
    }

    async fn deliver_one(&mut self, batch: &Batch) -> Result<(), Gone> {
        self.position.revision = batch.revision;
        let first = batch.changes.first().map_or(batch.revision, |c| c.revision);
        for watcher in self.watches.values() {
            if !batch.changes.iter().any(|c| watcher.wants(c)) {
                continue;
            }
            let wanted = || batch.changes.iter().filter(|c| watcher.wants(c));
            let body = if watcher.is_plain() && watcher.start <= first {
                batch.shared_body(&watcher.range, || body_of(&batch.header_field, wanted()))
            } else {
                let mut body = BytesMut::from(&batch.header_field[..]);
                for change in wanted() {
                    body.extend_from_slice(&watcher.event_field(change));
                }
                body.freeze()
            };
            self.send(WatchFrame {
                watch_id: watcher.id,
                body,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }

    /// After falling behind the broadcast: the missed changes from the log, or — if
    /// the log has moved past them — every watch canceled. Either way a new receiver.
    async fn catch_up(&mut self) -> Result<broadcast::Receiver<Notice>, Gone> {
        match self.api.cache().catch_up(self.position) {
            Ok(CatchUp {
                rx,
                position,
                missed,
            }) => {
                self.api.stats().count_caught_up();
                self.position = position;
                for watcher in self.watches.values() {
                    self.replay(watcher, &missed, position.revision).await?;
                }
                Ok(rx)
            }
            Err(err) => {
                let compact_revision = match err {
                    CacheError::Compacted {
                        compact_revision, ..
                    }
                    | CacheError::Restarted { compact_revision } => compact_revision,
                    CacheError::NotReady | CacheError::FutureRevision { .. } => 0,
                };
                self.api.stats().count_dropped(self.watches.len());
                let (rx, position) = self.api.cache().subscribe().map_err(|_| Gone)?;
                self.position = position;
                self.cancel_all(compact_revision).await?;
                Ok(rx)
            }
        }
    }

    async fn cancel(&self, id: i64, compact_revision: i64) -> Result<(), Gone> {
        self.send(WatchFrame {
            watch_id: id,
            canceled: true,
            compact_revision,
            body: self.header_field(self.position.revision),
            ..Default::default()
        })
        .await
    }

    async fn cancel_all(&mut self, compact_revision: i64) -> Result<(), Gone> {
        let watches = std::mem::take(&mut self.watches);
        for id in watches.keys() {
            self.cancel(*id, compact_revision).await?;
        }
        Ok(())
    }

    async fn notify_progress(&self) -> Result<(), Gone> {
        for watcher in self.watches.values().filter(|w| w.progress_notify) {
            self.send(WatchFrame {
                watch_id: watcher.id,
                body: self.header_field(self.position.revision),
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }
}
