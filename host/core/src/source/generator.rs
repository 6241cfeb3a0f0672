//! Generated input: bid-shaped rows and Nexmark events.

use std::sync::Arc;

use serde::Serialize;
use weir_batch::BatchWriter;
use weir_batch::json::{write_i64, write_u64};

use super::{Origin, Positions, Source, SourceBatch, SourceError, SourcePosition};

/// Bid-shaped rows, the same distribution as the Flink peer benchmark's
/// datagen table (`shared/peers/flink/FlinkLite.java`), so Weir and Flink
/// are timed on the same rows:
///
/// | field | value |
/// |---|---|
/// | `auction` | uniform in [1000, 11000] |
/// | `bidder` | uniform in [1000, 101000] |
/// | `price` | uniform in [100, 10 000 000] |
/// | `channel`, `url`, `extra` | 8, 60 and 10 random hex characters |
/// | `date_time` (and the event time) | `seq / 100` ms: 100 000 events per event-time second |
///
/// Rows are written straight into the batch buffer as JSON, with no
/// allocation per row:
///
/// ```
/// let mut bids = weir_core::source::BidGenerator::new(7, Some(3));
/// let mut writer = weir_batch::BatchWriter::new();
/// assert_eq!(bids.fill(&mut writer, 10), 3);
/// let bytes = writer.finish();
/// let batch = weir_batch::Batch::new(&bytes)?;
/// let row: serde_json::Value = serde_json::from_slice(batch.iter().next().unwrap().value).unwrap();
/// assert_eq!(row["url"].as_str().unwrap().len(), 60);
/// # Ok::<(), weir_batch::FormatError>(())
/// ```
///
/// Row `seq` is a function of the seed and `seq` alone (its random
/// numbers start at a state computed from them), so a generator can be
/// split into partitions, one per source thread, as Flink's datagen is at
/// parallelism above 1: partition `p` of `n` writes rows `p`, `p + n`,
/// `p + 2n`, …, and together they write the rows one generator would.
/// Errors name a partition's events by its own count (`bids[1/2] event
/// #k`: the partition's k-th row).
#[derive(Debug, Clone)]
pub struct BidGenerator {
    name: Arc<str>,
    seed: u64,
    rng: SplitMix64,
    /// The next row's number (over all partitions).
    seq: u64,
    /// This partition's first row, and the step to its next.
    partition: u64,
    partitions: u64,
    end: Option<u64>,
    writer: BatchWriter,
}

/// Random numbers a bid row draws: three for its numbers, one for
/// `channel`, four for `url`, one for `extra`.
const DRAWS_PER_BID: u64 = 9;

/// The event time of bid `seq`: 100 000 bids per event-time second.
fn bid_time(seq: u64) -> i64 {
    (seq / 100) as i64
}

impl BidGenerator {
    /// `count` rows (unbounded when `None`) from `seed`.
    pub fn new(seed: u64, count: Option<u64>) -> Self {
        Self::partition(seed, count, 0, 1)
    }

    /// Partition `partition` of `partitions` of the `count` rows from
    /// `seed`: rows `partition`, `partition + partitions`, … Named
    /// `bids[P/N]` when there are several.
    ///
    /// # Panics
    /// `partition` is not below `partitions` (the pipeline file's
    /// validation refuses that).
    pub fn partition(seed: u64, count: Option<u64>, partition: u64, partitions: u64) -> Self {
        assert!(
            partition < partitions,
            "bids partition {partition} of {partitions}"
        );
        BidGenerator {
            name: match partitions {
                1 => "bids".into(),
                _ => format!("bids[{partition}/{partitions}]").into(),
            },
            seed,
            rng: SplitMix64::at_row(seed, partition),
            seq: partition,
            partition,
            partitions,
            end: count,
            writer: BatchWriter::with_capacity(1 << 16),
        }
    }

    /// Number of the next row (over all partitions).
    pub fn position(&self) -> u64 {
        self.seq
    }

