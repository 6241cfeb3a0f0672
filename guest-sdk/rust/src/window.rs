//! Window operators: incremental aggregates and whole-window functions.
//!
//! The host assigns events to keyed event-time windows, keeps the state
//! and fires windows when the watermark passes their end; the guest only
//! says how to fold events ([`Aggregate`]) or what to make of a window's
//! events ([`WindowFunction`]).
//!
//! ```
//! use weir_guest::window::{Aggregate, Window};
//! use weir_guest::{Config, Error, Event, Output};
//!
//! /// Counts events per key and window.
//! struct Count;
//!
//! #[derive(serde::Serialize)]
//! struct Row<'a> { key: &'a str, count: u64, window_start: i64, window_end: i64 }
//!
//! impl Aggregate for Count {
//!     type Acc = u64;
//!     fn new(_: &Config) -> Result<Self, Error> { Ok(Count) }
//!     fn add(&mut self, acc: &mut u64, _event: &Event<'_>) -> Result<(), Error> {
//!         *acc += 1;
//!         Ok(())
//!     }
//!     fn merge(&mut self, acc: &mut u64, other: u64) { *acc += other; }
//!     fn result(&mut self, window: &Window<'_>, acc: u64, out: &mut Output) -> Result<(), Error> {
//!         window.emit_json(out, &Row {
//!             key: window.key_str()?, count: acc,
//!             window_start: window.start, window_end: window.end,
//!         })
//!     }
//! }
//!
//! weir_guest::export_aggregate!(Count);
//!
//! // Natively, with a tumbling 10 ms window and the watermark at the end:
//! let out = weir_guest::testing::run_aggregate::<Count>(
//!     &[], 10, &[("a", 1, "{}"), ("a", 4, "{}"), ("b", 12, "{}")],
//! )?;
//! assert_eq!(out[0], r#"{"key":"a","count":2,"window_start":0,"window_end":10}"#);
//! # Ok::<(), weir_guest::Error>(())
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::batch::Batch;
use crate::batch::window::{FiredWindow, FiredWindows, Slots, SlotsWriter, read_slots};
use crate::{BatchError, Config, Error, Event, JsonObject, Output};

/// A window that fires: its key and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window<'a> {
    /// First millisecond in the window.
    pub start: i64,
    /// First millisecond after it.
    pub end: i64,
    /// The key (`None` for a window over all events).
    pub key: Option<&'a [u8]>,
}

impl<'a> Window<'a> {
    /// The key as text (empty for a window without a key).
    ///
    /// # Errors
    /// A key that is not UTF-8.
    pub fn key_str(&self) -> Result<&'a str, Error> {
        Ok(std::str::from_utf8(self.key.unwrap_or_default())?)
    }

    /// Emits `value` as JSON with the window's key and the window's last
    /// millisecond as event time (where Flink puts window results).
    ///
    /// # Errors
    /// `value` cannot be serialized; nothing is emitted then.
    pub fn emit_json<T: Serialize + ?Sized>(
        &self,
        out: &mut Output,
        value: &T,
    ) -> Result<(), Error> {
        out.emit_value(self.end - 1, self.key, (0, &[]), |buf| {
            Ok(serde_json::to_writer(&mut *buf, value)?)
        })
    }
}

impl Window<'_> {
    /// Emits a JSON object written field by field (see [`JsonObject`]),
    /// with the window's key and its last millisecond as event time, as
    /// [`Window::emit_json`] does but without serde.
    ///
    /// ```
    /// let window = weir_guest::window::Window { start: 0, end: 10, key: Some(b"a") };
    /// let mut out = weir_guest::Output::new();
    /// window.emit_object(&mut out, |row| {
    ///     row.str("key", window.key_str()?);
    ///     row.u64("count", 3);
    ///     row.i64("window_end", window.end);
    ///     Ok(())
    /// })?;
    /// # let bytes = out.finish();
    /// # let batch = weir_guest::batch::Batch::new(&bytes).unwrap();
    /// # let event = batch.iter().next().unwrap();
    /// # assert_eq!((event.timestamp, event.key), (9, Some(&b"a"[..])));
    /// # assert_eq!(event.value, br#"{"key":"a","count":3,"window_end":10}"#);
    /// # Ok::<(), weir_guest::Error>(())
    /// ```
    ///
    /// # Errors
    /// What `write` returns; nothing is emitted then.
    pub fn emit_object(
        &self,
        out: &mut Output,
        write: impl FnOnce(&mut JsonObject<'_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        out.emit_value(self.end - 1, self.key, (0, &[]), |buf| {
            JsonObject::write(buf, write)
        })
    }
}

