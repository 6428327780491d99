//! The job process type and its queue, driven through the `mayfly` binary
//! with a real SQLite state file in a temporary directory.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// An app in a temporary directory: its own manifest and state file, the
/// components built from `examples/`.
struct App {
    dir: TempDir,
    manifest: PathBuf,
}

impl App {
    /// The joblab app, with `worker` settings replaced by `worker_extra`.
    fn joblab(worker_extra: &str) -> App {
        build_examples();
        let dir = TempDir::new("jobs");
        let manifest = dir.path().join("mayfly.toml");
        let text = format!(
            "[app]\ngrace = \"2s\"\n\n\
             [process.web]\nkind = \"http\"\ncomponent = \"{web}\"\n\n\
             [process.worker]\nkind = \"job\"\ncomponent = \"{worker}\"\nqueues = [\"lab\"]\n\
             lease = \"2s\"\n{attempts}{worker_extra}\n",
            attempts = if worker_extra.contains("max_attempts") {
                ""
            } else {
                "max_attempts = 3\n"
            },
            web = component("joblab_web"),
            worker = component("joblab_worker"),
        );
        std::fs::write(&manifest, text).unwrap();
        App { dir, manifest }
    }

    fn state_file(&self) -> PathBuf {
        // The default state URL: next to the manifest.
        self.dir.path().join(".mayfly/state.db")
    }

    fn cmd(&self) -> Command {
        let mut command = mayfly();
        command
            .arg("--manifest")
            .arg(&self.manifest)
            .env("MAYFLY_CACHE_DIR", shared_cache());
        command
    }

    fn ok(&self, args: &[&str]) -> String {
        let (output, stderr) = run_output(self.cmd().args(args));
        assert!(output.status.success(), "mayfly {args:?} failed: {stderr}");
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    fn enqueue(&self, payload: &str, extra: &[&str]) -> String {
        let mut args = vec!["enqueue", "lab", "--data", payload];
        args.extend_from_slice(extra);
        self.ok(&args)
    }

    fn start(&self, process_type: &str) -> Server {
        Server::start_type(process_type, &self.manifest, shared_cache(), &[])
    }

    /// A worker that also logs every finished job.
    fn start_verbose(&self, process_type: &str) -> Server {
        Server::start_type(
            process_type,
            &self.manifest,
            shared_cache(),
            &[("RUST_LOG", "info,mayfly=debug")],
        )
    }

    fn jobs(&self, state: &str) -> Vec<Value> {
        let out = self.ok(&[
            "jobs", "list", "--state", state, "--json", "--limit", "1000000",
        ]);
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn show(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["jobs", "show", id])).unwrap()
    }

    /// Polls until `check` holds, at most `timeout`.
    fn wait(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        let mut last = Value::Null;
        self.wait(&format!("job {id} to be {state}"), timeout, || {
            last = self.show(id);
            last["state"] == state
        });
        last
    }
}

fn sum(web: &Server, prefix: &str) -> Value {
    serde_json::from_str(&get(&web.url(&format!("/sum/{prefix}"))).body).unwrap()
}

#[test]
fn a_thousand_jobs_from_the_cli_are_all_done_exactly_once() {
    let app = App::joblab("concurrency = 8");
    // Four enqueuers at once, 250 jobs each, all through the CLI.
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..250 {
                    app.enqueue("ok", &[]);
                }
            });
        }
    });
    assert_eq!(app.jobs("queued").len(), 1000);

    let _worker = app.start("worker");
    app.wait("1000 jobs done", Duration::from_secs(120), || {
        app.jobs("done").len() == 1000
    });
    let web = app.start("web");
    let runs = sum(&web, "runs:");
    assert_eq!(runs["count"], 1000, "{runs}");
    assert_eq!(runs["sum"], 1000, "{runs}");
    assert_eq!(runs["max"], 1, "{runs}");
    assert_eq!(get(&web.url("/kv/overlaps")).status, 404);
}

