//! The one `wasmtime::Engine` of a process, its epoch ticker, and the on-disk
//! cache of compiled components.
//!
//! Fresh instances are cheap only when three things hold: the component is
//! compiled ahead of time (the cache), instantiation takes pre-made slots
//! (the pooling allocator) and returning a slot does not go through the
//! kernel for every page (keep-resident memory, batched decommits,
//! `pagemap_scan`). This module sets all three up.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. Every running guest yields to the host at
/// each tick (fairness) and deadlines are checked then, so a deadline is
/// honoured within one tick. 10 ms is what Spin uses: short enough that a
/// request next to a spinning guest waits at most ~10 ms for its thread,
/// long enough that the ticks themselves cost nothing measurable.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Which instance allocator the engine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Allocator {
    /// Pre-reserved slots, copy-on-write memory images: the fast path.
    Pooling,
    /// `mmap` per instance: slower, needs no up-front address space.
    OnDemand,
}

impl std::fmt::Display for Allocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Allocator::Pooling => "pooling",
            Allocator::OnDemand => "on-demand",
        })
    }
}

/// What the engine must be able to hold.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    pub allocator: Allocator,
    /// Component instances alive at once (the pool's size).
    pub instances: u32,
    /// Largest linear memory of one instance, in bytes.
    pub memory: u64,
}

/// Builds the engine. If the pooling allocator cannot reserve its address
/// space (a `ulimit -v`, a small VM), falls back to on-demand allocation with
/// a log line instead of refusing to start.
pub fn build(options: EngineOptions) -> Result<(Engine, Allocator)> {
    if options.allocator == Allocator::Pooling {
        match Engine::new(&config(options.memory, Some(pooling(options)))) {
            Ok(engine) => return Ok((engine, Allocator::Pooling)),
            Err(err) => tracing::warn!(
                "the pooling allocator is not available here ({err:#}); \
                 using on-demand allocation, which makes each instance slower"
            ),
        }
    }
    let engine = Engine::new(&config(options.memory, None))
        .map_err(anyhow::Error::from)
        .context("cannot create the wasm engine")?;
    Ok((engine, Allocator::OnDemand))
}

fn config(memory: u64, pooling: Option<PoolingAllocationConfig>) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    // Explicit bounds checks instead of guard pages and signal handlers.
    // With guard pages, every instance whose guest grew its memory costs an
    // `mprotect` to take the growth back when its slot is reused, and on a
    // multi-threaded process that is a TLB shootdown on every core: measured
    // here, 30k instances/s with guard pages against 49k without. The bounds
    // checks cost far less than that for short-lived instances.
    config.signals_based_traps(false);
    config.memory_guard_size(0);
    config.guard_before_linear_memory(false);
    // Reserve the whole allowed size up front, so memory never moves as it grows.
    config.memory_reservation(memory);
    config.memory_reservation_for_growth(0);
    if let Some(pooling) = pooling {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    }
    config
}

fn pooling(options: EngineOptions) -> PoolingAllocationConfig {
    let instances = options.instances.max(1);
    let mut pool = PoolingAllocationConfig::default();
    // A Rust component made by wasm-component-ld holds a few core instances
    // (the program, the WASI adapter, shims), each with at most a couple of
    // memories and tables.
    pool.total_component_instances(instances)
        .total_core_instances(instances * 8)
        .total_memories(instances * 2)
        .total_tables(instances * 4)
        .total_stacks(instances)
        .max_memory_size(usize::try_from(options.memory).unwrap_or(usize::MAX))
        // Reset what a request dirtied with memset, not madvise: madvise on a
        // multi-threaded process costs a TLB shootdown on every core, which
        // is where most of the time of a per-request host goes otherwise.
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10)
        // What does go back to the kernel goes in batches.
        .decommit_batch_size(32)
        // Linux 6.7+: reset only the pages an instance actually wrote.
        .pagemap_scan(Enabled::Auto);
    pool
}

/// Starts the epoch ticker: one dedicated OS thread per process. It is not a
/// tokio task on purpose: a guest spinning on a runtime thread could starve a
/// task, and then nothing would ever interrupt that guest.
pub fn start_epoch_ticker(engine: &Engine) {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("mayfly-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match engine.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
        })
        .expect("spawning the epoch ticker thread");
}

