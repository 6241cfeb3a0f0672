//! The window operator against a native count/collect function.

use std::collections::BTreeMap;

use proptest::prelude::*;
use weir_batch::window::{FiredWindows, Slots, SlotsWriter};
use weir_batch::{Batch, BatchWriter};

use super::WindowOutput;
use super::*;
use crate::keys::{BatchKeys, EventKeys, KeySelector};
use crate::operator::{FailureKind, OperatorFailure};
use crate::state::MemoryStore;
use crate::time::{BoundedOutOfOrderness, END_OF_TIME};

/// Counts events per window; fails on an event whose value is `boom`.
pub(super) struct Count;

pub(super) fn count_of(slot: Option<&[u8]>) -> u64 {
    slot.map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()))
}

impl WindowFunction for Count {
    fn name(&self) -> &str {
        "count"
    }
    fn kind(&self) -> FunctionKind {
        FunctionKind::Aggregate
    }
    fn add(
        &mut self,
        accs: &[u8],
        events: &[u8],
        pairs: &[u32],
    ) -> Result<Vec<u8>, OperatorFailure> {
        let mut counts: Vec<u64> = Slots::new(accs).unwrap().iter().map(count_of).collect();
        let events: Vec<_> = Batch::new(events).unwrap().iter().collect();
        for pair in pairs.chunks(2) {
            if events[pair[0] as usize].value == b"boom" {
                return Err(OperatorFailure {
                    kind: FailureKind::Trap,
                    message: "boom".into(),
                    event_index: Some(pair[0] as usize),
                    output_before: Vec::new(),
                });
            }
            counts[pair[1] as usize] += 1;
        }
        let mut out = SlotsWriter::new();
        for c in counts {
            out.push(Some(&c.to_le_bytes()));
        }
        Ok(out.finish())
    }
    fn merge(&mut self, left: &[u8], right: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        let mut out = SlotsWriter::new();
        for (l, r) in Slots::new(left)
            .unwrap()
            .iter()
            .zip(Slots::new(right).unwrap().iter())
        {
            out.push(Some(&(count_of(l) + count_of(r)).to_le_bytes()));
        }
        Ok(out.finish())
    }
    fn fire(&mut self, windows: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        let mut out = BatchWriter::new();
        for w in FiredWindows::new(windows).unwrap().iter() {
            let text = format!(
                "{}@{}..{}={}",
                String::from_utf8_lossy(w.key.unwrap_or(b"-")),
                w.start,
                w.end,
                count_of(Some(w.payload))
            );
            out.push(w.end - 1, w.key, text.as_bytes(), &[]);
        }
        Ok(out.finish())
    }
}

/// Lists each window's event values, in time order.
struct Collect;

impl WindowFunction for Collect {
    fn name(&self) -> &str {
        "collect"
    }
    fn kind(&self) -> FunctionKind {
        FunctionKind::WholeWindow
    }
    fn add(&mut self, _: &[u8], _: &[u8], _: &[u32]) -> Result<Vec<u8>, OperatorFailure> {
        unreachable!("whole-window state is kept by the host")
    }
    fn merge(&mut self, _: &[u8], _: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        unreachable!("whole-window state is kept by the host")
    }
    fn fire(&mut self, windows: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        let mut out = BatchWriter::new();
        for w in FiredWindows::new(windows).unwrap().iter() {
            let values: Vec<String> = Batch::new(w.payload)
                .unwrap()
                .iter()
                .map(|e| String::from_utf8_lossy(e.value).into_owned())
                .collect();
            let text = format!("{}..{}:{}", w.start, w.end, values.join(","));
            out.push(w.end - 1, w.key, text.as_bytes(), &[]);
        }
        Ok(out.finish())
    }
}

fn operator(spec: WindowSpec, lateness: u64, function: Box<dyn WindowFunction>) -> WindowOperator {
    WindowOperator::new(
        spec,
        lateness,
        128,
        function,
        Box::new(MemoryStore::default()),
    )
}

#[derive(Default)]
struct Run {
    results: Vec<String>,
    late: Vec<String>,
}

fn values(bytes: &[u8]) -> Vec<String> {
    Batch::new(bytes)
        .unwrap()
        .iter()
        .map(|e| String::from_utf8_lossy(e.value).into_owned())
        .collect()
}

/// Advances `op` to `watermark`; the values of what fired, in order.
fn fired_at(op: &mut WindowOperator, watermark: i64) -> Vec<String> {
    op.advance(watermark)
        .unwrap()
        .iter()
        .flat_map(|r| values(r))
        .collect()
}

/// Feeds `(key, ts, value)` events in batches of `batch`, advancing the
/// watermark (`delay` out-of-orderness) after each, then to the end.
fn run(op: &mut WindowOperator, events: &[(&str, i64, &str)], batch: usize, delay: u64) -> Run {
    let mut out = Run::default();
    feed(
        op,
        events,
        batch,
        &mut BoundedOutOfOrderness::new(delay),
        &mut out,
    );
    out.results.extend(fired_at(op, END_OF_TIME));
    out
}

