//! Keyed event-time windows: which windows an event belongs to, and the
//! operator that keeps their contents in host state and fires them when the
//! watermark passes their end.
//!
//! The window *function* is the user's logic (a WASM component, or native
//! code in tests and benchmarks): either an incremental aggregate, whose
//! accumulators the host stores, or a whole-window function that gets all
//! of a window's events when it fires.

mod local;
mod operator;
mod slices;
mod timers;

pub(crate) use local::LocalAggregate;
pub use operator::{WindowError, WindowOperator, WindowOutput};

use serde::Deserialize;

use crate::operator::OperatorFailure;

/// `window = { type = …, … }` on an operator.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowSpec {
    /// Fixed-size, non-overlapping windows aligned to the epoch.
    Tumbling {
        /// Window length.
        size_ms: u64,
    },
    /// Fixed-size windows starting every `slide_ms` (hopping windows); an
    /// event belongs to `size_ms / slide_ms` of them.
    Sliding {
        /// Window length.
        size_ms: u64,
        /// Distance between window starts.
        slide_ms: u64,
    },
    /// Per key, a window that grows while events keep arriving less than
    /// `gap_ms` apart; a bridging event merges two sessions.
    Session {
        /// Inactivity that closes a session.
        gap_ms: u64,
    },
}

impl WindowSpec {
    /// Checks the sizes.
    ///
    /// # Errors
    /// A zero size, gap or slide, or a slide that does not divide the size.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            WindowSpec::Tumbling { size_ms: 0 } => Err("window size_ms must be > 0".into()),
            WindowSpec::Sliding { size_ms, slide_ms } if size_ms == 0 || slide_ms == 0 => {
                Err("window size_ms and slide_ms must be > 0".into())
            }
            WindowSpec::Sliding { size_ms, slide_ms } if size_ms % slide_ms != 0 => Err(format!(
                "sliding window size_ms ({size_ms}) must be a multiple of slide_ms ({slide_ms})"
            )),
            WindowSpec::Session { gap_ms: 0 } => Err("session gap_ms must be > 0".into()),
            _ => Ok(()),
        }
    }

    /// Calls `each` with every window of this (non-session) kind that
    /// contains `timestamp`; a session spec gives the event's own
    /// `[timestamp, timestamp + gap)`, to be merged.
    pub fn assign(&self, timestamp: i64, mut each: impl FnMut(Window)) {
        let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        match *self {
            WindowSpec::Tumbling { size_ms } => {
                let start = timestamp - timestamp.rem_euclid(ms(size_ms));
                each(Window::new(start, start.saturating_add(ms(size_ms))));
            }
            WindowSpec::Sliding { size_ms, slide_ms } => {
                let (size, slide) = (ms(size_ms), ms(slide_ms));
                let last_start = timestamp - timestamp.rem_euclid(slide);
                let mut start = last_start;
                while start > timestamp - size {
                    each(Window::new(start, start.saturating_add(size)));
                    start -= slide;
                }
            }
            WindowSpec::Session { gap_ms } => {
                each(Window::new(timestamp, timestamp.saturating_add(ms(gap_ms))));
            }
        }
    }
}

/// How tumbling and sliding windows keep their state: per **slice** of
/// `slice` ms, a window of `size` ms being `size / slice` consecutive slices
/// (the slice sharing of Flink's SQL window aggregation). An event is
/// stored once, in its slice, instead of once per window that contains it;
/// a sliding window is assembled from its slices when it fires. A tumbling
/// window is its own slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slicing {
    slice: i64,
    size: i64,
}