/// An incremental aggregate over keyed windows (Flink's
/// `AggregateFunction`). The host stores one `Acc` per key and window,
/// encoded with `postcard`, so it survives restarts and rescaling.
pub trait Aggregate: Sized + 'static {
    /// The accumulator; `Default` is the empty one.
    type Acc: Serialize + DeserializeOwned + Default;

    /// Builds the aggregate from its configuration.
    ///
    /// # Errors
    /// A missing or unparsable setting.
    fn new(config: &Config) -> Result<Self, Error>;

    /// Folds one event into `acc`. The event keeps the key it reached the
    /// stage with, which need not be the `key_by` key it is grouped by;
    /// that key comes to [`Aggregate::result`] as [`Window::key`].
    ///
    /// # Errors
    /// An event the aggregate cannot handle.
    fn add(&mut self, acc: &mut Self::Acc, event: &Event<'_>) -> Result<(), Error>;

    /// Folds `other` into `acc`: two session windows joined, or the slices
    /// a sliding window is made of (the host adds each event once, to its
    /// slice, and merges the slices in time order when the window fires;
    /// `other` is then the later one). The result must be what adding all
    /// their events to one accumulator gives.
    fn merge(&mut self, acc: &mut Self::Acc, other: Self::Acc);

    /// Emits the result of a window that fires.
    ///
    /// # Errors
    /// The result cannot be built.
    fn result(
        &mut self,
        window: &Window<'_>,
        acc: Self::Acc,
        out: &mut Output,
    ) -> Result<(), Error>;
}

/// A function over all events of a window (Flink's
/// `ProcessWindowFunction`), for logic that is not incremental.
pub trait WindowFunction: Sized + 'static {
    /// Builds the function from its configuration.
    ///
    /// # Errors
    /// A missing or unparsable setting.
    fn new(config: &Config) -> Result<Self, Error>;

    /// Handles a window that fires with all its events, in timestamp order.
    ///
    /// # Errors
    /// The window cannot be handled.
    fn process(
        &mut self,
        window: &Window<'_>,
        events: &[Event<'_>],
        out: &mut Output,
    ) -> Result<(), Error>;
}

fn batch_error(message: String, index: Option<u32>) -> BatchError {
    BatchError {
        message,
        event_index: index,
    }
}

#[inline(always)]
fn decode<T: DeserializeOwned + Default>(slot: Option<&[u8]>) -> Result<T, BatchError> {
    match slot {
        None => Ok(T::default()),
        Some(bytes) => postcard::from_bytes(bytes)
            .map_err(|e| batch_error(format!("cannot decode an accumulator: {e}"), None)),
    }
}

/// Postcard output straight into a slot's buffer.
struct SlotFlavor<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for SlotFlavor<'_> {
    type Output = ();

    #[inline(always)]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        // Postcard's varints are a few bytes.
        crate::batch::extend_short(self.0, bytes);
        Ok(())
    }

    #[inline(always)]
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[inline(always)]
fn encode<T: Serialize>(acc: &T, out: &mut SlotsWriter) -> Result<(), BatchError> {
    let mut result = Ok(());
    out.push_with(|buf| {
        result = postcard::serialize_with_flavor(acc, SlotFlavor(buf));
    });
    result.map_err(|e| batch_error(format!("cannot encode an accumulator: {e}"), None))
}