/// Feeds events in batches of `batch`, advancing the watermark `wm` after
/// each; results and late events go to `out`. Batches take turns carrying
/// their keys in the events and beside them, as the router sends them.
fn feed(
    op: &mut WindowOperator,
    events: &[(&str, i64, &str)],
    batch: usize,
    wm: &mut BoundedOutOfOrderness,
    out: &mut Run,
) {
    for (index, chunk) in events.chunks(batch.max(1)).enumerate() {
        let beside = index % 2 == 1;
        let mut writer = BatchWriter::new();
        let mut keys = BatchKeys::default();
        for (key, ts, value) in chunk {
            if beside {
                keys.push(key.as_bytes());
                writer.push(*ts, None, value.as_bytes(), &[]);
            } else {
                writer.push(*ts, Some(key.as_bytes()), value.as_bytes(), &[]);
            }
            wm.observe(*ts);
        }
        let mut results = Vec::new();
        let mut late = BatchWriter::new();
        op.process(
            &writer.finish(),
            if beside {
                EventKeys::Beside(&keys)
            } else {
                EventKeys::InEvents
            },
            WindowOutput {
                results: &mut results,
                late: &mut late,
            },
        )
        .unwrap();
        for r in results.iter().chain(&op.advance(wm.watermark()).unwrap()) {
            out.results.extend(values(r));
        }
        out.late.extend(values(&late.finish()));
    }
}

#[test]
fn tumbling_counts_fire_in_end_then_key_order() {
    let mut op = operator(WindowSpec::Tumbling { size_ms: 10 }, 0, Box::new(Count));
    let r = run(
        &mut op,
        &[
            ("b", 1, ""),
            ("a", 2, ""),
            ("a", 12, ""),
            ("b", 3, ""),
            ("a", 25, ""),
        ],
        2,
        5,
    );
    assert_eq!(
        r.results,
        ["a@0..10=1", "b@0..10=2", "a@10..20=1", "a@20..30=1"]
    );
    assert!(r.late.is_empty());
    assert_eq!(op.open_windows(), 0);
}