impl Slicing {
    /// The slicing of a validated tumbling or sliding spec; `None` for
    /// sessions.
    pub(crate) fn of(spec: &WindowSpec) -> Option<Slicing> {
        let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX).max(1);
        match *spec {
            WindowSpec::Tumbling { size_ms } => Some(Slicing {
                slice: ms(size_ms),
                size: ms(size_ms),
            }),
            WindowSpec::Sliding { size_ms, slide_ms } => Some(Slicing {
                slice: ms(slide_ms),
                size: ms(size_ms),
            }),
            WindowSpec::Session { .. } => None,
        }
    }

    /// True when a window is one slice (tumbling windows).
    pub(crate) fn whole(&self) -> bool {
        self.slice == self.size
    }

    /// Whether `unit` has the length of this slicing's slices.
    pub(crate) fn is_slice(&self, unit: &Window) -> bool {
        unit.end.saturating_sub(unit.start) == self.slice
    }

    /// The slice holding `timestamp`.
    pub(crate) fn slice_of(&self, timestamp: i64) -> Window {
        let start = timestamp - timestamp.rem_euclid(self.slice);
        Window::new(start, start.saturating_add(self.slice))
    }

    /// The slice holding `timestamp`, trying `last` (the slice found
    /// before) first: a batch's events mostly share one, and the division
    /// is then skipped.
    pub(crate) fn slice_near(&self, timestamp: i64, last: Window) -> Window {
        if last.start <= timestamp && timestamp < last.end {
            last
        } else {
            self.slice_of(timestamp)
        }
    }

    /// The windows that contain `slice`, earliest first.
    pub(crate) fn windows(&self, slice: &Window) -> impl Iterator<Item = Window> + use<> {
        let (step, size, first_end) = (self.slice, self.size, slice.end);
        (0..size / step).map(move |k| {
            let end = first_end.saturating_add(k * step);
            Window::new(end.saturating_sub(size), end)
        })
    }

    /// The first window that contains `slice` (the first of
    /// [`Self::windows`], without its division): it fires first.
    pub(crate) fn first_window(&self, slice: &Window) -> Window {
        Window::new(slice.end.saturating_sub(self.size), slice.end)
    }

    /// The slice just before `slice`. It is in every window of `slice` but
    /// the last.
    pub(crate) fn previous(&self, slice: &Window) -> Window {
        Window::new(slice.start.saturating_sub(self.slice), slice.start)
    }

    /// The last window that contains `slice`: it fires last, so the slice
    /// is needed until that window is cleaned up.
    pub(crate) fn last_window(&self, slice: &Window) -> Window {
        Window::new(slice.start, slice.start.saturating_add(self.size))
    }

    /// The slices `window` is made of, in time order.
    pub(crate) fn slices(&self, window: &Window) -> impl Iterator<Item = Window> + use<> {
        let (step, start) = (self.slice, window.start);
        let count = window.end.saturating_sub(window.start) / step;
        (0..count).map(move |k| {
            let from = start.saturating_add(k * step);
            Window::new(from, from.saturating_add(step))
        })
    }
}

/// A window: `[start, end)` in event-time milliseconds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Window {
    /// First millisecond in the window.
    pub start: i64,
    /// First millisecond after the window.
    pub end: i64,
}

impl Window {
    /// `[start, end)`.
    pub fn new(start: i64, end: i64) -> Self {
        Window { start, end }
    }

    /// The last timestamp in the window; it fires when the watermark
    /// reaches this.
    pub fn max_timestamp(&self) -> i64 {
        self.end - 1
    }

    /// Whether two session windows overlap or touch (Flink merges both).
    pub fn intersects(&self, other: &Window) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// The smallest window covering both.
    pub fn cover(&self, other: &Window) -> Window {
        Window::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// What a window function keeps per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionKind {
    /// An accumulator, updated by `add` and `merge` (Flink's
    /// `AggregateFunction`).
    Aggregate,
    /// Every event; the function sees them all when the window fires
    /// (Flink's `ProcessWindowFunction`).
    WholeWindow,
}

/// The user's window logic, in the buffer formats of
/// `weir_batch::window`. Mirrors the WIT `aggregate` and `window`
/// interfaces.
pub trait WindowFunction: Send {
    /// The operator's name from the pipeline file.
    fn name(&self) -> &str;

    /// What the host keeps per window.
    fn kind(&self) -> FunctionKind;

    /// Folds events into accumulators (aggregate only). `accumulators` are
    /// slots, one per group, empty for a new group; `assignments` holds
    /// pairs `(event index, group index)` in event order. Returns one
    /// accumulator per group.
    ///
    /// # Errors
    /// The function failed; the host then keeps the state it had before.
    fn add(
        &mut self,
        accumulators: &[u8],
        events: &[u8],
        assignments: &[u32],
    ) -> Result<Vec<u8>, OperatorFailure>;

    /// Merges accumulators pairwise, `left[i]` with `right[i]` (aggregate
    /// only): joined sessions, and a sliding window's slices (`left` the
    /// earlier).
    ///
    /// # Errors
    /// The function failed.
    fn merge(&mut self, left: &[u8], right: &[u8]) -> Result<Vec<u8>, OperatorFailure>;

    /// Turns fired windows (payload: the accumulator, or the window's
    /// events as a batch) into output events.
    ///
    /// # Errors
    /// The function failed.
    fn fire(&mut self, windows: &[u8]) -> Result<Vec<u8>, OperatorFailure>;

    /// Whether [`Self::fire_slices`] is there: a sliding window is then
    /// fired in one call with its slices' accumulators, not assembled by
    /// rounds of [`Self::merge`] first (aggregate only).
    fn fires_slices(&self) -> bool {
        false
    }

