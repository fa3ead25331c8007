//! A connection's socket, codec and buffers: decoding the next request (reading as needed,
//! under the frame and idle deadlines) and writing a response (under the write timeout). Like
//! hyper's `proto/h1/io.rs`, it knows bytes and deadlines; what to do with a request is the
//! request loop's business ([`serve`](super::serve)). The one thing it does with requests is
//! keep the in-flight handlers polled while a slow write waits, so their deadlines still fire.
//!
//! Reading is cancel safe: every bit of progress (bytes read, deadlines) is kept in [`Io`], so
//! the request loop polls it beside its other branches and may drop that poll at any time.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::CancellationToken;

use super::in_flight::{InFlight, poll_handlers};
use super::stats::ConnStats;
use crate::budget::{Allocation, Budget};
use crate::event::CloseReason;
use crate::protocol::Protocol;
use crate::util::deadline;

/// Spare room the read buffer keeps before a read; it grows (doubling) for larger frames.
const READ_CHUNK: usize = 2048;

/// The most spare room a connection keeps before a read. A read that fills all of the room
/// doubles it up to this (a peer that pipelines has more waiting: 16 requests of 1.2 KB take two
/// reads at this size, about ten at [`READ_CHUNK`]); it falls back to [`READ_CHUNK`] when the
/// connection goes idle. A peer that waits for each answer fills 2 KiB with no ordinary message
/// and never grows it.
const MAX_READ_CHUNK: usize = 16 * 1024;

/// The first read buffer of a connection: small, so idle connections stay small.
const FIRST_READ: usize = 64;

/// A read buffer that grew past this (for a large frame) is let go once a request is decoded
/// and nothing else is buffered, and a write buffer that did (for a large response) once the
/// response is written: a connection keeps the memory of a large message only while it is
/// handled, not until the connection closes.
const KEEP_BUFFER: usize = 64 * 1024;

/// [`KEEP_BUFFER`] under a memory budget: what the budget holds for one busy connection between
/// its frames (an idle one holds nothing).
const KEEP_BUFFER_BUDGETED: usize = 2 * MAX_READ_CHUNK;

pub(super) enum ReadEvent<R> {
    /// A request, and the draw of the read-buffer allocation its bytes live in (with
    /// `max_buffered_bytes`).
    Request(R, Option<Allocation>),
    Closed(CloseReason),
}

/// A wait for the budget to grow the read buffer to `target` bytes, kept across polls (it keeps
/// the connection's place in the budget's queue).
type Growth = (
    usize,
    Pin<Box<dyn Future<Output = OwnedSemaphorePermit> + Send>>,
);

/// The socket, its codec and its buffers.
pub(super) struct Io<P: Protocol, S> {
    pub(super) stream: S,
    codec: P::Codec,
    read_buf: BytesMut,
    /// The read buffer grew past [`KEEP_BUFFER`]: it is replaced by an empty one when it next
    /// holds nothing after a decoded request.
    large_buffer: bool,
    write_buf: BytesMut,
    /// Bytes have flowed: a read buffer let go while idle comes back at [`READ_CHUNK`], not at
    /// the first read's small size (which would take two reads and a copy per message).
    warm: bool,
    /// The size of the last frame if it outgrew [`READ_CHUNK`] (0 after an ordinary one): the
    /// next empty buffer is allocated at once at this size plus a chunk, so a connection that
    /// sends large frames one after another reads each into one allocation, not into one grown
    /// by doubling from [`READ_CHUNK`] with a copy at every step (about ten for 1 MiB). Nothing
    /// is held for it while the connection is idle.
    large_frame: usize,
    /// The spare room kept before a read: [`READ_CHUNK`], doubled up to [`MAX_READ_CHUNK`] by
    /// each read that fills it, back to [`READ_CHUNK`] when the connection goes idle.
    chunk: usize,
    eof: bool,
    /// When the last byte arrived (or the last response went out); the idle clock starts here.
    pub(super) last_activity: Instant,
    /// When the last read returned bytes: a request decoded from them arrived then.
    pub(super) last_read: Instant,
    /// Bytes read from the stream so far.
    pub(super) bytes_read: u64,
    /// Set while the connection waits for the rest of a started frame.
    frame_deadline: Option<Instant>,
    /// The read timer (frame or idle deadline), created when first needed and re-armed lazily:
    /// moving the idle deadline later on every byte costs nothing until the timer fires early.
    timer: Option<Pin<Box<Sleep>>>,
    /// The server's memory budget (`max_buffered_bytes`), if any. With one, the read buffer is
    /// reallocated by this code, at a size drawn from the budget first, never by `BytesMut`.
    budget: Option<Budget>,
    /// The draw of `read_buf`'s allocation, shared with the requests decoded from it.
    allocation: Option<Allocation>,
    /// A growth of the read buffer waiting for the budget.
    growth: Option<Growth>,
    /// Where the bytes read so far are published while a request is part-way in (a large
    /// upload shows its progress; the drain's wait for it is observable).
    progress: Option<Arc<ConnStats>>,
}

