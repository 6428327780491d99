//! What every guest instance gets, whatever its process type: a fresh
//! `Store`, WASI with no filesystem and only the declared environment, stdout
//! and stderr routed to the host log, a memory limit, and a deadline enforced
//! through epoch interruption.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::lifecycle::Shutdown;
use crate::logs::GuestOutput;

/// The state a `Store` holds for one instance.
pub struct GuestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

/// Settings shared by all instances of one process type.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    /// `web.1`: prefixes the instance's log lines.
    pub process: Arc<str>,
    pub env: Vec<(String, String)>,
    pub memory: u64,
    pub deadline: Duration,
}

impl InstanceConfig {
    pub fn new(
        process: &str,
        env: &BTreeMap<String, String>,
        memory: u64,
        deadline: Duration,
    ) -> Self {
        InstanceConfig {
            process: process.into(),
            env: env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            memory,
            deadline,
        }
    }
}

/// Why the host stopped a guest. It travels inside the trap error, so the
/// caller can tell a deadline (504, retry) from a shutdown (503, release).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupted {
    Deadline,
    Shutdown,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Interrupted::Deadline => f.write_str("the guest ran past its deadline and was stopped"),
            Interrupted::Shutdown => {
                f.write_str("the guest was stopped because the shutdown grace period ended")
            }
        }
    }
}

impl std::error::Error for Interrupted {}

impl Interrupted {
    /// Finds the interruption in an error returned by a guest call, if the
    /// guest was stopped by the host rather than trapping by itself.
    pub fn of(err: &wasmtime::Error) -> Option<Interrupted> {
        err.downcast_ref::<Interrupted>().copied()
    }
}

/// A new store for one instance, tagged `request` in the log.
pub fn new_store(
    engine: &Engine,
    config: &InstanceConfig,
    request: &str,
    shutdown: &Shutdown,
) -> Store<GuestState> {
    let tag: Arc<str> = format!("{} {request}", config.process).into();
    let mut wasi = WasiCtx::builder();
    wasi.envs(&config.env)
        .stdout(GuestOutput::stdout(tag.clone()))
        .stderr(GuestOutput::stderr(tag))
        // Guests may ask for the network through wasi:sockets only through
        // what the process type grants; nothing is granted yet.
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    let state = GuestState {
        wasi: wasi.build(),
        http: WasiHttpCtx::new(),
        table: ResourceTable::new(),
        limits: StoreLimitsBuilder::new()
            .memory_size(usize::try_from(config.memory).unwrap_or(usize::MAX))
            .build(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limits);

    // The single place that decides whether a running guest goes on: at every
    // epoch tick it yields to the async runtime (so a spinning guest cannot
    // hold a thread that other requests need) unless its deadline has passed
    // or the shutdown grace has ended, in which case it is stopped.
    let deadline = Instant::now() + config.deadline;
    let shutdown = shutdown.clone();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if shutdown.is_cancelling() {
            Err(wasmtime::Error::new(Interrupted::Shutdown))
        } else if Instant::now() >= deadline {
            Err(wasmtime::Error::new(Interrupted::Deadline))
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store
}
