//! The engine: configuration, the on-disk component cache and the contract
//! check.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::WasmError;
use crate::limits::MemoryCap;
use crate::operator::bindings::{aggregate, keyed, sliced, stateless, window};

/// The contract version this host implements. It accepts every component
/// built against a semver-compatible version (`0.1.x`), as wasmtime links
/// such exports by their compatible name.
pub const CONTRACT_VERSION: &str = "0.1.2";
/// The compatible track: exports `weir:operator/…@0.1.*` are accepted.
const ACCEPTED_TRACK: &str = "0.1.";
/// The export a stateless operator component must have (one of the worlds).
pub const STATELESS_EXPORT: &str = "weir:operator/stateless@0.1.2";
const EXPORT_PREFIX: &str = "weir:operator/";

/// The operator worlds of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// `stateless-operator`: filter, map, flat-map.
    Stateless,
    /// `aggregate-operator`: an incremental window aggregate.
    Aggregate,
    /// `window-operator`: a whole-window function.
    Window,
    /// `keyed-process-operator`: per-key state and timers.
    KeyedProcess,
}

impl World {
    const ALL: [World; 4] = [
        World::Stateless,
        World::Aggregate,
        World::Window,
        World::KeyedProcess,
    ];

    /// The interface the world exports.
    pub fn interface(self) -> &'static str {
        match self {
            World::Stateless => "stateless",
            World::Aggregate => "aggregate",
            World::Window => "window",
            World::KeyedProcess => "keyed-process",
        }
    }

    /// The world's name in `wit/operator.wit`.
    pub fn name(self) -> &'static str {
        match self {
            World::Stateless => "stateless-operator",
            World::Aggregate => "aggregate-operator",
            World::Window => "window-operator",
            World::KeyedProcess => "keyed-process-operator",
        }
    }

    /// True for the worlds that run as windowed operators.
    pub fn is_windowed(self) -> bool {
        matches!(self, World::Aggregate | World::Window)
    }
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Epoch interruption granularity: CPU deadlines are enforced to within one
/// tick.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Store data of one operator instance.
pub(crate) struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) memory: MemoryCap,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The process-wide engine. Cheap to share by reference; every operator
/// instance of every pipeline uses the same one.
pub struct WasmEngine {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
}

/// What `weir inspect` shows about a component file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInfo {
    /// sha256 of the file, hex.
    pub digest: String,
    /// File size in bytes.
    pub size: u64,
    /// Export names (interfaces are `namespace:package/interface@version`).
    pub exports: Vec<String>,
    /// Import names.
    pub imports: Vec<String>,
}

impl ComponentInfo {
    /// The Weir operator world the component implements and the contract
    /// version it was built against, if it exports one of the worlds.
    pub fn weir_export(&self) -> Option<(World, &str)> {
        self.exports.iter().find_map(|e| {
            let rest = e.strip_prefix(EXPORT_PREFIX)?;
            let (interface, version) = rest.split_once('@')?;
            let world = World::ALL
                .into_iter()
                .find(|w| w.interface() == interface)?;
            Some((world, version))
        })
    }

    /// The Weir operator world the component implements, if any.
    pub fn world(&self) -> Option<World> {
        self.weir_export().map(|(w, _)| w)
    }

    /// The contract version of the component's Weir export, if any.
    pub fn contract_version(&self) -> Option<&str> {
        self.weir_export().map(|(_, v)| v)
    }
}

/// A pre-linked component of one of the worlds.
pub(crate) enum Pre {
    Stateless(stateless::StatelessOperatorPre<HostState>),
    /// The aggregate's exports, and `aggregate-slices`' when it has it.
    Aggregate {
        pre: InstancePre<HostState>,
        aggregate: aggregate::AggregateOperatorIndices,
        sliced: Option<sliced::SlicedAggregateOperatorIndices>,
    },
    Window(window::WindowOperatorPre<HostState>),
    Keyed(keyed::KeyedProcessOperatorPre<HostState>),
}

/// A component that passed every check, ready to instantiate any number of
/// times.
pub struct LoadedComponent {
    pub(crate) path: PathBuf,
    pub(crate) pre: Pre,
    /// What the component is.
    pub info: ComponentInfo,
    /// The world it implements.
    pub world: World,
}

impl WasmEngine {
    /// An engine caching compiled components in `cache_dir` (no cache when
    /// `None`).
    ///
    /// # Errors
    /// The engine configuration is refused (should not happen on x86-64 or
    /// aarch64 Linux).
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, WasmError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(256)
            .total_core_instances(512)
            .total_memories(256)
            .total_tables(512)
            .total_stacks(256)
            .max_memory_size(4 << 30);
        let mut config = Config::new();
        config
            .concurrency_support(false)
            .wasm_component_model(true)
            .epoch_interruption(true)
            .wasm_backtrace_max_frames(std::num::NonZero::new(20))
            .max_wasm_stack(1 << 20)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if std::env::var_os("WEIR_PERF_MAP").is_some() {
            // `perf` names guest functions from /tmp/perf-PID.map.
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| WasmError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| WasmError::Engine(e.to_string()))?;
        start_epoch_ticker(&engine)
            .map_err(|e| WasmError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(WasmEngine {
            engine,
            linker,
            cache_dir,
        })
    }

