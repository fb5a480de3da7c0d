//! One watcher's stream: its subscription turned into frames — the full state or the
//! missed events, the synced marker, then live batches — with the events' shared bytes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::watch;
use tokio::time::Instant;

use super::GrpcError;
use super::stats::ActiveWatch;
use crate::cache::{Batch, Initial, KindSet, Subscription};
use crate::model::Revision;
use crate::proto::WatchFrame;

/// When the serving store's heartbeat was last written, as the exporter publishes it;
/// `None` until the first write (and forever from a server that tells no heartbeat).
pub type HeartbeatRx = watch::Receiver<Option<SystemTime>>;

/// Most events in one frame; the byte bound ([`MAX_FRAME_BYTES`]) comes first unless
/// events are tiny.
pub const MAX_FRAME_EVENTS: usize = 512;
/// Live frames per second the server sends to all its watchers together, when they are
/// busy. A frame costs one TLS record, one socket write and one wake-up on each side —
/// most of what a small event costs; about half of the apiserver's CPU in `fleetmesh
/// bench churn` was the socket writes. So each watcher waits between live frames, and
/// what arrives meanwhile joins the next one; the wait is its share of this budget
/// (see [`live_frame_interval`]): a few watchers get frames within a millisecond, 255 of
/// them every 8 ms, and frames cost the apiserver 0.3–0.7 cores however many watch:
/// ≈ 11 µs a frame at 32 watchers (`fleetmesh bench churn`), 24–28 µs at 255, whose
/// connections' state no longer stays in cache (`--agents 255 --rate 100`).
pub const LIVE_FRAMES_PER_SECOND: u64 = 32_000;
/// The least wait between two live frames to one watcher: even alone, a burst of
/// changes goes out in few frames.
pub const MIN_LIVE_FRAME_INTERVAL: Duration = Duration::from_millis(1);
/// The longest: in a stream of changes, one waits at most this long (an event after a
/// quiet spell goes out at once).
pub const MAX_LIVE_FRAME_INTERVAL: Duration = Duration::from_millis(8);
/// Most bytes of one frame as tonic writes it (gRPC prefix included), unless its one
/// event is bigger. tonic encodes a stream's messages into one buffer that starts at
/// 8 KiB and keeps, for the life of the stream, the capacity its largest message grew
/// it to: frames that fit leave an idle watcher's stream holding those 8 KiB, where
/// listing frames of a few hundred events left it 64 KiB (most of what an idle agent
/// cost the apiserver, measured by `fleetmesh bench memory`). A frame still carries
/// dozens of events in one TLS record and one write.
pub const MAX_FRAME_BYTES: usize = 8 * 1024;
/// What tonic writes before each message: the compression flag and the length.
const GRPC_PREFIX_BYTES: usize = 5;

/// The frames of one watch, produced on demand: nothing is buffered beyond the frame
/// being built, so a slow watcher costs its place in the broadcast, not memory.
pub(super) struct Frames {
    epoch: String,
    /// Event bytes a frame may carry: [`MAX_FRAME_BYTES`] less the rest of the frame.
    budget: usize,
    /// The last call handed a frame over (see [`Frames::next`]).
    handed_over: bool,
    /// The current call has waited for something: the stream has paused since the
    /// last frame.
    waited: bool,
    /// The revision the initial part brings the watcher to.
    revision: Revision,
    phase: Phase,
    /// Batches being sent: the missed ones of a resumed stream, then live ones.
    queue: BatchQueue,
    live: Receiver<Arc<Batch>>,
    /// The next live frame leaves no sooner than this (see [`live_frame_interval`]).
    paced_until: Option<Instant>,
    /// The last live frame was held back by its interval: changes come faster than
    /// frames may leave, so the next one starts by sleeping out its interval (see
    /// [`Frames::next_live`]).
    steady: bool,
    active: ActiveWatch,
    heartbeat: HeartbeatRx,
    /// The heartbeat this watcher was last told of (ms since the Unix epoch).
    told_heartbeat: u64,
    /// The revision of the last frame handed over: an idle stream's heartbeat frame
    /// repeats it.
    sent_revision: Revision,
}

enum Phase {
    Full {
        parts: Vec<Arc<[Bytes]>>,
        part: usize,
        offset: usize,
    },
    Resumed,
    Live,
    Ended,
}

