//! The bounded queue between pipeline threads.
//!
//! Like `std::sync::mpsc::sync_channel`, with three differences:
//!
//! - Only *bulk* messages (batches) count against the capacity; control
//!   messages (a watermark after every batch, barriers) queue behind them
//!   without taking a batch's place, up to a far larger bound.
//! - A sender blocked on a full queue is woken only once the receiver has
//!   taken it down to half, not after every message.
//! - A receiver waiting on an empty queue is woken by the first batch at
//!   once, but lets control messages gather for up to 2 ms
//!   ([`CONTROL_LINGER`]) before it takes them.
//!
//! When the sending stage is the faster one (a generator feeding a window
//! subtask), the std channel woke it once per batch, and on a virtual
//! machine a cross-core wake-up costs more than routing the batch did
//! (`perf` put the receiving side's wake-ups at 14 % of its time). Now the
//! sender refills half the queue per wake. Likewise a stage whose input
//! is mostly watermarks (the one after a window stage, between results)
//! was woken for each of them.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Control messages a queue holds at most, per unit of capacity.
const CONTROL_PER_BULK: usize = 8;

/// How long a receiver waiting on an empty queue lets control messages
/// gather before it takes them; a batch wakes it at once.
pub const CONTROL_LINGER: Duration = Duration::from_millis(2);

/// What a waiting receiver wants to be woken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Not,
    /// A bulk message (it wakes up by itself after [`CONTROL_LINGER`]).
    Bulk,
    /// Any message.
    Any,
}

impl Waiting {
    /// Whether a message of this kind wakes the receiver.
    fn woken_by(self, bulk: bool) -> bool {
        match self {
            Waiting::Not => false,
            Waiting::Bulk => bulk,
            Waiting::Any => true,
        }
    }
}

/// A queue of at most `capacity` bulk messages (at least 1) — those for
/// which `bulk` is true — and its ends.
pub fn bounded<T>(capacity: usize, bulk: fn(&T) -> bool) -> (Sender<T>, Receiver<T>) {
    let capacity = capacity.max(1);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::with_capacity(2 * capacity),
            bulk_queued: 0,
            senders: 1,
            receiver: true,
            receiver_waiting: Waiting::Not,
            waiting: [0; 2],
        }),
        filled: Condvar::new(),
        drained: Condvar::new(),
        capacity,
        low_water: capacity / 2,
        bulk,
    });
    (Sender(Arc::clone(&shared)), Receiver(shared))
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// The receiver waits here for a message.
    filled: Condvar,
    /// Senders wait here for room.
    drained: Condvar,
    /// Bulk messages the queue holds at most.
    capacity: usize,
    /// Blocked senders are woken when the bulk messages are down to this
    /// many.
    low_water: usize,
    bulk: fn(&T) -> bool,
}

