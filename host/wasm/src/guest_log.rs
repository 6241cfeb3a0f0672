//! Guest stdout/stderr as capped, tagged log lines.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// One guest output stream. Complete lines become `tracing` events with the
/// operator's name and the stream; once the instance's byte budget (shared
/// by stdout and stderr) is spent, further output is dropped with a single
/// warning. The last stderr line is kept to explain a trap.
#[derive(Clone)]
pub(crate) struct GuestLog {
    stream: &'static str,
    shared: Arc<Mutex<LogState>>,
}

pub(crate) struct LogState {
    operator: Arc<str>,
    budget: usize,
    capped: bool,
    partial: Vec<u8>,
    last_stderr: Option<String>,
}

impl GuestLog {
    /// A stdout and a stderr sharing one budget.
    pub(crate) fn pair(operator: Arc<str>, budget: usize) -> (GuestLog, GuestLog) {
        let shared = Arc::new(Mutex::new(LogState {
            operator,
            budget,
            capped: false,
            partial: Vec::new(),
            last_stderr: None,
        }));
        (
            GuestLog {
                stream: "stdout",
                shared: shared.clone(),
            },
            GuestLog {
                stream: "stderr",
                shared,
            },
        )
    }

    /// The last line the guest wrote to stderr (a panic message, usually).
    pub(crate) fn last_stderr(&self) -> Option<String> {
        let state = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        state.last_stderr.clone().or_else(|| {
            (!state.partial.is_empty())
                .then(|| String::from_utf8_lossy(&state.partial).into_owned())
        })
    }

    fn accept(&self, bytes: &[u8]) {
        let mut state = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = bytes.len().min(state.budget);
        state.budget -= kept;
        if kept < bytes.len() && !state.capped {
            state.capped = true;
            tracing::warn!(
                operator = %state.operator,
                stream = self.stream,
                "guest output exceeds its cap (max_log_kb); the rest is dropped"
            );
        }
        state.partial.extend_from_slice(&bytes[..kept]);
        while let Some(end) = state.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = state.partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            tracing::info!(operator = %state.operator, stream = self.stream, "{line}");
            if self.stream == "stderr" {
                state.last_stderr = Some(line);
            }
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestLog {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.accept(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.accept(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
