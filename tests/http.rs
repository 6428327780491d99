//! The HTTP process type, driven through the `mayfly` binary over 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn hello_answers_and_its_output_reaches_the_log_with_process_and_request() {
    let server = Server::start(&example("hello"));
    let reply = get(&server.url("/greet"));
    assert_eq!(reply.status, 200);
    // GREETING comes from the manifest's `env`.
    assert_eq!(reply.body, "hello from mayfly\n");
    let line = server
        .log
        .wait_for("| GET /greet", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("guest println! not in the log:\n{}", server.log.text()));
    assert!(line.contains("web.1 "), "{line}");
}

#[test]
fn counter_says_one_for_every_request_because_each_gets_a_fresh_instance() {
    let server = Server::start(&example("counter"));
    let agent = agent();
    for i in 0..1000 {
        let reply = reply(agent.get(&server.url("/")).call());
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "1\n"),
            "request {i}"
        );
    }

    // 200 concurrent requests: 20 keep-alive clients, 10 requests each.
    let url = server.url("/");
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let agent = common::agent();
                (0..10)
                    .map(|_| common::reply(agent.get(&url).call()))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let replies: Vec<Reply> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert_eq!(replies.len(), 200);
    for reply in replies {
        assert_eq!((reply.status, reply.body.as_str()), (200, "1\n"));
    }
}

#[test]
fn a_spinning_guest_gets_504_at_its_deadline_while_others_are_served() {
    let server = Server::start(&example("spin"));
    let url = server.url("/");
    let started = Instant::now();
    let spinner = std::thread::spawn(move || (get(&url), started.elapsed()));

    // While the spinner runs, the host keeps serving.
    assert!(server
        .log
        .wait_for("| spinning", Duration::from_secs(10))
        .is_some());
    let ok = get(&server.url("/ok"));
    assert_eq!((ok.status, ok.body.as_str()), (200, "ok\n"));
    assert!(
        !spinner.is_finished(),
        "the spinner should still be running"
    );

    let (reply, took) = spinner.join().unwrap();
    assert_eq!(reply.status, 504, "{reply:?}");
    // The deadline is 1s; the epoch check stops the guest within a tick.
    assert!(
        took >= Duration::from_millis(950),
        "stopped early: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "stopped late: {took:?}");
    assert!(
        server
            .log
            .wait_for("deadline", Duration::from_secs(5))
            .is_some(),
        "{}",
        server.log.text()
    );

    let after = get(&server.url("/ok"));
    assert_eq!(after.status, 200);
}

#[test]
fn a_guest_over_its_memory_limit_gets_500_and_the_host_goes_on() {
    let server = Server::start(&example("limits"));
    // The manifest allows 16MiB.
    let small = get(&server.url("/alloc/2"));
    assert_eq!(
        (small.status, small.body.as_str()),
        (200, "allocated 2 MiB\n")
    );
    let big = get(&server.url("/alloc/64"));
    assert_eq!(big.status, 500, "{big:?}");
    let again = get(&server.url("/alloc/2"));
    assert_eq!(again.status, 200);
}

#[test]
fn a_trapping_guest_gets_500_and_the_host_goes_on() {
    let server = Server::start(&example("limits"));
    assert_eq!(get(&server.url("/trap")).status, 500);
    assert!(
        server
            .log
            .wait_for("asked to trap", Duration::from_secs(5))
            .is_some(),
        "the guest's panic message should reach the log:\n{}",
        server.log.text()
    );
    assert_eq!(get(&server.url("/echo")).status, 200);
}

#[test]
fn past_concurrency_requests_get_503_with_retry_after_at_once() {
    let server = Server::start(&example("limits"));
    // concurrency = 4: four slow requests hold every instance.
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let url = server.url("/sleep/1500");
            std::thread::spawn(move || get(&url))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut rejected = None;
    while Instant::now() < deadline {
        let t0 = Instant::now();
        let reply = get(&server.url("/echo"));
        if reply.status == 503 {
            rejected = Some((reply, t0.elapsed()));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (reply, took) = rejected.expect("a fifth request should be rejected with 503");
    assert_eq!(reply.retry_after.as_deref(), Some("1"));
    assert!(
        took < Duration::from_millis(500),
        "503 must come at once, took {took:?}"
    );
    for handle in slow {
        let reply = handle.join().unwrap();
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "slept 1500 ms\n")
        );
    }
    assert_eq!(get(&server.url("/echo")).status, 200);
}

#[test]
fn a_body_over_max_body_gets_413_declared_or_streamed() {
    let server = Server::start(&example("limits"));
    // max_body = 64KiB.
    let fits = reply(agent().post(&server.url("/echo")).send_bytes(&[7u8; 1024]));
    assert_eq!((fits.status, fits.body.as_str()), (200, "1024 bytes\n"));

    let declared = reply(
        agent()
            .post(&server.url("/echo"))
            .send_bytes(&vec![7u8; 100 * 1024]),
    );
    assert_eq!(declared.status, 413);

    // A client that asks before uploading is refused before it uploads.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(
        &mut conn,
        b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\nexpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let mut head = [0u8; 12];
    std::io::Read::read_exact(&mut conn, &mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");

    // Without a Content-Length (chunked), the limit holds as the body streams.
    let big = vec![7u8; 100 * 1024];
    let streamed = reply(
        agent()
            .post(&server.url("/echo"))
            .send(std::io::Cursor::new(big)),
    );
    assert_eq!(streamed.status, 413);
}

#[test]
fn the_guest_sees_only_the_manifest_env() {
    let server = Server::start_with(
        &example("limits"),
        shared_cache(),
        &[("SECRET_OF_HOST", "x")],
    );
    assert_eq!(get(&server.url("/env/GREETING")).body, "hi");
    assert_eq!(get(&server.url("/env/SECRET_OF_HOST")).status, 404);
    assert_eq!(get(&server.url("/env/PATH")).status, 404);
}

#[test]
fn a_component_written_without_the_sdk_answers() {
    let server = Server::start(&example("raw-http"));
    let reply = get(&server.url("/raw?x=1"));
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "raw wasi:http component at /raw?x=1\n")
    );
}

