//! `mayfly bench churn`: how many fresh instances per second the host makes.
//!
//! Each iteration is exactly what a web request costs the host minus the
//! network: a new store, an instance from the `InstancePre`, one call of the
//! handler with a synthetic `GET /`, the whole response body read, the
//! instance dropped. It goes through the same [`Handler`] as `mayfly run`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use crate::engine::{self, Allocator, EngineOptions};
use crate::http::Handler;
use crate::instance::InstanceConfig;
use crate::lifecycle::Shutdown;

#[derive(Debug, Clone)]
pub struct ChurnOptions {
    pub component: PathBuf,
    pub duration: Duration,
    pub concurrency: u32,
    pub allocator: Allocator,
    pub json: bool,
}

/// The result of a run, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct ChurnReport {
    pub component: String,
    pub allocator: Allocator,
    pub concurrency: u32,
    pub seconds: f64,
    pub instances: u64,
    pub errors: u64,
    pub instances_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

pub fn churn(options: ChurnOptions) -> Result<ChurnReport> {
    let concurrency = options.concurrency.max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(concurrency as usize)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(run(options.clone(), concurrency))?;
    if options.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{}: {} allocator, {} task(s), {:.1} s\n\
             {:.0} instances/s ({} instances, {} errors)\n\
             latency p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
            report.component,
            report.allocator,
            report.concurrency,
            report.seconds,
            report.instances_per_sec,
            report.instances,
            report.errors,
            report.p50_us,
            report.p99_us,
            report.p999_us,
            report.max_us
        );
    }
    Ok(report)
}

async fn run(options: ChurnOptions, concurrency: u32) -> Result<ChurnReport> {
    let memory = 64 << 20;
    let (engine, allocator) = engine::build(EngineOptions {
        allocator: options.allocator,
        instances: concurrency * 2,
        memory,
    })?;
    engine::start_epoch_ticker(&engine);
    let cache = engine::cache_dir(
        options
            .component
            .parent()
            .unwrap_or(std::path::Path::new(".")),
    );
    let component = engine::load_component(&engine, &options.component, &cache)?;
    let config = InstanceConfig::new(
        "bench.1",
        &Default::default(),
        memory,
        Duration::from_secs(30),
    );
    let handler = Arc::new(Handler::new(&engine, &component, config, Shutdown::new())?);

    // One warm-up call: surfaces a broken component before the clock starts.
    once(&handler)
        .await
        .context("the component failed on a synthetic GET /")?;

    let progress = (!options.json && std::io::stdout().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(options.duration.as_millis() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {elapsed}/{duration} {msg}")
                .expect("valid template"),
        );
        bar
    });

    let started = Instant::now();
    let end = started + options.duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let handler = handler.clone();
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new(3).expect("valid histogram");
            let mut errors = 0u64;
            while Instant::now() < end {
                let t0 = Instant::now();
                match once(&handler).await {
                    Ok(()) => {
                        let _ = histogram.record(t0.elapsed().as_nanos() as u64);
                    }
                    Err(_) => errors += 1,
                }
            }
            (histogram, errors)
        }));
    }
    if let Some(bar) = &progress {
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(100)).await;
            bar.set_position(started.elapsed().as_millis() as u64);
        }
    }
    let mut histogram = Histogram::<u64>::new(3).expect("valid histogram");
    let mut errors = 0;
    for task in tasks {
        let (h, e) = task.await?;
        histogram.add(h).expect("same histogram bounds");
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1e3;
    Ok(ChurnReport {
        component: options.component.display().to_string(),
        allocator,
        concurrency,
        seconds,
        instances: histogram.len(),
        errors,
        instances_per_sec: histogram.len() as f64 / seconds,
        p50_us: us(0.5),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: histogram.max() as f64 / 1e3,
    })
}

