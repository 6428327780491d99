//! `mayfly.toml`: the process types of an app and their limits.
//!
//! Parsing is strict (unknown keys are errors) so a typo never silently falls
//! back to a default. Every error names the file, and TOML errors carry the
//! line, the column and the key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer};

/// The default manifest file name, looked up in the current directory.
pub const DEFAULT_MANIFEST: &str = "mayfly.toml";

/// A parsed manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The manifest file.
    pub path: PathBuf,
    /// Its directory: relative paths in the manifest are relative to it.
    pub dir: PathBuf,
    /// App-wide settings.
    pub app: App,
    /// Process types by name, in name order.
    pub processes: BTreeMap<String, ProcessType>,
    /// How many processes of each type `mayfly up` runs.
    pub formation: BTreeMap<String, u32>,
}

/// The `[app]` table.
#[derive(Debug, Clone)]
pub struct App {
    /// How long in-flight work may run after SIGTERM before it is cancelled.
    pub grace: Duration,
    /// URL of the queue and key-value store.
    pub state: String,
}

/// What a process type runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Serves HTTP with a component exporting `wasi:http/incoming-handler`.
    Http,
    /// Runs jobs from the queue with a component exporting
    /// `mayfly:process/job-handler`.
    Job,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Http => f.write_str("http"),
            Kind::Job => f.write_str("job"),
        }
    }
}

/// One `[process.NAME]` table.
#[derive(Debug, Clone)]
pub struct ProcessType {
    pub name: String,
    pub kind: Kind,
    /// Absolute path of the component.
    pub component: PathBuf,
    /// Shell command that builds the component, run in the manifest's directory.
    pub build: Option<String>,
    /// Address to listen on (the `HOST` environment variable overrides it).
    pub host: String,
    /// TCP port (the `PORT` environment variable overrides it).
    pub port: u16,
    /// Instances alive at once; for http, requests past it get 503 at once.
    pub concurrency: u32,
    /// Wall-clock budget of one request or job attempt.
    pub deadline: Duration,
    /// Queues a job process leases from.
    pub queues: Vec<String>,
    /// Attempts of a job before it is dead.
    pub max_attempts: u32,
    /// How long a lease hides a job from other workers without a heartbeat.
    pub lease: Duration,
    /// What `wasi:config` answers.
    pub config: BTreeMap<String, String>,
    /// Linear memory limit of one instance, in bytes.
    pub memory: u64,
    /// Largest accepted request body, in bytes.
    pub max_body: u64,
    /// The only environment variables a guest sees.
    pub env: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    app: RawApp,
    #[serde(default)]
    process: BTreeMap<String, RawProcess>,
    #[serde(default)]
    formation: BTreeMap<String, u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    #[serde(default = "defaults::grace", deserialize_with = "duration")]
    grace: Duration,
    #[serde(default = "defaults::state")]
    state: String,
}

impl Default for RawApp {
    fn default() -> Self {
        RawApp {
            grace: defaults::grace(),
            state: defaults::state(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcess {
    kind: Kind,
    component: PathBuf,
    build: Option<String>,
    #[serde(default = "defaults::host")]
    host: String,
    #[serde(default = "defaults::port")]
    port: u16,
    concurrency: Option<u32>,
    #[serde(default, deserialize_with = "optional_duration")]
    deadline: Option<Duration>,
    #[serde(default = "defaults::queues")]
    queues: Vec<String>,
    #[serde(default = "defaults::max_attempts")]
    max_attempts: u32,
    #[serde(default = "defaults::lease", deserialize_with = "duration")]
    lease: Duration,
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default = "defaults::memory", deserialize_with = "size")]
    memory: u64,
    #[serde(default = "defaults::max_body", deserialize_with = "size")]
    max_body: u64,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

mod defaults {
    use std::time::Duration;

    pub fn grace() -> Duration {
        Duration::from_secs(30)
    }
    pub fn host() -> String {
        "0.0.0.0".to_string()
    }
    pub fn port() -> u16 {
        8080
    }
    pub fn state() -> String {
        "sqlite://.mayfly/state.db".to_string()
    }
    pub fn queues() -> Vec<String> {
        vec!["default".to_string()]
    }
    pub fn max_attempts() -> u32 {
        5
    }
    pub fn lease() -> Duration {
        Duration::from_secs(30)
    }
    pub fn memory() -> u64 {
        64 << 20
    }
    pub fn max_body() -> u64 {
        10 << 20
    }
}

/// Parses durations such as `"30s"`, `"500ms"` or `"5m"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| {
        format!("`{text}` is not a duration ({err}): write it like \"30s\", \"500ms\" or \"5m\"")
    })
}

/// Parses sizes such as `"64MiB"`, `"512KiB"` or `"1GB"`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| {
            format!("`{text}` is not a size: write it like \"64MiB\", \"512KiB\" or \"1GB\"")
        })
}

/// `a/b/../c` → `a/c`, without touching the filesystem, so messages name the
/// file the way a person would.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(de)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn optional_duration<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    duration(de).map(Some)
}

fn size<'de, D: Deserializer<'de>>(de: D) -> Result<u64, D::Error> {
    let text = String::deserialize(de)?;
    parse_size(&text).map_err(serde::de::Error::custom)
}

