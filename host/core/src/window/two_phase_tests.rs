//! Two-phase aggregation through whole pipelines: the same results and
//! late events as one phase, at every parallelism, with the senders doing
//! the adding.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use weir_batch::window::Slots;

use super::operator_tests::Count as Counting;
use super::{FunctionKind, WindowFunction, WindowOperator, WindowSpec};
use crate::keys::KeySelector;
use crate::operator::OperatorFailure;
use crate::pipeline::{JsonFields, LineFormat, PipelineSettings};
use crate::runtime::{Pipeline, Stage, Task};
use crate::sink::JsonLinesSink;
use crate::source::{JsonLinesSource, LineInput};
use crate::state::MemoryStore;
use crate::time::WatermarkSpec;

/// What the instances of one pipeline's function did.
#[derive(Default)]
struct Calls {
    /// Events added by the stage's subtasks…
    subtask_adds: AtomicUsize,
    /// …and by the senders' copies.
    sender_adds: AtomicUsize,
    /// Accumulators merged.
    merges: AtomicUsize,
    /// Copies fail to start.
    no_copies: bool,
}

/// The window operator tests' count, noting who calls it; copies itself.
struct Count {
    copy: bool,
    calls: Arc<Calls>,
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
        let adds = match self.copy {
            true => &self.calls.sender_adds,
            false => &self.calls.subtask_adds,
        };
        adds.fetch_add(pairs.len() / 2, Ordering::Relaxed);
        Counting.add(accs, events, pairs)
    }
    fn merge(&mut self, left: &[u8], right: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        let pairs = Slots::new(left).map_or(0, |s| s.len());
        self.calls.merges.fetch_add(pairs, Ordering::Relaxed);
        Counting.merge(left, right)
    }
    fn fire(&mut self, windows: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        Counting.fire(windows)
    }
    fn fork(&self) -> Option<Result<Box<dyn WindowFunction>, OperatorFailure>> {
        if self.calls.no_copies {
            return Some(Err(OperatorFailure {
                kind: crate::operator::FailureKind::Trap,
                message: "no memory for a copy".into(),
                event_index: None,
                output_before: Vec::new(),
            }));
        }
        Some(Ok(Box::new(Count {
            copy: true,
            calls: self.calls.clone(),
        })))
    }
}

#[derive(Clone, Debug, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn sorted_lines(&self) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    }
}

/// What one run gave.
struct Ran {
    results: Vec<String>,
    late: Vec<String>,
    calls: Arc<Calls>,
}

/// Runs `sources` (JSON lines with `k` and `ts`) through a sliding
/// count keyed by `k` at `parallelism`.
fn run(sources: &[String], parallelism: usize, two_phase: bool) -> Ran {
    let calls = Arc::new(Calls::default());
    let ran = pipeline(sources, parallelism, two_phase, &calls);
    let (out, late) = ran.unwrap();
    Ran {
        results: out.sorted_lines(),
        late: late.sorted_lines(),
        calls,
    }
}