impl Frames {
    pub(super) fn new(sub: Subscription, active: ActiveWatch, heartbeat: HeartbeatRx) -> Self {
        let (phase, after, batches) = match sub.initial {
            Initial::Full(parts) => (
                Phase::Full {
                    parts,
                    part: 0,
                    offset: 0,
                },
                0,
                Vec::new(),
            ),
            Initial::Resumed { after, batches } => (Phase::Resumed, after, batches),
        };
        active.subscribed(matches!(phase, Phase::Resumed));
        let epoch = sub.epoch.to_string();
        Self {
            budget: event_budget(&epoch),
            handed_over: false,
            waited: false,
            epoch,
            revision: sub.revision,
            phase,
            queue: BatchQueue {
                batches: batches.into(),
                index: 0,
                after,
                kinds: sub.kinds,
            },
            live: sub.live,
            paced_until: None,
            steady: false,
            active,
            heartbeat,
            told_heartbeat: 0,
            sent_revision: 0,
        }
    }

    /// The next frame; an error ends the stream, and `None` follows it.
    ///
    /// No two frames are handed over without a pause in between: tonic keeps encoding
    /// the frames a stream has ready into one buffer until it holds 32 KiB, which would
    /// grow that buffer (and keep it grown, see [`MAX_FRAME_BYTES`]) during a listing;
    /// a pause makes it send each frame on its own. A frame that waited for nothing
    /// since the last one (a listing's; a live one whose changes were ready when its
    /// interval had already passed) yields once before it is handed over; one that
    /// waited for its interval or for changes has paused already.
    pub(super) async fn next(&mut self) -> Option<Result<WatchFrame, GrpcError>> {
        self.waited = false;
        let next = self.build().await;
        let frame = matches!(next, Some(Ok(_)));
        if frame && self.handed_over && !self.waited {
            tokio::task::yield_now().await;
        }
        self.handed_over = frame;
        next
    }

    async fn build(&mut self) -> Option<Result<WatchFrame, GrpcError>> {
        let budget = self.budget;
        match &mut self.phase {
            Phase::Full {
                parts,
                part,
                offset,
            } => {
                let mut frame = FrameBuilder::new(budget);
                while let Some(events) = parts.get(*part) {
                    match events.get(*offset) {
                        Some(bytes) if frame.has_room(bytes) => {
                            frame.push(bytes.clone());
                            *offset += 1;
                        }
                        Some(_) => break,
                        None => {
                            *part += 1;
                            *offset = 0;
                        }
                    }
                }
                let synced = *part == parts.len();
                if synced {
                    self.phase = Phase::Live;
                }
                Some(Ok(self.frame(
                    frame.events,
                    self.revision,
                    synced,
                    false,
                    0,
                )))
            }
            Phase::Resumed => {
                let mut frame = FrameBuilder::new(budget);
                let filled = self.queue.fill(&mut frame);
                let (revision, synced) = match filled {
                    Filled::Full { revision } => (revision, false),
                    Filled::Drained { .. } => {
                        self.phase = Phase::Live;
                        // Every live batch is news, whatever revisions it carries.
                        self.queue.after = 0;
                        (self.revision, true)
                    }
                };
                Some(Ok(self.frame(frame.events, revision, synced, true, 0)))
            }
            Phase::Live => {
                let result = self.next_live().await;
                if result.is_err() {
                    self.phase = Phase::Ended;
                }
                Some(result)
            }
            Phase::Ended => None,
        }
    }

