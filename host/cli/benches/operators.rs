//! Criterion: one batch of 256 bid-shaped events through Nexmark q1 and q2,
//! as a WebAssembly component and as the same Rust code compiled natively.
//!
//! `WEIR_PLUGINS=$(tests/build-plugins.sh) cargo bench -p weir-cli --bench operators`

#![allow(clippy::expect_used, reason = "benchmark set-up: fail loudly")]
#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented pub fn"
)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use weir_batch::BatchWriter;
use weir_core::operator::Operator as _;
use weir_core::source::BidGenerator;
use weir_guest::{Config, Operator, Output};
use weir_wasm::{Limits, WasmEngine};

const BATCH: usize = 256;

fn batch() -> Vec<u8> {
    let mut writer = BatchWriter::new();
    BidGenerator::new(42, None).fill(&mut writer, BATCH);
    writer.finish()
}

fn plugins() -> std::path::PathBuf {
    std::env::var_os("WEIR_PLUGINS")
        .map(Into::into)
        .expect("set WEIR_PLUGINS to the output of tests/build-plugins.sh")
}

fn bench_native<O: Operator>(c: &mut Criterion, name: &str, input: &[u8]) {
    let mut operator = O::new(&Config::default()).expect("operator");
    let mut out = Output::with_capacity(1 << 20);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("native", |b| {
        b.iter(|| {
            weir_guest::run_batch(&mut operator, black_box(input), &mut out).expect("run");
            black_box(out.finish_into())
        })
    });
    group.finish();
}

fn bench_wasm(c: &mut Criterion, engine: &WasmEngine, name: &str, file: &str, input: &[u8]) {
    let component = engine.load(&plugins().join(file)).expect("load");
    let mut operator = engine
        .instantiate(name, &component, &[], Limits::default())
        .expect("instantiate");
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("wasm", |b| {
        b.iter(|| black_box(operator.process(black_box(input)).expect("process")))
    });
    group.finish();
}

fn operators(c: &mut Criterion) {
    let input = batch();
    let engine = WasmEngine::new(WasmEngine::default_cache_dir()).expect("engine");
    bench_native::<nexmark_q1::Q1>(c, "q1", &input);
    bench_wasm(c, &engine, "q1", "nexmark_q1.wasm", &input);
    bench_native::<nexmark_q2::Q2>(c, "q2", &input);
    bench_wasm(c, &engine, "q2", "nexmark_q2.wasm", &input);
}

criterion_group!(benches, operators);
criterion_main!(benches);
