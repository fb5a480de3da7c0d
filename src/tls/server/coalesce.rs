//! Coalescing a connection's TLS records into fewer socket writes.
//!
//! rustls writes each record to the socket as soon as it is made, and HTTP/2 makes one
//! record per frame: a DATA frame is at most 16 KiB (the clients' maximum frame size),
//! so a busy stream's responses cost a system call per 16 KiB — on loopback also the
//! receiving side's TCP work — however much is ready to go. Under the TLS layer,
//! [`Coalesce`] takes the records into a buffer instead, and writes them to the socket
//! together:
//!
//! - a flush with [`FLUSH_AT`] or more waiting writes at once;
//! - a smaller flush is put off once: the connection's task is woken, and the data goes
//!   out at its next read (HTTP/2 reads first, each time it runs) or its next flush,
//!   with whatever it wrote in between — at least two frames of a burst share a write.
//!   Putting off every flush until the read coalesced more but cost more wake-ups: at
//!   100 writes/s to 255 agents (`bench churn --rate 100`) the apiserver took 0.56
//!   cores against 0.43.
//! - writes wait while [`MAX_PENDING`] is waiting, as a socket's own buffer would make
//!   them.
//!
//! The buffer is allocated when data comes and freed once it is written: an idle
//! connection holds none. A connection dropped with data waiting — the TLS alert that
//! tells a client why its handshake failed, say — still sends what the socket takes
//! at once.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Waiting bytes that a flush writes at once rather than putting off.
const FLUSH_AT: usize = 64 * 1024;
/// Waiting bytes beyond which writes wait for the socket.
const MAX_PENDING: usize = 256 * 1024;

/// A socket that takes bytes without a task to wake: what [`Coalesce`] writes when
/// it is dropped.
pub trait WriteNow {
    /// Writes what the socket takes now, as `write(2)` on a non-blocking socket.
    fn write_now(&self, buf: &[u8]) -> io::Result<usize>;
}

impl WriteNow for TcpStream {
    fn write_now(&self, buf: &[u8]) -> io::Result<usize> {
        self.try_write(buf)
    }
}

/// `io` with its writes coalesced (see the module).
#[derive(Debug)]
pub struct Coalesce<T: WriteNow> {
    io: T,
    pending: Vec<u8>,
    /// How much of `pending` the socket has taken.
    written: usize,
    /// A flush was put off: the next one writes.
    deferred: bool,
}

impl<T: WriteNow> Coalesce<T> {
    pub fn new(io: T) -> Self {
        Self {
            io,
            pending: Vec::new(),
            written: 0,
            deferred: false,
        }
    }

    fn waiting(&self) -> usize {
        self.pending.len() - self.written
    }
}