    /// The next frame of live batches: no sooner than [`live_frame_interval`] after the
    /// last frame, whatever is ready by then, or else the next batch as soon as it comes.
    ///
    /// While changes come faster than frames may leave (`steady`), the interval is slept
    /// out before the broadcast is read, so the watcher wakes once per frame, by its
    /// timer, rather than for the first batch and again for the timer: each wake-up
    /// polls the whole tonic and hyper stack of the stream. When they come slower, it
    /// waits on the broadcast alone, not also on a timer that would find nothing.
    async fn next_live(&mut self) -> Result<WatchFrame, GrpcError> {
        let mut held_back = self.steady && self.wait_out_interval().await;
        let mut frame = FrameBuilder::new(self.budget);
        let revision = loop {
            let drained_at = match self.queue.fill(&mut frame) {
                Filled::Full { revision } => {
                    // A backlog's full frames are paced too.
                    held_back |= self.wait_out_interval().await;
                    break revision;
                }
                Filled::Drained { revision } => revision,
            };
            let next = if frame.events.is_empty() {
                match self.live.try_recv() {
                    Ok(batch) => Ok(batch),
                    Err(TryRecvError::Empty) => {
                        held_back = false;
                        let (live, heartbeat) = (&mut self.live, &mut self.heartbeat);
                        let idle = async {
                            tokio::select! {
                                received = live.recv() => Some(received),
                                () = heartbeat_rewritten(heartbeat) => None,
                            }
                        };
                        match noting_wait(&mut self.waited, idle).await {
                            Some(received) => received,
                            // Nothing to send but the news that the store is alive.
                            None => break drained_at.max(self.sent_revision),
                        }
                    }
                    Err(TryRecvError::Closed) => Err(RecvError::Closed),
                    Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                }
            } else {
                // What comes while it waits joins the frame.
                held_back |= self.wait_out_interval().await;
                match self.live.try_recv() {
                    Ok(batch) => Ok(batch),
                    // A closed channel stays closed: the next call reports it, after
                    // this frame of what was sent before.
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break drained_at,
                    // Reported once only: the receiver has already skipped ahead.
                    Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                }
            };
            match next {
                Ok(batch) => self.queue.batches.push_back(batch),
                Err(RecvError::Lagged(_)) => return Err(GrpcError::Lagged),
                Err(RecvError::Closed) => return Err(GrpcError::Restarted),
            }
        };
        self.steady = held_back;
        let interval = live_frame_interval(self.active.watchers());
        self.paced_until = Some(Instant::now() + interval);
        let changed = frame.mean_change();
        Ok(self.frame(frame.events, revision, false, false, changed))
    }

    /// Sleeps until the next live frame may leave, once per frame (the deadline is
    /// taken); whether it slept.
    async fn wait_out_interval(&mut self) -> bool {
        match self.paced_until.take() {
            Some(until) if until > Instant::now() => {
                noting_wait(&mut self.waited, tokio::time::sleep_until(until)).await;
                true
            }
            _ => false,
        }
    }

    fn frame(
        &mut self,
        events: Vec<Bytes>,
        revision: Revision,
        synced: bool,
        resumed: bool,
        changed_unix_micros: u64,
    ) -> WatchFrame {
        let bytes = events.iter().map(Bytes::len).sum();
        self.active.sent(events.len(), bytes, revision);
        self.sent_revision = revision;
        WatchFrame {
            events,
            synced,
            resumed,
            revision,
            epoch: self.epoch.clone(),
            changed_unix_micros,
            heartbeat_unix_millis: self.untold_heartbeat(),
        }
    }

    /// The heartbeat's time if this watcher was not told it yet (0 otherwise): each
    /// rewrite goes out once, on the next frame.
    fn untold_heartbeat(&mut self) -> u64 {
        let written = self.heartbeat.borrow_and_update().map_or(0, unix_millis);
        if written == self.told_heartbeat {
            return 0;
        }
        self.told_heartbeat = written;
        written
    }
}

/// Waits until the heartbeat is rewritten; forever when nobody writes it any more.
async fn heartbeat_rewritten(heartbeat: &mut HeartbeatRx) {
    if heartbeat.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// `at` in milliseconds since the Unix epoch (at least 1: 0 means "none" on the wire).
fn unix_millis(at: SystemTime) -> u64 {
    let millis = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    u64::try_from(millis).unwrap_or(u64::MAX).max(1)
}

/// Awaits `future`, setting `waited` if it was not ready at once.
async fn noting_wait<F: Future>(waited: &mut bool, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        let poll = future.as_mut().poll(cx);
        *waited |= poll.is_pending();
        poll
    })
    .await
}

/// Batches to send, read event by event: only events after `after` of `kinds`.
struct BatchQueue {
    batches: VecDeque<Arc<Batch>>,
    /// The next event of the front batch.
    index: usize,
    /// The resume point while sending a resumed stream's missed batches (the first of
    /// them may start before it); 0 for live batches, which all came after the
    /// subscription.
    after: Revision,
    kinds: KindSet,
}

/// How far [`BatchQueue::fill`] got.
enum Filled {
    /// The frame is full; the watcher will have everything up to `revision`.
    Full { revision: Revision },
    /// Every queued batch was read; the last one ended at `revision` (0 if none was
    /// queued).
    Drained { revision: Revision },
}

