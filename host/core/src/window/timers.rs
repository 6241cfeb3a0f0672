//! A window subtask's timers, grouped by time.
//!
//! Every window with state has a cleanup timer, and a fire timer while its
//! end is ahead of the watermark. Many windows share a time (every key's
//! window of the same tumbling or sliding period), so timers are kept per
//! time: adding one is a push, and a restore that rebuilds millions of them
//! does no sorting. The windows of one time are sorted when they fire, by
//! key then window, so the firing order (time, key, start) does not depend
//! on arrival order or parallelism.

use std::collections::BTreeMap;

use super::Window;

/// A window's key (`None`: events without one).
pub(super) type Key = Option<Vec<u8>>;

/// What is due at one time.
#[derive(Debug, Default)]
struct Due {
    fire: Vec<(Key, Window)>,
    cleanup: Vec<(Key, Window)>,
}

/// Timers by time.
#[derive(Debug, Default)]
pub(super) struct Timers {
    by_time: BTreeMap<i64, Due>,
}

/// What a watermark made due: windows to fire, in firing order, and
/// windows whose state to drop.
pub(super) struct DueNow {
    pub fire: Vec<(Key, Window)>,
    pub cleanup: Vec<(Key, Window)>,
}

impl Timers {
    /// Fires `window` of `key` once the watermark reaches `time`.
    pub fn fire_at(&mut self, time: i64, key: Key, window: Window) {
        self.by_time
            .entry(time)
            .or_default()
            .fire
            .push((key, window));
    }

    /// Drops `window` of `key` once the watermark reaches `time`.
    pub fn clean_up_at(&mut self, time: i64, key: Key, window: Window) {
        self.by_time
            .entry(time)
            .or_default()
            .cleanup
            .push((key, window));
    }

    /// Removes the fire timer at `fire` and the cleanup timer at `cleanup`
    /// of `window` of `key` (a session merged into another).
    pub fn remove(&mut self, fire: i64, cleanup: i64, key: &Key, window: &Window) {
        let same = |(k, w): &(Key, Window)| k == key && w == window;
        for (time, is_fire) in [(fire, true), (cleanup, false)] {
            if let Some(due) = self.by_time.get_mut(&time) {
                let list = if is_fire {
                    &mut due.fire
                } else {
                    &mut due.cleanup
                };
                if let Some(at) = list.iter().position(same) {
                    list.swap_remove(at);
                }
                if due.fire.is_empty() && due.cleanup.is_empty() {
                    self.by_time.remove(&time);
                }
            }
        }
    }

    /// Takes every timer at or before `watermark`.
    pub fn take_due(&mut self, watermark: i64) -> DueNow {
        let mut now = DueNow {
            fire: Vec::new(),
            cleanup: Vec::new(),
        };
        while let Some(entry) = self.by_time.first_entry() {
            if *entry.key() > watermark {
                break;
            }
            let mut due = entry.remove();
            due.fire.sort_unstable();
            due.fire.dedup();
            now.fire.append(&mut due.fire);
            now.cleanup.append(&mut due.cleanup);
        }
        now
    }

    /// Windows waiting to fire.
    pub fn pending_fires(&self) -> usize {
        self.by_time.values().map(|d| d.fire.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Key {
        Some(k.as_bytes().to_vec())
    }

    #[test]
    fn due_windows_fire_by_time_then_key_then_start() {
        let mut timers = Timers::default();
        for (time, k, start) in [(19, "b", 10), (9, "b", 0), (19, "a", 12), (9, "a", 0)] {
            timers.fire_at(time, key(k), Window::new(start, time + 1));
            timers.clean_up_at(time + 100, key(k), Window::new(start, time + 1));
        }
        timers.fire_at(19, key("a"), Window::new(10, 20));
        let due = timers.take_due(19);
        let order: Vec<(String, i64)> = due
            .fire
            .iter()
            .map(|(k, w)| (String::from_utf8(k.clone().unwrap()).unwrap(), w.start))
            .collect();
        assert_eq!(
            order,
            [
                ("a".into(), 0),
                ("b".into(), 0),
                ("a".into(), 10),
                ("a".into(), 12),
                ("b".into(), 10)
            ]
        );
        assert!(due.cleanup.is_empty());
        assert_eq!(timers.pending_fires(), 0);
        assert_eq!(timers.take_due(200).cleanup.len(), 4);
    }

    #[test]
    fn removed_timers_do_not_come_due() {
        let mut timers = Timers::default();
        let w = Window::new(0, 10);
        timers.fire_at(9, key("k"), w);
        timers.clean_up_at(9, key("k"), w);
        timers.fire_at(9, key("other"), w);
        timers.remove(9, 9, &key("k"), &w);
        assert_eq!(timers.pending_fires(), 1);
        let due = timers.take_due(9);
        assert_eq!(due.fire, [(key("other"), w)]);
        assert!(due.cleanup.is_empty());
    }
}
