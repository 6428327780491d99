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
use mayfly::lifecycle::Shutdown;
use mayfly::logs::{self, LogFormat};
use mayfly::manifest::{self, Kind, Manifest};
use mayfly::{bench, toolchain};

#[derive(Parser)]
#[command(name = "mayfly", version, about = "Run twelve-factor process types as WebAssembly components")]
struct Cli {
    /// The app's manifest.
    #[arg(long, global = true, default_value = manifest::DEFAULT_MANIFEST, env = "MAYFLY_MANIFEST")]
    manifest: PathBuf,
    /// How log lines are written.
    #[arg(long, global = true, value_enum, default_value = "text", env = "MAYFLY_LOG_FORMAT")]
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
    },
    /// Measure the host.
    Bench {
        #[command(subcommand)]
        bench: Bench,
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
        } => {
            let manifest = Manifest::load(&cli.manifest)?;
            run(&manifest, &process_type, index, reuse_port, started)
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
    }
}

/// `mayfly run TYPE`: one process, in the foreground.
fn run(
    manifest: &Manifest,
    process_type: &str,
    index: u32,
    reuse_port: bool,
    started: Instant,
) -> Result<()> {
    let process = manifest.process(process_type)?;
    let label = format!("{}.{index}", process.name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = Shutdown::new();
        shutdown
            .listen_for_signals(&label)
            .context("cannot install signal handlers")?;
        match process.kind {
            Kind::Http => {
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
                let config =
                    InstanceConfig::new(&label, &process.env, process.memory, process.deadline);
                let handler = Handler::new(&engine, &component, config, shutdown.clone())
                    .with_context(|| {
                        format!(
                            "process type `{}` ({})",
                            process.name,
                            process.component.display()
                        )
                    })?;
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
                http::serve(listener, Arc::new(handler), server, shutdown).await
            }
        }
    })?;
    tracing::info!("{label} exited");
    Ok(())
}

fn env_or(name: &str, default: String) -> String {
    std::env::var(name).unwrap_or(default)
}
