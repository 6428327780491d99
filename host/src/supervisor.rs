//! `mayfly up`: runs a process formation as child OS processes, the way
//! Foreman runs a Procfile.
//!
//! Each child is `mayfly run TYPE --index N` in its own process group (so a
//! Ctrl-C on the terminal reaches only the supervisor, which forwards exactly
//! one SIGTERM). Output is prefixed `web.1 |`. A child that crashes is
//! restarted with backoff; one that keeps crashing right after start is given
//! up with its last words. On SIGTERM/SIGINT every child gets SIGTERM, and
//! SIGKILL after the grace period; a second signal sends SIGKILL at once.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::manifest::Manifest;

/// How many processes of each type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Formation(pub BTreeMap<String, u32>);

impl Formation {
    /// Parses `web=2,worker=3`.
    pub fn parse(text: &str) -> Result<Formation> {
        let mut counts = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, count) = part.split_once('=').with_context(|| {
                format!("`{part}` in --formation is not TYPE=COUNT (write web=2,worker=3)")
            })?;
            let count: u32 = count
                .trim()
                .parse()
                .with_context(|| format!("`{count}` in --formation is not a count"))?;
            counts.insert(name.trim().to_string(), count);
        }
        Ok(Formation(counts))
    }

    /// The manifest's `[formation]`, overridden per type by `over`; a type
    /// named nowhere runs one process.
    pub fn resolve(manifest: &Manifest, over: Option<&Formation>) -> Result<Formation> {
        let mut counts: BTreeMap<String, u32> = manifest
            .processes
            .keys()
            .map(|name| {
                (
                    name.clone(),
                    manifest.formation.get(name).copied().unwrap_or(1),
                )
            })
            .collect();
        if let Some(over) = over {
            for (name, count) in &over.0 {
                if !counts.contains_key(name) {
                    let known: Vec<&str> = counts.keys().map(String::as_str).collect();
                    bail!(
                        "unknown process type `{name}` in --formation: {} declares {}",
                        manifest.path.display(),
                        known.join(", ")
                    );
                }
                counts.insert(name.clone(), *count);
            }
        }
        Ok(Formation(counts))
    }
}

/// Consecutive quick crashes after which a child is given up.
const MAX_QUICK_CRASHES: u32 = 5;
/// A child that ran at least this long before crashing was not crash-looping.
const STABLE_AFTER: Duration = Duration::from_secs(10);

struct Slot {
    name: String,
    process_type: String,
    index: u32,
    child: Option<Child>,
    started: Instant,
    crashes: u32,
    restart_at: Option<Instant>,
    given_up: bool,
    last_words: Arc<Mutex<String>>,
    /// The tasks copying the child's output; a crashed child's last words
    /// are only known once they have read to the end.
    readers: Vec<tokio::task::JoinHandle<()>>,
}

enum Event {
    Line(usize, String),
}

