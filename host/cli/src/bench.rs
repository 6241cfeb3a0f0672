//! `weir bench`: an operator as WebAssembly vs the same Rust code compiled
//! natively, in one run, over the same pre-generated batches.
//!
//! Both variants go through `weir_guest::run_batch` on identical wire-format
//! batches; the only difference is the sandbox (the component call, copying
//! the batch in and out, output validation). Generation happens before the
//! clock starts. CPU time is measured per worker thread and summed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use weir_batch::BatchWriter;
use weir_core::operator::{Operator, OperatorFailure};
use weir_core::source::BidGenerator;
use weir_guest::Output;
use weir_wasm::crossing::{Crossing, Encoding};
use weir_wasm::{Limits, WasmEngine};

use crate::bench_state;
use crate::bench_window::{self, WindowWorkload};
use crate::cpu::thread_cpu_time;

/// Arguments of `weir bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// The workload.
    #[arg(value_enum)]
    workload: Workload,
    /// One JSON object per line and result instead of a table.
    #[arg(long)]
    json: bool,
    /// Pre-generated bid-shaped events per run.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Batch sizes, comma-separated (default: 1,16,256,4096 for
    /// q1/q2/crossing, 1024 for the others).
    #[arg(long, value_delimiter = ',')]
    batch: Vec<usize>,
    /// Parallelism, comma-separated: worker threads with their own operator
    /// instance (q1/q2), or subtasks per keyed stage (tumble/q5). Default:
    /// 1 for q1/q2, 1,2 for tumble/q5.
    #[arg(long, value_delimiter = ',')]
    parallelism: Vec<usize>,
    /// Directory holding the built plugins (default: $WEIR_PLUGINS; the
    /// script tests/build-plugins.sh builds them and prints it).
    #[arg(long)]
    plugins: Option<PathBuf>,
    /// tumble/q5: also run with a checkpoint every this many ms (variant
    /// `wasm+ckpt`), and report its throughput against the run without.
    /// checkpoint/recovery: the interval (default 1000).
    #[arg(long)]
    checkpoint_ms: Option<u64>,
    /// tumble/q5: also run the Flink peer benchmark — the `run` script of
    /// `shared/peers/flink` — once per round and parallelism, alternating
    /// with Weir's runs, and report each Weir run against it (variant
    /// `flink`, and `ratio_to_flink` on the `wasm` rows).
    #[arg(long, value_name = "RUN_SCRIPT")]
    flink: Option<PathBuf>,
    /// checkpoint/recovery: distinct keys, each a window holding its events
    /// (default: --events, one event per window).
    #[arg(long)]
    keys: Option<u64>,
    /// checkpoint/recovery: state backends, comma-separated (default:
    /// memory, and rocksdb when built with it).
    #[arg(long, value_delimiter = ',')]
    backend: Vec<String>,
    /// q1/q2/tumble/q5: run every variant this many times, alternating, and
    /// report each one's fastest run (the one the shared machine disturbed
    /// least).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Workload {
    /// Nexmark q1: price × 0.908 (a map).
    Q1,
    /// Nexmark q2: auction % 123 == 0 (a filter).
    Q2,
    /// Bids per auction in 10 s tumbling windows (a whole pipeline).
    Tumble,
    /// Nexmark q5, hot items: sliding 10 s / 2 s windows (a whole pipeline).
    Q5,
    /// Checkpoint size and duration as keyed state grows.
    Checkpoint,
    /// Time from a restart to having replayed what a crash lost.
    Recovery,
    /// A batch into a guest and back as typed records and as one flat
    /// buffer (the data plane's encoding), against the same echo natively.
    Crossing,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Q1 => "q1",
            Workload::Q2 => "q2",
            Workload::Tumble => "tumble",
            Workload::Q5 => "q5",
            Workload::Checkpoint => "checkpoint",
            Workload::Recovery => "recovery",
            Workload::Crossing => "crossing",
        }
    }

    fn windowed(self) -> Option<WindowWorkload> {
        match self {
            Workload::Tumble => Some(WindowWorkload::Tumble),
            Workload::Q5 => Some(WindowWorkload::Q5),
            Workload::Q1
            | Workload::Q2
            | Workload::Checkpoint
            | Workload::Recovery
            | Workload::Crossing => None,
        }
    }

    fn plugin(self) -> &'static str {
        match self {
            Workload::Q1 => "nexmark_q1.wasm",
            Workload::Q2 => "nexmark_q2.wasm",
            Workload::Tumble | Workload::Q5 => "window_count.wasm",
            Workload::Checkpoint | Workload::Recovery => "user_sessions.wasm",
            Workload::Crossing => "crossing.wasm",
        }
    }

    /// The variants of an operator workload, the native one first.
    fn variants(self) -> &'static [&'static str] {
        match self {
            Workload::Crossing => &["native", "flat", "records"],
            _ => &["native", "wasm"],
        }
    }

    /// One operator instance of `variant`.
    fn operator(
        self,
        variant: &str,
        engine: &WasmEngine,
        plugins: &Path,
    ) -> anyhow::Result<Box<dyn Operator>> {
        let path = plugins.join(self.plugin());
        Ok(match (self, variant) {
            (Workload::Crossing, "native") => Box::new(NativeEcho),
            (Workload::Crossing, "flat") => Box::new(Crossing::new(engine, &path, Encoding::Flat)?),
            (Workload::Crossing, _) => Box::new(Crossing::new(engine, &path, Encoding::Records)?),
            (_, "native") => self.native()?,
            _ => Box::new(engine.instantiate(
                self.name(),
                &engine.load(&path)?,
                &[],
                Limits::default(),
            )?),
        })
    }

    fn native(self) -> anyhow::Result<Box<dyn Operator>> {
        let config = weir_guest::Config::default();
        Ok(match self {
            Workload::Q1 => Box::new(Native::new("q1", nexmark_q1::Q1::new(&config)?)),
            Workload::Q2 => Box::new(Native::new("q2", nexmark_q2::Q2::new(&config)?)),
            Workload::Tumble
            | Workload::Q5
            | Workload::Checkpoint
            | Workload::Recovery
            | Workload::Crossing => anyhow::bail!("not an operator of the plugins"),
        })
    }
}

