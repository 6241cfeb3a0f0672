//! The pipeline file (`pipeline.toml`): sources, an operator chain, sinks.
//!
//! ```
//! let file = weir_core::pipeline::PipelineFile::parse(
//!     "demo.toml",
//!     r#"
//! [[source]]
//! type = "bids"
//! count = 1000
//!
//! [[operator]]
//! name = "q2"
//! component = "nexmark_q2.wasm"
//! config = { modulus = "123" }
//!
//! [[sink]]
//! type = "blackhole"
//! "#,
//! )?;
//! assert_eq!(file.operator[0].name, "q2");
//! # Ok::<(), weir_core::pipeline::PipelineError>(())
//! ```
//!
//! Unknown keys are errors that name their line, so a typo never silently
//! turns a setting off.

use serde::Deserialize;
use std::collections::BTreeMap;

use crate::checkpoint::CheckpointSpec;
use crate::keys::DEFAULT_MAX_PARALLELISM;
use crate::time::{TimeFormat, WatermarkSpec};
use crate::window::WindowSpec;
use std::path::{Path, PathBuf};

/// A pipeline file that cannot be read or does not describe a pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The file could not be read.
    #[error("cannot read pipeline file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line of the offending key or value.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The pipeline is well-formed TOML but not a runnable pipeline.
    #[error("{path}: {message}")]
    Semantic {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole pipeline file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// Pipeline-wide settings.
    #[serde(default)]
    pub pipeline: PipelineSettings,
    /// Where events come from; several sources are merged.
    #[serde(default)]
    pub source: Vec<SourceSpec>,
    /// The operators each event goes through, in order.
    #[serde(default)]
    pub operator: Vec<OperatorSpec>,
    /// Where results go; every sink gets every result.
    #[serde(default)]
    pub sink: Vec<SinkSpec>,
    /// Where malformed input goes instead of failing the pipeline.
    pub dead_letter: Option<SinkSpec>,
    /// How event time advances (watermarks).
    #[serde(default)]
    pub watermark: WatermarkSpec,
    /// Where keyed state (windows, keyed process functions) lives.
    #[serde(default)]
    pub state: StateSpec,
    /// Where events later than a window's allowed lateness go. Required
    /// when an operator has a window: late events are never dropped
    /// silently.
    pub late_data: Option<SinkSpec>,
    /// Periodic checkpoints, and restoring from them.
    pub checkpoint: Option<CheckpointSpec>,
}

/// `[pipeline]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSettings {
    /// A name for logs and metrics.
    pub name: String,
    /// A batch is sent on when it holds this many events…
    pub batch_size: usize,
    /// …or when its first event has waited this long (ms).
    pub linger_ms: u64,
    /// Batches in flight between two stages; a full queue slows the stage
    /// before it (backpressure).
    pub queue_batches: usize,
    /// Number of key groups keyed state is split into: the highest
    /// parallelism a keyed operator can have, fixed for the life of the
    /// pipeline's state.
    pub max_parallelism: u16,
    /// Caps how fast each source is read (events per second): replaying a
    /// file or a generator at a realistic pace. Unlimited when absent.
    pub max_events_per_second: Option<u64>,
    /// Runs a stage on the thread of its one input (one source, or a
    /// stage of one subtask before it) when nothing needs a channel
    /// between them: the stage has one subtask, a window or a chain of
    /// stateless operators without `key_by` (as Flink chains operators).
    /// Batches then stay in the cache of the core that wrote them, and no
    /// thread waits on another. `false` gives every stage threads of its
    /// own, to use more cores at the cost of more CPU time per event.
    pub chaining: bool,
    /// Aggregates over tumbling and sliding windows in two phases when the
    /// stage has several subtasks: each sender folds its events into
    /// accumulators per key and slice before they cross threads, and
    /// each subtask merges those of its keys (Flink's local/global
    /// aggregation). Results are the same either way; `false` sends every
    /// event across.
    pub local_aggregation: bool,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            name: "pipeline".to_string(),
            batch_size: 1024,
            linger_ms: 100,
            queue_batches: 4,
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            max_events_per_second: None,
            chaining: true,
            local_aggregation: true,
        }
    }
}

