//! Formation and disposability: `mayfly up`, graceful shutdown, cooperative
//! cancellation and `mayfly export`, through the binary over 127.0.0.1.

mod common;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde::Deserialize;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_manifest(dir: &TempDir, text: &str) -> PathBuf {
    build_examples();
    let path = dir.path().join("mayfly.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A running `mayfly up`, its output (stdout and stderr) collected.
struct Up {
    child: Child,
    log: Log,
}

impl Up {
    fn start(manifest: &std::path::Path, port: u16) -> Up {
        let mut child = mayfly()
            .args(["up", "--manifest"])
            .arg(manifest)
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("MAYFLY_CACHE_DIR", shared_cache())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Log::default();
        log.follow(child.stdout.take().unwrap());
        log.follow(child.stderr.take().unwrap());
        Up { child, log }
    }

    fn pid_of(&self, name: &str, not: Option<u32>) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for line in self.log.lines() {
                if let Some(rest) = line.split(&format!("started {name} (pid ")).nth(1) {
                    let pid: u32 = rest.trim_end_matches(')').parse().unwrap();
                    if Some(pid) != not {
                        return pid;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "{name} never started:\n{}",
                self.log.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(&self.child, "TERM");
            if wait_timeout(&mut self.child, Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
            }
        }
    }
}

fn hello_app(dir: &TempDir, web: u32) -> PathBuf {
    write_manifest(
        dir,
        &format!(
            "[app]\ngrace = \"5s\"\n[formation]\nweb = {web}\n\
             [process.web]\nkind = \"http\"\ncomponent = \"{}\"\n",
            component("hello")
        ),
    )
}

fn wait_ready(log: &Log, needles: &[&str]) {
    for needle in needles {
        assert!(
            log.wait_for(needle, Duration::from_secs(60)).is_some(),
            "no {needle:?} in:\n{}",
            log.text()
        );
    }
}

/// A request on a new connection each time, so SO_REUSEPORT spreads them.
fn fresh_get(port: u16, path: &str) -> Option<Reply> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .max_idle_connections(0)
        .build();
    match agent.get(&format!("http://127.0.0.1:{port}{path}")).call() {
        Ok(r) => Some(reply(Ok(r))),
        Err(ureq::Error::Status(c, r)) => Some(reply(Err(ureq::Error::Status(c, r)))),
        Err(_) => None,
    }
}

#[test]
fn up_runs_the_formation_and_both_web_processes_serve_one_port() {
    let dir = TempDir::new("up");
    let port = free_port();
    let up = Up::start(&hello_app(&dir, 2), port);
    wait_ready(&up.log, &["web.1 listening", "web.2 listening"]);
    let served_by = |name: &str| {
        up.log
            .lines()
            .iter()
            .any(|l| l.starts_with(name) && l.contains("| GET /n"))
    };
    for i in 0..200 {
        let reply = fresh_get(port, &format!("/n{i}")).expect("the formation answers");
        assert_eq!(reply.status, 200);
        if served_by("web.1") && served_by("web.2") {
            break;
        }
    }
    // Lines may still be on their way from the children: wait for them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(served_by("web.1") && served_by("web.2")) {
        assert!(
            Instant::now() < deadline,
            "both web processes should serve:\n{}",
            up.log.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_child_is_restarted_and_the_app_keeps_answering() {
    let dir = TempDir::new("restart");
    let port = free_port();
    let up = Up::start(&hello_app(&dir, 2), port);
    wait_ready(&up.log, &["web.1 listening", "web.2 listening"]);
    let first = up.pid_of("web.1", None);
    let status = std::process::Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    // web.2 keeps serving while web.1 is down. A connection the kernel had
    // already queued on the killed process's socket is reset; a client
    // retries, as it would behind any load balancer.
    let reply = (0..10)
        .find_map(|_| {
            fresh_get(port, "/").or_else(|| {
                std::thread::sleep(Duration::from_millis(50));
                None
            })
        })
        .expect("web.2 answers");
    assert_eq!(reply.status, 200);
    let second = up.pid_of("web.1", Some(first));
    assert_ne!(first, second);
    assert!(up
        .log
        .wait_for("restarting in", Duration::from_secs(5))
        .is_some());
    // The restarted process comes up and the app answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    while up.log.text().matches("web.1 listening").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "web.1 never came back:\n{}",
            up.log.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..20 {
        assert_eq!(fresh_get(port, "/").map(|r| r.status), Some(200));
    }
}

#[test]
fn a_second_signal_stops_the_formation_at_once() {
    let dir = TempDir::new("twice");
    let manifest = write_manifest(
        &dir,
        &format!(
            "[app]\ngrace = \"30s\"\n[process.web]\nkind = \"http\"\ncomponent = \"{}\"\n",
            component("limits")
        ),
    );
    let port = free_port();
    let mut up = Up::start(&manifest, port);
    wait_ready(&up.log, &["web.1 listening"]);
    // A request that would hold the drain for 20 s.
    std::thread::spawn(move || fresh_get(port, "/sleep/20000"));
    std::thread::sleep(Duration::from_millis(300));
    signal(&up.child, "TERM");
    assert!(up
        .log
        .wait_for("stopping the formation", Duration::from_secs(5))
        .is_some());
    let t0 = Instant::now();
    signal(&up.child, "INT");
    let status = wait_timeout(&mut up.child, Duration::from_secs(5)).expect("up exits at once");
    assert!(status.success(), "{status:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
}

#[test]
fn a_child_that_always_crashes_is_given_up_with_its_last_words() {
    let dir = TempDir::new("crashloop");
    let manifest = write_manifest(
        &dir,
        &format!(
            "[process.web]\nkind = \"http\"\ncomponent = \"{}\"\n\
             [process.worker]\nkind = \"job\"\ncomponent = \"missing.wasm\"\n",
            component("hello")
        ),
    );
    let port = free_port();
    let up = Up::start(&manifest, port);
    let line = up
        .log
        .wait_for("giving up on it", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("never gave up:\n{}", up.log.text()));
    assert!(line.contains("worker.1 crashed 5 times"), "{line}");
    assert!(line.contains("missing.wasm does not exist"), "{line}");
    // The rest of the formation goes on.
    assert_eq!(fresh_get(port, "/").map(|r| r.status), Some(200));
}

#[test]
fn sigterm_finishes_accepted_requests_refuses_new_ones_and_exits_zero() {
    let dir = TempDir::new("drain");
    let manifest = write_manifest(
        &dir,
        &format!(
            "[app]\ngrace = \"10s\"\n[process.web]\nkind = \"http\"\ncomponent = \"{}\"\nconcurrency = 64\n",
            component("limits")
        ),
    );
    let mut server = Server::start_with(&manifest, shared_cache(), &[]);
    let port = server.port;
    // A bounded load: 16 clients, each with one slow request in flight.
    let clients: Vec<_> = (0..16)
        .map(|_| std::thread::spawn(move || fresh_get(port, "/sleep/1000")))
        .collect();
    assert!(
        server
            .log
            .wait_for_count("| sleeping 1000 ms", 16, Duration::from_secs(10)),
        "the 16 requests did not all start:\n{}",
        server.log.text()
    );
    let t0 = Instant::now();
    signal(&server.child, "TERM");
    // The listener is closed: a new connection is refused.
    let refused = (0..60).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    assert!(refused, "new connections were still accepted after SIGTERM");
    for client in clients {
        let reply = client
            .join()
            .unwrap()
            .expect("an accepted request got no response");
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "slept 1000 ms\n")
        );
    }
    let status = wait_timeout(&mut server.child, Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0));
    // It exits as soon as the last request ends, not at the end of the grace.
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t0.elapsed()
    );
}

#[test]
fn sigterm_closes_idle_keep_alive_connections() {
    use std::io::{Read, Write};
    let mut server = Server::start(&example("hello"));
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    let n = conn.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // The connection is now idle and kept alive; SIGTERM closes it.
    let status = server.terminate(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0));
    let n = conn.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the idle connection should be closed, got more bytes");
}