use weir_guest::Operator as _;

/// A guest operator compiled natively, behind the host's operator trait.
struct Native<O> {
    name: &'static str,
    operator: O,
    out: Output,
}

impl<O: weir_guest::Operator> Native<O> {
    fn new(name: &'static str, operator: O) -> Self {
        Native {
            name,
            operator,
            out: Output::with_capacity(1 << 20),
        }
    }
}

impl<O: weir_guest::Operator + Send> Operator for Native<O> {
    fn name(&self) -> &str {
        self.name
    }

    fn process(&mut self, batch: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        weir_guest::run_batch(&mut self.operator, batch, &mut self.out).map_err(|e| {
            OperatorFailure {
                kind: weir_core::operator::FailureKind::Reported,
                message: e.message,
                event_index: e.event_index.map(|i| i as usize),
                output_before: BatchWriter::new().finish(),
            }
        })?;
        Ok(self.out.finish_into())
    }
}

/// The crossing fixture's flat echo, compiled natively.
struct NativeEcho;

impl Operator for NativeEcho {
    fn name(&self) -> &str {
        "native"
    }

    fn process(&mut self, batch: &[u8]) -> Result<Vec<u8>, OperatorFailure> {
        crossing::echo_flat(batch).map_err(|e| OperatorFailure {
            kind: weir_core::operator::FailureKind::Reported,
            message: e.to_string(),
            event_index: None,
            output_before: BatchWriter::new().finish(),
        })
    }
}

struct Measured {
    cpu: Duration,
    output_events: u64,
}