impl BatchQueue {
    fn fill(&mut self, frame: &mut FrameBuilder) -> Filled {
        let mut drained_at = 0;
        while let Some(batch) = self.batches.front() {
            while let Some(event) = batch.events.get(self.index) {
                if event.revision <= self.after || !self.kinds.contains(event.kind) {
                    self.index += 1;
                    continue;
                }
                if !frame.has_room(&event.bytes) {
                    // Every event before this one is sent; its own revision may have
                    // more events in this batch, so the watcher is complete only up to
                    // the revision before.
                    return Filled::Full {
                        revision: event.revision.saturating_sub(1),
                    };
                }
                frame.push(event.bytes.clone());
                frame.changed_at(batch.received_unix_micros);
                self.index += 1;
            }
            drained_at = batch.revision;
            self.batches.pop_front();
            self.index = 0;
        }
        Filled::Drained {
            revision: drained_at,
        }
    }
}

/// The least wait between live frames to one of `watchers` watchers: its share of
/// [`LIVE_FRAMES_PER_SECOND`], within [`MIN_LIVE_FRAME_INTERVAL`] and
/// [`MAX_LIVE_FRAME_INTERVAL`].
pub fn live_frame_interval(watchers: u64) -> Duration {
    let share = Duration::from_micros(watchers.saturating_mul(1_000_000) / LIVE_FRAMES_PER_SECOND);
    share.clamp(MIN_LIVE_FRAME_INTERVAL, MAX_LIVE_FRAME_INTERVAL)
}

/// The event bytes a frame of `epoch` may carry within [`MAX_FRAME_BYTES`]: what is
/// left after the gRPC prefix and the frame's other fields at their largest.
fn event_budget(epoch: &str) -> usize {
    let fields = WatchFrame {
        events: Vec::new(),
        synced: true,
        resumed: true,
        revision: Revision::MAX,
        epoch: epoch.to_string(),
        changed_unix_micros: u64::MAX,
        heartbeat_unix_millis: u64::MAX,
    };
    MAX_FRAME_BYTES.saturating_sub(GRPC_PREFIX_BYTES + fields.encoded_len())
}

/// What one event adds to an encoded frame: its field key, its length and its bytes.
fn event_len(bytes: &Bytes) -> usize {
    prost::encoding::key_len(1)
        + prost::encoding::encoded_len_varint(bytes.len() as u64)
        + bytes.len()
}

struct FrameBuilder {
    events: Vec<Bytes>,
    /// The encoded length of `events`.
    bytes: usize,
    budget: usize,
    /// The sum and number of the times the server took `events` from its store, of
    /// those whose time is known.
    change_times: (u128, u64),
}

impl FrameBuilder {
    fn new(budget: usize) -> Self {
        Self {
            events: Vec::new(),
            bytes: 0,
            budget,
            change_times: (0, 0),
        }
    }

    /// One of the events was taken from the store at `unix_micros` (0: unknown).
    fn changed_at(&mut self, unix_micros: u64) {
        if unix_micros > 0 {
            self.change_times.0 += u128::from(unix_micros);
            self.change_times.1 += 1;
        }
    }

    /// The mean of the events' change times (0: none known). An agent that counts its
    /// lag from it once per event gets each event's lag summed exactly: the events of a
    /// frame are applied together.
    fn mean_change(&self) -> u64 {
        let (sum, n) = self.change_times;
        if n == 0 {
            return 0;
        }
        u64::try_from(sum / u128::from(n)).unwrap_or(0)
    }

    fn has_room(&self, next: &Bytes) -> bool {
        self.events.is_empty()
            || (self.events.len() < MAX_FRAME_EVENTS && self.bytes + event_len(next) <= self.budget)
    }