/// What the component's `add` does: decodes the accumulators, folds each
/// assigned event in, encodes them again.
///
/// The assignments come in event order (the contract says so), so the
/// events are read once, beside them, without being collected first.
///
/// # Errors
/// Malformed buffers, an assignment out of event order or naming a missing
/// event or accumulator, or the first event `aggregate` rejected.
pub fn run_add<A: Aggregate>(
    aggregate: &mut A,
    accumulators: &[u8],
    events: &[u8],
    assignments: &[u32],
) -> Result<Vec<u8>, BatchError> {
    // Room for the count the buffer starts with (each slot takes 4 bytes
    // at least, which bounds a wrong count).
    let count = accumulators
        .first_chunk()
        .map_or(0, |count| u32::from_le_bytes(*count) as usize);
    let mut accs: Vec<A::Acc> = Vec::with_capacity(count.min(accumulators.len() / 4));
    // One pass over the slots, decoding as they are checked.
    let mut bad = None;
    read_slots(accumulators, |slot| match decode(slot) {
        Ok(acc) => accs.push(acc),
        Err(e) => {
            bad.get_or_insert(e);
        }
    })
    .map_err(|e| batch_error(e.to_string(), None))?;
    if let Some(e) = bad {
        return Err(e);
    }
    let mut pairs = assignments.chunks_exact(2);
    let mut next = pairs.next();
    let mut index = 0u32;
    let mut failed = None;
    // One walk: the format is checked as the events are read.
    crate::batch::read_events(events, |event| {
        while let Some(&[at, group]) = next {
            if at != index || failed.is_some() {
                break;
            }
            next = pairs.next();
            let Some(acc) = accs.get_mut(group as usize) else {
                failed = Some(batch_error(format!("no accumulator #{group}"), None));
                break;
            };
            if let Err(e) = aggregate.add(acc, &Event::new(event, index)) {
                failed = Some(batch_error(e.to_string(), Some(index)));
            }
        }
        index += 1;
    })
    .map_err(|e| batch_error(e.to_string(), None))?;
    if let Some(error) = failed {
        return Err(error);
    }
    if let Some(&[at, _]) = next {
        // Past the last event, or behind one already read.
        return Err(batch_error(
            format!("assignment of event #{at} is out of event order or has no event"),
            None,
        ));
    }
    let mut out = SlotsWriter::with_capacity(accumulators.len() + 8 * accs.len());
    for acc in &accs {
        encode(acc, &mut out)?;
    }
    Ok(out.finish())
}

/// What the component's `merge` does.
///
/// # Errors
/// Malformed buffers or accumulators.
pub fn run_merge<A: Aggregate>(
    aggregate: &mut A,
    left: &[u8],
    right: &[u8],
) -> Result<Vec<u8>, BatchError> {
    let left = Slots::new(left).map_err(|e| batch_error(e.to_string(), None))?;
    let right = Slots::new(right).map_err(|e| batch_error(e.to_string(), None))?;
    let mut out = SlotsWriter::new();
    for (l, r) in left.iter().zip(right.iter()) {
        let mut acc: A::Acc = decode(l)?;
        aggregate.merge(&mut acc, decode(r)?);
        encode(&acc, &mut out)?;
    }
    Ok(out.finish())
}

/// Calls `each` with every fired window in `windows` and its number in
/// the call (which an error of that window names).
fn each_fired<'a>(
    windows: &'a [u8],
    mut each: impl FnMut(u32, FiredWindow<'a>) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    let fired = FiredWindows::new(windows).map_err(|e| batch_error(e.to_string(), None))?;
    for (index, w) in fired.iter().enumerate() {
        each(u32::try_from(index).unwrap_or(u32::MAX), w)?;
    }
    Ok(())
}

impl<'a> From<&FiredWindow<'a>> for Window<'a> {
    fn from(w: &FiredWindow<'a>) -> Self {
        Window {
            start: w.start,
            end: w.end,
            key: w.key,
        }
    }
}

/// [`Aggregate::result`] of fired window `w` (number `index` of its call).
fn emit_result<A: Aggregate>(
    aggregate: &mut A,
    w: &FiredWindow<'_>,
    acc: A::Acc,
    index: u32,
    out: &mut Output,
) -> Result<(), BatchError> {
    aggregate
        .result(&Window::from(w), acc, out)
        .map_err(|e| batch_error(e.to_string(), Some(index)))
}

/// What the component's `result` does.
///
/// # Errors
/// Malformed buffers, or the first window `aggregate` failed on.
pub fn run_result<A: Aggregate>(
    aggregate: &mut A,
    windows: &[u8],
    out: &mut Output,
) -> Result<(), BatchError> {
    each_fired(windows, |index, w| {
        let acc: A::Acc = decode(Some(w.payload))?;
        emit_result(aggregate, &w, acc, index, out)
    })
}

