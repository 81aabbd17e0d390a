//! The tail of a plugin's stderr, kept per instance for the call in progress: when a call
//! traps, its last lines become part of the deny reason. That is where a Rust panic's
//! message goes before the abort, and a Python or JavaScript exception's traceback; a bare
//! wasm backtrace through an interpreter's runtime says nothing to the plugin's author.
//!
//! Bounded (the last [`CAPACITY`] bytes) and never refusing a write, so that a plugin
//! printing in a loop neither grows the host's memory nor fails on its own output.
//! Nothing else of stderr is kept or logged: outside a trap it is discarded, as stdout is.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept: a traceback's last frames and its message.
pub const CAPACITY: usize = 2048;

/// Characters of the tail that go into a deny reason.
const REASON_CHARS: usize = 400;

/// One instance's stderr. Clones share the buffer.
#[derive(Clone, Default)]
pub struct StderrTail(Arc<Mutex<VecDeque<u8>>>);

impl StderrTail {
    fn push(&self, bytes: &[u8]) {
        let mut buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = &bytes[bytes.len().saturating_sub(CAPACITY)..];
        let overflow = (buf.len() + bytes.len()).saturating_sub(CAPACITY);
        buf.drain(..overflow);
        buf.extend(bytes);
    }

    /// Forget what the previous call wrote.
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The last lines written since [`StderrTail::clear`], as one line for a deny reason:
    /// non-empty lines joined by ` | `, control characters escaped, at most
    /// [`REASON_CHARS`] characters (the end kept: an exception's message comes last).
    /// `None` when nothing was written.
    pub fn summary(&self) -> Option<String> {
        let buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let bytes: Vec<u8> = buf.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        let joined = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" | ");
        let escaped: String = joined
            .chars()
            .flat_map(|c| {
                let escaped: Vec<char> = if c.is_control() {
                    c.escape_default().collect()
                } else {
                    vec![c]
                };
                escaped
            })
            .collect();
        let chars: Vec<char> = escaped.chars().collect();
        match chars.len() {
            0 => None,
            n if n <= REASON_CHARS => Some(escaped),
            n => Some(format!(
                "…{}",
                chars[n - REASON_CHARS..].iter().collect::<String>()
            )),
        }
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Any amount: the tail drops what does not fit.
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_escaped_and_bounded() {
        let tail = StderrTail::default();
        assert_eq!(tail.summary(), None);
        tail.push(b"Traceback (most recent call last):\n  File \"app.py\", line 9\n\n");
        tail.push(b"KeyError: 'x\x1b[31m'\n");
        assert_eq!(
            tail.summary().as_deref(),
            Some(
                "Traceback (most recent call last): | File \"app.py\", line 9 | \
                 KeyError: 'x\\u{1b}[31m'"
            )
        );
        tail.clear();
        assert_eq!(tail.summary(), None);
        // A flood keeps only the end, and a reason only its last characters.
        for i in 0..10_000 {
            tail.push(format!("line {i}\n").as_bytes());
        }
        assert!(tail.0.lock().unwrap().len() <= CAPACITY);
        let s = tail.summary().unwrap();
        assert!(s.starts_with('…') && s.ends_with("line 9999"), "{s}");
        assert_eq!(s.chars().count(), REASON_CHARS + 1);
    }
}