impl<T> Shared<T> {
    /// No room for a message of this kind.
    fn full(&self, state: &State<T>, bulk: bool) -> bool {
        if bulk {
            state.bulk_queued >= self.capacity
        } else {
            state.queue.len() >= CONTROL_PER_BULK * self.capacity
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // The state is consistent at every unlock: a panic elsewhere
        // cannot leave it half changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct State<T> {
    /// The messages, each with whether it is bulk.
    queue: VecDeque<(T, bool)>,
    bulk_queued: usize,
    senders: usize,
    receiver: bool,
    receiver_waiting: Waiting,
    /// Senders waiting for room for a control message (0) or a bulk one
    /// (1).
    waiting: [usize; 2],
}

/// The sending end; clone it for more senders.
pub struct Sender<T>(Arc<Shared<T>>);

/// The message could not be sent: the receiver is gone.
#[derive(Debug, PartialEq, Eq)]
pub struct SendError<T>(pub T);

impl<T> Sender<T> {
    /// Queues `message`, waiting while the queue is full.
    ///
    /// # Errors
    /// The receiver is gone; the message comes back.
    pub fn send(&self, message: T) -> Result<(), SendError<T>> {
        let shared = &*self.0;
        let bulk = (shared.bulk)(&message);
        let mut state = shared.lock();
        while state.receiver && shared.full(&state, bulk) {
            state.waiting[usize::from(bulk)] += 1;
            state = shared
                .drained
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiting[usize::from(bulk)] -= 1;
        }
        if !state.receiver {
            return Err(SendError(message));
        }
        state.queue.push_back((message, bulk));
        state.bulk_queued += usize::from(bulk);
        let wake = state.receiver_waiting.woken_by(bulk);
        drop(state);
        if wake {
            shared.filled.notify_one();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Sender(Arc::clone(&self.0))
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.senders -= 1;
        let last = state.senders == 0;
        drop(state);
        if last {
            self.0.filled.notify_all();
        }
    }
}

/// The receiving end.
pub struct Receiver<T>(Arc<Shared<T>>);

/// Why [`Receiver::recv_timeout`] returned without a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvTimeoutError {
    /// Nothing came in time.
    Timeout,
    /// Every sender is gone and the queue is empty.
    Disconnected,
}

impl<T> Receiver<T> {
    /// The next message, waiting up to `timeout` for one.
    ///
    /// # Errors
    /// Nothing came in time, or every sender is gone and nothing is left.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_until(Some(timeout))
    }

    /// The next message, waiting as long as it takes; `None` once every
    /// sender is gone and nothing is left.
    pub fn recv(&self) -> Option<T> {
        self.recv_until(None).ok()
    }

    fn recv_until(&self, timeout: Option<Duration>) -> Result<T, RecvTimeoutError> {
        let shared = &*self.0;
        let mut state = shared.lock();
        // Read the clock only once there is nothing to take.
        let mut deadline = None;
        // The first wait lets control messages gather; if none came, the
        // next waits for anything.
        let mut linger = true;
        loop {
            if let Some((message, bulk)) = state.queue.pop_front() {
                state.bulk_queued -= usize::from(bulk);
                // A bulk sender once half the bulk is gone; a control one
                // as soon as there is room.
                let wake = (state.waiting[1] > 0 && state.bulk_queued <= shared.low_water)
                    || (state.waiting[0] > 0 && !shared.full(&state, false));
                drop(state);
                if wake {
                    shared.drained.notify_all();
                }
                return Ok(message);
            }
            if state.senders == 0 {
                return Err(RecvTimeoutError::Disconnected);
            }
            let left = timeout.map(|t| {
                let deadline = *deadline.get_or_insert_with(|| Instant::now() + t);
                deadline.saturating_duration_since(Instant::now())
            });
            if left.is_some_and(|left| left.is_zero()) {
                return Err(RecvTimeoutError::Timeout);
            }
            let limit = if linger {
                state.receiver_waiting = Waiting::Bulk;
                Some(left.map_or(CONTROL_LINGER, |left| left.min(CONTROL_LINGER)))
            } else {
                state.receiver_waiting = Waiting::Any;
                left
            };
            linger = false;
            state = match limit {
                None => shared
                    .filled
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(limit) => {
                    shared
                        .filled
                        .wait_timeout(state, limit)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            state.receiver_waiting = Waiting::Not;
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver = false;
        // What is queued can never be taken: drop it now, not with the
        // last sender.
        let queued = std::mem::take(&mut state.queue);
        drop(state);
        self.0.drained.notify_all();
        drop(queued);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn messages_arrive_in_order_and_the_end_is_seen() {
        let (tx, rx) = bounded(2, |_| true);
        let sender = std::thread::spawn(move || {
            for i in 0..1000 {
                tx.send(i).unwrap();
            }
        });
        let received: Vec<i32> = std::iter::from_fn(|| rx.recv()).collect();
        sender.join().unwrap();
        assert_eq!(received, (0..1000).collect::<Vec<_>>());
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(1)),
            Err(RecvTimeoutError::Disconnected)
        );
    }

    #[test]
    fn a_blocked_sender_waits_until_the_queue_is_half_drained() {
        let (tx, rx) = bounded(4, |_| true);
        for i in 0..4 {
            tx.send(i).unwrap();
        }
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&sent);
        let sender = std::thread::spawn(move || {
            tx.send(4).unwrap();
            counter.store(1, Ordering::SeqCst);
        });
        // Wait until the sender is blocked on the full queue.
        while rx.0.lock().waiting[1] == 0 {
            std::thread::yield_now();
        }
        // One taken: three left, above half. The sender stays asleep.
        assert_eq!(rx.recv(), Some(0));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(sent.load(Ordering::SeqCst), 0);
        // Two left: it is woken and sends.
        assert_eq!(rx.recv(), Some(1));
        sender.join().unwrap();
        assert_eq!(sent.load(Ordering::SeqCst), 1);
        let rest: Vec<i32> = std::iter::from_fn(|| rx.recv()).collect();
        assert_eq!(rest, [2, 3, 4]);
    }

    #[test]
    fn a_timeout_returns_and_senders_fail_once_the_receiver_is_gone() {
        let (tx, rx) = bounded::<u8>(1, |_| true);
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(5)),
            Err(RecvTimeoutError::Timeout)
        );
        tx.send(1).unwrap();
        let blocked = tx.clone();
        let sender = std::thread::spawn(move || blocked.send(2));
        while rx.0.lock().waiting[1] == 0 {
            std::thread::yield_now();
        }
        drop(rx);
        assert_eq!(sender.join().unwrap(), Err(SendError(2)));
        assert_eq!(tx.send(3), Err(SendError(3)));
    }