#[test]
fn a_job_that_asks_for_a_retry_runs_again_and_succeeds() {
    let app = App::joblab("");
    let _worker = app.start("worker");
    let id = app.enqueue("flaky", &[]);
    let job = app.wait_state(&id, "done", Duration::from_secs(30));
    assert_eq!(job["attempts"], 2, "{job}");
    assert_eq!(job["last_error"], "flaky on the first attempt");
}

#[test]
fn a_job_is_dead_after_max_attempts_and_jobs_retry_revives_it() {
    let app = App::joblab("");
    let worker = app.start("worker");
    let id = app.enqueue("broken", &[]);
    let job = app.wait_state(&id, "dead", Duration::from_secs(30));
    assert_eq!(job["attempts"], 3, "{job}");
    assert_eq!(job["last_error"], "always broken");
    let dead = app.jobs("dead");
    assert_eq!(dead.len(), 1);

    assert_eq!(app.ok(&["jobs", "retry", &id]), id);
    // Revived with a fresh set of attempts: it runs three more times.
    app.wait(
        "the revived job to run again",
        Duration::from_secs(30),
        || {
            worker
                .log
                .text()
                .matches(&format!("job {id} attempt 3 of 3 failed"))
                .count()
                == 2
        },
    );
    let job = app.wait_state(&id, "dead", Duration::from_secs(30));
    assert_eq!(job["attempts"], 3, "{job}");

    // A job that is not dead cannot be retried; purge removes dead ones.
    let other = app.enqueue("ok", &["--delay", "1h"]);
    let (output, stderr) = run_output(app.cmd().args(["jobs", "retry", &other]));
    assert!(!output.status.success());
    assert!(stderr.contains("not dead"), "{stderr}");
    assert_eq!(app.ok(&["jobs", "purge", "--state", "dead"]), "1");
    assert!(app.jobs("dead").is_empty());
}

#[test]
fn a_trapping_job_is_retried_with_backoff_and_keeps_its_error() {
    let app = App::joblab("max_attempts = 2");
    let _worker = app.start("worker");
    let id = app.enqueue("panic", &[]);
    let job = app.wait_state(&id, "dead", Duration::from_secs(30));
    assert_eq!(job["attempts"], 2, "{job}");
    let error = job["last_error"].as_str().unwrap();
    assert!(error.contains("trapped"), "{error}");
    // Backoff: the second attempt came about a second after the first.
    let took = job["finished_at_ms"].as_u64().unwrap() - job["enqueued_at_ms"].as_u64().unwrap();
    assert!(took >= 700, "retried after only {took} ms");
}

#[test]
fn an_idempotency_key_returns_the_first_jobs_id() {
    let app = App::joblab("");
    let first = app.enqueue("ok", &["--key", "order-42"]);
    let second = app.enqueue("ok", &["--key", "order-42"]);
    assert_eq!(first, second);
    let third = app.enqueue("ok", &["--key", "order-43"]);
    assert_ne!(first, third);
    assert_eq!(app.jobs("queued").len(), 2);
}

#[test]
fn a_delayed_job_does_not_run_early() {
    let app = App::joblab("");
    let _worker = app.start("worker");
    let id = app.enqueue("ok", &["--delay", "2s"]);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(app.show(&id)["state"], "queued");
    let job = app.wait_state(&id, "done", Duration::from_secs(30));
    let waited = job["finished_at_ms"].as_u64().unwrap() - job["enqueued_at_ms"].as_u64().unwrap();
    assert!(waited >= 2000, "ran after {waited} ms");
}

#[test]
fn two_workers_on_one_state_file_never_run_the_same_job_at_once() {
    let app = App::joblab("concurrency = 4");
    for _ in 0..60 {
        app.enqueue("sleep:30", &[]);
    }
    let a = app.start_verbose("worker");
    let b = app.start_verbose("worker");
    app.wait("60 jobs done", Duration::from_secs(60), || {
        app.jobs("done").len() == 60
    });
    let web = app.start("web");
    let runs = sum(&web, "runs:");
    assert_eq!(
        (runs["count"].as_u64(), runs["max"].as_u64()),
        (Some(60), Some(1)),
        "{runs}"
    );
    assert_eq!(
        get(&web.url("/kv/overlaps")).status,
        404,
        "two workers ran one job at once"
    );
    // Both workers took part.
    for worker in [&a, &b] {
        assert!(
            worker
                .log
                .wait_for(" done in ", Duration::from_secs(5))
                .is_some(),
            "a worker ran no job:\n{}",
            worker.log.text()
        );
    }
}

