//! Keyed process functions: per-key state and timers, kept by the host.
//!
//! A [`KeyedProcess`] sees every event of a key with a [`Context`] that
//! reads and writes that key's value state and map state and sets timers.
//! The host stores the state (so it survives restarts and rescaling), fires
//! event-time timers when the watermark passes them, and drops a key's
//! state once it has not been written for the operator's `state_ttl_ms`
//! of **event time**.
//!
//! ```
//! use weir_guest::keyed::{Context, KeyedProcess, Timer};
//! use weir_guest::{Config, Error, Event, Output};
//!
//! /// Emits a key's running count, and forgets it an hour of event time
//! /// after its last event.
//! struct RunningCount;
//!
//! impl KeyedProcess for RunningCount {
//!     fn new(_: &Config) -> Result<Self, Error> { Ok(RunningCount) }
//!     fn process(&mut self, event: &Event<'_>, ctx: &mut Context<'_>, out: &mut Output) -> Result<(), Error> {
//!         let count: u64 = ctx.value()?.unwrap_or(0) + 1;
//!         ctx.set_value(&count)?;
//!         ctx.set_event_timer(event.timestamp() + 3_600_000);
//!         out.emit(weir_guest::Emit::like(event).with_value(count.to_string().as_bytes()));
//!         Ok(())
//!     }
//!     fn on_timer(&mut self, _timer: Timer, ctx: &mut Context<'_>, _out: &mut Output) -> Result<(), Error> {
//!         ctx.clear();
//!         Ok(())
//!     }
//! }
//!
//! weir_guest::export_keyed_process!(RunningCount);
//!
//! let out = weir_guest::testing::run_keyed::<RunningCount>(&[], &[("a", 1, "{}"), ("b", 2, "{}"), ("a", 3, "{}")])?;
//! assert_eq!(out, ["1", "1", "2"]);
//! # Ok::<(), weir_guest::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::batch::Batch;
use crate::batch::keyed::{Call, ReplyWriter, TimerOp};
use crate::{BatchError, Config, Error, Event, Output};

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeDomain {
    /// Fires when the watermark reaches the time.
    EventTime,
    /// Fires when the wall clock reaches the time (ms since the epoch).
    ProcessingTime,
}

/// A timer that fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timer {
    /// The time it was set for.
    pub time: i64,
    /// Its clock.
    pub domain: TimeDomain,
}

/// A key's state as the SDK stores it (one blob per key on the host).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct KeyState {
    value: Option<Vec<u8>>,
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

struct Slot {
    state: KeyState,
    dirty: bool,
}

/// The current key's state and timers, for one event or timer.
pub struct Context<'a> {
    key: &'a [u8],
    index: u32,
    watermark: i64,
    slot: &'a mut Slot,
    reply: &'a mut ReplyWriter,
}

fn codec(e: postcard::Error) -> Error {
    Error::new(format!("state codec: {e}"))
}

impl Context<'_> {
    /// The current key.
    pub fn key(&self) -> &[u8] {
        self.key
    }

    /// The current key as text.
    ///
    /// # Errors
    /// A key that is not UTF-8.
    pub fn key_str(&self) -> Result<&str, Error> {
        Ok(std::str::from_utf8(self.key)?)
    }

    /// The operator's watermark when the batch was handed over.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The key's value state.
    ///
    /// # Errors
    /// Stored bytes that do not decode as `T`.
    pub fn value<T: DeserializeOwned>(&self) -> Result<Option<T>, Error> {
        self.slot
            .state
            .value
            .as_deref()
            .map(|b| postcard::from_bytes(b).map_err(codec))
            .transpose()
    }

    /// Sets the key's value state.
    ///
    /// # Errors
    /// `value` cannot be encoded.
    pub fn set_value<T: Serialize>(&mut self, value: &T) -> Result<(), Error> {
        self.slot.state.value = Some(postcard::to_stdvec(value).map_err(codec)?);
        self.slot.dirty = true;
        Ok(())
    }

    /// Clears the key's value state.
    pub fn clear_value(&mut self) {
        self.slot.state.value = None;
        self.slot.dirty = true;
    }

    /// An entry of the key's map state.
    ///
    /// # Errors
    /// Stored bytes that do not decode as `V`.
    pub fn map_get<V: DeserializeOwned>(&self, entry: &[u8]) -> Result<Option<V>, Error> {
        self.slot
            .state
            .map
            .get(entry)
            .map(|b| postcard::from_bytes(b).map_err(codec))
            .transpose()
    }

    /// Sets an entry of the key's map state.
    ///
    /// # Errors
    /// `value` cannot be encoded.
    pub fn map_put<V: Serialize>(&mut self, entry: &[u8], value: &V) -> Result<(), Error> {
        let bytes = postcard::to_stdvec(value).map_err(codec)?;
        self.slot.state.map.insert(entry.to_vec(), bytes);
        self.slot.dirty = true;
        Ok(())
    }

    /// Removes an entry of the key's map state.
    pub fn map_remove(&mut self, entry: &[u8]) {
        self.slot.dirty |= self.slot.state.map.remove(entry).is_some();
    }

    /// The map entries' keys, in byte order.
    pub fn map_keys(&self) -> impl Iterator<Item = &[u8]> {
        self.slot.state.map.keys().map(Vec::as_slice)
    }

    /// Number of map entries.
    pub fn map_len(&self) -> usize {
        self.slot.state.map.len()
    }

    /// Clears all of the key's state (value and map).
    pub fn clear(&mut self) {
        self.slot.state = KeyState::default();
        self.slot.dirty = true;
    }

    /// Fires [`KeyedProcess::on_timer`] for this key when the watermark
    /// reaches `time` (setting the same time twice gives one timer).
    pub fn set_event_timer(&mut self, time: i64) {
        self.reply.op(self.index, TimerOp::SetEvent, time);
    }

    /// Forgets an event-time timer of this key.
    pub fn delete_event_timer(&mut self, time: i64) {
        self.reply.op(self.index, TimerOp::DeleteEvent, time);
    }

    /// Fires [`KeyedProcess::on_timer`] when the wall clock reaches `time`.
    /// Results should not depend on processing time; use it for timeouts
    /// of live data only.
    pub fn set_processing_timer(&mut self, time: i64) {
        self.reply.op(self.index, TimerOp::SetProcessing, time);
    }

    /// Forgets a processing-time timer of this key.
    pub fn delete_processing_timer(&mut self, time: i64) {
        self.reply.op(self.index, TimerOp::DeleteProcessing, time);
    }
}

