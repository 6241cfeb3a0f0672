//! How long a partly filled batch may wait for more events.

use std::time::{Duration, Instant};

/// The linger rule: a batch is sent when full, or when its first event has
/// waited `max_wait`. Pure arithmetic on instants the caller supplies, so it
/// is tested without sleeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linger {
    max_wait: Duration,
}

impl Linger {
    /// A batch waits at most `max_wait` after its first event.
    pub fn new(max_wait: Duration) -> Self {
        Linger { max_wait }
    }

    /// How long a batch whose first event arrived at `first` may still wait
    /// at `now`; `None` when it is due.
    pub fn remaining(&self, first: Instant, now: Instant) -> Option<Duration> {
        let due = first + self.max_wait;
        (now < due).then(|| due - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_due_once_its_first_event_has_waited_long_enough() {
        let linger = Linger::new(Duration::from_millis(50));
        let t0 = Instant::now();
        assert_eq!(linger.remaining(t0, t0), Some(Duration::from_millis(50)));
        assert_eq!(
            linger.remaining(t0, t0 + Duration::from_millis(20)),
            Some(Duration::from_millis(30))
        );
        assert_eq!(linger.remaining(t0, t0 + Duration::from_millis(50)), None);
        assert_eq!(linger.remaining(t0, t0 + Duration::from_secs(9)), None);
    }
}