/// What the component's `get-result-of-slices` does: each window's slice
/// accumulators merged in order with [`Aggregate::merge`], then
/// [`Aggregate::result`] — a sliding window fired in one call.
///
/// # Errors
/// Malformed buffers or accumulators, a window without slices or with an
/// empty one, or the first window `aggregate` failed on.
pub fn run_result_of_slices<A: Aggregate>(
    aggregate: &mut A,
    windows: &[u8],
    out: &mut Output,
) -> Result<(), BatchError> {
    each_fired(windows, |index, w| {
        let bad = |what: String| batch_error(what, Some(index));
        let mut slices = Slots::new(w.payload)
            .map_err(|e| bad(format!("a window's slices: {e}")))?
            .iter();
        let empty = || bad("a window with an empty slice".into());
        let mut acc: A::Acc = decode(Some(
            slices
                .next()
                .ok_or_else(|| bad("a window without slices".into()))?
                .ok_or_else(empty)?,
        ))?;
        for slice in slices {
            aggregate.merge(&mut acc, decode(Some(slice.ok_or_else(empty)?))?);
        }
        emit_result(aggregate, &w, acc, index, out)
    })
}

/// What the component's `process` does for a whole-window function.
///
/// # Errors
/// Malformed buffers, or the first window `function` failed on.
pub fn run_windows<F: WindowFunction>(
    function: &mut F,
    windows: &[u8],
    out: &mut Output,
) -> Result<(), BatchError> {
    each_fired(windows, |index, w| {
        let batch = Batch::new(w.payload).map_err(|e| batch_error(e.to_string(), Some(index)))?;
        let events: Vec<Event<'_>> = batch
            .iter()
            .enumerate()
            .map(|(i, e)| Event::new(e, u32::try_from(i).unwrap_or(u32::MAX)))
            .collect();
        function
            .process(&Window::from(&w), &events, out)
            .map_err(|e| batch_error(e.to_string(), Some(index)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_that_fails_half_way_is_taken_back() {
        let window = Window {
            start: 0,
            end: 10,
            key: Some(b"k"),
        };
        let mut out = Output::new();
        window.emit_json(&mut out, &[1, 2]).unwrap();
        // A map with non-string keys cannot be JSON: serde fails after `{`.
        let bad: std::collections::BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into();
        assert!(window.emit_json(&mut out, &bad).is_err());
        let failed = window.emit_object(&mut out, |row| {
            row.u64("n", 1);
            Err("no".into())
        });
        assert!(failed.is_err());
        let bytes = out.finish();
        let batch = Batch::new(&bytes).unwrap();
        let values: Vec<&[u8]> = batch.iter().map(|e| e.value).collect();
        assert_eq!(values, [&b"[1,2]"[..]]);
        assert_eq!(
            batch.iter().next().map(|e| (e.timestamp, e.key)),
            Some((9, Some(&b"k"[..])))
        );
    }

    /// Sums the values' integers; fails on `0`.
    struct Sum;

    impl Aggregate for Sum {
        type Acc = u64;
        fn new(_: &Config) -> Result<Self, Error> {
            Ok(Sum)
        }
        fn add(&mut self, acc: &mut u64, event: &Event<'_>) -> Result<(), Error> {
            let n: u64 = std::str::from_utf8(event.value())?
                .parse()
                .map_err(|_| Error::new("not a number"))?;
            if n == 0 {
                return Err("zero".into());
            }
            *acc += n;
            Ok(())
        }
        fn merge(&mut self, acc: &mut u64, other: u64) {
            *acc += other;
        }
        fn result(&mut self, w: &Window<'_>, acc: u64, out: &mut Output) -> Result<(), Error> {
            w.emit_object(out, |row| {
                row.u64("sum", acc);
                Ok(())
            })
        }
    }

    fn events(values: &[&str]) -> Vec<u8> {
        let mut writer = crate::batch::BatchWriter::new();
        for v in values {
            writer.push(0, None, v.as_bytes(), &[]);
        }
        writer.finish()
    }

    fn accs(slots: &[u8]) -> Vec<Option<u64>> {
        Slots::new(slots)
            .unwrap()
            .iter()
            .map(|s| s.map(|b| postcard::from_bytes(b).unwrap()))
            .collect()
    }

    #[test]
    fn add_folds_each_assigned_event_into_its_group_in_one_walk() {
        let mut start = SlotsWriter::new();
        start.push(None);
        encode(&100u64, &mut start).unwrap();
        let batch = events(&["1", "2", "30"]);
        // Event 1 is in both groups (as with sliding windows); event 2 in
        // none.
        let out = run_add(&mut Sum, &start.finish(), &batch, &[0, 1, 1, 0, 1, 1]).unwrap();
        assert_eq!(accs(&out), [Some(2), Some(103)]);
    }

    #[test]
    fn add_rejects_assignments_out_of_order_or_past_the_events() {
        let empty = || {
            let mut slots = SlotsWriter::new();
            slots.push(None);
            slots.finish()
        };
        let batch = events(&["1", "2"]);
        let err = |pairs: &[u32]| run_add(&mut Sum, &empty(), &batch, pairs).unwrap_err();
        assert!(err(&[1, 0, 0, 0]).message.contains("event #0"));
        assert!(err(&[0, 0, 2, 0]).message.contains("event #2"));
        assert!(err(&[0, 1]).message.contains("accumulator #1"));
        // The first failing event is named, and the state is not returned.
        let failing = events(&["1", "0", "0"]);
        let e = run_add(&mut Sum, &empty(), &failing, &[0, 0, 1, 0, 2, 0]).unwrap_err();
        assert_eq!((e.event_index, e.message.as_str()), (Some(1), "zero"));
    }

    #[test]
    fn add_rejects_accumulators_it_cannot_read() {
        let batch = events(&["1"]);
        let mut good = SlotsWriter::new();
        good.push(None);
        let good = good.finish();
        let truncated = run_add(&mut Sum, &good[..6], &batch, &[0, 0]).unwrap_err();
        assert!(truncated.message.contains("truncated"), "{truncated:?}");
        // A varint that never ends is no u64.
        let mut bad = SlotsWriter::new();
        bad.push(Some(&[0xFF; 11]));
        bad.push(None);
        let e = run_add(&mut Sum, &bad.finish(), &batch, &[0, 0]).unwrap_err();
        assert!(e.message.contains("cannot decode an accumulator"), "{e:?}");
    }

    fn slices(accs: &[Option<u64>]) -> Vec<u8> {
        let mut slots = SlotsWriter::new();
        for acc in accs {
            match acc {
                Some(acc) => encode(acc, &mut slots).unwrap(),
                None => slots.push(None),
            }
        }
        slots.finish()
    }

    #[test]
    fn a_window_of_slices_is_merged_in_order_then_turned_into_its_result() {
        let mut fired = crate::batch::window::FiredWriter::new();
        fired.push(0, 10, Some(b"a"), &slices(&[Some(1), Some(2), Some(30)]));
        fired.push(2, 12, Some(b"b"), &slices(&[Some(7)]));
        let mut out = Output::new();
        run_result_of_slices(&mut Sum, &fired.finish(), &mut out).unwrap();
        let bytes = out.finish();
        let rows: Vec<(i64, &[u8])> = Batch::new(&bytes)
            .unwrap()
            .iter()
            .map(|e| (e.timestamp, e.value))
            .collect();
        assert_eq!(rows, [(9, &br#"{"sum":33}"#[..]), (11, br#"{"sum":7}"#)]);
    }

    #[test]
    fn a_window_without_slices_or_with_an_empty_one_is_refused_by_index() {
        let err = |second: &[Option<u64>]| {
            let mut fired = crate::batch::window::FiredWriter::new();
            fired.push(0, 10, None, &slices(&[Some(1)]));
            fired.push(2, 12, None, &slices(second));
            run_result_of_slices(&mut Sum, &fired.finish(), &mut Output::new()).unwrap_err()
        };
        let none = err(&[]);
        assert_eq!(none.event_index, Some(1));
        assert!(none.message.contains("without slices"), "{}", none.message);
        let empty = err(&[Some(1), None]);
        assert_eq!(empty.event_index, Some(1));
        assert!(empty.message.contains("empty slice"), "{}", empty.message);
    }
}