impl<T: AsyncWrite + WriteNow + Unpin> Coalesce<T> {
    /// Writes what waits, until all of it is written (then frees the buffer) or the
    /// socket is full (`Pending`, woken when it has room).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.deferred = false;
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Room for more: `Pending` while [`MAX_PENDING`] waits and the socket takes none.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.waiting() >= MAX_PENDING {
            match self.poll_drain(cx) {
                Poll::Ready(result) => result?,
                Poll::Pending if self.waiting() >= MAX_PENDING => return Poll::Pending,
                Poll::Pending => {}
            }
        }
        if self.written > 0 {
            // The socket took part of it: keep only the rest.
            self.pending.drain(..self.written);
            self.written = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + WriteNow + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.waiting() > 0 {
            // A put-off flush goes out here; a full socket wakes the task when it has room.
            if let Poll::Ready(Err(e)) = self.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + WriteNow + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_room(cx))?;
        self.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_room(cx))?;
        let mut n = 0;
        for buf in bufs {
            self.pending.extend_from_slice(buf);
            n += buf.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.waiting() == 0 {
            return Pin::new(&mut this.io).poll_flush(cx);
        }
        if this.waiting() < FLUSH_AT && !this.deferred {
            this.deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<T: WriteNow> Drop for Coalesce<T> {
    fn drop(&mut self) {
        while self.written < self.pending.len() {
            match self.io.write_now(&self.pending[self.written..]) {
                Ok(n) if n > 0 => self.written += n,
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::task::noop_waker_ref;

    use super::*;

    /// A socket that counts its writes and takes at most `room` bytes in all.
    #[derive(Default)]
    struct Socket {
        data: Vec<u8>,
        writes: usize,
        room: usize,
        /// What it took when its connection was dropped.
        at_drop: Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl WriteNow for Socket {
        fn write_now(&self, buf: &[u8]) -> io::Result<usize> {
            self.at_drop.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
    }

    impl AsyncRead for Socket {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Socket {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.room - self.data.len());
            if n == 0 {
                return Poll::Pending;
            }
            self.data.extend_from_slice(&buf[..n]);
            self.writes += 1;
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A waker that counts its wakes.
    struct Wakes(AtomicUsize);

    impl futures::task::ArcWake for Wakes {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn socket(room: usize) -> Coalesce<Socket> {
        Coalesce::new(Socket {
            room,
            ..Socket::default()
        })
    }

    /// Writes `record` and flushes, as rustls and HTTP/2 do per frame.
    fn write_frame(conn: &mut Coalesce<Socket>, cx: &mut Context<'_>, record: &[u8]) {
        assert!(
            matches!(Pin::new(&mut *conn).poll_write(cx, record), Poll::Ready(Ok(n)) if n == record.len())
        );
        assert!(matches!(
            Pin::new(&mut *conn).poll_flush(cx),
            Poll::Ready(Ok(()))
        ));
    }

    #[test]
    fn a_put_off_flush_goes_out_with_the_next_frame_or_at_the_next_read() {
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        let waker = futures::task::waker(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut conn = socket(usize::MAX);
        write_frame(&mut conn, &mut cx, &[0; 100]);
        assert_eq!(conn.io.writes, 0, "the first flush is put off");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "and the task woken");
        write_frame(&mut conn, &mut cx, &[1; 100]);
        assert_eq!(conn.io.writes, 1, "the next flush writes both frames");
        write_frame(&mut conn, &mut cx, &[2; 100]);
        assert_eq!(conn.io.writes, 1);
        let mut scratch = [0u8; 8];
        let mut buf = ReadBuf::new(&mut scratch);
        assert!(
            Pin::new(&mut conn)
                .poll_read(&mut cx, &mut buf)
                .is_pending()
        );
        assert_eq!(conn.io.writes, 2, "the read writes what waits");
        let expected: Vec<u8> = (0..3u8).flat_map(|i| [i; 100]).collect();
        assert_eq!(conn.io.data, expected);
        assert_eq!(
            conn.pending.capacity(),
            0,
            "an idle connection holds no buffer"
        );
    }

    #[test]
    fn a_flush_after_a_put_off_one_or_a_large_one_writes_at_once() {
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut conn = socket(usize::MAX);
        write_frame(&mut conn, &mut cx, &[1; 10]);
        assert_eq!(conn.io.writes, 0);
        assert!(Pin::new(&mut conn).poll_flush(&mut cx).is_ready());
        assert_eq!(conn.io.writes, 1, "a flush is put off once only");

        write_frame(&mut conn, &mut cx, &vec![2; FLUSH_AT]);
        assert_eq!(conn.io.writes, 2);
        assert_eq!(conn.io.data.len(), 10 + FLUSH_AT);
    }

    #[test]
    fn writes_wait_while_the_socket_is_full_and_the_buffer_too() {
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut conn = socket(0);
        let chunk = vec![7; MAX_PENDING / 4];
        for _ in 0..4 {
            assert!(Pin::new(&mut conn).poll_write(&mut cx, &chunk).is_ready());
        }
        assert!(Pin::new(&mut conn).poll_write(&mut cx, &chunk).is_pending());
        assert!(Pin::new(&mut conn).poll_flush(&mut cx).is_pending());
        conn.io.room = 1000;
        assert!(Pin::new(&mut conn).poll_write(&mut cx, &chunk).is_ready());
        assert_eq!(conn.io.data.len(), 1000, "the socket took what it could");
        conn.io.room = usize::MAX;
        assert!(Pin::new(&mut conn).poll_write(&mut cx, &chunk).is_ready());
        assert!(matches!(
            Pin::new(&mut conn).poll_shutdown(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(conn.io.data.len(), 6 * chunk.len());
    }

    #[test]
    fn a_connection_dropped_with_data_waiting_sends_it() {
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut conn = socket(usize::MAX);
        let at_drop = conn.io.at_drop.clone();
        write_frame(&mut conn, &mut cx, b"alert");
        assert_eq!(conn.io.writes, 0);
        drop(conn);
        assert_eq!(*at_drop.lock().unwrap(), b"alert");
    }
}