/// Kills the workers a failed benchmark started.
fn stop_all(children: &mut Vec<std::process::Child>, failed: std::process::Child) {
    children.push(failed);
    for child in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

async fn once(handler: &Handler) -> Result<()> {
    let request = hyper::Request::builder()
        .uri("http://localhost/")
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    let response = handler
        .handle(request, "bench", None)
        .await
        .map_err(|failure| anyhow::anyhow!("{failure:?}"))?;
    response
        .into_body()
        .collect()
        .await
        .map_err(|err| anyhow::anyhow!("reading the response body: {err:?}"))?;
    Ok(())
}

/// Options of `mayfly bench jobs`.
#[derive(Debug, Clone)]
pub struct JobsOptions {
    pub manifest: PathBuf,
    pub process_type: String,
    pub jobs: usize,
    pub workers: u32,
    /// Offered load in jobs/s; `None`: fill the queue at once, then drain.
    pub rate: Option<u32>,
    pub json: bool,
}

/// The result of `mayfly bench jobs`.
#[derive(Debug, Serialize)]
pub struct JobsReport {
    pub jobs: usize,
    pub workers: u32,
    pub rate: Option<u32>,
    pub seconds: f64,
    pub jobs_per_sec: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    pub durability: &'static str,
}

/// Jobs end to end: real worker processes on a fresh SQLite state file,
/// each job in a fresh instance; latency is enqueue → done as recorded in
/// the queue itself.
pub fn jobs(options: JobsOptions) -> Result<JobsReport> {
    use crate::manifest::Manifest;
    use crate::queue::{NewJob, State};

    let manifest = Manifest::load(&options.manifest)?;
    let process = manifest.process(&options.process_type)?;
    let queue_name = process
        .queues
        .first()
        .context("the process type has no queue")?
        .clone();
    let dir = manifest.dir.join(".mayfly");
    std::fs::create_dir_all(&dir)?;
    let db = dir.join(format!("bench-{}.db", std::process::id()));
    let url = format!("sqlite://{}", db.display());
    let backends = crate::state::open_url(&url, &manifest.dir)?;
    let cleanup = || {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
    };

    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for index in 1..=options.workers {
        let mut child = std::process::Command::new(&exe)
            .args([
                "run",
                &options.process_type,
                "--index",
                &index.to_string(),
                "--manifest",
            ])
            .arg(&options.manifest)
            .env("MAYFLY_QUEUE_URL", &url)
            .env("MAYFLY_KV_URL", &url)
            .env("RUST_LOG", "warn,mayfly=info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut last = String::new();
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("(ready in") {
                    let _ = tx.send(Ok(()));
                }
                last = line;
            }
            let _ = tx.send(Err(last));
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(())) => {}
            Ok(Err(last)) => {
                stop_all(&mut children, child);
                cleanup();
                anyhow::bail!("worker {index} exited before it was ready: {}", last.trim());
            }
            Err(_) => {
                stop_all(&mut children, child);
                cleanup();
                anyhow::bail!("worker {index} was not ready within 120 s");
            }
        }
        children.push(child);
    }

    let job = |_| NewJob {
        queue: queue_name.clone(),
        payload: Vec::new(),
        delay: Duration::ZERO,
        idempotency_key: None,
    };
    let started = Instant::now();
    match options.rate {
        None => {
            let batch: Vec<NewJob> = (0..options.jobs).map(job).collect();
            backends.queue.enqueue_many(&batch)?;
        }
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
            for n in 0..options.jobs {
                let due = started + interval * n as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                backends.queue.enqueue(job(n))?;
            }
        }
    }
    let limit = Instant::now() + Duration::from_secs(600);
    while backends.queue.count(State::Done)? < options.jobs as u64 {
        if Instant::now() > limit {
            cleanup();
            anyhow::bail!("the jobs were not all done within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let done = backends.queue.list(None, Some(State::Done), options.jobs)?;
    for child in &children {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    }
    for mut child in children {
        let _ = child.wait();
    }

    let first_enqueue = done.iter().map(|j| j.enqueued_at_ms).min().unwrap_or(0);
    let last_done = done
        .iter()
        .filter_map(|j| j.finished_at_ms)
        .max()
        .unwrap_or(0);
    let seconds = (last_done.saturating_sub(first_enqueue) as f64 / 1e3).max(1e-3);
    let mut latency = Histogram::<u64>::new(3).expect("valid histogram");
    for job in &done {
        let ms = job.finished_at_ms.unwrap_or(job.enqueued_at_ms) - job.enqueued_at_ms;
        let _ = latency.record(ms);
    }
    cleanup();
    let report = JobsReport {
        jobs: options.jobs,
        workers: options.workers,
        rate: options.rate,
        seconds,
        jobs_per_sec: options.jobs as f64 / seconds,
        latency_p50_ms: latency.value_at_quantile(0.5) as f64,
        latency_p99_ms: latency.value_at_quantile(0.99) as f64,
        latency_max_ms: latency.max() as f64,
        durability: "SQLite WAL, synchronous=NORMAL (survives a process crash)",
    };
    if options.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} jobs, {} worker process(es){}: {:.0} jobs/s end to end in {:.2} s\n\
             enqueue → done p50 {} ms, p99 {} ms, max {} ms ({})",
            report.jobs,
            report.workers,
            report
                .rate
                .map(|r| format!(", offered {r} jobs/s"))
                .unwrap_or_default(),
            report.jobs_per_sec,
            report.seconds,
            report.latency_p50_ms,
            report.latency_p99_ms,
            report.latency_max_ms,
            report.durability
        );
    }
    Ok(report)
}
