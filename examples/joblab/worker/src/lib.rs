//! A worker whose jobs do what their payload says:
//!
//! - `ok`: record a run
//! - `flaky`: fail on the first attempt (retry in 50 ms), then record a run
//! - `broken`: always ask for a retry in 10 ms (dead after `max_attempts`)
//! - `panic`: trap (the host retries with backoff)
//! - `sleep:MS`: hold the job MS milliseconds, then record a run
//! - `spin`: loop forever without a host call (stopped at the deadline)
//! - `extend:MS`: ask for MS more milliseconds, then take them all
//! - `polite`: work in small steps until the worker shuts down, then note
//!   `saw-cancel:{id}` and ask for a retry
//!
//! Every job records `started:{id}` when it starts and `runs:{id}` (a
//! counter) when it finishes. While it runs it holds `lock:{id}`: finding the
//! lock taken means two workers run the job at once, which is counted in
//! `overlaps`.

use std::time::Duration;

use mayfly_guest::job::{Job, JobError};
use mayfly_guest::kv::Store;

#[mayfly_guest::job_handler]
fn run(job: Job) -> Result<(), JobError> {
    let store = Store::open("lab").map_err(|e| JobError::retry(e.to_string()))?;
    let kv = |e: mayfly_guest::kv::Error| JobError::retry(e.to_string());
    let id = job.id().to_string();
    store
        .set(&format!("started:{id}"), job.attempt().to_string())
        .map_err(kv)?;
    let lock = format!("lock:{id}");
    if !store.compare_and_swap(&lock, None, b"held").map_err(kv)? {
        store.increment("overlaps", 1).map_err(kv)?;
    }
    let result = act(&job);
    store.delete(&lock).map_err(kv)?;
    result?;
    store.increment(&format!("runs:{id}"), 1).map_err(kv)?;
    Ok(())
}

fn act(job: &Job) -> Result<(), JobError> {
    let payload = job.payload_text().unwrap_or("");
    match payload.split_once(':').unwrap_or((payload, "")) {
        ("ok", _) => Ok(()),
        ("flaky", _) if job.attempt() == 1 => Err(JobError::retry_after(
            "flaky on the first attempt",
            Duration::from_millis(50),
        )),
        ("flaky", _) => Ok(()),
        ("broken", _) => Err(JobError::retry_after(
            "always broken",
            Duration::from_millis(10),
        )),
        ("panic", _) => panic!("asked to panic"),
        ("sleep", ms) => {
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(100)));
            Ok(())
        }
        ("extend", ms) => {
            let ms: u64 = ms.parse().unwrap_or(1000);
            mayfly_guest::job::extend(Duration::from_millis(ms + 1000))
                .map_err(|e| JobError::retry(format!("cannot extend: {e}")))?;
            std::thread::sleep(Duration::from_millis(ms));
            Ok(())
        }
        ("polite", _) => {
            while !mayfly_guest::job::cancelled() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let store = Store::open("lab").map_err(|e| JobError::retry(e.to_string()))?;
            store
                .set(&format!("saw-cancel:{}", job.id()), "yes")
                .map_err(|e| JobError::retry(e.to_string()))?;
            Err(JobError::retry_after(
                "the worker is shutting down",
                Duration::ZERO,
            ))
        }
        ("spin", _) => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        _ => Err(JobError::fail(format!("unknown payload {payload:?}"))),
    }
}