#[test]
fn a_second_start_loads_from_the_compile_cache_instead_of_compiling() {
    let cache = TempDir::new("cache");
    let mut first = Server::start_with(&example("hello"), cache.path(), &[]);
    assert!(
        first.log.text().contains("compiled "),
        "{}",
        first.log.text()
    );
    assert!(!first.log.text().contains("from the compile cache"));
    assert_eq!(
        first.terminate(Duration::from_secs(10)).map(|s| s.code()),
        Some(Some(0))
    );

    let second = Server::start_with(&example("hello"), cache.path(), &[]);
    let log = second.log.text();
    assert!(log.contains("from the compile cache"), "{log}");
    assert!(!log.contains("compiled "), "{log}");
    assert_eq!(get(&second.url("/")).status, 200);
}

#[test]
fn sigterm_with_nothing_in_flight_exits_zero() {
    let mut server = Server::start(&example("hello"));
    assert_eq!(get(&server.url("/")).status, 200);
    let status = server
        .terminate(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", server.log.text());
}

fn raw_status(port: u16, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(request).unwrap();
    let mut head = [0u8; 64];
    let n = conn.read(&mut head).unwrap();
    let text = String::from_utf8_lossy(&head[..n]).into_owned();
    text.lines().next().unwrap_or_default().to_string()
}

#[test]
fn a_request_without_a_usable_host_gets_400_not_500() {
    let server = Server::start(&example("hello"));
    assert_eq!(
        raw_status(server.port, b"GET / HTTP/1.0\r\n\r\n"),
        "HTTP/1.0 400 Bad Request"
    );
    assert_eq!(
        raw_status(server.port, b"GET / HTTP/1.1\r\nhost: \xff\xfe\r\n\r\n"),
        "HTTP/1.1 400 Bad Request"
    );
    assert_eq!(get(&server.url("/")).status, 200);
}

#[test]
fn a_client_that_stalls_mid_body_gets_408_and_frees_its_slot() {
    let dir = TempDir::new("stall");
    build_examples();
    let manifest = dir.path().join("mayfly.toml");
    let component = component("limits");
    std::fs::write(
        &manifest,
        format!(
            "[process.web]\nkind = \"http\"\ncomponent = \"{}\"\nconcurrency = 1\ndeadline = \"500ms\"\n",
            component
        ),
    )
    .unwrap();
    let server = Server::start(&manifest);
    let t0 = Instant::now();
    let status = raw_status(
        server.port,
        b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly ten b",
    );
    assert_eq!(status, "HTTP/1.1 408 Request Timeout");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    // The only instance slot was given back.
    assert_eq!(get(&server.url("/echo")).status, 200);
}

// --- bad input: each gets a message naming the cause and the fix ----------

fn run_web(manifest: &std::path::Path) -> String {
    let (output, stderr) = run_output(
        mayfly()
            .args(["run", "web", "--manifest"])
            .arg(manifest)
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("MAYFLY_CACHE_DIR", shared_cache()),
    );
    assert!(!output.status.success(), "should fail: {stderr}");
    stderr
}

fn app_with(dir: &std::path::Path, manifest: &str) -> std::path::PathBuf {
    let path = dir.join("mayfly.toml");
    std::fs::write(&path, manifest).unwrap();
    path
}

#[test]
fn no_manifest_says_where_it_looked_and_what_to_do() {
    let dir = TempDir::new("nomanifest");
    let stderr = run_web(&dir.path().join("mayfly.toml"));
    assert!(stderr.contains("no manifest at"), "{stderr}");
    assert!(stderr.contains("--manifest"), "{stderr}");
}

#[test]
fn unknown_process_type_lists_the_known_ones() {
    let (output, stderr) = run_output(
        mayfly()
            .args(["run", "wbe", "--manifest"])
            .arg(example("hello")),
    );
    assert!(!output.status.success());
    assert!(
        stderr.contains("unknown process type `wbe`") && stderr.contains("web"),
        "{stderr}"
    );
}

#[test]
fn bad_toml_names_file_line_and_key() {
    let dir = TempDir::new("badtoml");
    let manifest = app_with(
        dir.path(),
        "[process.web]\nkind = \"http\"\ncomponent = \"w.wasm\"\nconcurency = 4\n",
    );
    let stderr = run_web(&manifest);
    assert!(stderr.contains(&manifest.display().to_string()), "{stderr}");
    assert!(
        stderr.contains("line 4") && stderr.contains("concurency"),
        "{stderr}"
    );

    let manifest = app_with(dir.path(), "[process.web\nkind = \"http\"\n");
    let stderr = run_web(&manifest);
    assert!(stderr.contains("line 1"), "{stderr}");
}

#[test]
fn a_missing_component_says_to_build_it() {
    let dir = TempDir::new("missing");
    let manifest = app_with(
        dir.path(),
        "[process.web]\nkind = \"http\"\ncomponent = \"nope.wasm\"\n",
    );
    let stderr = run_web(&manifest);
    assert!(
        stderr.contains("nope.wasm") && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(stderr.contains("mayfly build"), "{stderr}");
}

#[test]
fn a_file_that_is_not_wasm_is_refused_by_name() {
    let dir = TempDir::new("notwasm");
    std::fs::write(dir.path().join("web.wasm"), "#!/bin/sh\necho hi\n").unwrap();
    let manifest = app_with(
        dir.path(),
        "[process.web]\nkind = \"http\"\ncomponent = \"web.wasm\"\n",
    );
    let stderr = run_web(&manifest);
    assert!(stderr.contains("is not a WebAssembly file"), "{stderr}");

    // A core module (here the smallest valid one) is wasm, but not a component.
    std::fs::write(dir.path().join("web.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let stderr = run_web(&manifest);
    assert!(
        stderr.contains("core wasm module, not a component"),
        "{stderr}"
    );
    assert!(stderr.contains("wasm32-wasip2"), "{stderr}");
}

#[test]
fn a_component_without_the_http_export_says_what_it_exports() {
    let dir = TempDir::new("noexport");
    // The smallest valid component: it exports nothing.
    std::fs::write(dir.path().join("web.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
    let manifest = app_with(
        dir.path(),
        "[process.web]\nkind = \"http\"\ncomponent = \"web.wasm\"\n",
    );
    let stderr = run_web(&manifest);
    assert!(
        stderr.contains("does not export wasi:http/incoming-handler (it exports nothing)"),
        "{stderr}"
    );
    assert!(stderr.contains("wasi:http/proxy"), "{stderr}");
}

#[test]
fn a_worker_component_run_as_web_names_its_exports() {
    build_examples();
    let dir = TempDir::new("workerasweb");
    let component = component("noop");
    let manifest = app_with(
        dir.path(),
        &format!(
            "[process.web]\nkind = \"http\"\ncomponent = \"{}\"\n",
            component
        ),
    );
    let stderr = run_web(&manifest);
    assert!(
        stderr.contains("does not export wasi:http/incoming-handler"),
        "{stderr}"
    );
    assert!(stderr.contains("mayfly:process/job-handler"), "{stderr}");
}

#[test]
fn a_port_in_use_is_named_with_the_fix() {
    build_examples();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (output, stderr) = run_output(
        mayfly()
            .args(["run", "web", "--manifest"])
            .arg(example("hello"))
            .env("PORT", &port)
            .env("HOST", "127.0.0.1")
            .env("MAYFLY_CACHE_DIR", shared_cache()),
    );
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!("port {port} is already in use")),
        "{stderr}"
    );
    assert!(stderr.contains("PORT="), "{stderr}");
}