    /// Turns fired windows whose payload is a slots buffer (the window's
    /// slice accumulators, earliest first, at least one, none empty) into
    /// output events: the slices merged in order, then what
    /// [`Self::fire`] does. Called only when [`Self::fires_slices`].
    ///
    /// # Errors
    /// The function failed; by default, it has no such call.
    fn fire_slices(&mut self, windows: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        let _ = windows;
        Err(OperatorFailure {
            kind: crate::operator::FailureKind::Reported,
            message: format!("`{}` cannot fire a window from its slices", self.name()),
            event_index: None,
            output_before: Vec::new(),
        })
    }

    /// A second instance of the same function, with the same config, for
    /// the sending side of two-phase aggregation (see `local.rs`). `None`
    /// (the default): the function cannot be copied, and its stage
    /// aggregates in one phase.
    ///
    /// # Errors
    /// The copy could not be started.
    fn fork(&self) -> Option<Result<Box<dyn WindowFunction>, OperatorFailure>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(spec: WindowSpec, ts: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        spec.assign(ts, |w| out.push((w.start, w.end)));
        out
    }

    #[test]
    fn tumbling_and_sliding_windows_contain_their_events() {
        let t = WindowSpec::Tumbling { size_ms: 10 };
        assert_eq!(windows(t, 0), [(0, 10)]);
        assert_eq!(windows(t, 19), [(10, 20)]);
        assert_eq!(windows(t, -1), [(-10, 0)]);
        let s = WindowSpec::Sliding {
            size_ms: 10,
            slide_ms: 5,
        };
        assert_eq!(windows(s, 12), [(10, 20), (5, 15)]);
        assert_eq!(windows(s, 10), [(10, 20), (5, 15)]);
        assert_eq!(windows(s, 9), [(5, 15), (0, 10)]);
        let q5 = WindowSpec::Sliding {
            size_ms: 10_000,
            slide_ms: 2_000,
        };
        assert_eq!(windows(q5, 12_345).len(), 5);
    }

    #[test]
    fn a_sliding_window_is_its_slices_and_a_slice_is_in_its_windows() {
        let q5 = WindowSpec::Sliding {
            size_ms: 10_000,
            slide_ms: 2_000,
        };
        let slicing = Slicing::of(&q5).unwrap();
        assert!(!slicing.whole());
        let slice = slicing.slice_of(12_345);
        assert_eq!(slice, Window::new(12_000, 14_000));
        // The windows holding the slice are the windows holding any of its
        // timestamps.
        let mut assigned = Vec::new();
        q5.assign(12_345, |w| assigned.push(w));
        assigned.reverse();
        let holding: Vec<Window> = slicing.windows(&slice).collect();
        assert_eq!(holding, assigned);
        assert_eq!(slicing.last_window(&slice), *holding.last().unwrap());
        assert_eq!(slicing.first_window(&slice), holding[0]);
        for window in holding {
            let slices: Vec<Window> = slicing.slices(&window).collect();
            assert_eq!(slices.len(), 5);
            assert!(slices.contains(&slice));
            assert_eq!((slices[0].start, slices[4].end), (window.start, window.end));
        }
        assert_eq!(slicing.slice_of(-1), Window::new(-2_000, 0));
        // The last slice found is reused only for its own timestamps.
        for ts in [-1, 0, 11_999, 12_000, 12_345, 13_999, 14_000] {
            assert_eq!(slicing.slice_near(ts, slice), slicing.slice_of(ts), "{ts}");
            assert_eq!(
                slicing.slice_near(ts, Window::new(0, 0)),
                slicing.slice_of(ts)
            );
        }
        let tumbling = Slicing::of(&WindowSpec::Tumbling { size_ms: 10 }).unwrap();
        assert!(tumbling.whole());
        let slice = tumbling.slice_of(19);
        assert_eq!(tumbling.windows(&slice).collect::<Vec<_>>(), [slice]);
        assert_eq!(tumbling.first_window(&slice), slice);
        assert!(Slicing::of(&WindowSpec::Session { gap_ms: 5 }).is_none());
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(WindowSpec::Tumbling { size_ms: 0 }.validate().is_err());
        let s = WindowSpec::Sliding {
            size_ms: 10,
            slide_ms: 3,
        };
        assert!(s.validate().unwrap_err().contains("multiple"));
        assert!(WindowSpec::Session { gap_ms: 5 }.validate().is_ok());
    }
}

#[cfg(test)]
mod operator_tests;

#[cfg(test)]
mod two_phase_tests;