    /// The default cache directory: `$WEIR_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/weir/components`, else `~/.cache/weir/components`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("WEIR_CACHE_DIR") {
            return Some(PathBuf::from(dir));
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("weir").join("components"))
    }

    /// Reads, compiles (or fetches from the cache) and checks a component.
    ///
    /// # Errors
    /// A missing file, a file that is not a component, a component of
    /// another world or contract version, or one whose imports this host
    /// does not provide — each naming the file and what was expected.
    pub fn load(&self, path: &Path) -> Result<Arc<LoadedComponent>, WasmError> {
        let (component, info) = self.compile(path)?;
        let Some((world, version)) = info.weir_export() else {
            return Err(WasmError::WrongWorld {
                path: path.to_path_buf(),
                expected: World::ALL
                    .map(|w| format!("{EXPORT_PREFIX}{}@{CONTRACT_VERSION}", w.interface()))
                    .join("` or `"),
                found: info.exports.join(", "),
            });
        };
        if !version.starts_with(ACCEPTED_TRACK) {
            return Err(WasmError::ContractVersion {
                path: path.to_path_buf(),
                expected: format!("{ACCEPTED_TRACK}x (this host implements {CONTRACT_VERSION})"),
                found: version.to_string(),
            });
        }
        let link = |e: wasmtime::Error| WasmError::Link {
            path: path.to_path_buf(),
            reason: format!("{e:#}"),
        };
        let linked = self.linker.instantiate_pre(&component).map_err(link)?;
        let pre = match world {
            World::Stateless => {
                Pre::Stateless(stateless::StatelessOperatorPre::new(linked).map_err(link)?)
            }
            World::Aggregate => {
                // Optional (contract 0.1.2): without it, sliding windows
                // are fired through `merge` and `get-result`. With it, it
                // must have every function (checked here) of the right
                // types (checked when an instance starts).
                let slices = format!("{EXPORT_PREFIX}aggregate-slices@");
                let sliced = if info.exports.iter().any(|e| e.starts_with(&slices)) {
                    Some(sliced::SlicedAggregateOperatorIndices::new(&linked).map_err(link)?)
                } else {
                    None
                };
                Pre::Aggregate {
                    aggregate: aggregate::AggregateOperatorIndices::new(&linked).map_err(link)?,
                    sliced,
                    pre: linked,
                }
            }
            World::Window => Pre::Window(window::WindowOperatorPre::new(linked).map_err(link)?),
            World::KeyedProcess => {
                Pre::Keyed(keyed::KeyedProcessOperatorPre::new(linked).map_err(link)?)
            }
        };
        Ok(Arc::new(LoadedComponent {
            path: path.to_path_buf(),
            pre,
            info,
            world,
        }))
    }

    /// Reads and compiles a component and lists what it imports and
    /// exports, without checking it is an operator.
    ///
    /// # Errors
    /// A missing file or a file that is not a valid component.
    pub fn inspect(&self, path: &Path) -> Result<ComponentInfo, WasmError> {
        self.compile(path).map(|(_, info)| info)
    }

    pub(crate) fn compile(&self, path: &Path) -> Result<(Component, ComponentInfo), WasmError> {
        let bytes = std::fs::read(path).map_err(|source| WasmError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        check_is_component(path, &bytes)?;
        let digest = hex(&Sha256::digest(&bytes));
        let component =
            self.cached_compile(&digest, &bytes)
                .map_err(|e| WasmError::NotAComponent {
                    path: path.to_path_buf(),
                    reason: format!("invalid component: {e:#}"),
                })?;
        let ty = component.component_type();
        let info = ComponentInfo {
            digest,
            size: bytes.len() as u64,
            exports: ty
                .exports(&self.engine)
                .map(|(n, _)| n.to_string())
                .collect(),
            imports: ty
                .imports(&self.engine)
                .map(|(n, _)| n.to_string())
                .collect(),
        };
        Ok((component, info))
    }

    /// Compiles `bytes`, or loads the artifact cached under their digest and
    /// this engine's compatibility hash.
    fn cached_compile(&self, digest: &str, bytes: &[u8]) -> wasmtime::Result<Component> {
        let Some(dir) = &self.cache_dir else {
            return Component::new(&self.engine, bytes);
        };
        let mut hasher = DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let file = dir.join(format!("{digest}-{:016x}.cwasm", hasher.finish()));
        if file.exists() {
            // SAFETY: the file is an artifact this engine configuration
            // wrote (the name carries the content digest and the engine's
            // compatibility hash) in Weir's own cache directory.
            #[allow(unsafe_code, reason = "loading our own precompiled artifact")]
            let cached = unsafe { Component::deserialize_file(&self.engine, &file) };
            match cached {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(file = %file.display(), "ignoring unusable cached component: {e}")
                }
            }
        }
        let component = Component::new(&self.engine, bytes)?;
        if let Err(e) = write_atomically(dir, &file, &component.serialize()?) {
            tracing::warn!(dir = %dir.display(), "cannot cache compiled component: {e}");
        }
        Ok(component)
    }
}

fn check_is_component(path: &Path, bytes: &[u8]) -> Result<(), WasmError> {
    let not = |reason: &str| WasmError::NotAComponent {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0, 1, 0]) => Ok(()),
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(not(
            "it is a core WebAssembly module; build operators with `--target wasm32-wasip2` so they are components",
        )),
        Some([0, b'a', b's', b'm', ..]) => Err(not("unsupported WebAssembly binary version")),
        _ => Err(not(
            "it does not start with the WebAssembly magic bytes `\\0asm`",
        )),
    }
}

fn write_atomically(dir: &Path, file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is
/// dropped; a call's deadline is a number of ticks.
fn start_epoch_ticker(engine: &Engine) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("weir-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(|_| ())
}