#[test]
fn sigterm_with_a_request_longer_than_grace_answers_it_503_and_exits_zero() {
    let dir = TempDir::new("grace");
    let manifest = write_manifest(
        &dir,
        &format!(
            "[app]\ngrace = \"1s\"\n[process.web]\nkind = \"http\"\ncomponent = \"{}\"\n",
            component("limits")
        ),
    );
    let mut server = Server::start_with(&manifest, shared_cache(), &[]);
    let url = server.url("/sleep/20000");
    let slow = std::thread::spawn(move || {
        let t0 = Instant::now();
        (get(&url), t0.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    signal(&server.child, "TERM");
    let (reply, took) = slow.join().unwrap();
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    let status = wait_timeout(&mut server.child, Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", server.log.text());
}

#[test]
fn on_one_thread_a_request_is_served_while_another_guest_spins() {
    let mut server =
        Server::start_with(&example("spin"), shared_cache(), &[("MAYFLY_THREADS", "1")]);
    let url = server.url("/");
    let spinner = std::thread::spawn(move || get(&url));
    assert!(server
        .log
        .wait_for("| spinning", Duration::from_secs(10))
        .is_some());
    let t0 = Instant::now();
    let ok = get(&server.url("/ok"));
    let took = t0.elapsed();
    assert_eq!(ok.status, 200);
    // The spinner's deadline is 1s: being served well before it means the
    // spinner yielded the only thread at its epoch ticks.
    assert!(
        took < Duration::from_millis(500),
        "waited {took:?} for the spinner"
    );
    assert!(!spinner.is_finished());
    assert_eq!(spinner.join().unwrap().status, 504);
    assert_eq!(
        server
            .terminate(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn run_notifies_systemd_when_ready() {
    let dir = TempDir::new("notify");
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let socket_env = socket_path.display().to_string();
    let _server = Server::start_with(
        &example("hello"),
        shared_cache(),
        &[("NOTIFY_SOCKET", &socket_env)],
    );
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
}

#[test]
fn exports_carry_the_formation_and_the_grace() {
    let dir = TempDir::new("export");
    let manifest = write_manifest(
        &dir,
        &format!(
            "[app]\ngrace = \"45s\"\n[formation]\nweb = 2\nworker = 3\n\
             [process.web]\nkind = \"http\"\ncomponent = \"{}\"\nport = 9000\n\
             [process.worker]\nkind = \"job\"\ncomponent = \"{}\"\n",
            component("hello"),
            component("joblab_worker")
        ),
    );
    let out = dir.path().join("out");
    let export = |target: &str, extra: &[&str]| {
        let (output, stderr) = run_output(
            mayfly()
                .args(["export", target, "--manifest"])
                .arg(&manifest)
                .arg("--out")
                .arg(&out)
                .args(extra),
        );
        assert!(output.status.success(), "{stderr}");
    };

    export("procfile", &[]);
    let procfile = std::fs::read_to_string(out.join("Procfile")).unwrap();
    let mut lines: Vec<&str> = procfile.lines().collect();
    lines.sort();
    assert_eq!(lines, ["web: mayfly run web", "worker: mayfly run worker"]);

    let app = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_lowercase();
    let app: String = app
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    export("kubernetes", &[]);
    let yaml = std::fs::read_to_string(out.join(format!("{app}.yaml"))).unwrap();
    let mut deployments = std::collections::BTreeMap::new();
    for doc in serde_yaml::Deserializer::from_str(&yaml) {
        let doc = serde_yaml::Value::deserialize(doc).unwrap();
        if doc["kind"] == "Deployment" {
            let spec = &doc["spec"];
            assert_eq!(
                spec["template"]["spec"]["terminationGracePeriodSeconds"],
                45
            );
            let name = doc["metadata"]["labels"]["process"]
                .as_str()
                .unwrap()
                .to_string();
            deployments.insert(name, spec["replicas"].as_u64().unwrap());
        }
    }
    assert_eq!(deployments.get("web"), Some(&2));
    assert_eq!(deployments.get("worker"), Some(&3));

    export("systemd", &["--formation", "worker=4"]);
    let unit = std::fs::read_to_string(out.join(format!("{app}-worker@.service"))).unwrap();
    assert!(unit.lines().any(|l| l == "TimeoutStopSec=45"), "{unit}");
    assert!(unit.lines().any(|l| l == "Type=notify"), "{unit}");
    assert!(unit.contains("run worker --index %i"), "{unit}");
    let target = std::fs::read_to_string(out.join(format!("{app}.target"))).unwrap();
    let wants = target
        .lines()
        .find_map(|l| l.strip_prefix("Wants="))
        .unwrap();
    assert_eq!(
        wants.split(' ').filter(|u| u.contains("-worker@")).count(),
        4
    );
    assert_eq!(wants.split(' ').filter(|u| u.contains("-web@")).count(), 2);
}
