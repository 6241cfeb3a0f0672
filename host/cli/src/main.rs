//! `weir`: run pipelines, test and inspect operators, benchmark.

mod bench;
mod bench_state;
mod bench_window;
mod cpu;
mod wiring;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use weir_core::keyed::KeyedProcessOperator;
use weir_core::keys::KeySelector;
use weir_core::pipeline::{JsonFields, LineFormat, PipelineSettings};
use weir_core::runtime::{Pipeline, Progress, Stage, Task};
use weir_core::sink::JsonLinesSink;
use weir_core::source::{JsonLinesSource, LineInput};
use weir_core::state::{MemoryBackend, StateBackend};
use weir_core::time::{TimeFormat, WatermarkSpec};
use weir_core::window::{WindowOperator, WindowSpec};
use weir_wasm::{Limits, WasmEngine, World};

/// Weir: a stream processor whose operators are sandboxed WebAssembly components.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline file (sources → operators → sinks) to the end of its input.
    ///
    /// Relative paths in the file are resolved against the file's directory;
    /// `${VAR}` in an operator's `component` is replaced by the environment
    /// variable VAR. A progress line goes to stderr.
    Run {
        /// The pipeline file (pipeline.toml).
        pipeline: PathBuf,
        /// No progress lines.
        #[arg(long, short)]
        quiet: bool,
        /// Restore a checkpoint first: `latest` (the newest complete one;
        /// damaged ones are skipped with a warning) or a checkpoint number.
        /// Needs `[checkpoint]` in the pipeline file. With checkpoints,
        /// SIGTERM or Ctrl-C takes a savepoint and stops (a second one
        /// stops at once).
        #[arg(long, value_parser = parse_restore)]
        restore: Option<wiring::Restore>,
    },
    /// List a pipeline's checkpoints: number, kind, time, size, sources'
    /// positions, and whether each is usable.
    Checkpoints {
        /// The pipeline file (pipeline.toml).
        pipeline: PathBuf,
    },
    /// Run one operator over sample events and print its output (one JSON line
    /// per output event).
    Test {
        /// The operator component (.wasm).
        operator: PathBuf,
        /// JSON Lines input, one event per line.
        #[arg(long, short)]
        input: PathBuf,
        /// A config setting for the operator, `key=value` (repeatable).
        #[arg(long = "config", short = 'c', value_parser = parse_key_value)]
        config: Vec<(String, String)>,
        /// JSON field whose value becomes the event key.
        #[arg(long)]
        key_field: Option<String>,
        /// JSON field holding the event time.
        #[arg(long)]
        time_field: Option<String>,
        /// How the event time is written: epoch_ms or rfc3339.
        #[arg(long, default_value = "epoch-ms")]
        time_format: TimeFormatArg,
        /// Window for aggregate and window operators: `tumbling:SIZE`,
        /// `sliding:SIZE/SLIDE` or `session:GAP`, with durations like
        /// `500ms`, `10s`, `30m`, `1h`. All windows fire at the end of the
        /// input (the watermark only advances then).
        #[arg(long, value_parser = parse_window)]
        window: Option<WindowSpec>,
        /// Key windows (or a keyed process function) by this JSON field,
        /// or `$key` for the event key; without it one window covers all
        /// events.
        #[arg(long)]
        key_by: Option<String>,
        /// Print key, timestamp, headers and value instead of the value alone.
        #[arg(long)]
        envelope: bool,
        /// CPU deadline per call, ms.
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Memory cap, MiB.
        #[arg(long)]
        memory_mb: Option<u64>,
    },
    /// Show what a component is: world, contract version, size, digest,
    /// imports and exports. Exits non-zero when it is not a Weir operator.
    Inspect {
        /// The component (.wasm).
        operator: PathBuf,
    },
    /// Benchmark WebAssembly operators against the same work as native Rust:
    /// q1/q2 run one operator over pre-generated bid-shaped batches;
    /// tumble/q5 run whole windowed pipelines (generator → keyed windows →
    /// blackhole) against a hand-written native loop.
    Bench(bench::BenchArgs),
}

/// `--time-format`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum TimeFormatArg {
    /// Integer milliseconds since the epoch.
    EpochMs,
    /// RFC 3339 text.
    Rfc3339,
}

fn parse_duration(text: &str) -> Result<u64, String> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("expected a duration like 500ms, 10s, 30m or 1h, got {text:?}"))?;
    let scale = match unit {
        "" | "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(format!(
                "unknown duration unit {unit:?} in {text:?} (ms, s, m, h)"
            ));
        }
    };
    Ok(n * scale)
}