    /// Rows this partition has written.
    fn written(&self) -> u64 {
        (self.seq - self.partition) / self.partitions
    }

    /// Appends up to `max` rows to `writer`; returns how many.
    pub fn fill(&mut self, writer: &mut BatchWriter, max: usize) -> usize {
        let available = self.end.map_or(u64::MAX, |end| {
            end.saturating_sub(self.seq).div_ceil(self.partitions)
        });
        let n = (max as u64).min(available);
        for _ in 0..n {
            let seq = self.seq;
            if self.partitions > 1 {
                self.rng = SplitMix64::at_row(self.seed, seq);
            }
            let timestamp = bid_time(seq);
            let auction = self.rng.between(1000, 11000);
            let bidder = self.rng.between(1000, 101_000);
            let price = self.rng.between(100, 10_000_000);
            let rng = &mut self.rng;
            writer.push_with(timestamp, None, &[], |buf| {
                buf.extend_from_slice(b"{\"auction\":");
                write_u64(buf, auction);
                buf.extend_from_slice(b",\"bidder\":");
                write_u64(buf, bidder);
                buf.extend_from_slice(b",\"price\":");
                write_u64(buf, price);
                buf.extend_from_slice(b",\"channel\":\"");
                rng.hex(buf, 8);
                buf.extend_from_slice(b"\",\"url\":\"");
                rng.hex(buf, 60);
                buf.extend_from_slice(b"\",\"date_time\":");
                write_i64(buf, timestamp);
                buf.extend_from_slice(b",\"extra\":\"");
                rng.hex(buf, 10);
                buf.extend_from_slice(b"\"}");
            });
            self.seq += self.partitions;
        }
        n as usize
    }
}

impl Source for BidGenerator {
    fn name(&self) -> &str {
        &self.name
    }

    fn position(&self) -> Option<SourcePosition> {
        Some(at(self.seq, &self.rng))
    }

    fn seek(&mut self, position: &SourcePosition) -> Result<(), SourceError> {
        let (seq, rng) = generated(&self.name, position, self.end)?;
        if seq % self.partitions != self.partition {
            return Err(SourceError::Resume {
                source_name: self.name.to_string(),
                reason: format!(
                    "the checkpoint is at row #{seq}, which is not this partition's \
                     (partition {} of {}): was the generator split otherwise?",
                    self.partition, self.partitions
                ),
            });
        }
        (self.seq, self.rng) = (seq, rng);
        Ok(())
    }

    fn next_batch(&mut self, max_events: usize) -> Result<Option<SourceBatch>, SourceError> {
        let first = self.written();
        let mut writer = std::mem::take(&mut self.writer);
        let len = self.fill(&mut writer, max_events);
        let bytes = writer.finish_into();
        self.writer = writer;
        Ok((len > 0).then(|| SourceBatch {
            bytes,
            len,
            // Event time only grows with the row number.
            max_timestamp: Some(bid_time(self.seq - self.partitions)),
            origin: Origin {
                source: self.name.clone(),
                positions: Positions::Sequence(first),
            },
        }))
    }
}

/// The generator state in `position`, checked against the generator's end.
/// A generator's position: rows produced and its random state.
fn at(seq: u64, rng: &SplitMix64) -> SourcePosition {
    SourcePosition::Generated {
        events: seq,
        rng: rng.0,
    }
}

/// The rows produced and random state of `position`, for a generator of
/// at most `end` rows.
fn generated(
    name: &str,
    position: &SourcePosition,
    end: Option<u64>,
) -> Result<(u64, SplitMix64), SourceError> {
    let error = |reason: String| SourceError::Resume {
        source_name: name.to_string(),
        reason,
    };
    match position {
        SourcePosition::Generated { events, rng } => match end {
            Some(end) if *events > end => Err(error(format!(
                "the checkpoint is at event #{events}, past this generator's count ({end})"
            ))),
            _ => Ok((*events, SplitMix64(*rng))),
        },
        other => Err(error(format!("a generator cannot resume at {other:?}"))),
    }
}