    fn push(&mut self, bytes: Bytes) {
        self.bytes += event_len(&bytes);
        self.events.push(bytes);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use tokio::sync::broadcast;

    use super::*;
    use crate::cache::CachedEvent;
    use crate::grpc::GrpcStats;
    use crate::model::Kind;

    fn mk_event(revision: Revision, kind: Kind) -> CachedEvent {
        CachedEvent {
            revision,
            kind,
            bytes: Bytes::from(format!("{kind}@{revision}")),
        }
    }

    fn mk_batch(events: &[(Revision, Kind)]) -> Arc<Batch> {
        Arc::new(Batch {
            events: events.iter().map(|(r, k)| mk_event(*r, *k)).collect(),
            revision: events.iter().map(|(r, _)| *r).max().unwrap_or(0),
            received_unix_micros: 0,
        })
    }

    fn mk_frames(
        initial: Initial,
        revision: Revision,
        kinds: KindSet,
    ) -> (Frames, broadcast::Sender<Arc<Batch>>) {
        mk_frames_among(&GrpcStats::default(), initial, revision, kinds)
    }

    /// A watcher counted in `stats` with the watchers already there.
    fn mk_frames_among(
        stats: &GrpcStats,
        initial: Initial,
        revision: Revision,
        kinds: KindSet,
    ) -> (Frames, broadcast::Sender<Arc<Batch>>) {
        let (tx, live) = broadcast::channel(4);
        let sub = Subscription {
            epoch: "e1".into(),
            kinds,
            revision,
            initial,
            live,
        };
        let heartbeat = watch::channel(None).1;
        (
            Frames::new(sub, stats.watch_started("test", "all"), heartbeat),
            tx,
        )
    }

    fn texts(frame: &WatchFrame) -> Vec<String> {
        frame
            .events
            .iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect()
    }

    async fn next_ok(frames: &mut Frames) -> WatchFrame {
        frames.next().await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn a_full_state_comes_in_bounded_frames_then_synced() {
        let nodes: Arc<[Bytes]> = (0..3).map(|i| Bytes::from(format!("n{i}"))).collect();
        let endpoints: Arc<[Bytes]> = (0..MAX_FRAME_EVENTS + 10)
            .map(|i| Bytes::from(format!("e{i}")))
            .collect();
        let (mut frames, _tx) = mk_frames(Initial::Full(vec![nodes, endpoints]), 9, KindSet::ALL);

        let first = next_ok(&mut frames).await;
        assert_eq!(first.events.len(), MAX_FRAME_EVENTS);
        assert_eq!(
            (first.synced, first.resumed, first.revision),
            (false, false, 9)
        );
        assert_eq!(first.epoch, "e1");
        let second = next_ok(&mut frames).await;
        assert_eq!(second.events.len(), 13);
        assert!(second.synced);

        // An empty state is one empty synced frame.
        let (mut frames, _tx) = mk_frames(Initial::Full(vec![]), 4, KindSet::ALL);
        let only = next_ok(&mut frames).await;
        assert!(only.synced && only.events.is_empty());
    }

    #[tokio::test]
    async fn listing_frames_fit_the_encoders_first_buffer() {
        let event = Bytes::from(vec![7u8; 150]);
        let endpoints: Arc<[Bytes]> = (0..1000).map(|_| event.clone()).collect();
        let (mut frames, _tx) = mk_frames(Initial::Full(vec![endpoints]), 9, KindSet::ALL);
        frames.epoch = "a-rather-long-store-epoch-0123456789abcdef".into();
        frames.budget = event_budget(&frames.epoch);
        let mut sent = 0;
        loop {
            let frame = next_ok(&mut frames).await;
            let written = GRPC_PREFIX_BYTES + frame.encoded_len();
            assert!(written <= MAX_FRAME_BYTES, "{written} bytes");
            sent += frame.events.len();
            if frame.synced {
                break;
            }
            // Full: one more event would not have fitted in the room the frame's other
            // fields leave at their largest.
            let events: usize = frame.events.iter().map(event_len).sum();
            assert!(
                events + event_len(&event) > frames.budget,
                "{written} bytes"
            );
        }
        assert_eq!(sent, 1000);
    }

    #[tokio::test]
    async fn each_frame_is_handed_over_alone() {
        let part: Arc<[Bytes]> = (0..3)
            .map(|_| Bytes::from(vec![1u8; MAX_FRAME_BYTES / 2]))
            .collect();
        let (mut frames, _tx) = mk_frames(Initial::Full(vec![part]), 1, KindSet::ALL);
        // The first frame is ready at once; each later one after a pause.
        assert!(futures::poll!(Box::pin(frames.next())).is_ready());
        for _ in 0..2 {
            let mut next = Box::pin(frames.next());
            assert!(futures::poll!(&mut next).is_pending());
            assert!(next.await.unwrap().is_ok());
        }
    }

    #[tokio::test]
    async fn large_events_make_smaller_frames() {
        let big = Bytes::from(vec![0u8; MAX_FRAME_BYTES / 2 + 1]);
        let part: Arc<[Bytes]> = vec![big.clone(), big.clone(), big].into();
        let (mut frames, _tx) = mk_frames(Initial::Full(vec![part]), 1, KindSet::ALL);
        for _ in 0..3 {
            assert_eq!(next_ok(&mut frames).await.events.len(), 1);
        }
    }

    #[tokio::test]
    async fn a_resumed_stream_sends_only_missed_events_of_its_kinds() {
        let batches = vec![
            mk_batch(&[(4, Kind::Endpoint), (5, Kind::Endpoint)]),
            mk_batch(&[(6, Kind::Node), (7, Kind::Endpoint)]),
        ];
        let initial = Initial::Resumed { after: 4, batches };
        let endpoints: KindSet = [Kind::Endpoint].into_iter().collect();
        let (mut frames, tx) = mk_frames(initial, 7, endpoints);

        let frame = next_ok(&mut frames).await;
        assert_eq!(texts(&frame), ["endpoints@5", "endpoints@7"]);
        assert_eq!(
            (frame.resumed, frame.synced, frame.revision),
            (true, true, 7)
        );

        // Then live batches, filtered the same way.
        tx.send(mk_batch(&[(8, Kind::Node)])).unwrap();
        tx.send(mk_batch(&[(9, Kind::Endpoint)])).unwrap();
        let frame = next_ok(&mut frames).await;
        assert_eq!(texts(&frame), ["endpoints@9"]);
        assert_eq!(
            (frame.resumed, frame.synced, frame.revision),
            (false, false, 9)
        );
    }

    #[tokio::test]
    async fn a_frame_cut_inside_a_revision_claims_only_the_revision_before() {
        let (mut frames, tx) = mk_frames(Initial::Full(vec![]), 1, KindSet::ALL);
        assert!(next_ok(&mut frames).await.synced);

        // One revision with more events than a frame holds (a lease expiring, say).
        let many: Vec<(Revision, Kind)> = (0..MAX_FRAME_EVENTS + 1)
            .map(|_| (5, Kind::Endpoint))
            .collect();
        tx.send(mk_batch(&many)).unwrap();
        let first = next_ok(&mut frames).await;
        assert_eq!(first.events.len(), MAX_FRAME_EVENTS);
        assert_eq!(first.revision, 4, "revision 5 is not complete yet");
        let second = next_ok(&mut frames).await;
        assert_eq!(second.events.len(), 1);
        assert_eq!(second.revision, 5);
    }

    #[tokio::test]
    async fn ready_batches_are_coalesced_into_one_frame() {
        let (mut frames, tx) = mk_frames(Initial::Full(vec![]), 1, KindSet::ALL);
        next_ok(&mut frames).await;
        for r in 2..5 {
            tx.send(mk_batch(&[(r, Kind::Identity)])).unwrap();
        }
        let frame = next_ok(&mut frames).await;
        assert_eq!(frame.events.len(), 3);
        assert_eq!(frame.revision, 4);
    }

    #[tokio::test]
    async fn a_live_frame_carries_the_mean_time_its_changes_were_taken_from_the_store() {
        let (mut frames, tx) = mk_frames(Initial::Full(vec![]), 1, KindSet::ALL);
        let listing = next_ok(&mut frames).await;
        assert_eq!(listing.changed_unix_micros, 0, "not a live frame");
        for (r, at) in [(2, 500), (3, 700), (4, 1_200)] {
            let batch = Batch {
                events: vec![mk_event(r, Kind::Identity)],
                revision: r,
                received_unix_micros: at,
            };
            tx.send(Arc::new(batch)).unwrap();
        }
        let frame = next_ok(&mut frames).await;
        assert_eq!(frame.events.len(), 3);
        assert_eq!(frame.changed_unix_micros, 800);
    }

    #[tokio::test]
    async fn live_frames_to_one_watcher_are_paced() {
        let (mut frames, tx) = mk_frames(Initial::Full(vec![]), 1, KindSet::ALL);
        next_ok(&mut frames).await;
        let started = Instant::now();
        tx.send(mk_batch(&[(2, Kind::Identity)])).unwrap();
        assert_eq!(next_ok(&mut frames).await.revision, 2);
        // The next batch is ready at once, but its frame waits out the interval.
        tx.send(mk_batch(&[(3, Kind::Identity)])).unwrap();
        assert_eq!(next_ok(&mut frames).await.revision, 3);
        assert!(started.elapsed() >= live_frame_interval(1));
    }

    /// Polls `next` until it is ready, sending `batch` during the first poll; how many
    /// polls it took (each after a wake-up).
    async fn polls_until_ready(
        frames: &mut Frames,
        tx: &broadcast::Sender<Arc<Batch>>,
        batch: Arc<Batch>,
    ) -> (WatchFrame, usize) {
        let mut next = Box::pin(frames.next());
        let mut polls = 0;
        let mut batch = Some(batch);
        let frame = std::future::poll_fn(|cx| {
            polls += 1;
            let poll = next.as_mut().poll(cx);
            if let Some(batch) = batch.take() {
                tx.send(batch).unwrap();
            }
            poll
        })
        .await;
        (frame.unwrap().unwrap(), polls)
    }

    /// A watcher among 255 others (an 8 ms interval, of paused time in these tests:
    /// nothing overruns it), past its synced frame and a live frame that went out at
    /// once; the others stay counted while their guards live.
    async fn one_of_256() -> (Frames, broadcast::Sender<Arc<Batch>>, Vec<ActiveWatch>) {
        let stats = GrpcStats::default();
        let others = (0..255)
            .map(|_| stats.watch_started("test", "all"))
            .collect();
        let (mut frames, tx) = mk_frames_among(&stats, Initial::Full(vec![]), 1, KindSet::ALL);
        next_ok(&mut frames).await;
        tx.send(mk_batch(&[(2, Kind::Identity)])).unwrap();
        next_ok(&mut frames).await;
        (frames, tx, others)
    }

    #[tokio::test(start_paused = true)]
    async fn under_steady_changes_a_watcher_wakes_once_per_frame() {
        let (mut frames, tx, _others) = one_of_256().await;
        // A batch inside the interval: that frame is held back, changes are steady.
        tx.send(mk_batch(&[(3, Kind::Identity)])).unwrap();
        assert_eq!(next_ok(&mut frames).await.revision, 3);
        assert!(frames.steady);

        // The next frame sleeps its interval out first: the batch sent meanwhile does
        // not wake it, the timer does, once.
        let (frame, polls) =
            polls_until_ready(&mut frames, &tx, mk_batch(&[(4, Kind::Node)])).await;
        assert_eq!(frame.revision, 4);
        assert_eq!(polls, 2, "woken by the batch, or paused again");
    }

    #[tokio::test(start_paused = true)]
    async fn between_sparse_changes_a_watcher_waits_on_the_broadcast_alone() {
        let (mut frames, tx, _others) = one_of_256().await;
        // Its last frame went out at once: changes are sparse.
        assert!(!frames.steady);

        let wakes = Arc::new(WakeCounter::default());
        let waker = futures::task::waker(Arc::clone(&wakes));
        let mut next = Box::pin(frames.next());
        let polled = next.as_mut().poll(&mut Context::from_waker(&waker));
        assert!(polled.is_pending(), "nothing to send yet");
        // Past the interval: no timer was armed to wake it for nothing.
        tokio::time::sleep(MAX_LIVE_FRAME_INTERVAL * 2).await;
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            0,
            "woken with nothing to send"
        );
        tx.send(mk_batch(&[(3, Kind::Identity)])).unwrap();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "not woken by the batch");
        // Its interval is over: the frame goes out at once.
        let frame = futures::poll!(next.as_mut());
        assert!(
            matches!(frame, Poll::Ready(Some(Ok(ref f))) if f.revision == 3),
            "{frame:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_goes_out_in_paced_frames() {
        let (mut frames, tx) = mk_frames(Initial::Full(vec![]), 1, KindSet::ALL);
        next_ok(&mut frames).await;
        // One revision of three frames' worth (a lease expiring, say).
        let many: Vec<(Revision, Kind)> = (0..2 * MAX_FRAME_EVENTS + 1)
            .map(|_| (5, Kind::Endpoint))
            .collect();
        tx.send(mk_batch(&many)).unwrap();
        let started = Instant::now();
        for expected in [MAX_FRAME_EVENTS, MAX_FRAME_EVENTS, 1] {
            assert_eq!(next_ok(&mut frames).await.events.len(), expected);
        }
        assert!(started.elapsed() >= 2 * live_frame_interval(1));
    }

    #[tokio::test]
    async fn a_live_frame_that_waited_for_nothing_pauses_before_it_is_handed_over() {
        let (mut frames, tx) = mk_frames(Initial::Full(vec![]), 1, KindSet::ALL);
        next_ok(&mut frames).await;
        // Ready before the call, with no interval to wait out after the synced frame.
        tx.send(mk_batch(&[(2, Kind::Identity)])).unwrap();
        let mut next = Box::pin(frames.next());
        assert!(futures::poll!(next.as_mut()).is_pending());
        assert_eq!(next.await.unwrap().unwrap().revision, 2);
    }

    #[derive(Default)]
    struct WakeCounter(AtomicUsize);

    impl futures::task::ArcWake for WakeCounter {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn watchers_share_the_frame_budget_within_bounds() {
        assert_eq!(live_frame_interval(0), MIN_LIVE_FRAME_INTERVAL);
        assert_eq!(live_frame_interval(1), MIN_LIVE_FRAME_INTERVAL);
        assert_eq!(live_frame_interval(32), Duration::from_millis(1));
        assert_eq!(live_frame_interval(128), Duration::from_millis(4));
        assert_eq!(live_frame_interval(250), Duration::from_micros(7_812));
        assert_eq!(live_frame_interval(10_000), MAX_LIVE_FRAME_INTERVAL);
        assert_eq!(live_frame_interval(u64::MAX), MAX_LIVE_FRAME_INTERVAL);
    }

    #[tokio::test]
    async fn a_lagging_watcher_is_ended() {
        let (mut frames, tx) = mk_frames(Initial::Full(vec![]), 1, KindSet::ALL);
        next_ok(&mut frames).await;
        for r in 2..8 {
            tx.send(mk_batch(&[(r, Kind::Identity)])).unwrap();
        }
        assert!(matches!(frames.next().await, Some(Err(GrpcError::Lagged))));
        assert!(frames.next().await.is_none());
    }

    #[tokio::test]
    async fn a_closed_cache_ends_the_stream_after_what_was_sent() {
        let (mut frames, tx) = mk_frames(Initial::Full(vec![]), 1, KindSet::ALL);
        next_ok(&mut frames).await;
        tx.send(mk_batch(&[(2, Kind::Identity)])).unwrap();
        drop(tx);
        assert_eq!(next_ok(&mut frames).await.events.len(), 1);
        assert!(matches!(
            frames.next().await,
            Some(Err(GrpcError::Restarted))
        ));
    }

    #[tokio::test]
    async fn each_heartbeat_rewrite_is_told_once_and_alone_on_an_idle_stream() {
        let at = |ms| Some(UNIX_EPOCH + Duration::from_millis(ms));
        let (tx, live) = broadcast::channel(4);
        let sub = Subscription {
            epoch: "e1".into(),
            kinds: KindSet::ALL,
            revision: 5,
            initial: Initial::Full(vec![]),
            live,
        };
        let (beat_tx, beat_rx) = watch::channel(at(1_000));
        let stats = GrpcStats::default();
        let mut frames = Frames::new(sub, stats.watch_started("test", "all"), beat_rx);

        let synced = next_ok(&mut frames).await;
        assert!(synced.synced);
        assert_eq!(synced.heartbeat_unix_millis, 1_000);
        tx.send(mk_batch(&[(6, Kind::Node)])).unwrap();
        let live = next_ok(&mut frames).await;
        assert_eq!(
            (live.revision, live.heartbeat_unix_millis),
            (6, 0),
            "told once"
        );

        // Idle: the rewrite comes alone, repeating the last revision.
        beat_tx.send_replace(at(2_000));
        let beat = tokio::time::timeout(Duration::from_secs(5), next_ok(&mut frames))
            .await
            .unwrap();
        assert!(beat.events.is_empty() && !beat.synced && !beat.resumed);
        assert_eq!((beat.revision, beat.heartbeat_unix_millis), (6, 2_000));

        // With changes ready, the rewrite rides on their frame, and is not sent again.
        tx.send(mk_batch(&[(7, Kind::Node)])).unwrap();
        beat_tx.send_replace(at(3_000));
        let both = next_ok(&mut frames).await;
        assert_eq!(
            (texts(&both), both.revision, both.heartbeat_unix_millis),
            (vec!["nodes@7".to_string()], 7, 3_000)
        );
        let quiet = tokio::time::timeout(Duration::from_millis(100), frames.next()).await;
        assert!(quiet.is_err(), "nothing new to tell: {quiet:?}");
    }
}
