//! Per-operator resource limits and the memory limiter that enforces them.

use std::time::Duration;

/// What one operator instance may use. Defaults suit a typical operator;
/// the pipeline file overrides them per operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU deadline of one call (`timeout_ms`).
    pub timeout: Duration,
    /// Linear memory cap of one instance, bytes (`memory_mb`).
    pub memory_bytes: usize,
    /// Cap on the bytes one call may return (`max_output_mb`).
    pub max_output_bytes: usize,
    /// Cap on guest stdout+stderr turned into log lines, bytes per instance
    /// (`max_log_kb`).
    pub max_log_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(5),
            memory_bytes: 256 << 20,
            max_output_bytes: 64 << 20,
            max_log_bytes: 64 << 10,
        }
    }
}

impl Limits {
    /// Defaults overridden by whichever settings are given.
    pub fn with_overrides(
        timeout_ms: Option<u64>,
        memory_mb: Option<u64>,
        max_output_mb: Option<u64>,
        max_log_kb: Option<u64>,
    ) -> Self {
        let d = Limits::default();
        let mib = |v: u64| usize::try_from(v.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        Limits {
            timeout: timeout_ms.map_or(d.timeout, Duration::from_millis),
            memory_bytes: memory_mb.map_or(d.memory_bytes, mib),
            max_output_bytes: max_output_mb.map_or(d.max_output_bytes, mib),
            max_log_bytes: max_log_kb.map_or(d.max_log_bytes, |kb| {
                usize::try_from(kb.saturating_mul(1 << 10)).unwrap_or(usize::MAX)
            }),
        }
    }
}

/// Enforces [`Limits::memory_bytes`] and remembers a refused growth, so a
/// guest that aborts after an allocation failure is reported as having hit
/// its memory cap rather than as an anonymous trap.
#[derive(Debug)]
pub(crate) struct MemoryCap {
    pub(crate) cap: usize,
    pub(crate) refused: Option<usize>,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.refused = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}