/// Per-key sequence numbers, for exactly-once checks: event `n` is
/// `{"key":"k<n % keys>","seq":<n / keys>,"ts":…}`, so each key's `seq`
/// runs 0, 1, 2, … in order. Event time advances by `interval_ms` per
/// event from `base_time_ms`.
#[derive(Debug, Clone)]
pub struct SequenceGenerator {
    name: Arc<str>,
    next: u64,
    count: Option<u64>,
    keys: u64,
    base_time_ms: i64,
    interval_ms: u64,
    writer: BatchWriter,
}

impl SequenceGenerator {
    /// `count` events (unbounded when `None`) over `keys` keys.
    pub fn new(count: Option<u64>, keys: u64, base_time_ms: i64, interval_ms: u64) -> Self {
        SequenceGenerator {
            name: "sequence".into(),
            next: 0,
            count,
            keys: keys.max(1),
            base_time_ms,
            interval_ms,
            writer: BatchWriter::with_capacity(1 << 16),
        }
    }
}

impl Source for SequenceGenerator {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_batch(&mut self, max_events: usize) -> Result<Option<SourceBatch>, SourceError> {
        let first = self.next;
        let available = self.count.map_or(u64::MAX, |end| end - self.next);
        let n = (max_events as u64).min(available);
        let mut max_timestamp = i64::MIN;
        for _ in 0..n {
            let ts = self.base_time_ms + (self.next * self.interval_ms) as i64;
            max_timestamp = max_timestamp.max(ts);
            let (key, seq) = (self.next % self.keys, self.next / self.keys);
            self.writer.push_with(ts, None, &[], |buf| {
                buf.extend_from_slice(b"{\"key\":\"k");
                write_u64(buf, key);
                buf.extend_from_slice(b"\",\"seq\":");
                write_u64(buf, seq);
                buf.extend_from_slice(b",\"ts\":");
                write_i64(buf, ts);
                buf.push(b'}');
            });
            self.next += 1;
        }
        Ok((n > 0).then(|| SourceBatch {
            bytes: self.writer.finish_into(),
            len: n as usize,
            max_timestamp: Some(max_timestamp),
            origin: Origin {
                source: self.name.clone(),
                positions: Positions::Sequence(first),
            },
        }))
    }

    fn position(&self) -> Option<SourcePosition> {
        Some(SourcePosition::Generated {
            events: self.next,
            rng: 0,
        })
    }

    fn seek(&mut self, position: &SourcePosition) -> Result<(), SourceError> {
        (self.next, _) = generated(&self.name, position, self.count)?;
        Ok(())
    }
}

