//! One shutdown coordinator per process.
//!
//! Shutdown has two steps. *Draining* starts at SIGTERM/SIGINT: stop taking
//! new work (close the listener, stop leasing), let what runs finish.
//! *Cancelling* starts when the grace period ends (or at a second signal):
//! every running guest is stopped at its next epoch tick by the deadline
//! callback in [`crate::instance`], which is the only place that stops guests.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// Where a process is in its shutdown; it only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Running,
    Draining,
    Cancelling,
}

#[derive(Clone)]
pub struct Shutdown {
    phase: Arc<watch::Sender<Phase>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown {
            phase: Arc::new(watch::Sender::new(Phase::Running)),
        }
    }

    fn advance(&self, to: Phase) {
        self.phase.send_if_modified(|phase| {
            let moved = *phase < to;
            if moved {
                *phase = to;
            }
            moved
        });
    }

    async fn reached(&self, phase: Phase) {
        let mut rx = self.phase.subscribe();
        // The sender lives in `self`, so this cannot fail while we wait.
        let _ = rx.wait_for(|now| *now >= phase).await;
    }

    /// Stop taking new work.
    pub fn drain(&self) {
        self.advance(Phase::Draining);
    }

    pub fn is_draining(&self) -> bool {
        *self.phase.borrow() >= Phase::Draining
    }

    /// Resolves once draining has begun.
    pub async fn draining(&self) {
        self.reached(Phase::Draining).await
    }

    /// Stop every running guest at its next epoch tick.
    pub fn cancel(&self) {
        self.advance(Phase::Cancelling);
    }

    pub fn is_cancelling(&self) -> bool {
        *self.phase.borrow() == Phase::Cancelling
    }

    /// Resolves once cancelling has begun.
    pub async fn cancelled(&self) {
        self.reached(Phase::Cancelling).await
    }

    /// Turns SIGTERM/SIGINT into drain, and a second signal into cancel.
    /// Must be called inside the tokio runtime.
    pub fn listen_for_signals(&self, label: &str) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = self.clone();
        let label = label.to_string();
        tokio::spawn(async move {
            let mut received = 0;
            loop {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                received += 1;
                if received == 1 {
                    tracing::info!("{label} received {name}: draining");
                    shutdown.drain();
                } else {
                    tracing::warn!("{label} received a second {name}: stopping running guests now");
                    shutdown.cancel();
                    return;
                }
            }
        });
        Ok(())
    }

    /// Waits for in-flight work (`idle` resolves when there is none) at most
    /// `grace`, then cancels what still runs and waits for it to stop.
    pub async fn finish(&self, grace: Duration, idle: impl std::future::Future<Output = ()>) {
        tokio::pin!(idle);
        // Whoever sent SIGTERM (`mayfly up`, systemd, Kubernetes) sends
        // SIGKILL when `grace` is over, so cancelling must be done by then:
        // keep a tenth of the grace (at most 1 s) to stop guests, answer
        // their clients and release their jobs.
        let margin = (grace / 10).min(Duration::from_secs(1));
        if tokio::time::timeout(grace - margin, &mut idle)
            .await
            .is_err()
        {
            tracing::warn!(
                "grace period of {} ended with work in flight: cancelling it",
                humantime::format_duration(grace)
            );
            self.cancel();
            // Cancelled guests stop within an epoch tick; the bound only
            // guards against a host bug keeping the process alive.
            let _ = tokio::time::timeout(margin.max(Duration::from_millis(500)), idle).await;
        }
    }
}

/// Tells systemd the process is ready (`Type=notify` units), when it runs
/// under one: `NOTIFY_SOCKET` names a datagram socket, abstract if it starts
/// with `@`.
pub fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| -> std::io::Result<()> {
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let socket = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        let addr = if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        } else {
            SocketAddr::from_pathname(&path)?
        };
        socket.send_to_addr(b"READY=1", &addr)?;
        Ok(())
    })();
    if let Err(err) = result {
        tracing::warn!("cannot notify systemd that the process is ready: {err}");
    }
}