/// `[state]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StateSpec {
    /// `memory` (a hash map per subtask; the default) or `rocksdb`.
    #[serde(default)]
    pub backend: StateBackendKind,
    /// RocksDB's working directory, relative to the pipeline file. It is
    /// cleared at start (durable copies are checkpoints).
    pub path: Option<PathBuf>,
    /// Memory per subtask for the hot tier in front of RocksDB, in MiB.
    #[serde(default = "default_hot_tier")]
    pub hot_tier_mb: u64,
}

impl Default for StateSpec {
    fn default() -> Self {
        StateSpec {
            backend: StateBackendKind::Memory,
            path: None,
            hot_tier_mb: default_hot_tier(),
        }
    }
}

fn default_hot_tier() -> u64 {
    64
}

/// Which state backend.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StateBackendKind {
    /// Hash maps in memory.
    #[default]
    Memory,
    /// RocksDB in a local directory behind an in-memory hot tier.
    Rocksdb,
}

/// `[[source]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceSpec {
    /// A JSON Lines file: one JSON value per line, blank lines skipped.
    Jsonl {
        /// The file, relative to the pipeline file.
        path: PathBuf,
        /// How to read the key and event time from each line.
        #[serde(flatten)]
        fields: JsonFields,
    },
    /// JSON Lines on standard input.
    Stdin {
        /// How to read the key and event time from each line.
        #[serde(flatten)]
        fields: JsonFields,
    },
    /// Bid-shaped rows, the same shape as the Flink peer benchmark's
    /// datagen table (see `generator::bids`).
    Bids {
        /// How many events; unbounded when absent.
        count: Option<u64>,
        /// Random seed.
        #[serde(default = "default_seed")]
        seed: u64,
        /// Which part of the rows this source writes: rows `partition`,
        /// `partition + partitions`, … (a `[[source]]` per partition
        /// splits the generator over threads, as Flink's datagen at
        /// parallelism above 1).
        #[serde(default)]
        partition: u64,
        /// How many parts the rows are split into.
        #[serde(default = "default_partitions")]
        partitions: u64,
    },
    /// A clickstream of page views, out of order (see
    /// `source::ClickGenerator`).
    Clicks {
        /// How many events; unbounded when absent.
        count: Option<u64>,
        /// Random seed.
        #[serde(default = "default_seed")]
        seed: u64,
        /// Event time of the first event (ms since the epoch).
        #[serde(default = "default_base_time")]
        base_time_ms: u64,
        /// Event-time distance between consecutive events.
        #[serde(default = "default_interval")]
        interval_ms: u64,
        /// Largest delay of an event behind its place in the stream.
        #[serde(default = "default_disorder")]
        disorder_ms: u64,
        /// Distinct users.
        #[serde(default = "default_users")]
        users: u64,
    },
    /// Nexmark persons, auctions and bids from the `nexmark` crate.
    Nexmark {
        /// How many events; unbounded when absent.
        count: Option<u64>,
        /// Event time of the first event (ms since the epoch).
        #[serde(default = "default_base_time")]
        base_time_ms: u64,
        /// Only bids (`true`), or all three kinds (`false`).
        #[serde(default)]
        bids_only: bool,
    },
    /// Per-key sequence numbers `{"key":"k3","seq":17,"ts":…}`, for
    /// exactly-once checks (see `source::SequenceGenerator`).
    Sequence {
        /// How many events in all; unbounded when absent.
        count: Option<u64>,
        /// Distinct keys.
        #[serde(default = "default_users")]
        keys: u64,
        /// Event time of the first event (ms since the epoch).
        #[serde(default = "default_base_time")]
        base_time_ms: u64,
        /// Event-time distance between consecutive events.
        #[serde(default = "default_interval")]
        interval_ms: u64,
    },
}

