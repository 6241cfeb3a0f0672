//! A window subtask's timers, grouped by time.
//!
//! Every slice or session with state has a cleanup timer, and each window
//! it is part of a fire timer while that window's end is ahead of the
//! watermark. Many windows share a time (every key's window of the same
//! tumbling or sliding period), so timers are kept per time, and a restore
//! that rebuilds millions of them does no sorting. A window's fire timer is
//! kept once however many of its slices ask for it (a set per time, as
//! Flink's timer service dedupes). The windows of one time are sorted when
//! they fire, by key then window, so the firing order (time, key, start)
//! does not depend on arrival order or parallelism.

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use smallvec::SmallVec;

use super::Window;

/// A window's key (`None`: events without one). Short keys are kept
/// inline: a subtask holds a timer or two per key and slice, and
/// allocating and freeing a key for each was 5 % of a q5 run.
pub(super) type Key = Option<SmallVec<[u8; KEY_INLINE]>>;

/// Key bytes a [`Key`] holds without a heap allocation.
const KEY_INLINE: usize = 16;

/// `key` as a [`Key`].
pub(super) fn key_of(key: Option<&[u8]>) -> Key {
    key.map(SmallVec::from_slice)
}

/// What is due at one time.
#[derive(Debug, Default)]
struct Due {
    /// Each window once.
    fire: HashTable<(Key, Window)>,
    cleanup: Vec<(Key, Window)>,
}

/// Timers by time.
#[derive(Debug, Default)]
pub(super) struct Timers {
    by_time: BTreeMap<i64, Due>,
    hasher: foldhash::fast::RandomState,
}

fn hash_of(hasher: &foldhash::fast::RandomState, key: Option<&[u8]>, window: &Window) -> u64 {
    hasher.hash_one((key, window))
}

/// What a watermark made due: windows to fire, in firing order, and
/// windows whose state to drop.
pub(super) struct DueNow {
    pub fire: Vec<(Key, Window)>,
    pub cleanup: Vec<(Key, Window)>,
}

impl Timers {
    /// Fires `window` of `key` once the watermark reaches `time` (once,
    /// however often this is called for it).
    pub fn fire_at(&mut self, time: i64, key: Option<&[u8]>, window: Window) {
        let hasher = &self.hasher;
        let hash = hash_of(hasher, key, &window);
        let fire = &mut self.by_time.entry(time).or_default().fire;
        let same = |(k, w): &(Key, Window)| k.as_deref() == key && *w == window;
        if fire.find(hash, same).is_none() {
            fire.insert_unique(hash, (key_of(key), window), |(k, w)| {
                hash_of(hasher, k.as_deref(), w)
            });
        }
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
        let hash = hash_of(&self.hasher, key.as_deref(), window);
        for (time, is_fire) in [(fire, true), (cleanup, false)] {
            if let Some(due) = self.by_time.get_mut(&time) {
                if is_fire {
                    if let Ok(found) = due.fire.find_entry(hash, same) {
                        found.remove();
                    }
                } else if let Some(at) = due.cleanup.iter().position(same) {
                    due.cleanup.swap_remove(at);
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
            now.fire.extend(sorted(due.fire.into_iter().collect()));
            now.cleanup.append(&mut due.cleanup);
        }
        now
    }

    /// Windows waiting to fire.
    pub fn pending_fires(&self) -> usize {
        self.by_time.values().map(|d| d.fire.len()).sum()
    }
}

/// `windows` in (key, window) order. Keys are compared by their first
/// eight bytes as one number first, which decides nearly every comparison
/// without a `memcmp` call, and the sort moves 16 bytes per window, not 48.
fn sorted(mut windows: Vec<(Key, Window)>) -> Vec<(Key, Window)> {
    // Big-endian and zero-padded, the prefixes order as the keys do where
    // they differ; where they tie, the whole pair decides.
    let prefix = |key: &Key| {
        key.as_deref().map_or(0, |k| {
            let mut head = [0u8; 8];
            let n = k.len().min(8);
            head[..n].copy_from_slice(&k[..n]);
            u64::from_be_bytes(head)
        })
    };
    let mut order: Vec<(u64, usize)> = windows
        .iter()
        .enumerate()
        .map(|(i, (key, _))| (prefix(key), i))
        .collect();
    order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| windows[a.1].cmp(&windows[b.1])));
    let mut taken: Vec<Option<(Key, Window)>> = windows.drain(..).map(Some).collect();
    order
        .into_iter()
        .filter_map(|(_, i)| taken[i].take())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Key {
        key_of(Some(k.as_bytes()))
    }

