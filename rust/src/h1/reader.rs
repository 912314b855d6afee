//! Reading one message body off a connection: decode what is buffered,
//! read more when the decoder needs it, and give up when the peer stalls.
//! Shared by request bodies (client side) and response bodies (upstream side).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use tokio::io::AsyncRead;
use tokio_util::io::poll_read_buf;

use super::decode::{DecodeError, Decoded, Decoder};
use crate::timer::IdleTimer;

/// A connection's read side as a body sees it.
pub(crate) trait Source {
    /// The read buffer, and whether the peer has closed.
    fn buffered(&mut self) -> (&mut BytesMut, bool);
    /// Read more into the buffer; `Ok(0)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>>;
}

/// Free space below which a read first makes room for this much more.
const READ_CHUNK: usize = 16 * 1024;

/// Read what `io` has into `buf`, noting end of stream in `eof`.
pub(crate) fn poll_fill<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    eof: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_CHUNK);
    }
    let n = ready!(poll_read_buf(Pin::new(io), cx, buf))?;
    if n == 0 {
        *eof = true;
    }
    Poll::Ready(Ok(n))
}

/// Why a body could not be read to its end.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Malformed or truncated framing.
    Decode(DecodeError),
    /// The connection failed.
    Io(io::Error),
    /// Nothing arrived for the idle timer's period.
    Idle,
}

/// The next frame of a body (`None` at its end). `before_read` runs each
/// time the decoder has to wait for the peer.
pub(crate) fn poll_frame<S: Source>(
    decoder: &mut Decoder,
    source: &mut S,
    timer: &mut IdleTimer,
    cx: &mut Context<'_>,
    mut before_read: impl FnMut(),
) -> Poll<Result<Option<Frame<Bytes>>, ReadError>> {
    loop {
        let (buf, eof) = source.buffered();
        match decoder.decode(buf, eof) {
            Ok(Decoded::Data(data)) => {
                timer.progress();
                return Poll::Ready(Ok(Some(Frame::data(data))));
            }
            Ok(Decoded::Trailers(t)) => return Poll::Ready(Ok(Some(Frame::trailers(t)))),
            Ok(Decoded::Done) => return Poll::Ready(Ok(None)),
            Ok(Decoded::NeedMore) => {}
            Err(e) => return Poll::Ready(Err(ReadError::Decode(e))),
        }
        before_read();
        match source.poll_fill(cx) {
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(ReadError::Io(e))),
            Poll::Pending => {
                return if timer.poll_expired(cx) {
                    Poll::Ready(Err(ReadError::Idle))
                } else {
                    Poll::Pending
                };
            }
        }
    }
}
