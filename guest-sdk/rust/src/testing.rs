//! Run an operator natively on sample values, for unit tests.
//!
//! ```
//! use weir_guest::{Config, Error, Event, Operator, Output, Emit};
//!
//! struct Upper;
//! impl Operator for Upper {
//!     fn new(_: &Config) -> Result<Self, Error> { Ok(Upper) }
//!     fn process(&mut self, e: &Event<'_>, out: &mut Output) -> Result<(), Error> {
//!         let upper = e.value_str()?.to_uppercase();
//!         out.emit(Emit::like(e).with_value(upper.as_bytes()));
//!         Ok(())
//!     }
//! }
//!
//! let out = weir_guest::testing::run::<Upper>(&[], &["abc", "x"])?;
//! assert_eq!(out, ["ABC", "X"]);
//! # Ok::<(), weir_guest::Error>(())
//! ```

use crate::{Config, Error, Operator, Output, batch};

/// Builds `O` from `config`, runs it over `values` (one event each, no key,
/// timestamp = index) in one batch, and returns the output values as text.
///
/// # Errors
/// The operator's own error from `new` or `process`, or an output value
/// that is not UTF-8.
pub fn run<O: Operator>(config: &[(&str, &str)], values: &[&str]) -> Result<Vec<String>, Error> {
    let mut operator = O::new(&Config::from_pairs(config.iter().copied()))?;
    let mut input = batch::BatchWriter::new();
    for (i, value) in values.iter().enumerate() {
        input.push(
            i64::try_from(i).unwrap_or(i64::MAX),
            None,
            value.as_bytes(),
            &[],
        );
    }
    let input = input.finish();
    let mut out = Output::new();
    crate::run_batch(&mut operator, &input, &mut out).map_err(|e| Error::new(e.to_string()))?;
    let bytes = out.finish();
    let batch = batch::Batch::new(&bytes).map_err(|e| Error::new(e.to_string()))?;
    batch
        .iter()
        .map(|e| Ok(std::str::from_utf8(e.value)?.to_string()))
        .collect()
}

/// One sample event for the window helpers: `(key, timestamp, value)`.
pub type Sample<'a> = (&'a str, i64, &'a str);

