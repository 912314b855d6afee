//! Writing HTTP/1.1 messages: heads, chunked framing, and a write queue
//! that sends a head and its body in as few system calls as possible.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::time::SystemTime;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode, Version};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Body pieces up to this size are copied next to the head; larger ones are
/// sent from their own buffer with a vectored write.
const COPY_MAX: usize = 4096;
/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;

/// Bytes waiting to be written, in order.
#[derive(Debug, Default)]
pub struct WriteQueue {
    sealed: VecDeque<Bytes>,
    scratch: BytesMut,
    len: usize,
}

impl WriteQueue {
    /// An empty queue.
    pub fn new() -> Self {
        WriteQueue {
            sealed: VecDeque::new(),
            scratch: BytesMut::with_capacity(8 * 1024),
            len: 0,
        }
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.len + self.scratch.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append small bytes (a head, a chunk line).
    pub fn put_slice(&mut self, bytes: &[u8]) {
        self.scratch.extend_from_slice(bytes);
    }

    /// Append bytes without copying them.
    pub fn push_shared(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.seal();
            self.len += data.len();
            self.sealed.push_back(data);
        }
    }

    /// The buffer small writes go to, for encoding a head in place.
    pub fn scratch_mut(&mut self) -> &mut BytesMut {
        &mut self.scratch
    }

    /// Append body bytes, copying only small ones.
    pub fn push(&mut self, data: Bytes) {
        if data.len() <= COPY_MAX {
            self.scratch.extend_from_slice(&data);
        } else {
            self.seal();
            self.len += data.len();
            self.sealed.push_back(data);
        }
    }

    /// Append one chunk of a chunked body.
    pub fn push_chunk(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        write_hex(&mut self.scratch, data.len());
        self.scratch.extend_from_slice(b"\r\n");
        self.push(data);
        self.put_slice(b"\r\n");
    }

    /// Append the end of a chunked body, with trailers if any.
    pub fn push_last_chunk(&mut self, trailers: Option<&HeaderMap>) {
        self.put_slice(b"0\r\n");
        if let Some(trailers) = trailers {
            write_fields(&mut self.scratch, trailers);
        }
        self.put_slice(b"\r\n");
    }

    fn seal(&mut self) {
        if !self.scratch.is_empty() {
            let bytes = self.scratch.split().freeze();
            self.len += bytes.len();
            self.sealed.push_back(bytes);
        }
    }

    /// Write everything queued to `w`.
    pub async fn flush<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> io::Result<()> {
        if self.sealed.is_empty() {
            // Common case: one contiguous buffer.
            if !self.scratch.is_empty() {
                w.write_all(&self.scratch).await?;
                self.scratch.clear();
            }
            return Ok(());
        }
        self.seal();
        while !self.sealed.is_empty() {
            let n = {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut count = 0;
                for (slot, b) in slices.iter_mut().zip(&self.sealed) {
                    *slot = IoSlice::new(b);
                    count += 1;
                }
                w.write_vectored(&slices[..count]).await?
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.len -= n;
            let mut left = n;
            while left > 0 {
                let front = self.sealed.front_mut().expect("written bytes were queued");
                if front.len() <= left {
                    left -= front.len();
                    self.sealed.pop_front();
                } else {
                    front.advance(left);
                    left = 0;
                }
            }
        }
        Ok(())
    }
}

/// Append `name: value\r\n` for every field.
pub fn write_fields(out: &mut BytesMut, headers: &HeaderMap) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Append a status line.
pub fn write_status_line(out: &mut BytesMut, version: Version, status: StatusCode) {
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Append a request line for HTTP/1.1.
pub fn write_request_line(out: &mut BytesMut, method: &Method, target: &str) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
}

/// Append a number in lower-case hexadecimal (a chunk size).
pub fn write_hex(out: &mut BytesMut, n: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Append a decimal number.
pub fn write_decimal(out: &mut BytesMut, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

thread_local! {
    static DATE: std::cell::RefCell<(u64, [u8; 29])> = const { std::cell::RefCell::new((0, [0; 29])) };
}

/// The current time as an IMF-fixdate (RFC 9110 §5.6.7), formatted at most once a second per thread.
pub fn http_date() -> [u8; 29] {
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs || cached.1[0] == 0 {
            let text = httpdate::fmt_http_date(now);
            let bytes = text.as_bytes();
            if bytes.len() == 29 {
                cached.1.copy_from_slice(bytes);
                cached.0 = secs;
            }
        }
        cached.1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queue_keeps_order_across_copies_and_big_buffers() {
        let mut q = WriteQueue::new();
        q.put_slice(b"HEAD\r\n");
        q.push(Bytes::from_static(b"small"));
        let big = Bytes::from(vec![b'x'; COPY_MAX + 1]);
        q.push_chunk(big.clone());
        q.push_last_chunk(None);
        let mut out = Vec::new();
        q.flush(&mut out).await.expect("flush");
        let mut want = b"HEAD\r\nsmall".to_vec();
        want.extend_from_slice(format!("{:x}\r\n", big.len()).as_bytes());
        want.extend_from_slice(&big);
        want.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(out, want);
        assert!(q.is_empty());
    }

    #[test]
    fn lines_and_numbers() {
        let mut out = BytesMut::new();
        write_status_line(&mut out, Version::HTTP_11, StatusCode::BAD_GATEWAY);
        write_request_line(&mut out, &Method::POST, "/x?y");
        write_decimal(&mut out, 0);
        write_hex(&mut out, 0x1f0a);
        write_decimal(&mut out, 18_446_744_073_709_551_615);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 502 Bad Gateway\r\nPOST /x?y HTTP/1.1\r\n01f0a18446744073709551615"
        );
        assert_eq!(http_date().len(), 29);
    }
}