fn parse_window(text: &str) -> Result<WindowSpec, String> {
    let (kind, rest) = text.split_once(':').ok_or_else(|| {
        format!("expected tumbling:SIZE, sliding:SIZE/SLIDE or session:GAP, got {text:?}")
    })?;
    let spec = match kind {
        "tumbling" => WindowSpec::Tumbling {
            size_ms: parse_duration(rest)?,
        },
        "sliding" => {
            let (size, slide) = rest
                .split_once('/')
                .ok_or_else(|| format!("expected sliding:SIZE/SLIDE, got {text:?}"))?;
            WindowSpec::Sliding {
                size_ms: parse_duration(size)?,
                slide_ms: parse_duration(slide)?,
            }
        }
        "session" => WindowSpec::Session {
            gap_ms: parse_duration(rest)?,
        },
        _ => {
            return Err(format!(
                "unknown window kind {kind:?} (tumbling, sliding, session)"
            ));
        }
    };
    spec.validate()?;
    Ok(spec)
}

fn parse_restore(text: &str) -> Result<wiring::Restore, String> {
    match text {
        "latest" => Ok(wiring::Restore::Latest),
        id => id
            .parse()
            .map(wiring::Restore::Id)
            .map_err(|_| format!("expected `latest` or a checkpoint number, got {text:?}")),
    }
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got {text:?}"))
}

/// Batch buffers (a few hundred KiB each) are allocated on one thread and
/// freed on the next stage's. With glibc's defaults the freed memory goes
/// back to the kernel and is faulted in again batch after batch: 33 000 to
/// 44 000 page faults for 4 M events through a window stage of two
/// subtasks, 3 400 with these settings (`perf stat -e page-faults`). So
/// allocations under 32 MiB come from the heap, and up to 64 MiB free at a
/// heap's top stays mapped.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code, reason = "mallopt takes two integers")]
    // SAFETY: mallopt sets two of glibc's allocator settings under its own
    // lock; it has no other precondition.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run {
            pipeline,
            quiet,
            restore,
        } => {
            let engine = WasmEngine::new(WasmEngine::default_cache_dir())?;
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let pipeline = wiring::load(
                &pipeline,
                &engine,
                restore.unwrap_or(wiring::Restore::AsConfigured),
                stop.clone(),
            )?;
            if pipeline.checkpointing.is_some() {
                // The first signal asks for a savepoint; a second one ends
                // the process at once.
                for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                    signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())?;
                    signal_hook::flag::register(signal, stop.clone())?;
                }
            }
            run_with_progress(pipeline, quiet)?;
        }
        Command::Checkpoints { pipeline } => list_checkpoints(&pipeline)?,
        Command::Test {
            operator,
            input,
            config,
            key_field,
            time_field,
            time_format,
            window,
            key_by,
            envelope,
            timeout_ms,
            memory_mb,
        } => {
            let engine = WasmEngine::new(WasmEngine::default_cache_dir())?;
            let component = engine.load(&operator)?;
            let name = operator
                .file_stem()
                .map_or("operator".into(), |s| s.to_string_lossy().into_owned());
            let limits = Limits::with_overrides(timeout_ms, memory_mb, None, None);
            let op = engine.instantiate(&name, &component, &config, limits)?;
            let settings = PipelineSettings::default();
            let stage = match (component.world.is_windowed(), window) {
                (false, None) if component.world == World::KeyedProcess => Stage {
                    key_by: Some(KeySelector::parse(key_by.as_deref().ok_or_else(|| {
                        anyhow::anyhow!(
                            "{} is a {}: give it --key-by FIELD",
                            operator.display(),
                            component.world
                        )
                    })?)),
                    subtasks: vec![Task::Keyed(KeyedProcessOperator::new(
                        Box::new(op),
                        MemoryBackend.open(&name, 0)?,
                        settings.max_parallelism,
                        None,
                    ))],
                },
                (false, None) => Stage::chain(vec![Box::new(op)]),
                (true, Some(window)) => Stage {
                    key_by: key_by.as_deref().map(KeySelector::parse),
                    subtasks: vec![Task::Window(WindowOperator::new(
                        window,
                        0,
                        settings.max_parallelism,
                        Box::new(op),
                        MemoryBackend.open(&name, 0)?,
                    ))],
                },
                (true, None) => anyhow::bail!(
                    "{} is an {}: give it a window, e.g. --window tumbling:1m",
                    operator.display(),
                    component.world
                ),
                (false, Some(_)) => anyhow::bail!(
                    "{} is a {}: --window needs an aggregate or window operator",
                    operator.display(),
                    component.world
                ),
            };
            let file = std::fs::File::open(&input)
                .with_context(|| format!("cannot open input {}", input.display()))?;
            let format = if envelope {
                LineFormat::Envelope
            } else {
                LineFormat::Value
            };
            let time_format = match time_format {
                TimeFormatArg::EpochMs => TimeFormat::EpochMs,
                TimeFormatArg::Rfc3339 => TimeFormat::Rfc3339,
            };
            let pipeline = Pipeline {
                settings,
                // The watermark stays back until the end of the input.
                watermark: WatermarkSpec {
                    max_out_of_orderness_ms: u64::MAX,
                    idle_timeout_ms: None,
                },
                sources: vec![Box::new(JsonLinesSource::new(
                    input.display().to_string(),
                    LineInput::reader(file),
                    JsonFields {
                        key_field,
                        time_field,
                        time_format,
                    },
                    None,
                ))],
                stages: vec![stage],
                sinks: vec![Box::new(JsonLinesSink::new(
                    "stdout".into(),
                    std::io::stdout(),
                    format,
                ))],
                late: Some(Box::new(JsonLinesSink::new(
                    "stderr".into(),
                    std::io::stderr(),
                    LineFormat::Envelope,
                ))),
                dead_letters: None,
                checkpointing: None,
            };
            pipeline.run(&Arc::default())?;
        }
        Command::Inspect { operator } => return inspect(&operator),
        Command::Bench(args) => bench::run(&args)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let engine = WasmEngine::new(None)?;
    let info = engine.inspect(path)?;
    println!("file      {}", path.display());
    println!("size      {} bytes", info.size);
    println!("sha256    {}", info.digest);
    println!(
        "world     {}",
        info.world()
            .map_or("none: not a Weir operator".to_string(), |w| w.to_string())
    );
    println!(
        "contract  {}",
        info.contract_version()
            .map_or("none".to_string(), |v| format!("weir:operator@{v}"))
    );
    println!("exports   {}", info.exports.join(", "));
    println!("imports   {}", info.imports.join(", "));
    // Full check: world, version and that every import can be linked.
    match engine.load(path) {
        Ok(component) => {
            println!(
                "verdict   ok: this host runs it as a {} (contract weir:operator@{})",
                component.world,
                weir_wasm::CONTRACT_VERSION
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("verdict   refused: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn run_with_progress(pipeline: Pipeline, quiet: bool) -> anyhow::Result<()> {
    let progress = Arc::new(Progress::default());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reporter = (!quiet).then(|| {
        let progress = progress.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let mut last = started;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(50));
                if last.elapsed() >= std::time::Duration::from_secs(1) {
                    last = std::time::Instant::now();
                    eprintln!("{}", progress_line(&progress, started.elapsed()));
                }
            }
        })
    });
    let result = pipeline.run(&progress);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(reporter) = reporter {
        let _ = reporter.join();
    }
    let summary = result?;
    if !quiet {
        eprintln!("{} (done)", progress_line(&progress, summary.elapsed));
    }
    if let Some((id, kind)) = summary.last_checkpoint
        && kind == weir_core::checkpoint::CheckpointKind::Savepoint
    {
        eprintln!("weir: stopped with savepoint {id}; resume with `weir run --restore {id}`");
    }
    Ok(())
}

