//! Criterion: the window operator's add path, per batch of 1024 bids keyed
//! by auction into 10 s tumbling windows whose 10 000 keys all have state
//! (the steady state of `weir bench tumble`), with the `window-count`
//! component and with the same count as native code. The difference is
//! what the guest call costs; the native count is the host's own work.
//!
//! `WEIR_PLUGINS=$(tests/build-plugins.sh) cargo bench -p weir-cli --bench window`

#![allow(clippy::expect_used, reason = "benchmark set-up: fail loudly")]
#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented pub fn"
)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weir_batch::BatchWriter;
use weir_batch::window::{Slots, SlotsWriter};
use weir_core::keys::{DEFAULT_MAX_PARALLELISM, EventKeys, KeySelector};
use weir_core::operator::OperatorFailure;
use weir_core::source::BidGenerator;
use weir_core::state::{MemoryBackend, StateBackend};
use weir_core::window::{FunctionKind, WindowFunction, WindowOperator, WindowOutput, WindowSpec};
use weir_wasm::{Limits, WasmEngine};

const BATCH: usize = 1024;
/// Two seconds of event time: every auction has a few bids in it.
const BATCHES: usize = 200;

/// A count per group, 8 little-endian bytes, as native code.
struct NativeCount;

impl WindowFunction for NativeCount {
    fn name(&self) -> &str {
        "native-count"
    }
    fn kind(&self) -> FunctionKind {
        FunctionKind::Aggregate
    }
    fn add(&mut self, accs: &[u8], _: &[u8], pairs: &[u32]) -> Result<Vec<u8>, OperatorFailure> {
        let mut counts: Vec<u64> = Slots::new(accs)
            .expect("the host's slots")
            .iter()
            .map(|s| {
                s.and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_le_bytes)
            })
            .collect();
        for pair in pairs.chunks_exact(2) {
            counts[pair[1] as usize] += 1;
        }
        let mut out = SlotsWriter::with_capacity(counts.len() * 12);
        for count in counts {
            out.push(Some(&count.to_le_bytes()));
        }
        Ok(out.finish())
    }
    fn merge(&mut self, _: &[u8], _: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        unreachable!("tumbling windows merge nothing")
    }
    fn fire(&mut self, _: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        unreachable!("the benchmark fires nothing")
    }
}

fn batches() -> Vec<Vec<u8>> {
    let mut generator = BidGenerator::new(42, None);
    let mut writer = BatchWriter::with_capacity(BATCH * 220);
    (0..BATCHES)
        .map(|_| {
            generator.fill(&mut writer, BATCH);
            writer.finish_into()
        })
        .collect()
}

fn bench(c: &mut Criterion, variant: &str, function: Box<dyn WindowFunction>) {
    let input = batches();
    let store = MemoryBackend.open(variant, 0).expect("store");
    let mut window = WindowOperator::new(
        WindowSpec::Tumbling { size_ms: 10_000 },
        0,
        DEFAULT_MAX_PARALLELISM,
        function,
        store,
    );
    let auction = KeySelector::parse("auction");
    let (mut results, mut late) = (Vec::new(), BatchWriter::new());
    let mut add = |bytes: &[u8]| {
        let out = WindowOutput {
            results: &mut results,
            late: &mut late,
        };
        window
            .process(bytes, EventKeys::Select(&auction), out)
            .expect("process");
    };
    // Every key gets its state first.
    input.iter().for_each(|b| add(b));
    let mut group = c.benchmark_group("window-add");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut next = input.iter().cycle();
    group.bench_function(variant, |b| {
        b.iter(|| add(next.next().expect("cycles")));
    });
    group.finish();
    assert!(
        results.is_empty() && late.is_empty(),
        "nothing fires or is late"
    );
}

fn window_add(c: &mut Criterion) {
    let plugins: std::path::PathBuf = std::env::var_os("WEIR_PLUGINS")
        .map(Into::into)
        .expect("set WEIR_PLUGINS to the output of tests/build-plugins.sh");
    let engine = WasmEngine::new(WasmEngine::default_cache_dir()).expect("engine");
    let component = engine
        .load(&plugins.join("window_count.wasm"))
        .expect("load");
    let config = [
        ("key_name".to_string(), "auction".to_string()),
        ("count_name".to_string(), "num".to_string()),
    ];
    let wasm = engine
        .instantiate("count", &component, &config, Limits::default())
        .expect("instantiate");
    bench(c, "native", Box::new(NativeCount));
    bench(c, "wasm", Box::new(wasm));
}

criterion_group!(benches, window_add);
criterion_main!(benches);
