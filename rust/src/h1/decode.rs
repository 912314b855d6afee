//! Incremental HTTP/1.1 body decoding: Content-Length, chunked (strict
//! RFC 9112 §7.1) and close-delimited.
//!
//! The decoder works on the connection's read buffer and hands out frames
//! that share its memory (no copies). Chunked framing is strict: a chunk size
//! is 1–16 hex digits, extensions may follow only after `;`, and every line
//! ends in CRLF. A bare LF, a space after the size, or an oversized number is
//! an error, because those are exactly the places where two parsers disagree.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use super::parse::Framing;

/// Longest chunk line (size and extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;

/// One step of decoding.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The trailer section of a chunked body.
    Trailers(HeaderMap),
    /// The body is complete.
    Done,
    /// More bytes must be read first.
    NeedMore,
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The framing is malformed.
    Invalid,
    /// The connection ended before the body did.
    Truncated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size { size: u64, digits: u8, line: usize },
    Ws { size: u64, line: usize },
    Ext { size: u64, line: usize },
    SizeLf { size: u64 },
    Data(u64),
    DataCr,
    DataLf,
    Trailers,
    TrailersDone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunk),
    Close,
    Done,
}

/// Decodes one message body from a read buffer.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
}

impl Decoder {
    /// A decoder for a body delimited as `framing`.
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Size {
                size: 0,
                digits: 0,
                line: 0,
            }),
            Framing::Close => State::Close,
        };
        Decoder { state }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes still expected, when the framing says.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// Decode the next step from `buf`. `eof` says the peer has closed.
    pub fn decode(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Decoded, DecodeError> {
        match self.state {
            State::Done => Ok(Decoded::Done),
            State::Length(rem) => {
                if buf.is_empty() {
                    return if eof {
                        Err(DecodeError::Truncated)
                    } else {
                        Ok(Decoded::NeedMore)
                    };
                }
                let n = usize::try_from(rem).unwrap_or(usize::MAX).min(buf.len());
                let rem = rem - n as u64;
                self.state = if rem == 0 {
                    State::Done
                } else {
                    State::Length(rem)
                };
                Ok(Decoded::Data(buf.split_to(n).freeze()))
            }
            State::Close => {
                if !buf.is_empty() {
                    Ok(Decoded::Data(buf.split().freeze()))
                } else if eof {
                    self.state = State::Done;
                    Ok(Decoded::Done)
                } else {
                    Ok(Decoded::NeedMore)
                }
            }
            State::Chunked(chunk) => {
                let out = self.decode_chunked(chunk, buf)?;
                if out == Decoded::NeedMore && eof {
                    return Err(DecodeError::Truncated);
                }
                Ok(out)
            }
        }
    }

    fn decode_chunked(
        &mut self,
        mut st: Chunk,
        buf: &mut BytesMut,
    ) -> Result<Decoded, DecodeError> {
        use DecodeError::Invalid;
        loop {
            if let Chunk::Data(rem) = st {
                if buf.is_empty() {
                    self.state = State::Chunked(st);
                    return Ok(Decoded::NeedMore);
                }
                let n = usize::try_from(rem).unwrap_or(usize::MAX).min(buf.len());
                let rem = rem - n as u64;
                self.state = State::Chunked(if rem == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data(rem)
                });
                return Ok(Decoded::Data(buf.split_to(n).freeze()));
            }
            if st == Chunk::Trailers {
                return self.decode_trailers(buf);
            }
            if st == Chunk::TrailersDone {
                self.state = State::Done;
                return Ok(Decoded::Done);
            }
            let Some(&b) = buf.first() else {
                self.state = State::Chunked(st);
                return Ok(Decoded::NeedMore);
            };
            buf.advance(1);
            st = match st {
                Chunk::Size { size, digits, line } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits == 16 {
                            return Err(Invalid);
                        }
                        Chunk::Size {
                            size: size << 4 | hex_value(b),
                            digits: digits + 1,
                            line: line + 1,
                        }
                    }
                    _ if digits == 0 => return Err(Invalid),
                    b'\r' => Chunk::SizeLf { size },
                    b';' => Chunk::Ext {
                        size,
                        line: line + 1,
                    },
                    b' ' | b'\t' => Chunk::Ws {
                        size,
                        line: line + 1,
                    },
                    _ => return Err(Invalid),
                },
                Chunk::Ws { size, line } => match b {
                    b' ' | b'\t' if line < MAX_CHUNK_LINE => Chunk::Ws {
                        size,
                        line: line + 1,
                    },
                    b';' => Chunk::Ext {
                        size,
                        line: line + 1,
                    },
                    _ => return Err(Invalid),
                },
                Chunk::Ext { size, line } => match b {
                    b'\r' => Chunk::SizeLf { size },
                    b'\t' | b' '..=b'~' | 0x80..=0xff if line < MAX_CHUNK_LINE => Chunk::Ext {
                        size,
                        line: line + 1,
                    },
                    _ => return Err(Invalid),
                },
                Chunk::SizeLf { size } => match b {
                    b'\n' if size == 0 => Chunk::Trailers,
                    b'\n' => Chunk::Data(size),
                    _ => return Err(Invalid),
                },
                Chunk::DataCr => match b {
                    b'\r' => Chunk::DataLf,
                    _ => return Err(Invalid),
                },
                Chunk::DataLf => match b {
                    b'\n' => Chunk::Size {
                        size: 0,
                        digits: 0,
                        line: 0,
                    },
                    _ => return Err(Invalid),
                },
                Chunk::Data(_) | Chunk::Trailers | Chunk::TrailersDone => {
                    unreachable!("handled before reading a byte")
                }
            };
        }
    }

    fn decode_trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, DecodeError> {
        if buf.len() < 2 {
            self.state = State::Chunked(Chunk::Trailers);
            return Ok(Decoded::NeedMore);
        }
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            self.state = State::Done;
            return Ok(Decoded::Done);
        }
        let Some(end) = find(buf, b"\r\n\r\n") else {
            if buf.len() > MAX_TRAILERS {
                return Err(DecodeError::Invalid);
            }
            self.state = State::Chunked(Chunk::Trailers);
            return Ok(Decoded::NeedMore);
        };
        if end + 4 > MAX_TRAILERS {
            return Err(DecodeError::Invalid);
        }
        let section = buf.split_to(end + 4).freeze();
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let parsed = match httparse::parse_headers(&section, &mut fields) {
            Ok(httparse::Status::Complete((_, fields))) => fields,
            _ => return Err(DecodeError::Invalid),
        };
        let mut map = HeaderMap::new();
        for f in parsed {
            let name =
                HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| DecodeError::Invalid)?;
            let value = HeaderValue::from_bytes(f.value).map_err(|_| DecodeError::Invalid)?;
            map.append(name, value);
        }
        self.state = State::Chunked(Chunk::TrailersDone);
        Ok(Decoded::Trailers(map))
    }
}