/// Groups `events` into tumbling windows of `size_ms` per key, as the host
/// would with the watermark at the end of input: `(key, start) → events`.
fn tumbling<'a>(
    size_ms: i64,
    events: &[Sample<'a>],
) -> std::collections::BTreeMap<(i64, &'a str), Vec<Sample<'a>>> {
    let mut windows: std::collections::BTreeMap<(i64, &str), Vec<Sample<'a>>> = Default::default();
    for event in events {
        let start = event.1 - event.1.rem_euclid(size_ms.max(1));
        windows.entry((start, event.0)).or_default().push(*event);
    }
    for list in windows.values_mut() {
        list.sort_by_key(|e| e.1);
    }
    windows
}

fn encode(events: &[Sample<'_>]) -> Vec<u8> {
    let mut w = batch::BatchWriter::new();
    for (key, ts, value) in events {
        w.push(*ts, Some(key.as_bytes()), value.as_bytes(), &[]);
    }
    w.finish()
}

fn values(bytes: &[u8]) -> Result<Vec<String>, Error> {
    let batch = batch::Batch::new(bytes).map_err(|e| Error::new(e.to_string()))?;
    batch
        .iter()
        .map(|e| Ok(std::str::from_utf8(e.value)?.to_string()))
        .collect()
}

/// Runs aggregate `A` natively over `events` in keyed tumbling windows of
/// `size_ms`, firing every window at the end, in (end, key) order — the
/// same calls the host makes, through the same buffer formats.
///
/// # Errors
/// The aggregate's own error, or output that is not UTF-8.
pub fn run_aggregate<A: crate::window::Aggregate>(
    config: &[(&str, &str)],
    size_ms: i64,
    events: &[Sample<'_>],
) -> Result<Vec<String>, Error> {
    use crate::batch::window::{FiredWriter, Slots, SlotsWriter};
    let mut aggregate = A::new(&Config::from_pairs(config.iter().copied()))?;
    let mut fired = FiredWriter::new();
    for ((start, key), list) in tumbling(size_ms, events) {
        let mut empty = SlotsWriter::new();
        empty.push(None);
        let assignments: Vec<u32> = (0..list.len() as u32).flat_map(|i| [i, 0]).collect();
        let accs = crate::window::run_add(
            &mut aggregate,
            &empty.finish(),
            &encode(&list),
            &assignments,
        )
        .map_err(|e| Error::new(e.to_string()))?;
        let slots = Slots::new(&accs).map_err(|e| Error::new(e.to_string()))?;
        let acc = slots.iter().next().flatten().unwrap_or_default();
        fired.push(start, start + size_ms, Some(key.as_bytes()), acc);
    }
    let mut out = Output::new();
    crate::window::run_result(&mut aggregate, &fired.finish(), &mut out)
        .map_err(|e| Error::new(e.to_string()))?;
    values(&out.finish())
}

/// Runs whole-window function `F` natively over `events` in keyed tumbling
/// windows of `size_ms` (see [`run_aggregate`]).
///
/// # Errors
/// The function's own error, or output that is not UTF-8.
pub fn run_window<F: crate::window::WindowFunction>(
    config: &[(&str, &str)],
    size_ms: i64,
    events: &[Sample<'_>],
) -> Result<Vec<String>, Error> {
    let mut function = F::new(&Config::from_pairs(config.iter().copied()))?;
    let mut fired = crate::batch::window::FiredWriter::new();
    for ((start, key), list) in tumbling(size_ms, events) {
        fired.push(start, start + size_ms, Some(key.as_bytes()), &encode(&list));
    }
    let mut out = Output::new();
    crate::window::run_windows(&mut function, &fired.finish(), &mut out)
        .map_err(|e| Error::new(e.to_string()))?;
    values(&out.finish())
}

/// Runs keyed process function `P` natively over `events` (`(key,
/// timestamp, value)`, in arrival order), one call per event as the host
/// would make them: the watermark follows the largest timestamp seen, due
/// event-time timers fire before each event, and every remaining
/// event-time timer fires at the end of the input. Returns output values.
///
/// # Errors
/// The function's own error, or output that is not UTF-8.
pub fn run_keyed<P: crate::keyed::KeyedProcess>(
    config: &[(&str, &str)],
    events: &[Sample<'_>],
) -> Result<Vec<String>, Error> {
    let mut host = KeyedHost {
        function: P::new(&Config::from_pairs(config.iter().copied()))?,
        state: Default::default(),
        timers: Default::default(),
        output: Vec::new(),
    };
    let mut watermark = i64::MIN;
    for event in events {
        watermark = watermark.max(event.1);
        // Due timers fire before the event that moved the watermark on.
        while let Some((time, key)) = host.timers.first().filter(|(t, _)| *t < watermark).cloned() {
            host.timers.remove(&(time, key.clone()));
            host.call(&key, None, Some(time), watermark)?;
        }
        host.call(event.0.as_bytes(), Some(event), None, watermark)?;
    }
    while let Some((time, key)) = host.timers.pop_first() {
        host.call(&key, None, Some(time), i64::MAX)?;
    }
    Ok(host.output)
}

/// A minimal host for [`run_keyed`]: state and event-time timers in memory.
struct KeyedHost<P> {
    function: P,
    state: std::collections::HashMap<Vec<u8>, Vec<u8>>,
    timers: std::collections::BTreeSet<(i64, Vec<u8>)>,
    output: Vec<String>,
}

impl<P: crate::keyed::KeyedProcess> KeyedHost<P> {
    fn call(
        &mut self,
        key: &[u8],
        event: Option<&Sample<'_>>,
        timer: Option<i64>,
        watermark: i64,
    ) -> Result<(), Error> {
        use crate::batch::keyed::{CallWriter, Reply, TimerOp};
        let mut writer = CallWriter::new(watermark);
        writer.key(key, self.state.get(key).map(Vec::as_slice));
        let events = encode(event.map(std::slice::from_ref).unwrap_or_default());
        let fired: Vec<(u32, u8, i64)> = timer.map(|t| (0, 0, t)).into_iter().collect();
        let reply = crate::keyed::run_keyed(&mut self.function, &writer.finish(&events, &fired))
            .map_err(|e| Error::new(e.to_string()))?;
        let reply = Reply::new(&reply).map_err(|e| Error::new(e.to_string()))?;
        for (_, new) in reply.updates() {
            match new {
                Some(bytes) => self.state.insert(key.to_vec(), bytes.to_vec()),
                None => self.state.remove(key),
            };
        }
        for (_, op, time) in reply.ops() {
            match op {
                TimerOp::SetEvent => self.timers.insert((time, key.to_vec())),
                TimerOp::DeleteEvent => self.timers.remove(&(time, key.to_vec())),
                TimerOp::SetProcessing | TimerOp::DeleteProcessing => false,
            };
        }
        self.output.extend(values(reply.events)?);
        Ok(())
    }
}
