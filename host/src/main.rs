//! The `mayfly` command line. Each subcommand is a few lines that hand over to
//! the module that does the work: `toolchain` (build), `http` (run a web
//! process), `bench`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use mayfly::engine::{self, Allocator, EngineOptions};
use mayfly::http::{self, Handler, ServerConfig};
use mayfly::instance::InstanceConfig;
use mayfly::job::{self, Runner, WorkerConfig};
use mayfly::lifecycle::{self, Shutdown};
use mayfly::logs::{self, LogFormat};
use mayfly::manifest::{self, Kind, Manifest, ProcessType};
use mayfly::queue::{NewJob, Policy, Queue, State};
use mayfly::supervisor::{self, Formation};
use mayfly::{bench, export, state, toolchain};

#[derive(Parser)]
#[command(
    name = "mayfly",
    version,
    about = "Run twelve-factor process types as WebAssembly components"
)]
struct Cli {
    /// The app's manifest.
    #[arg(long, global = true, default_value = manifest::DEFAULT_MANIFEST, env = "MAYFLY_MANIFEST")]
    manifest: PathBuf,
    /// How log lines are written.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "MAYFLY_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the component of every process type with its `build` command.
    Build,
    /// Run one process of a type in the foreground until SIGTERM/SIGINT.
    Run {
        /// The process type, a `[process.NAME]` of the manifest.
        process_type: String,
        /// This process's number within its type (`web.1`, `web.2`, ...).
        #[arg(long, default_value_t = 1)]
        index: u32,
        /// Share the port with other processes of the same type.
        #[arg(long, hide = true, env = "MAYFLY_REUSE_PORT")]
        reuse_port: bool,
        /// Runtime threads (default: one per CPU).
        #[arg(long, env = "MAYFLY_THREADS")]
        threads: Option<usize>,
    },
    /// Run the whole formation as child processes until SIGTERM/SIGINT.
    Up {
        /// Override `[formation]`: `web=2,worker=3`.
        #[arg(long)]
        formation: Option<String>,
    },
    /// Write the formation for systemd, Kubernetes or a Procfile runner.
    Export {
        #[arg(value_enum)]
        target: export::Target,
        /// Override `[formation]`: `web=2,worker=3`.
        #[arg(long)]
        formation: Option<String>,
        /// Write the files into this directory instead of printing them.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Add a job to a queue and print its id.
    Enqueue {
        /// The queue, as a worker's `queues` names it.
        queue: String,
        /// The payload as text.
        #[arg(long, conflicts_with = "file")]
        data: Option<String>,
        /// The payload from a file, or `-` for stdin.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Run no earlier than this from now (`30s`, `5m`).
        #[arg(long, value_parser = parse_duration)]
        delay: Option<Duration>,
        /// A second enqueue with the same key prints the first job's id.
        #[arg(long)]
        key: Option<String>,
    },
    /// Inspect and manage jobs.
    Jobs {
        #[command(subcommand)]
        command: Jobs,
    },
    /// Measure the host.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Subcommand)]
enum Jobs {
    /// List jobs, oldest first.
    List {
        #[arg(long)]
        queue: Option<String>,
        #[arg(long, value_enum)]
        state: Option<State>,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one job, with its payload and last error.
    Show { id: String },
    /// Put a dead job back in its queue.
    Retry { id: String },
    /// Delete every done or dead job.
    Purge {
        #[arg(long, value_enum)]
        state: State,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Instantiate, call and drop a web component in a loop.
    Churn {
        /// The component (.wasm) to churn.
        component: PathBuf,
        /// How long to run.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
        /// Loops running at once.
        #[arg(long, default_value_t = 1)]
        concurrency: u32,
        #[arg(long, value_enum, default_value = "pooling")]
        allocator: Allocator,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Jobs end to end: fill a fresh queue, drain it with worker processes.
    Jobs {
        /// The worker process type to run.
        #[arg(long = "type", default_value = "worker")]
        process_type: String,
        /// How many jobs.
        #[arg(long, default_value_t = 10_000)]
        jobs: usize,
        /// Worker processes.
        #[arg(long, default_value_t = 1)]
        workers: u32,
        /// Enqueue at this many jobs/s while the workers run, instead of all at once.
        #[arg(long)]
        rate: Option<u32>,
        #[arg(long)]
        json: bool,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    manifest::parse_duration(text)
}

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = Cli::parse();
    logs::init(cli.log_format);
    match dispatch(cli, started) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli, started: Instant) -> Result<()> {
    match cli.command {
        Command::Build => toolchain::build(&Manifest::load(&cli.manifest)?),
        Command::Run {
            process_type,
            index,
            reuse_port,
            threads,
        } => {
            let manifest = Manifest::load(&cli.manifest)?;
            run(
                &manifest,
                &process_type,
                index,
                reuse_port,
                threads,
                started,
            )
        }
        Command::Up { formation } => {
            let manifest = Manifest::load(&cli.manifest)?;
            let over = formation.as_deref().map(Formation::parse).transpose()?;
            let formation = Formation::resolve(&manifest, over.as_ref())?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(supervisor::up(&manifest, &cli.manifest, &formation))
        }
        Command::Export {
            target,
            formation,
            out,
        } => {
            let manifest = Manifest::load(&cli.manifest)?;
            let over = formation.as_deref().map(Formation::parse).transpose()?;
            let formation = Formation::resolve(&manifest, over.as_ref())?;
            let mayfly = std::env::current_exe().context("cannot find the mayfly executable")?;
            let files = export::export(target, &manifest, &formation, &mayfly);
            export::write(&files, out.as_ref())
        }
        Command::Enqueue {
            queue,
            data,
            file,
            delay,
            key,
        } => {
            let manifest = Manifest::load(&cli.manifest)?;
            let payload = match (data, file) {
                (Some(text), _) => text.into_bytes(),
                (None, Some(path)) if path.as_os_str() == "-" => {
                    let mut bytes = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                        .context("reading the payload from stdin")?;
                    bytes
                }
                (None, Some(path)) => std::fs::read(&path)
                    .with_context(|| format!("cannot read the payload file {}", path.display()))?,
                (None, None) => Vec::new(),
            };
            let backends = state::open(&manifest.app.state, &manifest.dir)?;
            let enqueued = backends.queue.enqueue(NewJob {
                queue,
                payload,
                delay: delay.unwrap_or_default(),
                idempotency_key: key,
            })?;
            println!("{}", enqueued.id);
            Ok(())
        }
        Command::Jobs { command } => {
            let manifest = Manifest::load(&cli.manifest)?;
            let backends = state::open(&manifest.app.state, &manifest.dir)?;
            jobs(&*backends.queue, command)
        }
        Command::Bench {
            bench:
                Bench::Churn {
                    component,
                    duration,
                    concurrency,
                    allocator,
                    json,
                },
        } => bench::churn(bench::ChurnOptions {
            component,
            duration,
            concurrency,
            allocator,
            json,
        })
        .map(drop),
        Command::Bench {
            bench:
                Bench::Jobs {
                    process_type,
                    jobs,
                    workers,
                    rate,
                    json,
                },
        } => bench::jobs(bench::JobsOptions {
            manifest: cli.manifest,
            process_type,
            jobs,
            workers,
            rate,
            json,
        })
        .map(drop),
    }
}

/// `mayfly run TYPE`: one process, in the foreground.
fn run(
    manifest: &Manifest,
    process_type: &str,
    index: u32,
    reuse_port: bool,
    threads: Option<usize>,
    started: Instant,
) -> Result<()> {
    let process = manifest.process(process_type)?;
    let label = format!("{}.{index}", process.name);
    let runtime = match threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    }
    .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = Shutdown::new();
        shutdown
            .listen_for_signals(&label)
            .context("cannot install signal handlers")?;
        let Prepared {
            engine,
            component,
            config,
            backends,
        } = prepare(manifest, process, &label)?;
        let context = || {
            format!(
                "process type `{}` ({})",
                process.name,
                process.component.display()
            )
        };
        match process.kind {
            Kind::Http => {
                let handler = Handler::new(&engine, &component, config, shutdown.clone())
                    .with_context(context)?;
                let server = ServerConfig {
                    process: label.clone(),
                    host: env_or("HOST", process.host.clone()),
                    port: match std::env::var("PORT") {
                        Ok(port) => port
                            .parse()
                            .with_context(|| format!("PORT={port} is not a port number"))?,
                        Err(_) => process.port,
                    },
                    concurrency: process.concurrency,
                    max_body: process.max_body,
                    grace: manifest.app.grace,
                    reuse_port,
                };
                let listener = http::bind(&server)?;
                tracing::info!(
                    "{label} listening on http://{} (ready in {:.1} ms)",
                    listener.local_addr()?,
                    started.elapsed().as_secs_f64() * 1e3
                );
                lifecycle::notify_ready();
                http::serve(listener, Arc::new(handler), server, shutdown).await
            }
            Kind::Job => {
                let runner = Runner::new(&engine, &component, config, shutdown.clone())
                    .with_context(context)?;
                tracing::info!(
                    "{label} working on {} (ready in {:.1} ms)",
                    process.queues.join(", "),
                    started.elapsed().as_secs_f64() * 1e3
                );
                lifecycle::notify_ready();
                let worker = WorkerConfig {
                    process: label.clone(),
                    queues: process.queues.clone(),
                    concurrency: process.concurrency,
                    policy: Policy {
                        max_attempts: process.max_attempts,
                        lease: process.lease,
                    },
                    grace: manifest.app.grace,
                };
                job::work(Arc::new(runner), backends, worker, shutdown).await
            }
        }
    })?;
    tracing::info!("{label} exited");
    Ok(())
}

/// What every process type needs before it can take work: its backing
/// services, the engine (ticking), the compiled component, and the settings
/// each instance gets.
struct Prepared {
    engine: wasmtime::Engine,
    component: wasmtime::component::Component,
    config: InstanceConfig,
    backends: state::Backends,
}

fn prepare(manifest: &Manifest, process: &ProcessType, label: &str) -> Result<Prepared> {
    let backends = state::open(&manifest.app.state, &manifest.dir)?;
    let (engine, _) = engine::build(EngineOptions {
        allocator: Allocator::Pooling,
        instances: process.concurrency,
        memory: process.memory,
    })?;
    engine::start_epoch_ticker(&engine);
    let component = engine::load_component(
        &engine,
        &process.component,
        &engine::cache_dir(&manifest.dir),
    )
    .with_context(|| format!("process type `{}`", process.name))?;
    let config = InstanceConfig::new(label, &process.env, process.memory, process.deadline)
        .with_services(&process.config, Some(backends.clone()));
    Ok(Prepared {
        engine,
        component,
        config,
        backends,
    })
}

fn jobs(queue: &dyn Queue, command: Jobs) -> Result<()> {
    match command {
        Jobs::List {
            queue: name,
            state,
            limit,
            json,
        } => {
            let jobs = queue.list(name.as_deref(), state, limit)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                println!(
                    "{:>8}  {:<12} {:<8} {:>8}  LAST ERROR",
                    "ID", "QUEUE", "STATE", "ATTEMPTS"
                );
                for job in jobs {
                    println!(
                        "{:>8}  {:<12} {:<8} {:>8}  {}",
                        job.id,
                        job.queue,
                        job.state.as_str(),
                        job.attempts,
                        job.last_error.unwrap_or_default()
                    );
                }
            }
        }
        Jobs::Show { id } => {
            let job = queue
                .get(&id)?
                .with_context(|| format!("there is no job {id}"))?;
            let mut value = serde_json::to_value(&job)?;
            value["payload"] = match std::str::from_utf8(&job.payload) {
                Ok(text) => serde_json::Value::String(text.to_string()),
                Err(_) => {
                    serde_json::Value::String(format!("<{} bytes of binary>", job.payload.len()))
                }
            };
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        Jobs::Retry { id } => {
            queue.revive(&id)?;
            println!("{id}");
        }
        Jobs::Purge { state } => {
            let purged = queue.purge(state)?;
            println!("{purged}");
        }
    }
    Ok(())
}

fn env_or(name: &str, default: String) -> String {
    std::env::var(name).unwrap_or(default)
}
