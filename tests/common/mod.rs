//! Test harness: drives the `mayfly` binary the way a user does, over real
//! processes, real files and real HTTP on 127.0.0.1.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn mayfly() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mayfly"));
    command
        .env("RUST_LOG", "info")
        .env_remove("PORT")
        .env_remove("MAYFLY_MANIFEST");
    command
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn example(name: &str) -> PathBuf {
    repo().join("examples").join(name).join("mayfly.toml")
}

/// The path of an example component built by [`build_examples`], as text
/// for a manifest.
pub fn component(name: &str) -> String {
    repo()
        .join("examples/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"))
        .display()
        .to_string()
}

/// Builds every example guest once per test binary, through `mayfly build`.
pub fn build_examples() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        // Every example app: each directory of examples/ with a mayfly.toml.
        let mut names: Vec<String> = std::fs::read_dir(repo().join("examples"))
            .unwrap()
            .flatten()
            .filter(|entry| entry.path().join("mayfly.toml").is_file())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in &names {
            let output = mayfly()
                .args(["build", "--manifest"])
                .arg(example(name))
                .output()
                .expect("run mayfly build");
            assert!(
                output.status.success(),
                "mayfly build of {name} failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    });
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("mayfly-test-{}-{label}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The compile cache shared by the tests of one test binary, so each
/// component is compiled once.
pub fn shared_cache() -> &'static Path {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    CACHE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mayfly-test-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// Log lines a child process wrote to stderr, collected as they arrive.
#[derive(Clone, Default)]
pub struct Log(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Log {
    pub fn follow(&self, stream: impl std::io::Read + Send + 'static) {
        let log = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let (lines, cond) = &*log.0;
                lines.lock().unwrap().push(line);
                cond.notify_all();
            }
        });
    }

    pub fn lines(&self) -> Vec<String> {
        self.0 .0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// Waits until `count` lines contain `needle`.
    pub fn wait_for_count(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (lines, cond) = &*self.0;
        let mut guard = lines.lock().unwrap();
        loop {
            if guard.iter().filter(|l| l.contains(needle)).count() >= count {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            guard = cond.wait_timeout(guard, left).unwrap().0;
        }
    }

    /// Waits for a line containing `needle`, and returns it.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (lines, cond) = &*self.0;
        let mut guard = lines.lock().unwrap();
        loop {
            if let Some(line) = guard.iter().find(|l| l.contains(needle)) {
                return Some(line.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            guard = cond.wait_timeout(guard, left).unwrap().0;
        }
    }
}

/// A `mayfly run` process, stopped when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub log: Log,
}

impl Server {
    /// Starts `mayfly run web` on a free loopback port and waits until it
    /// says it is listening.
    pub fn start(manifest: &Path) -> Server {
        Self::start_with(manifest, shared_cache(), &[])
    }

    pub fn start_with(manifest: &Path, cache: &Path, env: &[(&str, &str)]) -> Server {
        Self::start_type("web", manifest, cache, env)
    }

    /// Starts `mayfly run TYPE` and waits until it says it is ready.
    pub fn start_type(
        process_type: &str,
        manifest: &Path,
        cache: &Path,
        env: &[(&str, &str)],
    ) -> Server {
        build_examples();
        let mut command = mayfly();
        command
            .args(["run", process_type, "--manifest"])
            .arg(manifest)
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("MAYFLY_CACHE_DIR", cache)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn mayfly run");
        let log = Log::default();
        log.follow(child.stderr.take().unwrap());
        let Some(line) = log.wait_for("(ready in", Duration::from_secs(120)) else {
            let _ = child.kill();
            panic!("mayfly run did not start:\n{}", log.text());
        };
        if !line.contains("listening on http://") {
            return Server {
                child,
                port: 0,
                log,
            };
        }
        let port = line
            .rsplit_once("127.0.0.1:")
            .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Server { child, port, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        signal(&self.child, "TERM");
        wait_timeout(&mut self.child, timeout)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An HTTP response, whatever its status.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<String>,
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build()
}

pub fn reply(result: Result<ureq::Response, ureq::Error>) -> Reply {
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(err) => panic!("request failed: {err}"),
    };
    Reply {
        status: response.status(),
        retry_after: response.header("retry-after").map(str::to_string),
        body: response.into_string().unwrap_or_default(),
    }
}

pub fn get(url: &str) -> Reply {
    reply(agent().get(url).call())
}

/// Runs a finished command and returns its exit status and stderr.
pub fn run_output(command: &mut Command) -> (Output, String) {
    let output = command.output().expect("run mayfly");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stderr)
}
