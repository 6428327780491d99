//! What every guest instance gets, whatever its process type: a fresh
//! `Store`, WASI with no filesystem and only the declared environment, stdout
//! and stderr routed to the host log, a memory limit, and a deadline enforced
//! through epoch interruption.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::lifecycle::Shutdown;
use crate::logs::GuestOutput;
use crate::state::Backends;

/// The state a `Store` holds for one instance.
pub struct GuestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: StoreLimits,
    backends: Option<Backends>,
    config: Arc<[(String, String)]>,
    job: Option<JobLease>,
    shutdown: Shutdown,
    deadline: Deadline,
}

/// The lease a job instance runs under, so it can extend it.
#[derive(Clone)]
pub struct JobLease {
    pub backends: Backends,
    pub owner: String,
    pub lease: crate::queue::LeaseRef,
}

impl GuestState {
    pub fn table(&self) -> &ResourceTable {
        &self.table
    }
    pub fn table_mut(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
    pub fn backends(&self) -> Option<&Backends> {
        self.backends.as_ref()
    }
    pub fn config(&self) -> &[(String, String)] {
        &self.config
    }
    pub fn job(&self) -> Option<&JobLease> {
        self.job.as_ref()
    }
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }
    pub fn deadline(&self) -> &Deadline {
        &self.deadline
    }
    /// What stops this instance, for [`Stop::guard`].
    pub fn stop(&self) -> Stop {
        Stop {
            deadline: self.deadline.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

/// When an instance is stopped. Shared between the store's epoch callback
/// and the guest's own requests to extend it.
#[derive(Clone)]
pub struct Deadline(Arc<AtomicU64>);

fn process_epoch() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

impl Deadline {
    pub fn after(budget: Duration) -> Deadline {
        let at = Instant::now() + budget;
        Deadline(Arc::new(AtomicU64::new(Self::encode(at))))
    }

    fn encode(at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(process_epoch()).as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn passed(&self) -> bool {
        Self::encode(Instant::now()) >= self.0.load(Ordering::Relaxed)
    }

    fn instant(&self) -> Instant {
        process_epoch() + Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }

    /// Moves the deadline to `budget` from now, if that is later.
    pub fn extend_to(&self, budget: Duration) {
        self.0
            .fetch_max(Self::encode(Instant::now() + budget), Ordering::Relaxed);
    }
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
#[derive(Clone)]
pub struct InstanceConfig {
    /// `web.1`: prefixes the instance's log lines.
    pub process: Arc<str>,
    pub env: Vec<(String, String)>,
    pub memory: u64,
    pub deadline: Duration,
    /// What `wasi:config` answers.
    pub config: Arc<[(String, String)]>,
    pub backends: Option<Backends>,
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
            config: Arc::new([]),
            backends: None,
        }
    }

    /// Adds the guest's `wasi:config` values and backing services.
    pub fn with_services(
        mut self,
        config: &BTreeMap<String, String>,
        backends: Option<Backends>,
    ) -> Self {
        self.config = config.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        self.backends = backends;
        self
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

/// What stops a running guest: its deadline, or the end of the shutdown
/// grace. The epoch callback enforces both while wasm code runs; [`Stop::guard`]
/// enforces them while the guest waits in a host call (a sleep, a read).
pub struct Stop {
    deadline: Deadline,
    shutdown: Shutdown,
}

impl Stop {
    /// Runs a guest call, dropping it (and so the instance's work) when the
    /// host must stop it.
    pub async fn guard<T>(
        self,
        call: impl std::future::Future<Output = wasmtime::Result<T>>,
    ) -> wasmtime::Result<T> {
        tokio::select! {
            result = call => result,
            why = self.reason() => Err(wasmtime::Error::new(why)),
        }
    }

    async fn reason(&self) -> Interrupted {
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(self.deadline.instant().into()) => {
                    // The guest may have extended its deadline meanwhile.
                    if self.deadline.passed() {
                        return Interrupted::Deadline;
                    }
                }
                () = self.shutdown.cancelled() => return Interrupted::Shutdown,
            }
        }
    }
}

/// A new store for one instance, tagged `request` in the log.
pub fn new_store(
    engine: &Engine,
    config: &InstanceConfig,
    request: &str,
    shutdown: &Shutdown,
    job: Option<JobLease>,
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
        backends: config.backends.clone(),
        config: config.config.clone(),
        job,
        shutdown: shutdown.clone(),
        deadline: Deadline::after(config.deadline),
    };
    let deadline = state.deadline.clone();
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limits);

    // The single place that decides whether a running guest goes on: at every
    // epoch tick it yields to the async runtime (so a spinning guest cannot
    // hold a thread that other requests need) unless its deadline has passed
    // or the shutdown grace has ended, in which case it is stopped.
    let shutdown = shutdown.clone();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if shutdown.is_cancelling() {
            Err(wasmtime::Error::new(Interrupted::Shutdown))
        } else if deadline.passed() {
            Err(wasmtime::Error::new(Interrupted::Deadline))
        } else {
            // tokio's own yield: the task goes behind the others *and* behind
            // the I/O driver. A plain self-wake (`UpdateDeadline::Yield`)
            // lands in the worker's LIFO slot and runs again at once, so a
            // spinner starved new connections for ~60 ticks at a time.
            Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::task::yield_now()),
            ))
        }
    });
    store
}