/// Runs the formation until SIGTERM/SIGINT or until every child is given up.
pub async fn up(manifest: &Manifest, manifest_path: &Path, formation: &Formation) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the mayfly executable")?;
    let manifest_path = std::path::absolute(manifest_path)?;
    let colour = std::io::stdout().is_terminal();
    let width = formation
        .0
        .iter()
        .map(|(name, count)| name.len() + count.to_string().len() + 1)
        .max()
        .unwrap_or(5);
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();

    let mut slots = Vec::new();
    for (process_type, count) in &formation.0 {
        for index in 1..=*count {
            slots.push(Slot {
                name: format!("{process_type}.{index}"),
                process_type: process_type.clone(),
                index,
                child: None,
                started: Instant::now(),
                crashes: 0,
                restart_at: Some(Instant::now()),
                given_up: false,
                last_words: Default::default(),
                readers: Vec::new(),
            });
        }
    }
    if slots.is_empty() {
        bail!("the formation runs no process: give a type a count above 0");
    }

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // A closed terminal or a quit key stops the formation like SIGTERM.
    let mut hup = signal(SignalKind::hangup())?;
    let mut quit = signal(SignalKind::quit())?;
    let grace = manifest.app.grace;
    let print = |slot: &Slot, number: usize, line: &str| {
        let prefix = format!("{:<width$} |", slot.name);
        let mut out = std::io::stdout().lock();
        if colour {
            const COLOURS: [u8; 6] = [36, 33, 32, 35, 34, 31];
            let c = COLOURS[number % COLOURS.len()];
            let _ = writeln!(out, "\x1b[{c}m{prefix}\x1b[0m {line}");
        } else {
            let _ = writeln!(out, "{prefix} {line}");
        }
    };

    let shutdown_signal = loop {
        // Start what is due.
        let now = Instant::now();
        for (number, slot) in slots.iter_mut().enumerate() {
            if slot.child.is_none() && !slot.given_up && slot.restart_at.is_some_and(|at| at <= now)
            {
                match spawn(&exe, &manifest_path, slot, number, &tx) {
                    Ok((child, readers)) => {
                        slot.readers = readers;
                        tracing::info!("started {} (pid {})", slot.name, child.id().unwrap_or(0));
                        slot.child = Some(child);
                        slot.started = Instant::now();
                        slot.restart_at = None;
                    }
                    Err(err) => {
                        slot.given_up = true;
                        tracing::error!("cannot start {}: {err:#}", slot.name);
                    }
                }
            }
        }
        if slots.iter().all(|s| s.given_up) {
            bail!("every process of the formation was given up");
        }

        let next_restart = slots.iter().filter_map(|s| s.restart_at).min();
        let wait = next_restart
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(200))
            .min(Duration::from_millis(200));
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => break "SIGHUP",
            _ = quit.recv() => break "SIGQUIT",
            Some(Event::Line(number, line)) = rx.recv() => {
                print(&slots[number], number, &line);
            }
            () = tokio::time::sleep(wait) => {}
        }

        // Reap children that exited.
        for slot in slots.iter_mut() {
            let Some(child) = slot.child.as_mut() else {
                continue;
            };
            let Ok(Some(status)) = child.try_wait() else {
                continue;
            };
            slot.child = None;
            let ran = slot.started.elapsed();
            if ran >= STABLE_AFTER {
                slot.crashes = 0;
            }
            slot.crashes += 1;
            for reader in slot.readers.drain(..) {
                let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
            }
            let last = slot.last_words.lock().unwrap().clone();
            if slot.crashes >= MAX_QUICK_CRASHES {
                slot.given_up = true;
                tracing::error!(
                    "{} crashed {} times in a row ({status}); giving up on it. Its last words: {last}",
                    slot.name,
                    slot.crashes
                );
            } else {
                let backoff = Duration::from_millis(100 * 2u64.pow(slot.crashes - 1))
                    .min(Duration::from_secs(5));
                tracing::warn!(
                    "{} exited ({status}) after {:.1} s; restarting in {} ms",
                    slot.name,
                    ran.as_secs_f64(),
                    backoff.as_millis()
                );
                slot.restart_at = Some(Instant::now() + backoff);
            }
        }
    };

    tracing::info!(
        "received {shutdown_signal}: stopping the formation (grace {})",
        humantime::format_duration(grace)
    );
    for slot in &slots {
        if let Some(pid) = slot.child.as_ref().and_then(Child::id) {
            send(pid, libc::SIGTERM);
        }
    }
    let deadline = tokio::time::Instant::now() + grace;
    let mut killed = false;
    loop {
        let running = slots
            .iter_mut()
            .filter_map(|s| s.child.as_mut())
            .filter_map(|c| c.try_wait().ok())
            .filter(Option::is_none)
            .count();
        if running == 0 {
            break;
        }
        tokio::select! {
            Some(Event::Line(number, line)) = rx.recv() => print(&slots[number], number, &line),
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
            () = tokio::time::sleep_until(deadline), if !killed => {
                tracing::warn!("grace period over: killing what still runs");
                kill_all(&slots);
                killed = true;
            }
            _ = term.recv() => { kill_all(&slots); killed = true; }
            _ = int.recv() => { kill_all(&slots); killed = true; }
        }
    }
    // Whatever the children still had to say.
    while let Ok(Event::Line(number, line)) = rx.try_recv() {
        print(&slots[number], number, &line);
    }
    tracing::info!("formation stopped");
    Ok(())
}

fn kill_all(slots: &[Slot]) {
    for slot in slots {
        if let Some(pid) = slot.child.as_ref().and_then(Child::id) {
            send(pid, libc::SIGKILL);
        }
    }
}

fn send(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

fn spawn(
    exe: &PathBuf,
    manifest: &Path,
    slot: &Slot,
    number: usize,
    tx: &mpsc::UnboundedSender<Event>,
) -> Result<(Child, Vec<tokio::task::JoinHandle<()>>)> {
    let mut command = Command::new(exe);
    command
        .arg("run")
        .arg(&slot.process_type)
        .arg("--index")
        .arg(slot.index.to_string())
        .arg("--manifest")
        .arg(manifest)
        .env("MAYFLY_REUSE_PORT", "true")
        .env("MAYFLY_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork
    // and exec here. A child in its own process group would outlive a
    // supervisor killed with SIGKILL; this makes the kernel SIGTERM it.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("spawning {}", exe.display()))?;
    let mut readers = Vec::new();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        let last_words = slot.last_words.clone();
        readers.push(tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let line = line.trim_start().to_string();
                *last_words.lock().unwrap() = line.clone();
                if tx.send(Event::Line(number, line)).is_err() {
                    break;
                }
            }
        }));
    }
    Ok((child, readers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formation_parses_type_counts() {
        let f = Formation::parse("web=2, worker=3").unwrap();
        assert_eq!(f.0.get("web"), Some(&2));
        assert_eq!(f.0.get("worker"), Some(&3));
        assert!(Formation::parse("web").is_err());
        assert!(Formation::parse("web=two").is_err());
    }
}