/// Why a file cannot be run as a component. Callers show it as is: each
/// variant names the cause and the fix.
#[derive(Debug)]
pub enum LoadError {
    Missing(PathBuf),
    NotWasm(PathBuf),
    CoreModule(PathBuf),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Missing(path) => write!(
                f,
                "component {} does not exist: build it with `mayfly build` \
                 (or fix `component` in the manifest)",
                path.display()
            ),
            LoadError::NotWasm(path) => write!(
                f,
                "{} is not a WebAssembly file (it does not start with \\0asm): \
                 point `component` at the .wasm file your build produces",
                path.display()
            ),
            LoadError::CoreModule(path) => write!(
                f,
                "{} is a core wasm module, not a component: build it for the \
                 wasm32-wasip2 target, or wrap it with `wasm-tools component new`",
                path.display()
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// Checks that a component exports the interface a process type calls
/// (`export` without its version), and otherwise says what it does export.
pub fn require_export(
    engine: &Engine,
    component: &Component,
    export: &str,
    needs: &str,
) -> Result<()> {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let matches = |name: &String| name.split('@').next() == Some(export);
    if exports.iter().any(matches) {
        return Ok(());
    }
    let found = if exports.is_empty() {
        "nothing".to_string()
    } else {
        exports.join(", ")
    };
    bail!("the component does not export {export} (it exports {found}): {needs}")
}

/// Loads a component, from the compile cache when it holds this exact file
/// compiled by a compatible engine, else by compiling it and filling the cache.
pub fn load_component(engine: &Engine, path: &Path, cache_dir: &Path) -> Result<Component> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            bail!(LoadError::Missing(path.to_path_buf()))
        }
        Err(err) => {
            return Err(err).with_context(|| format!("cannot read component {}", path.display()))
        }
    };
    if !bytes.starts_with(b"\0asm") || bytes.len() < 8 {
        bail!(LoadError::NotWasm(path.to_path_buf()));
    }
    // Bytes 4..8: version 1 is a core module; a component has layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        bail!(LoadError::CoreModule(path.to_path_buf()));
    }

    let cached = cache_dir.join(format!("{}.cwasm", cache_key(engine, &bytes)));
    let started = Instant::now();
    if cached.exists() {
        // SAFETY: the file was written by `Component::serialize` of an engine
        // with the same compatibility hash (it is part of the file name) into
        // a cache directory that only mayfly writes.
        match unsafe { Component::deserialize_file(engine, &cached) } {
            Ok(component) => {
                tracing::info!(
                    "loaded {} from the compile cache in {:.1} ms",
                    path.display(),
                    started.elapsed().as_secs_f64() * 1e3
                );
                return Ok(component);
            }
            Err(err) => tracing::warn!(
                "ignoring unusable cache entry {} ({err}); compiling again",
                cached.display()
            ),
        }
    }

    let component = Component::new(engine, &bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{} is not a valid component", path.display()))?;
    tracing::info!(
        "compiled {} in {:.0} ms",
        path.display(),
        started.elapsed().as_secs_f64() * 1e3
    );
    if let Err(err) = store_in_cache(&component, &cached) {
        tracing::warn!(
            "cannot write the compile cache {} ({err:#}); the next start compiles again",
            cached.display()
        );
    }
    Ok(component)
}

/// The content of the component and the engine's compatibility hash (wasmtime
/// version, target, settings): a change of either is a different entry.
fn cache_key(engine: &Engine, bytes: &[u8]) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let mut digest = Sha256::new();
    digest.update(hasher.finish().to_le_bytes());
    digest.update(bytes);
    digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn store_in_cache(component: &Component, cached: &Path) -> Result<()> {
    let dir = cached.parent().context("cache path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let serialized = component.serialize().map_err(anyhow::Error::from)?;
    // Write then rename, so a process that starts at the same moment never
    // deserializes a half-written file.
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    std::fs::write(&tmp, serialized).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, cached).with_context(|| format!("renaming to {}", cached.display()))?;
    Ok(())
}

/// The cache directory for an app: `$MAYFLY_CACHE_DIR`, else `.mayfly/cache`
/// next to the manifest.
pub fn cache_dir(manifest_dir: &Path) -> PathBuf {
    match std::env::var_os("MAYFLY_CACHE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => manifest_dir.join(".mayfly").join("cache"),
    }
}
