//! A keyed state update on the hot path (the hot tier in front of RocksDB,
//! `HotTier`, and the memory backend's `MemoryStore`) against a raw
//! hash-map update, over 100 K keys (target: at most 2x). The window
//! operator's update is a `get` then a `put`.
#![allow(
    missing_docs,
    clippy::expect_used,
    reason = "criterion's macros generate undocumented items; a broken set-up stops the benchmark loudly"
)]

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use weir_core::state::{ColdStore, Deferred, HotTier, StateError, StateStore};

/// A cold tier that is never reached: the budget holds every key, as on
/// the hot path.
struct Unreached;

impl ColdStore for Unreached {
    fn get(&self, _: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(None)
    }
    fn write(&mut self, _: &[(&[u8], Option<&[u8]>)]) -> Result<(), StateError> {
        Ok(())
    }
    fn checkpoint(&mut self, _: &std::path::Path) -> Result<Deferred, StateError> {
        Ok(weir_core::state::done())
    }
    fn scan_keys(&self, _: &mut dyn FnMut(&[u8])) -> Result<(), StateError> {
        Ok(())
    }
}

const KEYS: u64 = 100_000;

/// The composite key a window operator builds: key group, window end and
/// start, and the user key.
fn key(i: u64, buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&((i % 128) as u16).to_be_bytes());
    buf.extend_from_slice(&10_000u64.to_be_bytes());
    buf.extend_from_slice(&0u64.to_be_bytes());
    buf.push(1);
    weir_batch::json::write_u64(buf, 1000 + i);
}

fn updates(c: &mut Criterion) {
    let mut group = c.benchmark_group("state_update_100k_keys");
    let order: Vec<u64> = (0..KEYS).map(|i| (i * 7_919) % KEYS).collect();

    let mut map: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut buf = Vec::new();
    for i in 0..KEYS {
        key(i, &mut buf);
        map.insert(buf.clone(), 0u64.to_le_bytes().to_vec());
    }
    let mut n = 0usize;
    group.bench_function("raw_hash_map", |b| {
        b.iter(|| {
            key(order[n % order.len()], &mut buf);
            n += 1;
            let v = map.get_mut(buf.as_slice()).expect("present");
            let count = u64::from_le_bytes(v[..8].try_into().expect("8 bytes")) + 1;
            v.clear();
            v.extend_from_slice(&count.to_le_bytes());
            black_box(v.len())
        })
    });

    let mut store = HotTier::new(Unreached, 1 << 30);
    for i in 0..KEYS {
        key(i, &mut buf);
        store.put(&buf, &0u64.to_le_bytes()).expect("put");
    }
    group.bench_function("hot_tier_get_put", |b| {
        b.iter(|| {
            key(order[n % order.len()], &mut buf);
            n += 1;
            let count = store.get(&buf).expect("get").map_or(0, |v| {
                u64::from_le_bytes(v[..8].try_into().expect("8 bytes"))
            }) + 1;
            store.put(&buf, &count.to_le_bytes()).expect("put");
            black_box(count)
        })
    });

    let mut memory = weir_core::state::MemoryStore::default();
    for i in 0..KEYS {
        key(i, &mut buf);
        memory.put(&buf, &0u64.to_le_bytes()).expect("put");
    }
    group.bench_function("memory_store_get_put", |b| {
        b.iter(|| {
            key(order[n % order.len()], &mut buf);
            n += 1;
            let count = memory.get(&buf).expect("get").map_or(0, |v| {
                u64::from_le_bytes(v[..8].try_into().expect("8 bytes"))
            }) + 1;
            memory.put(&buf, &count.to_le_bytes()).expect("put");
            black_box(count)
        })
    });
    group.finish();
}

criterion_group!(benches, updates);
criterion_main!(benches);