/// A keyed process function (Flink's `KeyedProcessFunction`).
pub trait KeyedProcess: Sized + 'static {
    /// Builds the function from its configuration.
    ///
    /// # Errors
    /// A missing or unparsable setting.
    fn new(config: &Config) -> Result<Self, Error>;

    /// Handles one event of the context's key.
    ///
    /// # Errors
    /// An event the function cannot handle.
    fn process(
        &mut self,
        event: &Event<'_>,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), Error>;

    /// Handles a timer of the context's key. By default does nothing.
    ///
    /// # Errors
    /// The timer cannot be handled.
    fn on_timer(
        &mut self,
        timer: Timer,
        ctx: &mut Context<'_>,
        out: &mut Output,
    ) -> Result<(), Error> {
        let _ = (timer, ctx, out);
        Ok(())
    }
}

fn batch_error(message: String, index: Option<u32>) -> BatchError {
    BatchError {
        message,
        event_index: index,
    }
}

/// What the component's `process` does: decodes each key's state, runs the
/// events and fired timers, and answers with the output, the changed
/// states and the timer changes.
///
/// # Errors
/// A malformed call or state, or the first event or timer `function`
/// failed on (nothing of the call is applied then).
pub fn run_keyed<P: KeyedProcess>(function: &mut P, call: &[u8]) -> Result<Vec<u8>, BatchError> {
    let call = Call::new(call).map_err(|e| batch_error(e.to_string(), None))?;
    let mut keys: Vec<&[u8]> = Vec::with_capacity(call.keys().len());
    let mut slots: Vec<Slot> = Vec::with_capacity(call.keys().len());
    let mut index_of: HashMap<&[u8], u32> = HashMap::with_capacity(call.keys().len());
    for (i, (key, state)) in call.keys().enumerate() {
        let state = match state {
            Some(bytes) => postcard::from_bytes(bytes)
                .map_err(|e| batch_error(format!("cannot decode the state of a key: {e}"), None))?,
            None => KeyState::default(),
        };
        keys.push(key);
        slots.push(Slot {
            state,
            dirty: false,
        });
        index_of.insert(key, i as u32);
    }
    let mut reply = ReplyWriter::new();
    let mut out = Output::new();
    let batch = Batch::new(call.events).map_err(|e| batch_error(e.to_string(), None))?;
    for (i, event) in batch.iter().enumerate() {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        let index = *event
            .key
            .and_then(|k| index_of.get(k))
            .ok_or_else(|| batch_error("an event without a key in the call".into(), Some(i)))?;
        let mut ctx = Context {
            key: keys[index as usize],
            index,
            watermark: call.watermark,
            slot: &mut slots[index as usize],
            reply: &mut reply,
        };
        function
            .process(&Event::new(event, i), &mut ctx, &mut out)
            .map_err(|e| batch_error(e.to_string(), Some(i)))?;
    }
    for (index, domain, time) in call.timers() {
        let timer = Timer {
            time,
            domain: if domain == 0 {
                TimeDomain::EventTime
            } else {
                TimeDomain::ProcessingTime
            },
        };
        let mut ctx = Context {
            key: keys[index as usize],
            index,
            watermark: call.watermark,
            slot: &mut slots[index as usize],
            reply: &mut reply,
        };
        function
            .on_timer(timer, &mut ctx, &mut out)
            .map_err(|e| batch_error(format!("on_timer({time}): {e}"), None))?;
    }
    for (index, slot) in slots.iter().enumerate().filter(|(_, s)| s.dirty) {
        let index = index as u32;
        if slot.state == KeyState::default() {
            reply.update(index, None);
        } else {
            let bytes = postcard::to_stdvec(&slot.state)
                .map_err(|e| batch_error(format!("cannot encode state: {e}"), None))?;
            reply.update(index, Some(&bytes));
        }
    }
    Ok(reply.finish(&out.finish()))
}