/// Which JSON fields give an event its key and event time.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JsonFields {
    /// Top-level field whose value becomes the event key.
    pub key_field: Option<String>,
    /// Top-level field holding the event time.
    pub time_field: Option<String>,
    /// How the event time is written: `epoch_ms` (an integer, the default)
    /// or `rfc3339` (a string).
    #[serde(default)]
    pub time_format: TimeFormat,
}

fn default_seed() -> u64 {
    42
}

fn default_partitions() -> u64 {
    1
}

fn default_interval() -> u64 {
    100
}

fn default_disorder() -> u64 {
    2_000
}

fn default_users() -> u64 {
    50
}

fn default_base_time() -> u64 {
    // 2024-01-01T00:00:00Z: fixed, so generated runs are reproducible.
    1_704_067_200_000
}

/// `[[operator]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OperatorSpec {
    /// Names the operator in logs and errors.
    pub name: String,
    /// Path to the component (`.wasm`), relative to the pipeline file;
    /// `${VAR}` is replaced by the environment variable `VAR`.
    pub component: String,
    /// Settings handed to the operator's `init`.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigValue>,
    /// CPU deadline per call, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Memory cap of one instance, in MiB.
    pub memory_mb: Option<u64>,
    /// Cap on the bytes one call may return.
    pub max_output_mb: Option<u64>,
    /// Cap on guest stdout+stderr kept as log lines, in KiB per instance.
    pub max_log_kb: Option<u64>,
    /// Parallel instances (subtasks) of this operator.
    #[serde(default = "one")]
    pub parallelism: usize,
    /// Partitions events by key before this operator: a top-level JSON
    /// field of the value, or `$key` for the event's key. Each key goes to
    /// one subtask (through its key group), and becomes the event's key.
    pub key_by: Option<String>,
    /// Makes this a window operator (for aggregate and window components).
    pub window: Option<WindowSpec>,
    /// How long after a window fires late events still update it.
    #[serde(default)]
    pub allowed_lateness_ms: u64,
    /// Keyed process operators: a key's state is dropped once the
    /// watermark is this far past the key's last state write (event time).
    pub state_ttl_ms: Option<u64>,
}

fn one() -> usize {
    1
}

/// A config value: written as a TOML string, number or boolean, handed to
/// the operator as text.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ConfigValue {
    /// `"text"`
    Text(String),
    /// `42`
    Integer(i64),
    /// `0.5`
    Float(f64),
    /// `true`
    Bool(bool),
}

impl std::fmt::Display for ConfigValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigValue::Text(s) => f.write_str(s),
            ConfigValue::Integer(i) => write!(f, "{i}"),
            ConfigValue::Float(x) => write!(f, "{x}"),
            ConfigValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// `[[sink]]` and `[dead_letter]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkSpec {
    /// A JSON Lines file, created or truncated at start.
    Jsonl {
        /// The file, relative to the pipeline file.
        path: PathBuf,
        /// What each line holds.
        #[serde(default)]
        format: LineFormat,
    },
    /// JSON Lines on standard output.
    Stdout {
        /// What each line holds.
        #[serde(default)]
        format: LineFormat,
    },
    /// JSON Lines on standard error (e.g. late events beside results on
    /// stdout).
    Stderr {
        /// What each line holds.
        #[serde(default)]
        format: LineFormat,
    },
    /// Exactly-once JSON Lines files: a directory of part files
    /// (`part-000000.jsonl`, …). With checkpoints, a part is written hidden
    /// and renamed into view only when the checkpoint covering it
    /// completes, so readers never see output that a restore would repeat.
    Files {
        /// The directory, relative to the pipeline file.
        path: PathBuf,
        /// What each line holds.
        #[serde(default)]
        format: LineFormat,
    },
    /// Counts events and bytes, writes nothing (for benchmarks).
    Blackhole,
}

/// What a JSON Lines sink writes per event.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LineFormat {
    /// The event's value, as is (it must be one line of text).
    #[default]
    Value,
    /// `{"key":…,"timestamp":…,"headers":{…},"value":…}`.
    Envelope,
}