/// SplitMix64: small, fast, and the same numbers on every platform.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    /// The state bid row `seq` of `seed` starts from: one generator's
    /// after the rows before it, without drawing them.
    fn at_row(seed: u64, seq: u64) -> SplitMix64 {
        SplitMix64(
            seed.wrapping_add(
                0x9E37_79B9_7F4A_7C15u64.wrapping_mul(seq.wrapping_mul(DRAWS_PER_BID)),
            ),
        )
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high]` (multiply-shift; bias is below 2^-40 here).
    fn between(&mut self, low: u64, high: u64) -> u64 {
        let span = high - low + 1;
        low + ((u128::from(self.next()) * u128::from(span)) >> 64) as u64
    }

    /// `len` random lowercase hex digits: each `next()` gives sixteen, the
    /// lowest nibble first, made into ASCII eight at a time.
    fn hex(&mut self, buf: &mut Vec<u8>, len: usize) {
        let mut left = len;
        while left > 0 {
            let bits = self.next();
            let mut digits = [0u8; 16];
            digits[..8].copy_from_slice(&hex_digits(bits as u32).to_le_bytes());
            digits[8..].copy_from_slice(&hex_digits((bits >> 32) as u32).to_le_bytes());
            // All sixteen, then cut: a copy of constant length is a store,
            // not a `memcpy` call.
            let take = left.min(16);
            let end = buf.len() + take;
            buf.extend_from_slice(&digits);
            buf.truncate(end);
            left -= take;
        }
    }
}

/// The eight nibbles of `nibbles`, lowest first, as ASCII hex digits in the
/// bytes of a word, lowest byte first.
fn hex_digits(nibbles: u32) -> u64 {
    // Spread one nibble per byte: halves, then bytes, then nibbles.
    let mut x = u64::from(nibbles);
    x = (x | x << 16) & 0x0000_FFFF_0000_FFFF;
    x = (x | x << 8) & 0x00FF_00FF_00FF_00FF;
    x = (x | x << 4) & 0x0F0F_0F0F_0F0F_0F0F;
    // `0`..`9` from 0x30; a digit of 10 or more (adding 6 carries into the
    // high nibble) moves up to `a`..`f`.
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    x + 0x3030_3030_3030_3030 + letters * (b'a' - b'0' - 10) as u64
}

/// A clickstream: page views by users, arriving out of order.
///
/// Event `n` happens at `base_time_ms + n * interval_ms` minus a random
/// delay in `[0, disorder_ms]`, so events arrive up to `disorder_ms` out of
/// order. Rows look like `{"user":"u7","page":"/cart","ts":1704067200100}`
/// (`ts` is the event time, also set as the event's timestamp). Pages are
/// skewed: the first pages are visited most.
#[derive(Debug, Clone)]
pub struct ClickGenerator {
    name: Arc<str>,
    rng: SplitMix64,
    seq: u64,
    spec: ClickSpec,
    writer: BatchWriter,
}

/// Settings of a [`ClickGenerator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClickSpec {
    /// How many events; unbounded when `None`.
    pub count: Option<u64>,
    /// Random seed.
    pub seed: u64,
    /// Event time of the first event.
    pub base_time_ms: i64,
    /// Event-time distance between consecutive events.
    pub interval_ms: u64,
    /// Largest delay of an event behind its place in the stream.
    pub disorder_ms: u64,
    /// Distinct users.
    pub users: u64,
}

const PAGES: [&str; 8] = [
    "/",
    "/products",
    "/search",
    "/cart",
    "/checkout",
    "/blog",
    "/help",
    "/about",
];

impl ClickGenerator {
    /// A generator with these settings.
    pub fn new(spec: ClickSpec) -> Self {
        ClickGenerator {
            name: "clicks".into(),
            rng: SplitMix64(spec.seed),
            seq: 0,
            spec,
            writer: BatchWriter::with_capacity(1 << 16),
        }
    }
}

impl Source for ClickGenerator {
    fn name(&self) -> &str {
        &self.name
    }

    fn position(&self) -> Option<SourcePosition> {
        Some(at(self.seq, &self.rng))
    }

    fn seek(&mut self, position: &SourcePosition) -> Result<(), SourceError> {
        (self.seq, self.rng) = generated(&self.name, position, self.spec.count)?;
        Ok(())
    }

    fn next_batch(&mut self, max_events: usize) -> Result<Option<SourceBatch>, SourceError> {
        let first = self.seq;
        let available = self.spec.count.map_or(u64::MAX, |end| end - self.seq);
        let n = (max_events as u64).min(available);
        let mut max_timestamp = i64::MIN;
        for _ in 0..n {
            let delay = self.rng.between(0, self.spec.disorder_ms) as i64;
            let ts = self.spec.base_time_ms + (self.seq * self.spec.interval_ms) as i64 - delay;
            max_timestamp = max_timestamp.max(ts);
            let user = self.rng.between(1, self.spec.users.max(1));
            // Skewed: min of two uniform draws favours the first pages.
            let page = self.rng.between(0, 7).min(self.rng.between(0, 7)) as usize;
            self.writer.push_with(ts, None, &[], |buf| {
                buf.extend_from_slice(b"{\"user\":\"u");
                write_u64(buf, user);
                buf.extend_from_slice(b"\",\"page\":\"");
                buf.extend_from_slice(PAGES[page].as_bytes());
                buf.extend_from_slice(b"\",\"ts\":");
                write_i64(buf, ts);
                buf.push(b'}');
            });
            self.seq += 1;
        }
        Ok((n > 0).then(|| SourceBatch {
            bytes: self.writer.finish_into(),
            len: n as usize,
            max_timestamp: Some(max_timestamp),
            origin: Origin {
                source: self.name.clone(),
                positions: Positions::Sequence(first),
            },
        }))
    }
}