/// [`run`]'s pipeline with `calls`: its results and late events, or why it
/// failed.
fn pipeline(
    sources: &[String],
    parallelism: usize,
    two_phase: bool,
    calls: &Arc<Calls>,
) -> Result<(Shared, Shared), crate::runtime::RunError> {
    let (out, late) = (Shared::default(), Shared::default());
    let fields = JsonFields {
        time_field: Some("ts".into()),
        ..Default::default()
    };
    let pipeline = Pipeline {
        settings: PipelineSettings {
            batch_size: 8,
            local_aggregation: two_phase,
            ..Default::default()
        },
        watermark: WatermarkSpec {
            max_out_of_orderness_ms: 5,
            idle_timeout_ms: None,
        },
        sources: sources
            .iter()
            .enumerate()
            .map(|(i, text)| {
                Box::new(JsonLinesSource::new(
                    format!("in{i}.jsonl"),
                    LineInput::reader(std::io::Cursor::new(text.clone().into_bytes())),
                    fields.clone(),
                    None,
                )) as Box<dyn crate::source::Source>
            })
            .collect(),
        stages: vec![Stage {
            key_by: Some(KeySelector::parse("k")),
            subtasks: (0..parallelism)
                .map(|_| {
                    Task::Window(WindowOperator::new(
                        WindowSpec::Sliding {
                            size_ms: 20,
                            slide_ms: 10,
                        },
                        0,
                        128,
                        Box::new(Count {
                            copy: false,
                            calls: calls.clone(),
                        }),
                        Box::new(MemoryStore::default()),
                    ))
                })
                .collect(),
        }],
        sinks: vec![Box::new(JsonLinesSink::new(
            "out".into(),
            out.clone(),
            LineFormat::Value,
        ))],
        late: Some(Box::new(JsonLinesSink::new(
            "late".into(),
            late.clone(),
            LineFormat::Value,
        ))),
        dead_letters: None,
        checkpointing: None,
    };
    pipeline.run(&Arc::default())?;
    Ok((out, late))
}

/// `n` events over five keys, out of order by up to 4 ms (within the
/// watermark's 5), and every 37th 30 ms behind: late.
fn events(n: i64, offset: i64) -> String {
    (0..n)
        .map(|i| {
            let key = ["a", "b", "c", "d", "e"][(i * 7 % 5) as usize];
            let mut ts = offset + i + (i * 13 % 9) - 4;
            if i % 37 == 36 {
                ts -= 30;
            }
            format!("{{\"k\":\"{key}\",\"ts\":{ts}}}\n")
        })
        .collect()
}

#[test]
fn two_phases_give_one_phases_results_and_late_events_at_every_parallelism() {
    let input = [events(400, 100)];
    let one = run(&input, 1, false);
    assert!(one.results.len() > 100, "{:?}", one.results);
    assert_eq!(one.late.len(), 10, "{:?}", one.late);
    for parallelism in [2, 4] {
        for two_phase in [false, true] {
            let ran = run(&input, parallelism, two_phase);
            let what = format!("parallelism {parallelism}, two phases {two_phase}");
            assert_eq!(ran.results, one.results, "{what}");
            assert_eq!(ran.late, one.late, "{what}");
            let (subtask, sender) = (
                ran.calls.subtask_adds.load(Ordering::Relaxed),
                ran.calls.sender_adds.load(Ordering::Relaxed),
            );
            if two_phase {
                // The sender adds what is on time; only the events its
                // watermark passed (the late ones, and some of the out of
                // order: it does not know they are on time at the subtask)
                // cross as events.
                assert!(sender > 300 && subtask < 100, "{what}: {sender} {subtask}");
            } else {
                assert_eq!((sender, subtask), (0, 390), "{what}");
            }
        }
    }
}

#[test]
fn accumulators_from_several_senders_are_merged() {
    // Two sources over the same keys and times, no late events.
    let input = |offset| {
        events(300, offset)
            .lines()
            .enumerate()
            .filter(|(i, _)| i % 37 != 36)
            .map(|(_, line)| format!("{line}\n"))
            .collect::<String>()
    };
    let sources = [input(100), input(103)];
    let one = run(&sources, 1, false);
    let two = run(&sources, 2, true);
    assert_eq!(two.results, one.results);
    assert!(one.late.is_empty() && two.late.is_empty());
    assert!(two.calls.merges.load(Ordering::Relaxed) > 0);
    assert!(two.calls.sender_adds.load(Ordering::Relaxed) > 500);
}

#[test]
fn a_copy_that_cannot_start_fails_the_run_before_it_reads() {
    let calls = Arc::new(Calls {
        no_copies: true,
        ..Calls::default()
    });
    let err = pipeline(&[events(40, 0)], 2, true, &calls).unwrap_err();
    assert_eq!(
        err.to_string(),
        "operator `count` trapped on starting its first phase: no memory for a copy"
    );
    assert_eq!(calls.subtask_adds.load(Ordering::Relaxed), 0);
}