    #[test]
    fn windows_sort_by_whole_keys_as_bytes_then_window() {
        let keys: [Option<&[u8]>; 9] = [
            Some(b"a"),
            None,
            Some(b""),
            Some(b"a\0"),
            Some(b"abcdefgh2"),
            Some(b"abcdefgh10"),
            Some(b"abcdefgh"),
            Some(b"\xff"),
            Some(b"10"),
        ];
        let mut windows = Vec::new();
        for (n, key) in keys.iter().enumerate() {
            for start in [20, 0, 10] {
                windows.push((key_of(*key), Window::new(start + n as i64, 100)));
                windows.push((key_of(*key), Window::new(start, 100)));
            }
        }
        let mut expected = windows.clone();
        expected.sort_unstable();
        assert_eq!(sorted(windows), expected);
    }

    #[test]
    fn a_window_asked_for_twice_fires_once() {
        let mut timers = Timers::default();
        let w = Window::new(0, 10);
        timers.fire_at(9, Some(b"k"), w);
        timers.fire_at(9, Some(b"k"), w);
        timers.fire_at(9, None, w);
        assert_eq!(timers.pending_fires(), 2);
        assert_eq!(timers.take_due(9).fire, [(None, w), (key("k"), w)]);
    }

    #[test]
    fn due_windows_fire_by_time_then_key_then_start() {
        let mut timers = Timers::default();
        for (time, k, start) in [(19, "b", 10), (9, "b", 0), (19, "a", 12), (9, "a", 0)] {
            timers.fire_at(time, Some(k.as_bytes()), Window::new(start, time + 1));
            timers.clean_up_at(time + 100, key(k), Window::new(start, time + 1));
        }
        timers.fire_at(19, Some(b"a"), Window::new(10, 20));
        let due = timers.take_due(19);
        let order: Vec<(String, i64)> = due
            .fire
            .iter()
            .map(|(k, w)| {
                (
                    String::from_utf8(k.clone().unwrap().to_vec()).unwrap(),
                    w.start,
                )
            })
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
    fn keys_longer_than_the_inline_bytes_sort_and_dedupe_the_same() {
        let mut timers = Timers::default();
        let w = Window::new(0, 10);
        let long = [b'x'; KEY_INLINE + 9];
        let longer = [b'x'; KEY_INLINE + 10];
        for key in [&longer[..], &long, b"y", &long] {
            timers.fire_at(9, Some(key), w);
        }
        let due = timers.take_due(9).fire;
        let keys: Vec<&[u8]> = due.iter().filter_map(|(k, _)| k.as_deref()).collect();
        assert_eq!(keys, [&long[..], &longer, b"y"]);
    }

    #[test]
    fn removed_timers_do_not_come_due() {
        let mut timers = Timers::default();
        let w = Window::new(0, 10);
        timers.fire_at(9, Some(b"k"), w);
        timers.clean_up_at(9, key("k"), w);
        timers.fire_at(9, Some(b"other"), w);
        timers.remove(9, 9, &key("k"), &w);
        assert_eq!(timers.pending_fires(), 1);
        let due = timers.take_due(9);
        assert_eq!(due.fire, [(key("other"), w)]);
        assert!(due.cleanup.is_empty());
    }
}