impl Manifest {
    /// Reads and checks a manifest file.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
                "no manifest at {}: create a mayfly.toml there (see examples/hello/mayfly.toml) \
                 or pass --manifest PATH",
                path.display()
            ),
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read manifest {}", path.display()))
            }
        };
        Self::parse(path, &text)
    }

    /// Parses manifest text; `path` is used for messages and relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Manifest> {
        let raw: RawManifest = toml::from_str(text)
            .map_err(|err| anyhow::anyhow!("invalid manifest {}: {err}", path.display()))?;
        let dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = std::path::absolute(dir)
            .with_context(|| format!("cannot resolve the directory of {}", path.display()))?;
        if raw.process.is_empty() {
            bail!(
                "manifest {} declares no process type: add a [process.web] table with `kind` and `component`",
                path.display()
            );
        }
        let mut processes = BTreeMap::new();
        for (name, raw) in raw.process {
            let problem = |what: &str| {
                anyhow::anyhow!("manifest {}: [process.{name}] {what}", path.display())
            };
            let concurrency = raw.concurrency.unwrap_or(match raw.kind {
                Kind::Http => 256,
                Kind::Job => 4,
            });
            if concurrency == 0 {
                return Err(problem("`concurrency` must be at least 1"));
            }
            // A request should answer in seconds; a job may take minutes.
            let deadline = raw.deadline.unwrap_or(match raw.kind {
                Kind::Http => Duration::from_secs(30),
                Kind::Job => Duration::from_secs(300),
            });
            if deadline.is_zero() {
                return Err(problem("`deadline` must be longer than zero"));
            }
            if raw.max_attempts == 0 {
                return Err(problem("`max_attempts` must be at least 1"));
            }
            if raw.kind == Kind::Job && raw.queues.is_empty() {
                return Err(problem("`queues` must name at least one queue"));
            }
            if raw.lease < Duration::from_secs(1) {
                return Err(problem("`lease` must be at least 1s"));
            }
            if raw.memory < 64 * 1024 {
                return Err(problem("`memory` must be at least 64KiB (one wasm page)"));
            }
            processes.insert(
                name.clone(),
                ProcessType {
                    kind: raw.kind,
                    component: normalize(&dir.join(&raw.component)),
                    build: raw.build,
                    host: raw.host,
                    port: raw.port,
                    concurrency,
                    deadline,
                    queues: raw.queues,
                    max_attempts: raw.max_attempts,
                    lease: raw.lease,
                    config: raw.config,
                    memory: raw.memory,
                    max_body: raw.max_body,
                    env: raw.env,
                    name,
                },
            );
        }
        for name in raw.formation.keys() {
            if !processes.contains_key(name) {
                bail!(
                    "manifest {}: [formation] names `{name}`, which is not a process type \
                     (declare [process.{name}] or remove it)",
                    path.display()
                );
            }
        }
        Ok(Manifest {
            formation: raw.formation,
            path: path.to_path_buf(),
            dir,
            app: App {
                grace: raw.app.grace,
                state: raw.app.state,
            },
            processes,
        })
    }

    /// The process type called `name`, or an error listing the ones there are.
    pub fn process(&self, name: &str) -> Result<&ProcessType> {
        self.processes.get(name).with_context(|| {
            let known: Vec<&str> = self.processes.keys().map(String::as_str).collect();
            format!(
                "unknown process type `{name}`: {} declares {}",
                self.path.display(),
                known.join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest> {
        Manifest::parse(Path::new("/app/mayfly.toml"), text)
    }

    #[test]
    fn defaults_fill_everything_but_kind_and_component() {
        let m = parse("[process.web]\nkind = \"http\"\ncomponent = \"web.wasm\"\n").unwrap();
        let web = m.process("web").unwrap();
        assert_eq!(web.component, Path::new("/app/web.wasm"));
        assert_eq!(web.port, 8080);
        assert_eq!(web.concurrency, 256);
        assert_eq!(web.deadline, Duration::from_secs(30));
        assert_eq!(web.memory, 64 << 20);
        assert_eq!(web.max_body, 10 << 20);
        assert!(web.env.is_empty());
    }

    #[test]
    fn component_paths_are_relative_to_the_manifest_and_normalized() {
        let m =
            parse("[process.web]\nkind = \"http\"\ncomponent = \"../target/./w.wasm\"\n").unwrap();
        assert_eq!(
            m.process("web").unwrap().component,
            Path::new("/target/w.wasm")
        );
    }

    #[test]
    fn sizes_and_durations_parse() {
        let m = parse(
            "[process.web]\nkind = \"http\"\ncomponent = \"w.wasm\"\ndeadline = \"250ms\"\nmemory = \"16MiB\"\nmax_body = \"1KiB\"\n",
        )
        .unwrap();
        let web = m.process("web").unwrap();
        assert_eq!(web.deadline, Duration::from_millis(250));
        assert_eq!(web.memory, 16 << 20);
        assert_eq!(web.max_body, 1024);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let err = parse("[process.web]\nkind = \"http\"\ncomponent = \"w.wasm\"\nprot = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/app/mayfly.toml"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("prot"), "{err}");

        let err =
            parse("[process.web]\nkind = \"http\"\ncomponent = \"w.wasm\"\nmemory = \"lots\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("line 4") && err.contains("64MiB"), "{err}");
    }

    #[test]
    fn unknown_process_type_lists_known_ones() {
        let m = parse("[process.web]\nkind = \"http\"\ncomponent = \"w.wasm\"\n").unwrap();
        let err = m.process("wrker").unwrap_err().to_string();
        assert!(err.contains("wrker") && err.contains("web"), "{err}");
    }
}