#[test]
fn a_worker_killed_mid_job_loses_nothing_the_next_worker_does_it() {
    let app = App::joblab("");
    let mut first = app.start("worker");
    let id = app.enqueue("sleep:3000", &[]);
    let web = app.start("web");
    app.wait("the job to start", Duration::from_secs(30), || {
        get(&web.url(&format!("/kv/started:{id}"))).status == 200
    });
    first.child.kill().unwrap(); // SIGKILL: no chance to clean up
    first.child.wait().unwrap();
    assert_eq!(app.show(&id)["state"], "running");

    let _second = app.start("worker");
    // The lease (2s) expires, the job is delivered again and finishes.
    let job = app.wait_state(&id, "done", Duration::from_secs(30));
    assert_eq!(job["attempts"], 2, "{job}");
    assert_eq!(get(&web.url(&format!("/kv/runs:{id}"))).body, "1");
}

#[test]
fn sigterm_during_a_long_job_releases_it_without_counting_an_attempt() {
    let app = App::joblab("");
    let mut worker = app.start("worker");
    let id = app.enqueue("sleep:6000", &[]);
    let web = app.start("web");
    app.wait("the job to start", Duration::from_secs(30), || {
        get(&web.url(&format!("/kv/started:{id}"))).status == 200
    });
    let t0 = Instant::now();
    let status = worker
        .terminate(Duration::from_secs(10))
        .expect("worker exits");
    assert_eq!(status.code(), Some(0), "{}", worker.log.text());
    // grace = 2s, then the job is stopped at its next epoch tick.
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t0.elapsed()
    );
    let job = app.show(&id);
    assert_eq!(
        (job["state"].as_str(), job["attempts"].as_u64()),
        (Some("queued"), Some(0)),
        "{job}"
    );
    assert!(worker
        .log
        .wait_for("released to the queue", Duration::from_secs(5))
        .is_some());

    let _next = app.start("worker");
    let job = app.wait_state(&id, "done", Duration::from_secs(30));
    assert_eq!(job["attempts"], 1, "{job}");
}

#[test]
fn a_job_past_its_deadline_is_stopped_and_retried() {
    let app = App::joblab("deadline = \"500ms\"\nmax_attempts = 1");
    let _worker = app.start("worker");
    let id = app.enqueue("spin", &[]);
    let job = app.wait_state(&id, "dead", Duration::from_secs(30));
    assert!(
        job["last_error"].as_str().unwrap().contains("deadline"),
        "{job}"
    );
}

#[test]
fn a_job_that_extends_its_lease_runs_past_its_deadline() {
    let app = App::joblab("deadline = \"700ms\"\nmax_attempts = 1");
    let _worker = app.start("worker");
    let id = app.enqueue("extend:1500", &[]);
    let job = app.wait_state(&id, "done", Duration::from_secs(30));
    // One attempt, done: without the extension the 700 ms deadline would
    // have stopped it, and with max_attempts = 1 it would be dead.
    assert_eq!(job["attempts"], 1, "{job}");
}

#[test]
fn a_running_job_sees_that_shutdown_has_begun() {
    let app = App::joblab("");
    let mut worker = app.start("worker");
    let id = app.enqueue("polite", &[]);
    let web = app.start("web");
    app.wait("the job to start", Duration::from_secs(30), || {
        get(&web.url(&format!("/kv/started:{id}"))).status == 200
    });
    let status = worker
        .terminate(Duration::from_secs(10))
        .expect("worker exits");
    assert_eq!(status.code(), Some(0));
    assert_eq!(get(&web.url(&format!("/kv/saw-cancel:{id}"))).body, "yes");
    // It returned before the grace ended, asking for a retry: queued again.
    assert_eq!(app.show(&id)["state"], "queued");
}

#[test]
fn web_guests_enqueue_too() {
    let app = App::joblab("");
    let web = app.start("web");
    let reply = reply(agent().post(&web.url("/enqueue/ok")).call());
    assert_eq!(reply.status, 202);
    assert_eq!(app.show(&reply.body)["queue"], "lab");
}