/// Runs every batch through one operator per worker; worker `i` takes
/// batches `i, i + workers, …`.
fn measure(operators: Vec<Box<dyn Operator>>, batches: &[Vec<u8>]) -> anyhow::Result<Measured> {
    let workers = operators.len();
    let results: Vec<anyhow::Result<Measured>> = std::thread::scope(|scope| {
        let handles: Vec<_> = operators
            .into_iter()
            .enumerate()
            .map(|(worker, mut operator)| {
                scope.spawn(move || {
                    let start = thread_cpu_time();
                    let mut output_events = 0u64;
                    for batch in batches.iter().skip(worker).step_by(workers) {
                        let out = operator
                            .process(batch)
                            .map_err(|f| anyhow::anyhow!("{}: {}", f.kind, f.message))?;
                        output_events += weir_batch::event_count(&out) as u64;
                    }
                    Ok(Measured {
                        cpu: thread_cpu_time() - start,
                        output_events,
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("worker panicked")))
            })
            .collect()
    });
    let mut total = Measured {
        cpu: Duration::ZERO,
        output_events: 0,
    };
    for result in results {
        let m = result?;
        total.cpu += m.cpu;
        total.output_events += m.output_events;
    }
    Ok(total)
}

/// Bid-shaped batches. For `crossing`, each event also gets a key (its
/// auction) and a header, so that every field of an event crosses.
fn pregenerate(events: u64, batch: usize, workload: Workload) -> Vec<Vec<u8>> {
    let mut generator = BidGenerator::new(42, Some(events));
    let mut writer = BatchWriter::with_capacity(batch * 220);
    let mut batches = Vec::with_capacity((events as usize).div_ceil(batch));
    while generator.fill(&mut writer, batch) > 0 {
        let bids = writer.finish_into();
        if !matches!(workload, Workload::Crossing) {
            batches.push(bids);
            continue;
        }
        let mut keyed = BatchWriter::with_capacity(bids.len() + batch * 40);
        for bid in weir_batch::Batch::new(&bids)
            .into_iter()
            .flat_map(|b| b.iter())
        {
            let auction = weir_batch::json::Object::new(bid.value)
                .get("auction")
                .ok()
                .flatten()
                .map_or(&[][..], |a| a.raw());
            keyed.push(
                bid.timestamp,
                Some(auction),
                bid.value,
                &[(b"source", b"bids")],
            );
        }
        batches.push(keyed.finish());
    }
    batches
}

/// One result row.
struct Row {
    workload: &'static str,
    variant: &'static str,
    batch: usize,
    parallelism: usize,
    events: u64,
    output_events: u64,
    cpu_seconds: f64,
    ratio_to_native: f64,
    /// Windowed runs: the measurement, with checkpoint figures.
    window: Option<bench_window::Measured>,
    /// `wasm+ckpt`: wall-clock throughput relative to the same run without
    /// checkpoints.
    ratio_to_unchecked: Option<f64>,
    /// `--flink`: events per CPU-second against the Flink peer's at the
    /// same parallelism.
    ratio_to_flink: Option<f64>,
}

impl Row {
    /// A row of `events` measured in `cpu_seconds`, without the figures
    /// only some rows have; `ratio_to_native` is set by the caller.
    fn new(
        workload: Workload,
        variant: &'static str,
        batch: usize,
        parallelism: usize,
        events: u64,
        output_events: u64,
        cpu_seconds: f64,
    ) -> Row {
        Row {
            workload: workload.name(),
            variant,
            batch,
            parallelism,
            events,
            output_events,
            cpu_seconds,
            ratio_to_native: 1.0,
            window: None,
            ratio_to_unchecked: None,
            ratio_to_flink: None,
        }
    }

    fn events_per_cpu_second(&self) -> f64 {
        self.events as f64 / self.cpu_seconds.max(1e-9)
    }
}

/// Runs the benchmark and prints the table or JSON lines.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let dir = args
        .plugins
        .clone()
        .or_else(|| std::env::var_os("WEIR_PLUGINS").map(PathBuf::from))
        .context("where are the plugins? pass --plugins DIR or set WEIR_PLUGINS (tests/build-plugins.sh builds them and prints the directory)")?;
    let windowed = args.workload.windowed();
    let state = matches!(args.workload, Workload::Checkpoint | Workload::Recovery);
    let batches_to_run = match (&args.batch[..], windowed.is_some() || state) {
        ([], false) => vec![1, 16, 256, 4096],
        ([], true) => vec![1024],
        (given, _) => given.to_vec(),
    };
    let parallelisms = match (&args.parallelism[..], windowed.is_some()) {
        ([], false) => vec![1],
        ([], true) => vec![1, 2],
        (given, _) => given.to_vec(),
    };
    anyhow::ensure!(
        parallelisms.iter().chain(&batches_to_run).all(|n| *n >= 1),
        "batch sizes and parallelism must be at least 1"
    );
    anyhow::ensure!(
        args.flink.is_none() || windowed.is_some(),
        "--flink compares the tumble and q5 pipelines only"
    );
    let engine = WasmEngine::new(WasmEngine::default_cache_dir())?;
    if state {
        return state_bench(args, &engine, &dir, &batches_to_run, &parallelisms);
    }
    let rounds = args.rounds.max(1);
    let mut rows = Vec::new();
    if let Some(workload) = windowed {
        for &batch in &batches_to_run {
            let mut native: Option<bench_window::Measured> = None;
            // Per parallelism: the Flink peer's best events per CPU-second.
            let mut flink: Vec<Option<f64>> = parallelisms.iter().map(|_| None).collect();
            // Per parallelism: the run without checkpoints, and with.
            let mut wasm: Vec<(
                Option<bench_window::Measured>,
                Option<bench_window::Measured>,
            )> = parallelisms.iter().map(|_| (None, None)).collect();
            for _ in 0..rounds {
                keep_faster(
                    &mut native,
                    bench_window::native(workload, args.events, batch)?,
                )?;
                for (&parallelism, best) in parallelisms.iter().zip(&mut wasm) {
                    let run = |every| {
                        bench_window::weir(
                            workload,
                            &engine,
                            &dir,
                            args.events,
                            batch,
                            parallelism,
                            every,
                        )
                    };
                    keep_faster(&mut best.0, run(None)?)?;
                    if let Some(ms) = args.checkpoint_ms {
                        keep_faster(&mut best.1, run(Some(Duration::from_millis(ms)))?)?;
                    }
                }
                if let Some(peer) = &args.flink {
                    for (&parallelism, best) in parallelisms.iter().zip(&mut flink) {
                        let rate = bench_window::flink(peer, workload, parallelism)?;
                        *best = Some(best.map_or(rate, |b| b.max(rate)));
                    }
                }
            }
            let native = native.context("no rounds")?;
            let native_cpu = native.cpu_seconds;
            let native_results = native.output_events;
            let row = |variant,
                       parallelism,
                       m: bench_window::Measured,
                       unchecked: Option<f64>,
                       flink: Option<f64>| {
                let row = Row::new(
                    args.workload,
                    variant,
                    batch,
                    parallelism,
                    args.events,
                    m.output_events,
                    m.cpu_seconds,
                );
                Row {
                    ratio_to_native: native_cpu / m.cpu_seconds.max(1e-9),
                    ratio_to_unchecked: unchecked.map(|wall| wall / m.wall_seconds.max(1e-9)),
                    ratio_to_flink: flink.map(|rate| row.events_per_cpu_second() / rate),
                    window: Some(m),
                    ..row
                }
            };
            rows.push(row("native", 1, native, None, None));
            for ((&parallelism, (unchecked, checked)), flink) in
                parallelisms.iter().zip(wasm).zip(flink)
            {
                if let Some(rate) = flink {
                    // The peer reports a rate over its marginal events.
                    let events = bench_window::FLINK_MARGINAL_EVENTS;
                    let cpu_seconds = events as f64 / rate;
                    rows.push(Row {
                        ratio_to_native: rate * native_cpu / args.events as f64,
                        ..Row::new(
                            args.workload,
                            "flink",
                            batch,
                            parallelism,
                            events,
                            0,
                            cpu_seconds,
                        )
                    });
                }
                let unchecked = unchecked.context("no rounds")?;
                anyhow::ensure!(
                    unchecked.output_events == native_results,
                    "weir and the native loop disagree: {} vs {native_results} results",
                    unchecked.output_events,
                );
                let wall = unchecked.wall_seconds;
                rows.push(row("wasm", parallelism, unchecked, None, flink));
                if let Some(checked) = checked {
                    anyhow::ensure!(
                        checked.output_events == native_results,
                        "checkpoints changed the results: {} vs {native_results}",
                        checked.output_events
                    );
                    rows.push(row("wasm+ckpt", parallelism, checked, Some(wall), None));
                }
            }
        }
        return print(&rows, args.json);
    }
    let variants = args.workload.variants();
    for &parallelism in &parallelisms {
        for &batch in &batches_to_run {
            let batches = pregenerate(args.events, batch, args.workload);
            let mut best: Vec<Option<Measured>> = variants.iter().map(|_| None).collect();
            for _ in 0..rounds {
                for (variant, best) in variants.iter().zip(&mut best) {
                    let operators = (0..parallelism)
                        .map(|_| args.workload.operator(variant, &engine, &dir))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    keep_faster(best, measure(operators, &batches)?)?;
                }
            }
            if matches!(args.workload, Workload::Crossing) {
                // An echo must give back exactly what it got.
                for variant in variants {
                    let mut echo = args.workload.operator(variant, &engine, &dir)?;
                    let first = batches.first().context("no events")?;
                    let back = echo
                        .process(first)
                        .map_err(|f| anyhow::anyhow!("{variant}: {}", f.message))?;
                    anyhow::ensure!(&back == first, "the {variant} echo changed the batch");
                }
            }
            let best = best
                .into_iter()
                .collect::<Option<Vec<Measured>>>()
                .context("no rounds")?;
            let native = &best[0];
            for (variant, m) in variants.iter().zip(&best) {
                anyhow::ensure!(
                    m.output_events == native.output_events,
                    "{variant} and native disagree: {} vs {} output events",
                    m.output_events,
                    native.output_events
                );
                let cpu_seconds = m.cpu_seconds();
                rows.push(Row {
                    ratio_to_native: native.cpu_seconds() / cpu_seconds.max(1e-9),
                    ..Row::new(
                        args.workload,
                        variant,
                        batch,
                        parallelism,
                        args.events,
                        m.output_events,
                        cpu_seconds,
                    )
                });
            }
        }
    }
    print(&rows, args.json)
}

/// A measured run: the CPU it took and the results it gave.
trait Run {
    fn cpu_seconds(&self) -> f64;
    fn output_events(&self) -> u64;
}

impl Run for Measured {
    fn cpu_seconds(&self) -> f64 {
        self.cpu.as_secs_f64()
    }
    fn output_events(&self) -> u64 {
        self.output_events
    }
}

impl Run for bench_window::Measured {
    fn cpu_seconds(&self) -> f64 {
        self.cpu_seconds
    }
    fn output_events(&self) -> u64 {
        self.output_events
    }
}

/// Keeps the run that took less CPU, after checking that it gave the
/// results every earlier round of the variant gave (the reported run is
/// then compared with the other variants).
fn keep_faster<M: Run>(best: &mut Option<M>, run: M) -> anyhow::Result<()> {
    if let Some(b) = best.as_ref() {
        anyhow::ensure!(
            run.output_events() == b.output_events(),
            "two rounds of the same run disagree: {} vs {} results",
            run.output_events(),
            b.output_events()
        );
    }
    if best
        .as_ref()
        .is_none_or(|b| run.cpu_seconds() < b.cpu_seconds())
    {
        *best = Some(run);
    }
    Ok(())
}

/// `checkpoint` and `recovery`: each backend, batch size and parallelism.
fn state_bench(
    args: &BenchArgs,
    engine: &WasmEngine,
    plugins: &std::path::Path,
    batches: &[usize],
    parallelisms: &[usize],
) -> anyhow::Result<()> {
    let backends: Vec<String> = if args.backend.is_empty() {
        bench_state::backends()
            .into_iter()
            .map(String::from)
            .collect()
    } else {
        args.backend.clone()
    };
    let mut rows = Vec::new();
    for backend in &backends {
        for &batch in batches {
            for &parallelism in parallelisms {
                let bench = bench_state::StateBench {
                    engine,
                    plugin: plugins.join(args.workload.plugin()),
                    events: args.events,
                    keys: args.keys.unwrap_or(args.events).max(1),
                    parallelism,
                    batch,
                    checkpoint_ms: args.checkpoint_ms.unwrap_or(1000).max(1),
                };
                match args.workload {
                    Workload::Recovery => rows.push(bench.recovery(backend)?),
                    _ => rows.extend(bench.checkpoint(backend)?),
                }
            }
        }
    }
    for row in &rows {
        if args.json {
            println!("{row}");
        } else {
            let field = |name: &str| row.get(name).map_or(String::new(), ToString::to_string);
            let shown = [
                "variant",
                "parallelism",
                "state_bytes",
                "checkpoint_ms",
                "seconds_per_gb",
                "replayed_events",
                "load_seconds",
                "caught_up_seconds",
            ];
            let line: Vec<String> = shown
                .iter()
                .filter(|name| row.get(**name).is_some())
                .map(|name| format!("{name}={}", field(name)))
                .collect();
            println!("{} {}", args.workload.name(), line.join(" "));
        }
    }
    Ok(())
}

fn print(rows: &[Row], json: bool) -> anyhow::Result<()> {
    if json {
        for row in rows {
            let mut line = serde_json::json!({
                "workload": row.workload,
                "variant": row.variant,
                "batch": row.batch,
                "parallelism": row.parallelism,
                "events": row.events,
                "output_events": row.output_events,
                "cpu_seconds": row.cpu_seconds,
                "events_per_cpu_second": row.events_per_cpu_second(),
                "ratio_to_native": row.ratio_to_native,
            });
            if let (Some(ratio), Some(object)) = (row.ratio_to_flink, line.as_object_mut()) {
                object.insert("ratio_to_flink".into(), ratio.into());
            }
            if let (Some(m), Some(object)) = (&row.window, line.as_object_mut()) {
                object.insert("wall_seconds".into(), m.wall_seconds.into());
                object.insert(
                    "events_per_second".into(),
                    (row.events as f64 / m.wall_seconds.max(1e-9)).into(),
                );
                if row.variant == "wasm+ckpt" {
                    object.insert("checkpoints".into(), m.checkpoints.into());
                    object.insert("checkpoint_max_ms".into(), m.checkpoint_max_ms.into());
                    object.insert("checkpoint_max_bytes".into(), m.checkpoint_max_bytes.into());
                    object.insert("ratio_to_unchecked".into(), row.ratio_to_unchecked.into());
                }
            }
            println!("{line}");
        }
    } else {
        println!(
            "{:<8} {:<7} {:>6} {:>4} {:>10} {:>9} {:>16} {:>9}",
            "workload", "variant", "batch", "par", "events", "cpu s", "events/cpu-s", "vs native"
        );
        for row in rows {
            println!(
                "{:<8} {:<7} {:>6} {:>4} {:>10} {:>9.3} {:>16.0} {:>8.0}%",
                row.workload,
                row.variant,
                row.batch,
                row.parallelism,
                row.events,
                row.cpu_seconds,
                row.events_per_cpu_second(),
                row.ratio_to_native * 100.0
            );
            if let Some(ratio) = row.ratio_to_flink {
                println!("         {ratio:.1}× the Flink peer's events/cpu-s at this parallelism");
            }
            if let (Some(m), Some(ratio)) = (&row.window, row.ratio_to_unchecked) {
                println!(
                    "         {} checkpoints, longest {} ms, largest {} bytes; wall-clock throughput {:.0}% of the run without",
                    m.checkpoints,
                    m.checkpoint_max_ms,
                    m.checkpoint_max_bytes,
                    ratio * 100.0
                );
            }
        }
    }
    Ok(())
}