impl<P, S> Io<P, S>
where
    P: Protocol,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    /// A connection's I/O with empty buffers (allocated on first use) and its clocks at now.
    pub(super) fn new(stream: S, codec: P::Codec, budget: Option<Budget>) -> Self {
        Io {
            stream,
            codec,
            read_buf: BytesMut::new(),
            large_buffer: false,
            write_buf: BytesMut::new(),
            warm: false,
            large_frame: 0,
            chunk: READ_CHUNK,
            eof: false,
            last_activity: Instant::now(),
            last_read: Instant::now(),
            bytes_read: 0,
            frame_deadline: None,
            timer: None,
            budget,
            allocation: None,
            growth: None,
            progress: None,
        }
    }

    /// Publishes the bytes read into `stats` whenever a read leaves a request part-way in;
    /// a complete request is published by the connection itself.
    pub(super) fn report_progress_to(mut self, stats: Arc<ConnStats>) -> Self {
        self.progress = Some(stats);
        self
    }

    /// Whether a request is part-way in: bytes of it buffered, or a frame the codec started,
    /// as of the last read.
    pub(super) fn mid_request(&self) -> bool {
        self.frame_deadline.is_some()
    }

    /// Decodes the next request, reading as needed. `idle` is the idle timeout when nothing is
    /// in flight. Cancel safe: every bit of progress (bytes read, deadlines) is kept in `self`.
    ///
    /// A poll function rather than an `async fn`, so that the connection loop can poll it
    /// alongside its other branches by hand, with no future built and dropped on every turn.
    pub(super) fn poll_next_request(
        &mut self,
        protocol: &P,
        idle: Option<Duration>,
        frame_timeout: Duration,
        cx: &mut Context<'_>,
    ) -> Poll<ReadEvent<P::Request>> {
        let codec_error = |error: P::Error| {
            ReadEvent::Closed(CloseReason::Protocol {
                kind: protocol.error_kind(&error),
                detail: error.to_string(),
                offset: protocol.error_offset(&error),
            })
        };
        loop {
            if self.eof {
                return Poll::Ready(match self.codec.decode_eof(&mut self.read_buf) {
                    Ok(Some(request)) => ReadEvent::Request(request, self.allocation.clone()),
                    Ok(None) => ReadEvent::Closed(CloseReason::PeerClosed),
                    Err(error) => codec_error(error),
                });
            }
            let buffered = self.read_buf.len();
            match self.codec.decode(&mut self.read_buf) {
                Ok(Some(request)) => {
                    self.frame_deadline = None;
                    let consumed = buffered - self.read_buf.len();
                    self.large_frame = if consumed > READ_CHUNK { consumed } else { 0 };
                    if self.large_frame > 0 {
                        // Its reads filled the room because the frame was large, not because
                        // more frames wait: large frames size their buffer themselves.
                        self.chunk = READ_CHUNK;
                    }
                    // The request's bytes live in the buffer's allocation (zero copy): its draw
                    // counts until both have let it go.
                    let allocation = self.allocation.clone();
                    if self.large_buffer && self.read_buf.is_empty() {
                        // A zero-copy request keeps its own share of the allocation for as long
                        // as it is handled; the connection no longer holds any of it.
                        self.read_buf = BytesMut::new();
                        self.large_buffer = false;
                        self.allocation = None;
                    }
                    return Poll::Ready(ReadEvent::Request(request, allocation));
                }
                Ok(None) => {}
                Err(error) => return Poll::Ready(codec_error(error)),
            }
            // A frame is in progress when the codec holds its bytes in the buffer, or says so
            // itself (a codec may consume a start marker before the payload arrives).
            if self.read_buf.is_empty() && !protocol.frame_in_progress(&self.codec) {
                self.frame_deadline = None;
            } else {
                if self.frame_deadline.is_none() {
                    self.frame_deadline = Some(deadline(Instant::now(), frame_timeout));
                }
                if let Some(stats) = &self.progress {
                    stats.bytes_in.store(self.bytes_read, Ordering::Relaxed);
                }
            }
            // A connection that has never sent a byte has no buffer: the first read allocates
            // a small one (`FIRST_READ`), so idle connections stay small. Once bytes flow, the
            // buffer is allocated at `READ_CHUNK` (or at the last large frame's size), and
            // doubles for larger frames; one grown past `KEEP_BUFFER` is let go after its frame
            // (see above).
            let capacity = self.read_buf.capacity();
            let room = capacity - self.read_buf.len();
            let chunk = self.chunk_now();
            let read = if self.budget.is_some() {
                if room < chunk / 2 {
                    self.poll_grow(cx)
                } else {
                    Poll::Ready(())
                }
            } else {
                if capacity == 0 {
                    self.read_buf.reserve(self.fresh_capacity());
                    self.large_buffer = self.read_buf.capacity() > KEEP_BUFFER;
                } else if room < chunk / 2 {
                    self.read_buf.reserve(chunk.max(self.read_buf.len()));
                    self.large_buffer |= self.read_buf.capacity() > KEEP_BUFFER;
                }
                Poll::Ready(())
            };
            let spare = self.read_buf.capacity() - self.read_buf.len();
            // Without the budget's bytes for more room, nothing is read (TCP pushes back on
            // the sender); the deadlines below still run.
            let read = match read {
                Poll::Ready(()) => tokio_util::io::poll_read_buf(
                    Pin::new(&mut self.stream),
                    cx,
                    &mut self.read_buf,
                ),
                Poll::Pending => Poll::Pending,
            };
            match read {
                Poll::Ready(Ok(0)) => {
                    self.eof = true;
                    continue;
                }
                Poll::Ready(Ok(n)) => {
                    if n == spare && spare >= READ_CHUNK / 2 {
                        // More may be waiting: read more at once next time. (Not after the
                        // first read of a connection, whose small buffer any message fills.)
                        self.chunk = (self.chunk * 2).min(MAX_READ_CHUNK);
                    }
                    self.bytes_read += n as u64;
                    self.last_read = Instant::now();
                    self.last_activity = self.last_read;
                    continue;
                }
                Poll::Ready(Err(error)) => {
                    return Poll::Ready(ReadEvent::Closed(CloseReason::Io(error.to_string())));
                }
                Poll::Pending => self.release_idle_buffers(),
            }
            // Nothing to read yet: wait on the deadline that applies, if any.
            let (at, reason) = match (self.frame_deadline, idle) {
                (Some(at), _) => (at, CloseReason::FrameTimeout),
                (None, Some(idle)) => (deadline(self.last_activity, idle), CloseReason::Idle),
                (None, None) => return Poll::Pending,
            };
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if timer.deadline() > at {
                timer.as_mut().reset(at);
            }
            match timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if Instant::now() >= at => {
                    return Poll::Ready(ReadEvent::Closed(reason));
                }
                // Armed for an older, earlier deadline: re-arm and wait again.
                Poll::Ready(()) => timer.as_mut().reset(at),
            }
        }
    }

    /// The spare room to keep now: [`Self::chunk`] between frames and for small partial ones;
    /// [`READ_CHUNK`] while a frame larger than that arrives (it grows the buffer by doubling
    /// from its own length, as before any pipelining was seen).
    fn chunk_now(&self) -> usize {
        if self.read_buf.len() < READ_CHUNK {
            self.chunk
        } else {
            READ_CHUNK
        }
    }

    /// The size of a read buffer allocated where there is none: the last frame's size (and a
    /// chunk) after a large frame, [`READ_CHUNK`] once bytes have flowed, [`FIRST_READ`] on a
    /// connection that has sent nothing yet.
    fn fresh_capacity(&self) -> usize {
        if self.large_frame > 0 {
            self.large_frame + READ_CHUNK
        } else if self.warm {
            self.chunk
        } else {
            FIRST_READ
        }
    }

    /// Nothing to read and nothing buffered: lets both buffers go, so that an idle connection
    /// holds no buffer at all (about 2.2 KiB after an ordinary message). The next read
    /// allocates [`READ_CHUNK`] again: a malloc and a free per message on a busy connection,
    /// against an idle one's memory for as long as it stays open.
    fn release_idle_buffers(&mut self) {
        if self.read_buf.is_empty() && self.frame_deadline.is_none() && self.read_buf.capacity() > 0
        {
            self.read_buf = BytesMut::new();
            self.large_buffer = false;
            // Requests still being handled keep their share of the draw until they are done.
            self.allocation = None;
            self.warm = true;
            self.chunk = READ_CHUNK;
        }
        if self.write_buf.is_empty() && self.write_buf.capacity() > 0 {
            self.write_buf = BytesMut::new();
        }
    }

    /// Makes room in the read buffer, drawing it from the budget first: the buffer is
    /// reallocated here, at the size drawn, so its allocation never exceeds the budget (a
    /// `BytesMut::reserve` could double past it). Pending while the budget has not the bytes,
    /// or when the buffer is full and as large as the budget allows (the frame timeout, armed
    /// while a frame is in the buffer, ends that); ready once the buffer has room.
    fn poll_grow(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(budget) = &self.budget else {
            return Poll::Ready(());
        };
        let len = self.read_buf.len();
        let held = self.allocation.as_ref().map_or(0, |a| a.num_permits());
        let wanted = if self.read_buf.capacity() == 0 {
            self.fresh_capacity()
        } else {
            len + self.chunk_now().max(len)
        };
        // The old allocation is still drawn while the bytes are copied: both must fit.
        let target = wanted.min(budget.total().saturating_sub(held));
        if target <= len {
            // As large as the budget allows beside the old allocation: read into what is left
            // of it; when nothing is, read nothing (a read into a full `BytesMut` would grow it
            // past the budget), and let the frame timeout end the frame.
            return if self.read_buf.capacity() > len {
                Poll::Ready(())
            } else {
                Poll::Pending
            };
        }
        let permit = match &mut self.growth {
            Some((at, wait)) if *at == target => ready!(wait.as_mut().poll(cx)),
            _ => match budget.try_draw(target, held) {
                Some(permit) => permit,
                None => {
                    let mut wait: Pin<Box<dyn Future<Output = OwnedSemaphorePermit> + Send>> =
                        Box::pin(budget.draw(target, held));
                    let polled = wait.as_mut().poll(cx);
                    self.growth = Some((target, wait));
                    ready!(polled)
                }
            },
        };
        self.growth = None;
        let mut grown = BytesMut::with_capacity(target);
        grown.extend_from_slice(&self.read_buf);
        self.read_buf = grown;
        // Under a budget, a buffer is let go after its frame as soon as it grew past the size
        // of an ordinary message: an idle connection must not keep memory that others wait for.
        self.large_buffer = target > KEEP_BUFFER_BUDGETED;
        // The old allocation's draw goes with the last request that still holds a slice of it.
        self.allocation = Some(std::sync::Arc::new(permit));
        Poll::Ready(())
    }

    /// Encodes and writes one response under `timeout`; returns its encoded size. While a write
    /// waits for the peer, the handlers in `queue` are still polled, so each meets its deadline.
    pub(super) async fn write(
        &mut self,
        response: P::Response,
        protocol: &P,
        timeout: Duration,
        abort: &CancellationToken,
        queue: &mut VecDeque<InFlight<P>>,
    ) -> Result<usize, CloseReason> {
        let size = self.encode(response, protocol)?;
        self.flush(timeout, abort, queue).await.1?;
        Ok(size)
    }

    /// Encodes one response after those already waiting in the write buffer (nothing is sent
    /// until [`flush`](Self::flush)); returns its encoded size.
    pub(super) fn encode(
        &mut self,
        response: P::Response,
        protocol: &P,
    ) -> Result<usize, CloseReason> {
        let before = self.write_buf.len();
        match self.codec.encode(response, &mut self.write_buf) {
            Ok(()) => Ok(self.write_buf.len() - before),
            Err(error) => {
                // Whatever the codec wrote before failing is not a frame: it never goes out.
                self.write_buf.truncate(before);
                Err(CloseReason::Protocol {
                    kind: protocol.error_kind(&error),
                    detail: error.to_string(),
                    // An encoding error is about the response, not the inbound stream.
                    offset: None,
                })
            }
        }
    }

    /// Whether bytes read wait in the read buffer (the start of the next request, or more).
    pub(super) fn has_buffered(&self) -> bool {
        !self.read_buf.is_empty()
    }

    /// Whether encoded responses wait in the write buffer.
    pub(super) fn has_output(&self) -> bool {
        !self.write_buf.is_empty()
    }

    /// Writes every encoded response in the write buffer, in one write when the socket takes
    /// them, under `timeout`; returns how many bytes went out (all of them, unless it failed).
    /// While the write waits for the peer, the handlers in `queue` are still polled, so each
    /// meets its deadline.
    pub(super) async fn flush(
        &mut self,
        timeout: Duration,
        abort: &CancellationToken,
        queue: &mut VecDeque<InFlight<P>>,
    ) -> (usize, Result<(), CloseReason>) {
        let total = self.write_buf.len();
        let stream = &mut self.stream;
        let buf = &mut self.write_buf;
        // Most writes complete at once (the socket buffer has room): tried once first, such a
        // write never arms the timer nor touches the abort token. The buffer keeps the progress,
        // so the second attempt goes on where the first stopped.
        let first = poll_fn(|cx| Poll::Ready(poll_send(stream, buf, cx))).await;
        let result = match first {
            Poll::Ready(result) => Ok(result),
            // Boxed: the timer and the abort wait are a few hundred bytes that every
            // connection's task would otherwise carry for its whole life, for a path that only
            // a slow reader takes.
            Poll::Pending => Box::pin(send_slowly(stream, buf, timeout, abort, queue)).await,
        };
        let sent = total - self.write_buf.len();
        // What a failed write left is never sent: the connection closes.
        self.write_buf.clear();
        if self.write_buf.capacity() > KEEP_BUFFER {
            // A large response (an ACK echoes fields of its message) is not kept around for the
            // connection's life.
            self.write_buf = BytesMut::new();
        }
        let result = match result {
            Ok(Ok(())) => Ok(()),
            Err(reason) => Err(reason),
            Ok(Err(error)) if self.eof && is_disconnect(&error) => Err(CloseReason::PeerClosed),
            Ok(Err(error)) => Err(CloseReason::Io(error.to_string())),
        };
        (sent, result)
    }
}