/// Nexmark persons, auctions and bids from the `nexmark` crate, as flat JSON
/// objects with a `"type"` field (`"person"`, `"auction"`, `"bid"`); the
/// event time is the event's `date_time`.
pub struct NexmarkSource {
    name: Arc<str>,
    events: nexmark::EventGenerator,
    produced: u64,
    end: Option<u64>,
    writer: BatchWriter,
}

impl NexmarkSource {
    /// `count` events (unbounded when `None`), the first at `base_time_ms`.
    pub fn new(count: Option<u64>, base_time_ms: u64, bids_only: bool) -> Self {
        let config = nexmark::config::NexmarkConfig {
            base_time: base_time_ms,
            ..Default::default()
        };
        let mut events = nexmark::EventGenerator::new(config);
        if bids_only {
            events = events.with_type_filter(nexmark::event::EventType::Bid);
        }
        NexmarkSource {
            name: "nexmark".into(),
            events,
            produced: 0,
            end: count,
            writer: BatchWriter::with_capacity(1 << 16),
        }
    }
}

#[derive(Serialize)]
struct Tagged<'a, T> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    event: &'a T,
}

impl Source for NexmarkSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn position(&self) -> Option<SourcePosition> {
        Some(SourcePosition::Generated {
            events: self.produced,
            rng: 0,
        })
    }

    /// The `nexmark` generator has no seek: resuming generates and drops
    /// the events before the position (about a million a second).
    fn seek(&mut self, position: &SourcePosition) -> Result<(), SourceError> {
        let (events, _) = generated(&self.name, position, self.end)?;
        let skip = events
            .checked_sub(self.produced)
            .ok_or_else(|| SourceError::Resume {
                source_name: self.name.to_string(),
                reason: "a generator can only move forward".into(),
            })?;
        let skipped = self.events.by_ref().take(skip as usize).count() as u64;
        self.produced += skipped;
        Ok(())
    }

    fn next_batch(&mut self, max_events: usize) -> Result<Option<SourceBatch>, SourceError> {
        use nexmark::event::Event;
        let first = self.produced;
        let available = self.end.map_or(u64::MAX, |end| end - self.produced);
        let n = (max_events as u64).min(available);
        let mut max_timestamp = i64::MIN;
        for event in self.events.by_ref().take(n as usize) {
            let (time, kind) = match &event {
                Event::Person(p) => (p.date_time, "person"),
                Event::Auction(a) => (a.date_time, "auction"),
                Event::Bid(b) => (b.date_time, "bid"),
            };
            let mut result = Ok(());
            let timestamp = i64::try_from(time).unwrap_or(i64::MAX);
            max_timestamp = max_timestamp.max(timestamp);
            self.writer.push_with(timestamp, None, &[], |buf| {
                result = match &event {
                    Event::Person(p) => serde_json::to_writer(buf, &Tagged { kind, event: p }),
                    Event::Auction(a) => serde_json::to_writer(buf, &Tagged { kind, event: a }),
                    Event::Bid(b) => serde_json::to_writer(buf, &Tagged { kind, event: b }),
                };
            });
            result.map_err(|e| SourceError::Io {
                source_name: self.name.to_string(),
                reason: format!("cannot encode event #{}: {e}", self.produced),
            })?;
            self.produced += 1;
        }
        let len = (self.produced - first) as usize;
        Ok((len > 0).then(|| SourceBatch {
            bytes: self.writer.finish_into(),
            len,
            max_timestamp: Some(max_timestamp),
            origin: Origin {
                source: self.name.clone(),
                positions: Positions::Sequence(first),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_batch::Batch;

    #[test]
    fn hex_digits_are_the_nibbles_lowest_first() {
        let mut rng = SplitMix64(9);
        for _ in 0..1000 {
            let bits = rng.next();
            let want: Vec<u8> = (0..16)
                .map(|i| b"0123456789abcdef"[(bits >> (4 * i) & 0xF) as usize])
                .collect();
            let mut got = hex_digits(bits as u32).to_le_bytes().to_vec();
            got.extend_from_slice(&hex_digits((bits >> 32) as u32).to_le_bytes());
            assert_eq!(got, want, "{bits:x}");
        }
    }

    fn rows(source: &mut dyn Source, max: usize) -> Vec<serde_json::Value> {
        let batch = source.next_batch(max).unwrap().unwrap();
        Batch::new(&batch.bytes)
            .unwrap()
            .iter()
            .map(|e| serde_json::from_slice(e.value).unwrap())
            .collect()
    }

    /// Every row's event time and value, batch after batch.
    fn all_rows(source: &mut dyn Source, max: usize) -> Vec<(i64, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(batch) = source.next_batch(max).unwrap() {
            let events: Vec<_> = Batch::new(&batch.bytes)
                .unwrap()
                .iter()
                .map(|e| (e.timestamp, e.value.to_vec()))
                .collect();
            assert_eq!(batch.max_timestamp, events.iter().map(|e| e.0).max());
            out.extend(events);
        }
        out
    }

    #[test]
    fn partitions_of_the_bids_write_the_rows_one_generator_would() {
        let whole = all_rows(&mut BidGenerator::new(7, Some(1000)), 64);
        assert_eq!(whole.len(), 1000);
        for partitions in [2, 3] {
            let mut split: Vec<Option<(i64, Vec<u8>)>> = vec![None; 1000];
            for p in 0..partitions {
                let mut part = BidGenerator::partition(7, Some(1000), p, partitions);
                assert_eq!(part.name(), format!("bids[{p}/{partitions}]"));
                for (i, row) in all_rows(&mut part, 64).into_iter().enumerate() {
                    split[p as usize + i * partitions as usize] = Some(row);
                }
            }
            let split: Vec<_> = split.into_iter().map(Option::unwrap).collect();
            assert!(split == whole, "{partitions} partitions");
        }
    }

    #[test]
    fn a_partition_resumes_at_its_own_rows_only() {
        let mut part = BidGenerator::partition(7, Some(100), 1, 2);
        let first = all_rows(&mut BidGenerator::partition(7, Some(100), 1, 2), 10);
        part.next_batch(10).unwrap();
        let position = Source::position(&part).unwrap();
        let mut resumed = BidGenerator::partition(7, Some(100), 1, 2);
        resumed.seek(&position).unwrap();
        assert_eq!(all_rows(&mut resumed, 10), first[10..]);
        let mut other = BidGenerator::partition(7, Some(100), 0, 2);
        let err = other.seek(&position).unwrap_err().to_string();
        assert!(
            err.contains("not this partition's (partition 0 of 2)"),
            "{err}"
        );
    }

    #[test]
    fn bids_have_the_flink_shape_and_stop_at_count() {
        let mut bids = BidGenerator::new(1, Some(1000));
        let all = rows(&mut bids, 5000);
        assert_eq!(all.len(), 1000);
        for (seq, row) in all.iter().enumerate() {
            let auction = row["auction"].as_u64().unwrap();
            assert!((1000..=11000).contains(&auction));
            assert!((1000..=101_000).contains(&row["bidder"].as_u64().unwrap()));
            assert!((100..=10_000_000).contains(&row["price"].as_u64().unwrap()));
            assert_eq!(row["channel"].as_str().unwrap().len(), 8);
            assert_eq!(row["extra"].as_str().unwrap().len(), 10);
            assert_eq!(row["date_time"].as_u64().unwrap(), seq as u64 / 100);
        }
        assert!(bids.next_batch(10).unwrap().is_none());
    }

    #[test]
    fn the_same_seed_gives_the_same_rows() {
        let a = rows(&mut BidGenerator::new(9, Some(50)), 50);
        let b = rows(&mut BidGenerator::new(9, Some(50)), 50);
        let c = rows(&mut BidGenerator::new(10, Some(50)), 50);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    /// One of each generator, 300 events.
    const GENERATORS: [fn() -> Box<dyn Source>; 4] = [
        || Box::new(BidGenerator::new(9, Some(300))),
        || {
            Box::new(ClickGenerator::new(ClickSpec {
                count: Some(300),
                seed: 5,
                base_time_ms: 0,
                interval_ms: 10,
                disorder_ms: 100,
                users: 7,
            }))
        },
        || Box::new(NexmarkSource::new(Some(300), 0, false)),
        || Box::new(SequenceGenerator::new(Some(300), 4, 0, 10)),
    ];

    #[test]
    fn generators_resume_where_their_position_says() {
        for make in GENERATORS {
            let mut straight = make();
            let _ = rows(straight.as_mut(), 100);
            let position = straight.position().unwrap();
            let expected = rows(straight.as_mut(), 200);
            let mut resumed = make();
            resumed.seek(&position).unwrap();
            assert_eq!(rows(resumed.as_mut(), 200), expected, "{}", resumed.name());
            let past = SourcePosition::Generated {
                events: 301,
                rng: 0,
            };
            assert!(
                make()
                    .seek(&past)
                    .unwrap_err()
                    .to_string()
                    .contains("past this generator's count")
            );
        }
    }

    #[test]
    fn batches_carry_their_largest_timestamp() {
        for make in GENERATORS {
            let mut source = make();
            while let Some(batch) = source.next_batch(64).unwrap() {
                let mut max = i64::MIN;
                weir_batch::read_events(&batch.bytes, |e| max = max.max(e.timestamp)).unwrap();
                assert_eq!(batch.max_timestamp, Some(max), "{}", source.name());
            }
        }
    }

    #[test]
    fn clicks_arrive_within_their_disorder() {
        let spec = ClickSpec {
            count: Some(500),
            seed: 3,
            base_time_ms: 10_000,
            interval_ms: 100,
            disorder_ms: 1_000,
            users: 20,
        };
        let all = rows(&mut ClickGenerator::new(spec), 1000);
        assert_eq!(all.len(), 500);
        let mut max_seen = i64::MIN;
        let mut out_of_order = 0;
        for row in &all {
            let ts = row["ts"].as_i64().unwrap();
            assert!(
                ts > max_seen.saturating_sub(1_100),
                "{ts} is too late after {max_seen}"
            );
            out_of_order += usize::from(ts < max_seen);
            max_seen = max_seen.max(ts);
            assert!(row["user"].as_str().unwrap().starts_with('u'));
        }
        assert!(out_of_order > 100, "the stream is out of order");
    }

    #[test]
    fn nexmark_events_are_tagged_and_deterministic() {
        let a = rows(&mut NexmarkSource::new(Some(100), 1000, false), 100);
        let b = rows(&mut NexmarkSource::new(Some(100), 1000, false), 100);
        assert_eq!(a, b);
        assert_eq!(a[0]["type"], "person");
        assert!(
            a.iter()
                .any(|e| e["type"] == "bid" && e["auction"].is_u64())
        );
        let bids = rows(&mut NexmarkSource::new(Some(10), 1000, true), 100);
        assert!(bids.iter().all(|e| e["type"] == "bid"));
    }
}