fn list_checkpoints(path: &std::path::Path) -> anyhow::Result<()> {
    let file = weir_core::pipeline::PipelineFile::load(path)?;
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    let store = wiring::checkpoint_store(&file, base)
        .with_context(|| format!("{}: no [checkpoint] section", path.display()))?;
    let list = store.list()?;
    if list.is_empty() {
        println!("no checkpoints in {}", store.dir().display());
    }
    for (id, result) in list {
        match result {
            Ok(m) => {
                let positions: Vec<String> = m
                    .sources
                    .iter()
                    .map(|s| {
                        let at = match &s.position {
                            weir_core::source::SourcePosition::File { offset, line } => {
                                format!("line {line} (byte {offset})")
                            }
                            weir_core::source::SourcePosition::Generated { events, .. } => {
                                format!("event #{events}")
                            }
                        };
                        format!("{} at {at}{}", s.name, if s.ended { ", ended" } else { "" })
                    })
                    .collect();
                println!(
                    "{id:>6}  {:<10}  {}  {:>10} bytes  {:>5} ms  {}",
                    m.kind.to_string(),
                    format_time(m.started_at_ms),
                    m.bytes(),
                    m.duration_ms,
                    positions.join("; ")
                );
            }
            Err(e) => println!("{id:>6}  unusable: {e}"),
        }
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SSZ` from ms since the epoch (civil-from-days).
fn format_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn progress_line(progress: &Progress, elapsed: std::time::Duration) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let events_in = progress.events_in.load(Relaxed);
    let events_out = progress.events_out.load(Relaxed);
    let rate = events_in as f64 / elapsed.as_secs_f64().max(1e-9);
    format!(
        "weir: {events_in} events in, {events_out} out, {:.2} s, {} events/s",
        elapsed.as_secs_f64(),
        human(rate)
    )
}

fn human(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2} M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1} K", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}