fn hex_value(b: u8) -> u64 {
    u64::from(match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode all of `input` fed in pieces of `step` bytes.
    fn run(
        framing: Framing,
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Option<HeaderMap>), DecodeError> {
        let mut dec = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut trailers = None;
        let mut fed = 0;
        loop {
            let eof = fed >= input.len();
            match dec.decode(&mut buf, eof)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::Done => return Ok((body, trailers)),
                Decoded::NeedMore => {
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunked_in_any_split() {
        let input = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n";
        for step in 1..input.len() {
            let (body, trailers) = run(Framing::Chunked, input, step).expect("valid");
            assert_eq!(body, b"hello world", "step {step}");
            let t = trailers.expect("trailers");
            assert_eq!(t["x-sum"], "1");
        }
        let (body, t) = run(Framing::Chunked, b"A\r\n0123456789\r\n0\r\n\r\n", 3).expect("valid");
        assert_eq!(body, b"0123456789");
        assert!(t.is_none());
    }

    #[test]
    fn chunked_errors() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"-5\r\n",
            b"0x5\r\n",
            b"11111111111111111\r\n",
            b"5;a\0b\r\n",
        ] {
            assert_eq!(
                run(Framing::Chunked, bad, 64).map(|_| ()),
                Err(DecodeError::Invalid),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            run(Framing::Chunked, b"5\r\nhel", 64).map(|_| ()),
            Err(DecodeError::Truncated)
        );
        let big = format!("1;{}\r\n", "e".repeat(MAX_CHUNK_LINE + 10));
        assert_eq!(
            run(Framing::Chunked, big.as_bytes(), 100).map(|_| ()),
            Err(DecodeError::Invalid)
        );
    }

    #[test]
    fn length_and_close() {
        let (body, _) = run(Framing::Length(5), b"hello", 2).expect("ok");
        assert_eq!(body, b"hello");
        assert_eq!(
            run(Framing::Length(6), b"hello", 2).map(|_| ()),
            Err(DecodeError::Truncated)
        );
        let (body, _) = run(Framing::Close, b"until close", 4).expect("ok");
        assert_eq!(body, b"until close");
        let mut dec = Decoder::new(Framing::Length(3));
        let mut buf = BytesMut::from(&b"abcNEXT"[..]);
        assert_eq!(
            dec.decode(&mut buf, false),
            Ok(Decoded::Data(Bytes::from_static(b"abc")))
        );
        assert!(dec.is_done());
        assert_eq!(&buf[..], b"NEXT");
    }
}