/// Writes all of `buf` (advancing it), then flushes: a TLS stream sends its records only then.
///
/// A plain write of the one contiguous buffer, not a vectored one: `poll_write_buf` would make
/// it a `writev` of one `iovec` on a TCP stream, which costs the kernel the vector's import for
/// nothing.
fn poll_send<S: tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<()>> {
    while !buf.is_empty() {
        let written = ready!(Pin::new(&mut *stream).poll_write(cx, buf))?;
        if written == 0 {
            return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
        }
        buf.advance(written);
    }
    Pin::new(stream).poll_flush(cx)
}

/// A write failed because the peer is gone (after it half-closed, this is its full close).
fn is_disconnect(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected
    )
}

/// The rest of a write that did not complete at once: bounded by `timeout` and the abort
/// token, while the handlers in `queue` keep their deadlines running.
async fn send_slowly<P: Protocol, S: tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    timeout: Duration,
    abort: &CancellationToken,
    queue: &mut VecDeque<InFlight<P>>,
) -> Result<std::io::Result<()>, CloseReason> {
    tokio::select! {
        biased;
        result = tokio::time::timeout(timeout, poll_fn(|cx| poll_send(stream, buf, cx))) => {
            result.map_err(|_elapsed| CloseReason::WriteTimeout)
        }
        () = abort.cancelled() => Err(CloseReason::Aborted),
        // Never ready: keeps the handlers' deadlines running during a slow write.
        () = poll_fn(|cx| {
            poll_handlers(queue, cx);
            Poll::<()>::Pending
        }) => unreachable!("never ready"),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::{LinesCodec, LinesCodecError};

    use super::*;
    use crate::protocol::{ConnectionInfo, Failure};

    /// Lines in, lines out; the codec copies each line out of the read buffer, so the buffer's
    /// allocation is the connection's alone.
    struct Lines;

    impl Protocol for Lines {
        type Request = String;
        type Response = String;
        type Meta = ();
        type Error = LinesCodecError;
        type Codec = LinesCodec;

        fn codec(&self) -> LinesCodec {
            LinesCodec::new()
        }

        fn meta(&self, _request: &String) {}

        fn handle(
            &self,
            request: String,
            _meta: &(),
            _connection: &ConnectionInfo,
        ) -> impl Future<Output = Option<String>> + Unpin + Send + 'static {
            std::future::ready(Some(request))
        }

        fn on_failure(&self, _meta: &(), _failure: &Failure) -> Option<String> {
            None
        }
    }

    fn io<S>(stream: S) -> Io<Lines, S>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        Io::new(stream, Lines.codec(), None)
    }

    async fn next_line<S>(io: &mut Io<Lines, S>) -> String
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let event = poll_fn(|cx| io.poll_next_request(&Lines, None, Duration::from_secs(60), cx));
        match event.await {
            ReadEvent::Request(line, _) => line,
            ReadEvent::Closed(reason) => panic!("closed: {reason:?}"),
        }
    }

    /// One large request grows the read buffer; once it is decoded and nothing else is
    /// buffered, the connection lets that memory go: an idle connection does not keep the
    /// buffer of its largest message until it closes.
    #[tokio::test]
    async fn read_buffer_shrinks_after_a_large_request() {
        const LARGE: usize = 1 << 20;
        let (mut peer, server) = tokio::io::duplex(4 * LARGE);
        let mut io = io(server);
        let mut line = vec![b'x'; LARGE];
        line.push(b'\n');
        peer.write_all(&line).await.unwrap();
        assert_eq!(next_line(&mut io).await.len(), LARGE);
        peer.write_all(b"small\n").await.unwrap();
        assert_eq!(next_line(&mut io).await, "small");
        // What the buffer still owns without allocating: a released buffer has only a small
        // one; a kept one can take back the large request's whole allocation.
        assert!(
            !io.read_buf.try_reclaim(LARGE / 2),
            "the read buffer kept the large request's allocation"
        );
        assert!(io.read_buf.capacity() <= 2 * READ_CHUNK);
    }

    /// A large request after a large request is read into one buffer allocated at the first's
    /// size (no growth by doubling, with a copy at each step); an ordinary request after it
    /// goes back to an ordinary buffer. With and without a memory budget (two code paths).
    #[tokio::test]
    async fn a_large_request_after_a_large_one_is_read_into_one_allocation() {
        const LARGE: usize = 1 << 20;
        for budget in [None, Some(Budget::new(64 * LARGE))] {
            let (mut peer, server) = tokio::io::duplex(4 * LARGE);
            let mut io = Io::new(server, Lines.codec(), budget.clone());
            let timeout = Duration::from_secs(60);
            let mut line = vec![b'x'; LARGE];
            line.push(b'\n');
            peer.write_all(&line).await.unwrap();
            assert_eq!(next_line(&mut io).await.len(), LARGE);
            // The start of the second: the buffer it is read into has room for all of it.
            peer.write_all(&line[..1000]).await.unwrap();
            let pending = poll_fn(|cx| {
                Poll::Ready(io.poll_next_request(&Lines, None, timeout, cx).is_pending())
            })
            .await;
            assert!(pending);
            assert_eq!(io.read_buf.len(), 1000);
            assert!(
                io.read_buf.capacity() > LARGE,
                "budget {}: a {} byte buffer for a frame like the last ({LARGE} bytes)",
                budget.is_some(),
                io.read_buf.capacity()
            );
            peer.write_all(&line[1000..]).await.unwrap();
            assert_eq!(next_line(&mut io).await.len(), LARGE);
            // An ordinary request next: its successor gets an ordinary buffer again.
            peer.write_all(b"small\n").await.unwrap();
            assert_eq!(next_line(&mut io).await, "small");
            peer.write_all(b"sm").await.unwrap();
            let pending = poll_fn(|cx| {
                Poll::Ready(io.poll_next_request(&Lines, None, timeout, cx).is_pending())
            })
            .await;
            assert!(pending);
            assert!(
                io.read_buf.capacity() <= 2 * READ_CHUNK,
                "budget {}: {}",
                budget.is_some(),
                io.read_buf.capacity()
            );
        }
    }

    /// A peer that sends requests back to back fills the read room: it doubles, up to
    /// `MAX_READ_CHUNK`, so more requests come in one read. A peer that sends one at a time
    /// never fills it, and a connection that goes idle starts again from `READ_CHUNK`. With
    /// and without a memory budget (two code paths).
    #[tokio::test]
    async fn pipelined_requests_widen_the_read_room_until_idle() {
        for budget in [None, Some(Budget::new(1 << 24))] {
            let (mut peer, server) = tokio::io::duplex(1 << 20);
            let mut io = Io::new(server, Lines.codec(), budget.clone());
            let line = format!("{}\n", "x".repeat(1199));
            for _ in 0..4 {
                peer.write_all(line.as_bytes()).await.unwrap();
                assert_eq!(next_line(&mut io).await.len(), 1199);
            }
            assert_eq!(io.chunk, READ_CHUNK, "budget {}", budget.is_some());
            peer.write_all(line.repeat(64).as_bytes()).await.unwrap();
            for _ in 0..64 {
                assert_eq!(next_line(&mut io).await.len(), 1199);
            }
            assert_eq!(io.chunk, MAX_READ_CHUNK, "budget {}", budget.is_some());
            let pending = poll_fn(|cx| {
                let timeout = Duration::from_secs(60);
                Poll::Ready(io.poll_next_request(&Lines, None, timeout, cx).is_pending())
            })
            .await;
            assert!(pending);
            assert_eq!(io.chunk, READ_CHUNK, "budget {}", budget.is_some());
            assert_eq!(io.read_buf.capacity(), 0);
        }
    }

    /// Once a request was answered and nothing more arrives, the connection holds neither
    /// buffer; the next request is read whole into a buffer of `READ_CHUNK` again.
    #[tokio::test]
    async fn idle_connection_holds_no_buffer() {
        let (mut peer, server) = tokio::io::duplex(64 * 1024);
        let mut io = io(server);
        let abort = CancellationToken::new();
        let mut queue = VecDeque::new();
        let timeout = Duration::from_secs(60);
        peer.write_all(b"first\n").await.unwrap();
        assert_eq!(next_line(&mut io).await, "first");
        io.write("answer".to_owned(), &Lines, timeout, &abort, &mut queue)
            .await
            .unwrap();
        assert!(io.write_buf.capacity() > 0 && io.read_buf.capacity() > 0);
        // Nothing to read: the poll is pending, and lets both buffers go.
        let polled = std::future::poll_fn(|cx| {
            Poll::Ready(io.poll_next_request(&Lines, None, timeout, cx).is_pending())
        })
        .await;
        assert!(polled);
        assert_eq!(io.read_buf.capacity(), 0);
        assert_eq!(io.write_buf.capacity(), 0);
        let line = "x".repeat(1500);
        peer.write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(next_line(&mut io).await, line);
        // One allocation of READ_CHUNK took it (not the first read's 64 bytes, then a copy
        // into a larger one): what is left of it is the chunk less the line.
        assert_eq!(io.read_buf.capacity(), READ_CHUNK - 1501);
    }

    /// A large response is written from a buffer that then lets that memory go: the next
    /// (small) response does not find the large one's allocation still held.
    #[tokio::test]
    async fn write_buffer_shrinks_after_a_large_response() {
        const LARGE: usize = 1 << 20;
        let (mut peer, server) = tokio::io::duplex(4 * LARGE);
        let mut io = io(server);
        let abort = CancellationToken::new();
        let mut queue = VecDeque::new();
        let timeout = Duration::from_secs(60);
        let size = io
            .write("y".repeat(LARGE), &Lines, timeout, &abort, &mut queue)
            .await
            .unwrap();
        assert_eq!(size, LARGE + 1);
        io.write("small".to_owned(), &Lines, timeout, &abort, &mut queue)
            .await
            .unwrap();
        let mut received = vec![0; LARGE + 1 + 6];
        tokio::io::AsyncReadExt::read_exact(&mut peer, &mut received)
            .await
            .unwrap();
        assert!(received.ends_with(b"\nsmall\n"));
        assert!(
            !io.write_buf.try_reclaim(LARGE / 2),
            "the write buffer kept the large response's allocation"
        );
    }
}
