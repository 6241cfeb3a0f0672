//! From a pipeline file to a runnable pipeline: open sources and sinks, load
//! and instantiate operator components.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use weir_core::dead_letter::DeadLetters;
use weir_core::pipeline::PipelineFile;
use weir_core::runtime::Pipeline;
use weir_core::source::Linger;
use weir_core::{sink, source};
use weir_wasm::{Limits, WasmEngine};

/// Loads `path` and everything it names.
pub fn load(path: &Path, engine: &WasmEngine) -> anyhow::Result<Pipeline> {
    let file = PipelineFile::load(path)?;
    let base = path.parent().unwrap_or(Path::new("."));

    let mut components = HashMap::new();
    let mut operators: Vec<Box<dyn weir_core::operator::Operator>> = Vec::new();
    for spec in &file.operator {
        let component_path = spec
            .component_path(base)
            .map_err(|e| anyhow::anyhow!("{}: operator `{}`: {e}", path.display(), spec.name))?;
        let component = match components.get(&component_path) {
            Some(c) => std::sync::Arc::clone(c),
            None => {
                let c = engine
                    .load(&component_path)
                    .with_context(|| format!("operator `{}`", spec.name))?;
                components.insert(component_path.clone(), c.clone());
                c
            }
        };
        let limits = Limits::with_overrides(
            spec.timeout_ms,
            spec.memory_mb,
            spec.max_output_mb,
            spec.max_log_kb,
        );
        operators.push(Box::new(engine.instantiate(
            &spec.name,
            &component,
            &spec.config_pairs(),
            limits,
        )?));
    }

    let dead_letters = match &file.dead_letter {
        Some(spec) => Some(DeadLetters::new(sink::open(spec, base)?)),
        None => None,
    };
    let linger = Linger::new(Duration::from_millis(file.pipeline.linger_ms));
    let sources = file
        .source
        .iter()
        .map(|spec| source::open(spec, base, linger, dead_letters.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let sinks = file
        .sink
        .iter()
        .map(|spec| sink::open(spec, base))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Pipeline {
        settings: file.pipeline,
        sources,
        operators,
        sinks,
        dead_letters,
    })
}