/// Sees the key of every event its `add` gets (`-` for none).
struct KeysSeen(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl WindowFunction for KeysSeen {
    fn name(&self) -> &str {
        "keys-seen"
    }
    fn kind(&self) -> FunctionKind {
        FunctionKind::Aggregate
    }
    fn add(
        &mut self,
        accs: &[u8],
        events: &[u8],
        pairs: &[u32],
    ) -> Result<Vec<u8>, OperatorFailure> {
        let keys = Batch::new(events)
            .unwrap()
            .iter()
            .map(|e| String::from_utf8_lossy(e.key.unwrap_or(b"-")).into_owned());
        self.0.lock().unwrap().extend(keys);
        Count.add(accs, events, pairs)
    }
    fn merge(&mut self, left: &[u8], right: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        Count.merge(left, right)
    }
    fn fire(&mut self, windows: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        Count.fire(windows)
    }
}

#[test]
fn keys_in_the_events_beside_them_or_selected_here_group_alike() {
    // Page views keyed by page; the event at 3 is late (the watermark is
    // at 19 by then).
    let rows = [(1, "/a"), (2, "/b"), (25, "/a"), (3, "/b"), (26, "/a")];
    let select = KeySelector::parse("page");
    for mode in ["in events", "beside", "select"] {
        let seen = std::sync::Arc::default();
        let mut op = operator(
            WindowSpec::Tumbling { size_ms: 10 },
            0,
            Box::new(KeysSeen(std::sync::Arc::clone(&seen))),
        );
        let mut results = Vec::new();
        let mut late = BatchWriter::new();
        for chunk in [&rows[..2], &rows[2..]] {
            let mut writer = BatchWriter::new();
            let mut keys = BatchKeys::default();
            for (ts, page) in chunk {
                let value = format!(r#"{{"page":"{page}"}}"#);
                let key = (mode == "in events").then_some(page.as_bytes());
                writer.push(*ts, key, value.as_bytes(), &[]);
                keys.push(page.as_bytes());
            }
            let keys = match mode {
                "in events" => EventKeys::InEvents,
                "beside" => EventKeys::Beside(&keys),
                _ => EventKeys::Select(&select),
            };
            let out = WindowOutput {
                results: &mut results,
                late: &mut late,
            };
            op.process(&writer.finish(), keys, out).unwrap();
            op.advance(19).unwrap();
        }
        let fired = fired_at(&mut op, END_OF_TIME);
        assert_eq!(fired, ["/a@20..30=2"], "{mode}");
        // The late event leaves with its key, whichever way it came.
        let late: Vec<_> = Batch::new(&late.finish())
            .unwrap()
            .iter()
            .map(|e| (e.key.map(<[u8]>::to_vec), e.timestamp))
            .collect();
        assert_eq!(late, [(Some(b"/b".to_vec()), 3)], "{mode}");
        // `add` gets the events as they came: keys beside or to select are
        // not written into them.
        let expected = if mode == "in events" { "/a" } else { "-" };
        assert!(
            seen.lock()
                .unwrap()
                .iter()
                .all(|k| k == expected || k == "/b"),
            "{mode}"
        );
        assert!(seen.lock().unwrap().iter().any(|k| k == expected), "{mode}");
    }
}

/// A batch of `(timestamp, value)` events without keys.
fn unkeyed(rows: &[(i64, &str)]) -> Vec<u8> {
    let mut writer = BatchWriter::new();
    for (ts, value) in rows {
        writer.push(*ts, None, value.as_bytes(), &[]);
    }
    writer.finish()
}

#[test]
fn a_batch_that_fails_on_a_key_sends_none_of_its_late_events() {
    let select = KeySelector::parse("page");
    for spec in [
        WindowSpec::Tumbling { size_ms: 10 },
        WindowSpec::Session { gap_ms: 5 },
    ] {
        let mut op = operator(spec, 0, Box::new(Count));
        op.advance(25).unwrap();
        // Late, then fine, then without the field.
        let batch = unkeyed(&[
            (3, r#"{"page":"/a"}"#),
            (30, r#"{"page":"/a"}"#),
            (31, r#"{"user":"u"}"#),
        ]);
        let (mut results, mut late) = (Vec::new(), BatchWriter::new());
        let out = WindowOutput {
            results: &mut results,
            late: &mut late,
        };
        let failed = op.process(&batch, EventKeys::Select(&select), out);
        assert!(
            matches!(failed, Err(WindowError::Key { index: 2, .. })),
            "{failed:?}"
        );
        assert!(late.is_empty(), "{spec:?}");
        assert!(fired_at(&mut op, END_OF_TIME).is_empty(), "{spec:?}");
    }
}

#[test]
fn a_batch_claiming_more_events_than_it_holds_is_an_error() {
    let mut batch = unkeyed(&[(1, r#"{"page":"/a"}"#)]);
    batch[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    let select = KeySelector::parse("page");
    for spec in [
        WindowSpec::Tumbling { size_ms: 10 },
        WindowSpec::Session { gap_ms: 5 },
    ] {
        let mut op = operator(spec, 0, Box::new(Count));
        let (mut results, mut late) = (Vec::new(), BatchWriter::new());
        let out = WindowOutput {
            results: &mut results,
            late: &mut late,
        };
        let e = op
            .process(&batch, EventKeys::Select(&select), out)
            .unwrap_err();
        assert!(e.to_string().contains("malformed batch"), "{e}");
    }
}

#[test]
fn keys_beside_a_batch_must_be_one_per_event() {
    let batch = unkeyed(&[(1, "{}"), (2, "{}")]);
    for given in [1, 3] {
        let mut op = operator(WindowSpec::Tumbling { size_ms: 10 }, 0, Box::new(Count));
        let mut keys = BatchKeys::default();
        (0..given).for_each(|_| keys.push(b"/a"));
        let (mut results, mut late) = (Vec::new(), BatchWriter::new());
        let out = WindowOutput {
            results: &mut results,
            late: &mut late,
        };
        let e = op
            .process(&batch, EventKeys::Beside(&keys), out)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("2 events but {given} keys beside them")),
            "{e}"
        );
        assert!(fired_at(&mut op, END_OF_TIME).is_empty());
    }
}

#[test]
fn a_key_written_with_escapes_is_the_same_key_as_without() {
    // `key_by` unescapes JSON strings: `"\/a"` is `/a`. The unescaped key
    // is kept for the batch, and both events count in one group.
    for spec in [
        WindowSpec::Tumbling { size_ms: 10 },
        WindowSpec::Session { gap_ms: 5 },
    ] {
        let mut op = operator(spec, 0, Box::new(Count));
        let batch = unkeyed(&[(1, r#"{"page":"\/a"}"#), (2, r#"{"page":"/a"}"#)]);
        let select = KeySelector::parse("page");
        let (mut results, mut late) = (Vec::new(), BatchWriter::new());
        let out = WindowOutput {
            results: &mut results,
            late: &mut late,
        };
        op.process(&batch, EventKeys::Select(&select), out).unwrap();
        let fired = fired_at(&mut op, END_OF_TIME);
        assert_eq!(fired.len(), 1, "{spec:?}: {fired:?}");
        assert!(
            fired[0].starts_with("/a@") && fired[0].ends_with("=2"),
            "{fired:?}"
        );
    }
}

#[test]
fn an_event_without_the_selected_key_is_an_error_naming_it() {
    let mut op = operator(WindowSpec::Tumbling { size_ms: 10 }, 0, Box::new(Count));
    let mut writer = BatchWriter::new();
    writer.push(1, None, br#"{"page":"/a"}"#, &[]);
    writer.push(2, None, br#"{"user":"u"}"#, &[]);
    let mut results = Vec::new();
    let mut late = BatchWriter::new();
    let out = WindowOutput {
        results: &mut results,
        late: &mut late,
    };
    let select = KeySelector::parse("page");
    match op.process(&writer.finish(), EventKeys::Select(&select), out) {
        Err(WindowError::Key {
            index,
            key_by,
            message,
        }) => {
            assert_eq!((index, key_by.as_str()), (1, "page"));
            assert!(message.contains("missing"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Nothing of the batch was added.
    assert!(
        op.advance(END_OF_TIME)
            .unwrap()
            .iter()
            .all(|r| values(r).is_empty())
    );
}

#[test]
fn late_events_go_to_the_late_output_not_the_results() {
    let mut op = operator(WindowSpec::Tumbling { size_ms: 10 }, 0, Box::new(Count));
    // After ts 30 the watermark is 29: window [0,10) has fired.
    let r = run(
        &mut op,
        &[("a", 5, "x"), ("a", 30, "y"), ("a", 6, "late")],
        1,
        0,
    );
    assert_eq!(r.results, ["a@0..10=1", "a@30..40=1"]);
    assert_eq!(r.late, ["late"]);
}

#[test]
fn allowed_lateness_refires_a_window_with_the_late_event() {
    let mut op = operator(WindowSpec::Tumbling { size_ms: 10 }, 100, Box::new(Count));
    let r = run(
        &mut op,
        &[
            ("a", 5, ""),
            ("a", 30, ""),
            ("a", 6, ""),
            ("a", 200, ""),
            ("a", 7, "too late"),
        ],
        1,
        0,
    );
    assert_eq!(
        r.results,
        ["a@0..10=1", "a@0..10=2", "a@30..40=1", "a@200..210=1"]
    );
    assert_eq!(r.late, ["too late"]);
}

/// [`Count`] that fires a sliding window from its slices itself, writing
/// each slice's count in order; its `merge` must not be called.
struct CountSlices;

impl WindowFunction for CountSlices {
    fn name(&self) -> &str {
        "count-slices"
    }
    fn kind(&self) -> FunctionKind {
        FunctionKind::Aggregate
    }
    fn add(
        &mut self,
        accs: &[u8],
        events: &[u8],
        pairs: &[u32],
    ) -> Result<Vec<u8>, OperatorFailure> {
        Count.add(accs, events, pairs)
    }
    fn merge(&mut self, _: &[u8], _: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        panic!("a function that fires slices is not asked to merge them")
    }
    fn fire(&mut self, windows: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        Count.fire(windows)
    }
    fn fires_slices(&self) -> bool {
        true
    }
    fn fire_slices(&mut self, windows: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        let mut out = BatchWriter::new();
        for w in FiredWindows::new(windows).unwrap().iter() {
            let counts: Vec<String> = Slots::new(w.payload)
                .unwrap()
                .iter()
                .map(|slot| count_of(Some(slot.expect("no empty slice"))).to_string())
                .collect();
            let text = format!(
                "{}@{}..{}={}",
                String::from_utf8_lossy(w.key.unwrap_or(b"-")),
                w.start,
                w.end,
                counts.join("+")
            );
            out.push(w.end - 1, w.key, text.as_bytes(), &[]);
        }
        Ok(out.finish())
    }
}

#[test]
fn a_function_that_merges_slices_itself_gets_each_windows_slices_in_order() {
    let spec = WindowSpec::Sliding {
        size_ms: 10,
        slide_ms: 5,
    };
    let events = [
        ("k", 3, ""),
        ("k", 7, ""),
        ("k", 12, ""),
        ("j", 12, ""),
        ("k", 13, ""),
    ];
    let mut op = operator(spec, 0, Box::new(CountSlices));
    let r = run(&mut op, &events, 2, 0);
    assert_eq!(
        r.results,
        [
            "k@-5..5=1",
            "k@0..10=1+1",
            "j@5..15=1",
            "k@5..15=1+2",
            "j@10..20=1",
            "k@10..20=2"
        ]
    );
    // The same windows and totals as assembling them with `merge`.
    let mut merged = operator(spec, 0, Box::new(Count));
    let totals: Vec<String> = r
        .results
        .iter()
        .map(|row| {
            let (head, counts) = row.split_once('=').unwrap();
            let total: u64 = counts.split('+').map(|c| c.parse::<u64>().unwrap()).sum();
            format!("{head}={total}")
        })
        .collect();
    assert_eq!(run(&mut merged, &events, 2, 0).results, totals);
}

#[test]
fn sliding_windows_count_each_event_in_every_window() {
    let spec = WindowSpec::Sliding {
        size_ms: 10,
        slide_ms: 5,
    };
    let mut op = operator(spec, 0, Box::new(Count));
    let r = run(&mut op, &[("k", 3, ""), ("k", 7, ""), ("k", 12, "")], 3, 0);
    assert_eq!(
        r.results,
        ["k@-5..5=1", "k@0..10=2", "k@5..15=2", "k@10..20=1"]
    );
}

#[test]
fn sessions_merge_when_a_bridging_event_arrives() {
    let mut op = operator(WindowSpec::Session { gap_ms: 10 }, 0, Box::new(Count));
    // Two sessions of `u` ([0,12) and [20,30)) until 11 bridges them; `v`
    // stays alone. Out-of-orderness 20 keeps them all open.
    let r = run(
        &mut op,
        &[
            ("u", 0, ""),
            ("u", 2, ""),
            ("v", 1, ""),
            ("u", 20, ""),
            ("u", 11, ""),
        ],
        1,
        20,
    );
    assert_eq!(r.results, ["v@1..11=1", "u@0..30=4"]);
    assert_eq!(op.open_windows(), 0);
}

#[test]
fn sessions_stay_apart_without_a_bridge() {
    let mut op = operator(WindowSpec::Session { gap_ms: 10 }, 0, Box::new(Count));
    // [0,10) and [9,19) overlap; [20,30) neither overlaps nor touches.
    let r = run(&mut op, &[("u", 0, ""), ("u", 9, ""), ("u", 20, "")], 10, 0);
    assert_eq!(r.results, ["u@0..19=2", "u@20..30=1"]);
}

#[test]
fn whole_window_functions_see_every_event_in_time_order() {
    let mut op = operator(WindowSpec::Session { gap_ms: 10 }, 0, Box::new(Collect));
    let r = run(
        &mut op,
        &[("u", 5, "b"), ("u", 1, "a"), ("u", 22, "d"), ("u", 12, "c")],
        2,
        10,
    );
    assert_eq!(r.results, ["1..32:a,b,c,d"]);
    let mut op = operator(WindowSpec::Tumbling { size_ms: 10 }, 0, Box::new(Collect));
    let r = run(
        &mut op,
        &[("u", 5, "b"), ("u", 1, "a"), ("u", 12, "c")],
        1,
        10,
    );
    assert_eq!(r.results, ["0..10:a,b", "10..20:c"]);
    // Sliding windows are assembled from slices: still every event, in
    // time order, ties in arrival order.
    let spec = WindowSpec::Sliding {
        size_ms: 10,
        slide_ms: 5,
    };
    let mut op = operator(spec, 0, Box::new(Collect));
    let r = run(
        &mut op,
        &[
            ("u", 7, "c"),
            ("u", 1, "a"),
            ("u", 7, "d"),
            ("u", 4, "b"),
            ("u", 12, "e"),
        ],
        2,
        10,
    );
    assert_eq!(
        r.results,
        ["-5..5:a,b", "0..10:a,b,c,d", "5..15:c,d,e", "10..20:e"]
    );
}

#[test]
fn a_failing_add_leaves_the_state_as_before_the_batch() {
    let mut op = operator(WindowSpec::Tumbling { size_ms: 10 }, 0, Box::new(Count));
    let mut first = BatchWriter::new();
    first.push(1, Some(b"a"), b"", &[]);
    let mut results = Vec::new();
    let mut late = BatchWriter::new();
    op.process(
        &first.finish(),
        EventKeys::InEvents,
        WindowOutput {
            results: &mut results,
            late: &mut late,
        },
    )
    .unwrap();
    let mut second = BatchWriter::new();
    second.push(2, Some(b"a"), b"", &[]);
    second.push(3, Some(b"a"), b"boom", &[]);
    let err = op
        .process(
            &second.finish(),
            EventKeys::InEvents,
            WindowOutput {
                results: &mut results,
                late: &mut late,
            },
        )
        .unwrap_err();
    match err {
        WindowError::Function(f) => assert_eq!(f.event_index, Some(1)),
        other => panic!("{other}"),
    }
    let fired = op.advance(END_OF_TIME).unwrap();
    assert_eq!(
        values(&fired[0]),
        ["a@0..10=1"],
        "the failed batch left no trace"
    );
}

/// Results per (key, window) as a consumer applying updates sees them: a
/// window's later result replaces its earlier one (an allowed-lateness
/// re-firing), and a session that grew by merging replaces the smaller
/// sessions it covers, which fired early.
fn finals(results: &[String]) -> BTreeMap<(String, i64, i64), String> {
    let mut out: BTreeMap<(String, i64, i64), String> = BTreeMap::new();
    for r in results {
        let (head, count) = r.split_once('=').unwrap();
        let (key, bounds) = head.split_once('@').unwrap();
        let (start, end) = bounds.split_once("..").unwrap();
        let (start, end): (i64, i64) = (start.parse().unwrap(), end.parse().unwrap());
        out.retain(|(k, s, e), _| !(k == key && start <= *s && *e <= end));
        out.insert((key.to_string(), start, end), count.to_string());
    }
    out
}

fn arbitrary_events() -> impl Strategy<Value = Vec<(u8, i64)>> {
    proptest::collection::vec((0u8..4, 0i64..2_000), 1..150)
}

/// Reorders events by `ts + jitter` with jitter in `[0, bound]`: no event
/// arrives more than `bound` behind the latest one.
fn shuffle_within(events: &[(u8, i64)], jitter: &[u16], bound: u16) -> Vec<(u8, i64)> {
    let mut keyed: Vec<(i64, usize)> = events
        .iter()
        .enumerate()
        .map(|(i, (_, ts))| (ts + i64::from(jitter[i % jitter.len()] % (bound + 1)), i))
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, i)| events[i]).collect()
}

fn run_events(
    spec: WindowSpec,
    lateness: u64,
    delay: u64,
    events: &[(u8, i64)],
    batch: usize,
) -> Run {
    let keys = ["k0", "k1", "k2", "k3"];
    let events: Vec<(&str, i64, &str)> = events
        .iter()
        .map(|(k, ts)| (keys[usize::from(*k)], *ts, ""))
        .collect();
    run(
        &mut operator(spec, lateness, Box::new(Count)),
        &events,
        batch,
        delay,
    )
}

const SPECS: [WindowSpec; 3] = [
    WindowSpec::Tumbling { size_ms: 100 },
    WindowSpec::Sliding {
        size_ms: 100,
        slide_ms: 25,
    },
    WindowSpec::Session { gap_ms: 30 },
];

/// What the windows must hold, computed the plain way: every event counted
/// in every window [`WindowSpec::assign`] gives it, as `key@start..end=n`.
fn reference_counts(
    spec: WindowSpec,
    events: &[(u8, i64)],
) -> BTreeMap<(String, i64, i64), String> {
    let mut counts: BTreeMap<(String, i64, i64), u64> = BTreeMap::new();
    for (key, ts) in events {
        spec.assign(*ts, |w| {
            *counts
                .entry((format!("k{key}"), w.start, w.end))
                .or_default() += 1
        });
    }
    counts
        .into_iter()
        .map(|(k, n)| (k, n.to_string()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Sliding windows kept as slices count what the plain definition
    /// counts: each event in every window that contains it, each window
    /// once, in (end, key, start) order; with disorder within the allowed
    /// lateness, windows re-fire and the final results still agree.
    #[test]
    fn sliced_windows_count_what_plain_windows_count(
        events in arbitrary_events(),
        jitter in proptest::collection::vec(any::<u16>(), 1..50),
        batch in 1usize..20,
        slides in 1u64..6,
        slide in 1u64..60,
    ) {
        let spec = WindowSpec::Sliding { size_ms: slides * slide, slide_ms: slide };
        let expected = reference_counts(spec, &events);
        let mut sorted = events.clone();
        sorted.sort_by_key(|(_, ts)| *ts);
        let straight = run_events(spec, 0, 0, &sorted, batch);
        prop_assert!(straight.late.is_empty());
        prop_assert_eq!(finals(&straight.results), expected.clone());
        prop_assert_eq!(straight.results.len(), expected.len(), "each window fires once");
        let shuffled = shuffle_within(&events, &jitter, 80);
        let late_but_allowed = run_events(spec, 80, 0, &shuffled, batch);
        prop_assert!(late_but_allowed.late.is_empty());
        prop_assert_eq!(finals(&late_but_allowed.results), expected);
    }

    /// Disorder within the watermark's out-of-orderness: exactly the same
    /// results, in the same order.
    #[test]
    fn shuffles_within_the_out_of_orderness_give_identical_results(
        events in arbitrary_events(),
        jitter in proptest::collection::vec(any::<u16>(), 1..50),
        batch in 1usize..20,
        spec in 0usize..3,
    ) {
        let mut sorted = events.clone();
        sorted.sort_by_key(|(_, ts)| *ts);
        let shuffled = shuffle_within(&events, &jitter, 50);
        let expected = run_events(SPECS[spec], 0, 50, &sorted, batch);
        let got = run_events(SPECS[spec], 0, 50, &shuffled, batch);
        prop_assert!(got.late.is_empty());
        prop_assert_eq!(got.results, expected.results);
    }

    /// Disorder within the allowed lateness (no out-of-orderness): windows
    /// may fire early and again, but every window's final result is the
    /// same, and nothing is late.
    #[test]
    fn shuffles_within_the_allowed_lateness_give_the_same_final_results(
        events in arbitrary_events(),
        jitter in proptest::collection::vec(any::<u16>(), 1..50),
        batch in 1usize..20,
        spec in 0usize..3,
    ) {
        let mut sorted = events.clone();
        sorted.sort_by_key(|(_, ts)| *ts);
        let shuffled = shuffle_within(&events, &jitter, 80);
        let expected = run_events(SPECS[spec], 80, 0, &sorted, batch);
        let got = run_events(SPECS[spec], 80, 0, &shuffled, batch);
        prop_assert!(got.late.is_empty());
        prop_assert_eq!(finals(&got.results), finals(&expected.results));
    }
}

/// Runs `events` straight, and again with a checkpoint after `cut` events
/// restored into two subtasks that split the key groups: the results must
/// be the same, each window fired as often.
fn restored_equals_straight(spec: WindowSpec, lateness: u64, events: &[(&str, i64, &str)]) {
    use crate::state::{MemoryBackend, StateBackend};
    let delay = 3;
    let straight = run(
        &mut operator(spec, lateness, Box::new(Count)),
        events,
        1,
        delay,
    );
    for cut in 1..events.len() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = operator(spec, lateness, Box::new(Count));
        first.restore(&[], &(0..=127)).unwrap();
        let mut out = Run::default();
        let mut wm = BoundedOutOfOrderness::new(delay);
        feed(&mut first, &events[..cut], 1, &mut wm, &mut out);
        first.checkpoint(dir.path()).unwrap()().unwrap();
        drop(first);
        for groups in [0..=63u16, 64..=127] {
            let store = MemoryBackend
                .restore("count", 0, &[dir.path().join("state")], groups.clone())
                .unwrap();
            let mut op = WindowOperator::new(spec, lateness, 128, Box::new(Count), store);
            op.restore(&[dir.path().to_path_buf()], &groups).unwrap();
            // Each subtask sees the events of its keys, and the watermark
            // of them all (the source broadcasts it).
            let mut wm = wm;
            for event in &events[cut..] {
                if groups.contains(&crate::keys::key_group(event.0.as_bytes(), 128)) {
                    feed(&mut op, &[*event], 1, &mut wm, &mut out);
                } else {
                    wm.observe(event.1);
                    out.results.extend(fired_at(&mut op, wm.watermark()));
                }
            }
            out.results.extend(fired_at(&mut op, END_OF_TIME));
        }
        let (mut expected, mut got) = (straight.results.clone(), out.results);
        expected.sort();
        got.sort();
        assert_eq!(got, expected, "checkpoint after {cut} events");
        assert_eq!(out.late.len(), straight.late.len(), "cut {cut}");
    }
}

#[test]
fn restored_tumbling_windows_fire_once_even_when_fired_before_the_checkpoint() {
    // Lateness 100 keeps fired windows' state (and their re-firing on a
    // late event) across the checkpoint.
    restored_equals_straight(
        WindowSpec::Tumbling { size_ms: 10 },
        100,
        &[
            ("a", 5, ""),
            ("b", 6, ""),
            ("c", 7, ""),
            ("a", 30, ""),
            ("b", 31, ""),
            ("a", 8, "late but allowed"),
            ("c", 9, "late but allowed"),
            ("d", 40, ""),
            ("a", 300, ""),
            ("b", 1, "too late"),
        ],
    );
}

#[test]
fn restored_sliding_windows_fire_once_from_their_slices() {
    restored_equals_straight(
        WindowSpec::Sliding {
            size_ms: 30,
            slide_ms: 10,
        },
        40,
        &[
            ("a", 5, ""),
            ("b", 16, ""),
            ("a", 27, ""),
            ("a", 41, ""),
            ("b", 12, "late but allowed"),
            ("c", 52, ""),
            ("a", 8, "late but allowed"),
            ("b", 95, ""),
            ("a", 30, "late but allowed"),
            ("a", 300, ""),
            ("b", 2, "too late"),
        ],
    );
}

#[test]
fn state_of_other_windows_is_refused_on_restore() {
    use crate::state::{MemoryBackend, StateBackend};
    let dir = tempfile::tempdir().unwrap();
    let mut tumbling = operator(WindowSpec::Tumbling { size_ms: 10 }, 0, Box::new(Count));
    feed(
        &mut tumbling,
        &[("a", 6, "")],
        1,
        &mut BoundedOutOfOrderness::new(100),
        &mut Run::default(),
    );
    tumbling.checkpoint(dir.path()).unwrap()().unwrap();
    let store = MemoryBackend
        .restore("count", 0, &[dir.path().join("state")], 0..=127)
        .unwrap();
    let spec = WindowSpec::Sliding {
        size_ms: 10,
        slide_ms: 5,
    };
    let mut sliding = WindowOperator::new(spec, 0, 128, Box::new(Count), store);
    let error = sliding
        .restore(&[dir.path().to_path_buf()], &(0..=127))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("[0, 10)") && error.contains("not a slice"),
        "{error}"
    );
}

#[test]
fn restored_sessions_still_merge() {
    restored_equals_straight(
        WindowSpec::Session { gap_ms: 10 },
        0,
        &[
            ("u", 0, ""),
            ("v", 1, ""),
            ("u", 20, ""),
            ("w", 2, ""),
            ("u", 11, "bridge"),
            ("v", 14, ""),
            ("u", 60, ""),
        ],
    );
}

#[test]
fn many_windows_fire_in_bounded_calls() {
    let mut op = operator(WindowSpec::Tumbling { size_ms: 10 }, 0, Box::new(Count));
    let keys: Vec<String> = (0..10_000).map(|i| format!("k{i}")).collect();
    let mut writer = BatchWriter::new();
    for key in &keys {
        writer.push(1, Some(key.as_bytes()), b"", &[]);
    }
    let mut results = Vec::new();
    let mut late = BatchWriter::new();
    let out = WindowOutput {
        results: &mut results,
        late: &mut late,
    };
    op.process(&writer.finish(), EventKeys::InEvents, out)
        .unwrap();
    let fired = op.advance(END_OF_TIME).unwrap();
    // 10 000 windows: three calls of at most 4096.
    assert_eq!(fired.len(), 3);
    let all: Vec<String> = fired.iter().flat_map(|b| values(b)).collect();
    assert_eq!(all.len(), keys.len());
    assert!(all.iter().all(|r| r.ends_with("@0..10=1")));
}

/// Runs `events` through a count operator as [`run_events`] does (keys of
/// 1 to 4 bytes), with a slice cache of `budget` bytes holding keys up to
/// `max_key` bytes and, when `checkpoints` is set, a checkpoint after
/// every batch; returns the run and the keys left in the store once
/// everything has fired.
fn run_cached(
    spec: WindowSpec,
    events: &[(u8, i64)],
    batch: usize,
    (budget, max_key): (usize, usize),
    checkpoints: bool,
) -> (Run, usize) {
    let keys = ["a", "bb", "ccc", "dddd"];
    let mut op = operator(spec, 80, Box::new(Count)).with_cache(budget, max_key);
    let mut wm = BoundedOutOfOrderness::new(0);
    let mut out = Run::default();
    let dir = tempfile::tempdir().unwrap();
    for (n, chunk) in events.chunks(batch.max(1)).enumerate() {
        let chunk: Vec<(&str, i64, &str)> = chunk
            .iter()
            .map(|(k, ts)| (keys[usize::from(*k)], *ts, ""))
            .collect();
        feed(&mut op, &chunk, chunk.len(), &mut wm, &mut out);
        if checkpoints {
            let at = dir.path().join(n.to_string());
            std::fs::create_dir_all(&at).unwrap();
            op.checkpoint(&at).unwrap()().unwrap();
        }
    }
    out.results.extend(fired_at(&mut op, END_OF_TIME));
    let left = op.stored_keys();
    (out, left)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// The slice cache changes nothing but speed: written to the store and
    /// emptied after every batch (a budget of 0), written at a checkpoint
    /// after every batch, or bypassed for keys longer than it takes, the
    /// results are the same as with everything cached, in the same order;
    /// and once every window has fired, the store holds nothing.
    #[test]
    fn the_slice_cache_written_out_at_any_point_gives_the_same_results(
        events in arbitrary_events(),
        jitter in proptest::collection::vec(any::<u16>(), 1..50),
        batch in 1usize..20,
        spec in 0usize..2,
    ) {
        let shuffled = shuffle_within(&events, &jitter, 80);
        let all = (slices::BUDGET, slices::MAX_KEY);
        let (cached, _) = run_cached(SPECS[spec], &shuffled, batch, all, false);
        let (none, short) = ((0, slices::MAX_KEY), (slices::BUDGET, 2));
        for (cache, checkpoints) in [(none, false), (all, true), (none, true), (short, false), (short, true)] {
            let (got, left) = run_cached(SPECS[spec], &shuffled, batch, cache, checkpoints);
            prop_assert_eq!(&got.results, &cached.results);
            prop_assert_eq!(&got.late, &cached.late);
            prop_assert_eq!(left, 0, "state left behind");
        }
    }
}

/// A memory store that says it may keep no state in memory (as a RocksDB
/// hot tier of `hot_tier_mb = 0` does), counting its puts.
struct Unbuffered(MemoryStore, std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl crate::state::StateStore for Unbuffered {
    fn get(&mut self, key: &[u8]) -> Result<Option<&[u8]>, crate::state::StateError> {
        self.0.get(key)
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), crate::state::StateError> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.put(key, value)
    }
    fn delete(&mut self, key: &[u8]) -> Result<(), crate::state::StateError> {
        self.0.delete(key)
    }
    fn checkpoint(
        &mut self,
        dir: &std::path::Path,
    ) -> Result<crate::state::Deferred, crate::state::StateError> {
        self.0.checkpoint(dir)
    }
    fn scan_keys(&mut self, each: &mut dyn FnMut(&[u8])) -> Result<(), crate::state::StateError> {
        self.0.scan_keys(each)
    }
    fn lend_memory(&mut self, _bytes: usize) -> Option<usize> {
        Some(0)
    }
}

#[test]
fn a_store_bounded_in_memory_bounds_the_slice_cache_too() {
    let spec = WindowSpec::Tumbling { size_ms: 10 };
    let events = [("a", 1, ""), ("b", 2, ""), ("a", 12, ""), ("c", 25, "")];
    let puts = std::sync::Arc::default();
    let store = Unbuffered(MemoryStore::default(), std::sync::Arc::clone(&puts));
    let mut bounded = WindowOperator::new(spec, 0, 128, Box::new(Count), Box::new(store));
    let got = run(&mut bounded, &events, 2, 0);
    // Every batch's accumulators went to the store, not only at checkpoints.
    assert_eq!(puts.load(std::sync::atomic::Ordering::Relaxed), 4);
    let expected = run(&mut operator(spec, 0, Box::new(Count)), &events, 2, 0);
    assert_eq!(got.results, expected.results);
}

#[test]
fn the_slice_cache_takes_its_memory_out_of_the_hot_tiers_budget() {
    use crate::state::HotTier;
    use crate::state::tests::MapCold;
    let tier = || Box::new(HotTier::new(MapCold::default(), 1000));
    let tumbling = WindowSpec::Tumbling { size_ms: 10 };
    // The tier lends half its budget (see the state tests: it then keeps
    // to the other half).
    let op = WindowOperator::new(tumbling, 0, 128, Box::new(Count), tier());
    assert_eq!(op.cache_budget(), Some(500));
    // Sessions have no slices to cache.
    let sessions = WindowSpec::Session { gap_ms: 10 };
    let op = WindowOperator::new(sessions, 0, 128, Box::new(Count), tier());
    assert_eq!(op.cache_budget(), None);
    // An unbounded store leaves the cache its own bound.
    let op = WindowOperator::new(
        tumbling,
        0,
        128,
        Box::new(Count),
        Box::new(MemoryStore::default()),
    );
    assert_eq!(op.cache_budget(), Some(slices::BUDGET));
}

#[test]
fn partials_merge_into_held_state_and_bad_ones_are_refused() {
    use weir_batch::window::FiredWriter;
    let partials = |entries: &[(i64, i64, &str, u64)]| {
        let mut writer = FiredWriter::new();
        for (start, end, key, count) in entries {
            writer.push(*start, *end, Some(key.as_bytes()), &count.to_le_bytes());
        }
        writer.finish()
    };
    let mut op = operator(WindowSpec::Tumbling { size_ms: 10 }, 0, Box::new(Count));
    let mut results = Vec::new();
    op.merge_partials(
        &partials(&[(0, 10, "a", 2), (10, 20, "b", 1)]),
        &mut results,
    )
    .unwrap();
    // The second sender's count of `a` merges with the first's.
    op.merge_partials(&partials(&[(0, 10, "a", 3)]), &mut results)
        .unwrap();
    assert!(results.is_empty());
    let fired = fired_at(&mut op, END_OF_TIME);
    assert_eq!(fired, ["a@0..10=5", "b@10..20=1"]);

    let mut op = operator(WindowSpec::Tumbling { size_ms: 10 }, 0, Box::new(Count));
    let err = op
        .merge_partials(&partials(&[(0, 7, "a", 1)]), &mut results)
        .unwrap_err();
    assert!(
        err.to_string().contains("[0, 7) is not one of its slices"),
        "{err}"
    );
    op.advance(25).unwrap();
    let err = op
        .merge_partials(&partials(&[(10, 20, "a", 1)]), &mut results)
        .unwrap_err();
    assert!(
        err.to_string().contains("came after the watermark"),
        "{err}"
    );
    let err = op.merge_partials(b"\x01", &mut results).unwrap_err();
    assert!(err.to_string().contains("malformed"), "{err}");
    let mut sessions = operator(WindowSpec::Session { gap_ms: 5 }, 0, Box::new(Count));
    let err = sessions
        .merge_partials(&partials(&[(0, 10, "a", 1)]), &mut results)
        .unwrap_err();
    assert!(err.to_string().contains("takes none"), "{err}");
}