#[test]
fn the_wordcount_app_end_to_end_over_http() {
    build_examples();
    let dir = TempDir::new("wordcount");
    let state = format!("sqlite://{}/state.db", dir.path().display());
    let env = [
        ("MAYFLY_QUEUE_URL", state.as_str()),
        ("MAYFLY_KV_URL", state.as_str()),
    ];
    let manifest = example("wordcount");
    let web = Server::start_type("web", &manifest, shared_cache(), &env);
    let _worker = Server::start_type("worker", &manifest, shared_cache(), &env);

    let posted = reply(
        agent()
            .post(&web.url("/jobs"))
            .send_string("the quick brown fox jumps"),
    );
    assert_eq!(posted.status, 202, "{posted:?}");
    let id = serde_json::from_str::<Value>(&posted.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let location = agent().post(&web.url("/jobs")).send_string("x").unwrap();
    assert!(location.header("location").unwrap().starts_with("/jobs/"));

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = get(&web.url(&format!("/jobs/{id}")));
        let body: Value = serde_json::from_str(&reply.body).unwrap();
        if body["state"] == "done" {
            assert_eq!(body["words"], 5, "{body}");
            break;
        }
        assert_eq!(
            (reply.status, body["state"].as_str()),
            (202, Some("pending"))
        );
        assert!(Instant::now() < deadline, "the count never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// --- bad input --------------------------------------------------------------

#[test]
fn an_unknown_state_url_scheme_is_named() {
    let app = App::joblab("");
    let (output, stderr) = run_output(
        app.cmd()
            .args(["enqueue", "lab", "--data", "ok"])
            .env("MAYFLY_QUEUE_URL", "redis://127.0.0.1/0"),
    );
    assert!(!output.status.success());
    assert!(
        stderr.contains("unknown state URL scheme `redis`") && stderr.contains("sqlite://"),
        "{stderr}"
    );
}

#[test]
fn a_corrupt_state_file_is_refused_and_left_untouched() {
    let app = App::joblab("");
    let state = app.state_file();
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    let junk = b"this is not a database, and it must stay exactly as it is\n".repeat(100);
    std::fs::write(&state, &junk).unwrap();
    for args in [
        &["enqueue", "lab", "--data", "ok"][..],
        &["run", "worker"][..],
    ] {
        let (output, stderr) = run_output(app.cmd().args(args));
        assert!(!output.status.success());
        assert!(stderr.contains(&state.display().to_string()), "{stderr}");
        assert!(stderr.contains("nothing was changed"), "{stderr}");
    }
    assert_eq!(std::fs::read(&state).unwrap(), junk);
}

#[test]
fn a_component_without_the_job_handler_says_what_it_exports() {
    build_examples();
    let dir = TempDir::new("nojobhandler");
    let manifest = dir.path().join("mayfly.toml");
    std::fs::write(
        &manifest,
        format!(
            "[process.worker]\nkind = \"job\"\ncomponent = \"{}\"\n",
            component("hello")
        ),
    )
    .unwrap();
    let (output, stderr) = run_output(
        mayfly()
            .args(["run", "worker", "--manifest"])
            .arg(&manifest)
            .env("MAYFLY_CACHE_DIR", shared_cache()),
    );
    assert!(!output.status.success());
    assert!(
        stderr.contains("does not export mayfly:process/job-handler"),
        "{stderr}"
    );
    assert!(stderr.contains("wasi:http/incoming-handler"), "{stderr}");
}

#[test]
fn a_payload_over_the_limit_is_refused() {
    let app = App::joblab("");
    let big = app.dir.path().join("big.bin");
    std::fs::write(&big, vec![b'x'; 2 << 20]).unwrap();
    let (output, stderr) = run_output(app.cmd().args(["enqueue", "lab", "--file"]).arg(&big));
    assert!(!output.status.success());
    assert!(
        stderr.contains("over the limit") && stderr.contains("key-value store"),
        "{stderr}"
    );
    assert!(app.jobs("queued").is_empty());
}