impl PipelineFile {
    /// Reads and parses `path`.
    ///
    /// # Errors
    /// See [`PipelineError`].
    pub fn load(path: &Path) -> Result<Self, PipelineError> {
        let text = std::fs::read_to_string(path).map_err(|source| PipelineError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parses pipeline text; `name` is used in error messages.
    ///
    /// # Errors
    /// Malformed TOML, unknown keys and wrong types name their line; a
    /// pipeline without source, operator… or sink names what is missing.
    pub fn parse(name: &str, text: &str) -> Result<Self, PipelineError> {
        let file: PipelineFile = toml::from_str(text).map_err(|e| PipelineError::Invalid {
            path: name.to_string(),
            line: e
                .span()
                .map_or(1, |span| text[..span.start].matches('\n').count() + 1),
            message: e.message().trim().to_string(),
        })?;
        let semantic = |message: &str| PipelineError::Semantic {
            path: name.to_string(),
            message: message.to_string(),
        };
        if file.source.is_empty() {
            return Err(semantic("no [[source]]: a pipeline needs at least one"));
        }
        if file.sink.is_empty() {
            return Err(semantic("no [[sink]]: a pipeline needs at least one"));
        }
        if file.pipeline.batch_size == 0 || file.pipeline.queue_batches == 0 {
            return Err(semantic("batch_size and queue_batches must be at least 1"));
        }
        let windowed = file.operator.iter().find(|op| op.window.is_some());
        for source in &file.source {
            if let SourceSpec::Bids {
                partition,
                partitions,
                ..
            } = source
                && partition >= partitions
            {
                return Err(semantic(&format!(
                    "a bids source's partition ({partition}) must be below its partitions ({partitions})"
                )));
            }
            let fields = match source {
                SourceSpec::Jsonl { fields, .. } | SourceSpec::Stdin { fields } => fields,
                _ => continue,
            };
            if let (Some(op), None) = (windowed, &fields.time_field) {
                return Err(semantic(&format!(
                    "operator `{}` has a window, so every JSON source needs a time_field (the event time)",
                    op.name
                )));
            }
        }
        if file.state.backend == StateBackendKind::Rocksdb && file.state.path.is_none() {
            return Err(semantic(
                "[state] backend = \"rocksdb\" needs a path (its working directory)",
            ));
        }
        if let Some(checkpoint) = &file.checkpoint {
            if checkpoint.interval_ms == 0 {
                return Err(semantic("[checkpoint] interval_ms must be at least 1"));
            }
            if file
                .source
                .iter()
                .any(|s| matches!(s, SourceSpec::Stdin { .. }))
            {
                return Err(semantic(
                    "[checkpoint] needs sources that can be rewound after a crash; stdin cannot (read a file, or a generator)",
                ));
            }
        }
        if file.pipeline.max_parallelism == 0 {
            return Err(semantic("max_parallelism must be at least 1"));
        }
        let mut names = std::collections::HashSet::new();
        for op in &file.operator {
            let named = |m: String| semantic(&format!("operator `{}`: {m}", op.name));
            if !names.insert(op.name.as_str()) {
                return Err(semantic(&format!("two operators are named `{}`", op.name)));
            }
            if op.parallelism == 0 || op.parallelism > usize::from(file.pipeline.max_parallelism) {
                return Err(named(format!(
                    "parallelism must be between 1 and max_parallelism ({})",
                    file.pipeline.max_parallelism
                )));
            }
            if let Some(window) = &op.window {
                window.validate().map_err(named)?;
                if file.late_data.is_none() {
                    return Err(named(
                        "has a window, so the pipeline needs a [late_data] sink (late events are never dropped silently)".into(),
                    ));
                }
                if op.key_by.is_none() && op.parallelism > 1 {
                    return Err(named(
                        "a window without key_by covers all events and runs with parallelism 1"
                            .into(),
                    ));
                }
                if op.state_ttl_ms.is_some() {
                    return Err(named(
                        "state_ttl_ms is for keyed process operators; a window's state lives until the window is done".into(),
                    ));
                }
            } else if op.allowed_lateness_ms > 0 {
                return Err(named("allowed_lateness_ms needs a window".into()));
            }
        }
        Ok(file)
    }
}

impl OperatorSpec {
    /// The component path with `${VAR}` expanded, relative to `base` (the
    /// pipeline file's directory) unless absolute.
    ///
    /// # Errors
    /// A `${VAR}` whose variable is not set, or an unclosed `${`.
    pub fn component_path(&self, base: &Path) -> Result<PathBuf, String> {
        let expanded = expand_env(&self.component, |var| std::env::var(var).ok())?;
        Ok(base.join(expanded))
    }

    /// The config as `(key, value)` text pairs, sorted by key.
    pub fn config_pairs(&self) -> Vec<(String, String)> {
        self.config
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect()
    }
}

/// Replaces each `${NAME}` in `text` with `lookup(NAME)`.
///
/// # Errors
/// An unset variable or an unclosed `${`, named in the message.
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in {text:?}"))?;
        let var = &after[..end];
        let value = lookup(var)
            .ok_or_else(|| format!("environment variable `{var}` (used in {text:?}) is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[[source]]\ntype = \"stdin\"\n\n[[sink]]\ntype = \"stdout\"\n";

    fn invalid_line(text: &str) -> (usize, String) {
        match PipelineFile::parse("p.toml", text) {
            Err(PipelineError::Invalid { line, message, .. }) => (line, message),
            other => panic!("expected an invalid-pipeline error, got {other:?}"),
        }
    }

    #[test]
    fn a_minimal_pipeline_gets_defaults() {
        let file = PipelineFile::parse("p.toml", MINIMAL).unwrap();
        assert_eq!(file.pipeline, PipelineSettings::default());
        assert_eq!(
            file.source,
            vec![SourceSpec::Stdin {
                fields: JsonFields::default()
            }]
        );
        assert!(file.operator.is_empty());
        assert!(file.pipeline.chaining);
        let unchained = format!("[pipeline]\nchaining = false\n{MINIMAL}");
        let file = PipelineFile::parse("p.toml", &unchained).unwrap();
        assert!(!file.pipeline.chaining);
    }

    #[test]
    fn unknown_keys_name_their_line() {
        let text =
            format!("{MINIMAL}\n[[operator]]\nname = \"x\"\ncomponent = \"x.wasm\"\ntimeout = 5\n");
        let (line, message) = invalid_line(&text);
        assert_eq!(line, 10, "{message}");
        assert!(message.contains("unknown field `timeout`"), "{message}");

        let (line, message) = invalid_line("[pipeline]\nbatch_sise = 3\n");
        assert_eq!(line, 2);
        assert!(message.contains("batch_sise"), "{message}");

        let (line, message) =
            invalid_line("[[source]]\ntype = \"jsonl\"\npath = \"a\"\nkey_feld = \"u\"\n");
        assert_eq!(
            line, 1,
            "flattened tables report the table's line: {message}"
        );
        assert!(message.contains("key_feld"), "{message}");
    }

    #[test]
    fn unknown_source_types_and_wrong_value_types_are_errors() {
        let (line, message) = invalid_line("[[source]]\ntype = \"kafak\"\n");
        assert!(message.contains("kafak"), "{message}");
        assert!(line <= 2);
        let (line, _) = invalid_line("[pipeline]\nname = \"x\"\nbatch_size = \"big\"\n");
        assert_eq!(line, 3);
    }

    #[test]
    fn checkpoints_refuse_stdin_and_a_zero_interval() {
        let err = PipelineFile::parse("p.toml", &format!("{MINIMAL}[checkpoint]\ndir = \"c\"\n"))
            .unwrap_err();
        assert!(err.to_string().contains("stdin cannot"), "{err}");
        let file = "[[source]]\ntype = \"bids\"\n[[sink]]\ntype = \"files\"\npath = \"out\"\n";
        let err = PipelineFile::parse(
            "p.toml",
            &format!("{file}[checkpoint]\ndir = \"c\"\ninterval_ms = 0\n"),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("interval_ms must be at least 1"),
            "{err}"
        );
        let ok =
            PipelineFile::parse("p.toml", &format!("{file}[checkpoint]\ndir = \"c\"\n")).unwrap();
        assert_eq!(ok.checkpoint.unwrap().interval_ms, 10_000);
    }

    #[test]
    fn missing_sources_or_sinks_are_named() {
        let err = PipelineFile::parse("p.toml", "[[sink]]\ntype = \"stdout\"\n").unwrap_err();
        assert!(err.to_string().contains("no [[source]]"), "{err}");
    }

    #[test]
    fn window_state_and_parallelism_settings_are_checked() {
        let semantic = |extra: &str, op: &str| -> String {
            let text = format!(
                "[[source]]\ntype = \"stdin\"\ntime_field = \"ts\"\n[[sink]]\ntype = \"stdout\"\n{extra}\n[[operator]]\nname = \"w\"\ncomponent = \"w.wasm\"\n{op}\n"
            );
            match PipelineFile::parse("p.toml", &text) {
                Err(PipelineError::Semantic { message, .. }) => message,
                other => panic!("expected a semantic error, got {other:?}"),
            }
        };
        let late = "[late_data]\ntype = \"stderr\"";
        let window = "window = { type = \"tumbling\", size_ms = 10 }";
        assert!(semantic("", window).contains("needs a [late_data] sink"));
        assert!(semantic(late, &format!("{window}\nparallelism = 2")).contains("without key_by"));
        assert!(
            semantic(late, &format!("{window}\nstate_ttl_ms = 5"))
                .contains("state_ttl_ms is for keyed process")
        );
        assert!(semantic(late, "parallelism = 0").contains("parallelism must be between 1"));
        assert!(semantic(late, "parallelism = 129").contains("parallelism must be between 1"));
        assert!(semantic(late, "allowed_lateness_ms = 5").contains("needs a window"));
        let bids = "[[source]]\ntype = \"bids\"\npartition = 2\npartitions = 2\n[[sink]]\ntype = \"stdout\"\n";
        let err = PipelineFile::parse("p.toml", bids).unwrap_err().to_string();
        assert!(
            err.contains("partition (2) must be below its partitions (2)"),
            "{err}"
        );
        assert!(
            semantic(
                late,
                "window = { type = \"sliding\", size_ms = 10, slide_ms = 3 }"
            )
            .contains("multiple")
        );
        assert!(semantic("[state]\nbackend = \"rocksdb\"", "").contains("needs a path"));
        let no_time = "[[source]]\ntype = \"stdin\"\n[[sink]]\ntype = \"stdout\"\n[late_data]\ntype = \"stderr\"\n[[operator]]\nname = \"w\"\ncomponent = \"w.wasm\"\nwindow = { type = \"session\", gap_ms = 5 }\n";
        let err = PipelineFile::parse("p.toml", no_time)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("every JSON source needs a time_field"),
            "{err}"
        );
    }

    #[test]
    fn config_values_become_text() {
        let text = format!(
            "{MINIMAL}[[operator]]\nname = \"e\"\ncomponent = \"e.wasm\"\nconfig = {{ field = \"f\", n = 3, x = 0.5, on = true }}\n"
        );
        let file = PipelineFile::parse("p.toml", &text).unwrap();
        assert_eq!(
            file.operator[0].config_pairs(),
            vec![
                ("field".into(), "f".into()),
                ("n".into(), "3".into()),
                ("on".into(), "true".into()),
                ("x".into(), "0.5".into()),
            ]
        );
    }

    #[test]
    fn env_vars_expand_in_component_paths() {
        let lookup = |v: &str| (v == "PLUGINS").then(|| "/p".to_string());
        assert_eq!(
            expand_env("${PLUGINS}/q1.wasm", lookup).unwrap(),
            "/p/q1.wasm"
        );
        assert!(
            expand_env("${NOPE}/q1.wasm", lookup)
                .unwrap_err()
                .contains("`NOPE`")
        );
        assert!(
            expand_env("${PLUGINS", lookup)
                .unwrap_err()
                .contains("unclosed")
        );
    }
}