    #[test]
    fn control_messages_pass_a_full_queue_in_order() {
        // Odd numbers are bulk.
        let (tx, rx) = bounded::<u32>(2, |n| n % 2 == 1);
        for n in [1, 2, 3, 4, 6, 8] {
            tx.send(n).unwrap();
        }
        // Two bulk messages fill it: the third waits.
        let sender = std::thread::spawn(move || tx.send(5));
        while rx.0.lock().waiting[1] == 0 {
            std::thread::yield_now();
        }
        let received: Vec<u32> = std::iter::from_fn(|| rx.recv()).collect();
        assert_eq!(sender.join().unwrap(), Ok(()));
        assert_eq!(received, [1, 2, 3, 4, 6, 8, 5]);
    }

    #[test]
    fn control_messages_have_a_bound_too() {
        let (tx, rx) = bounded::<u32>(1, |_| false);
        for n in 0..CONTROL_PER_BULK as u32 {
            tx.send(n).unwrap();
        }
        let sender = std::thread::spawn(move || tx.send(99));
        while rx.0.lock().waiting[0] == 0 {
            std::thread::yield_now();
        }
        // One taken: room again, the sender goes on at once.
        assert_eq!(rx.recv(), Some(0));
        assert_eq!(sender.join().unwrap(), Ok(()));
        assert_eq!(std::iter::from_fn(|| rx.recv()).count(), CONTROL_PER_BULK);
    }

    #[test]
    fn a_lingering_receiver_is_woken_by_a_batch_not_by_a_control_message() {
        assert!(Waiting::Bulk.woken_by(true));
        assert!(!Waiting::Bulk.woken_by(false));
        assert!(Waiting::Any.woken_by(false));
        assert!(!Waiting::Not.woken_by(true));
        // A control message alone still arrives (after the linger), and
        // the end is seen.
        let (tx, rx) = bounded::<u32>(4, |n| n % 2 == 1);
        let receiver = std::thread::spawn(move || std::iter::from_fn(|| rx.recv()).collect());
        tx.send(2).unwrap();
        std::thread::sleep(CONTROL_LINGER * 3);
        tx.send(1).unwrap();
        drop(tx);
        let got: Vec<u32> = receiver.join().unwrap();
        assert_eq!(got, [2, 1]);
    }
}
