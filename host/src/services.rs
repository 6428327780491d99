//! mayfly's own imports, as the host implements them for every guest:
//! `mayfly:process/queue`, `wasi:keyvalue` (store, atomics) plus
//! `mayfly:process/kv-atomics`, `wasi:config/store`, and for job guests
//! `mayfly:process/job-context`. Bindings come from `wit/`, the same files the
//! SDK is generated from.

use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, Resource};

use crate::instance::GuestState;
use crate::queue::NewJob;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "mayfly:process/worker",
    // Async imports: the database work runs on the blocking pool, so a
    // guest waiting on a busy database yields its thread and can still be
    // stopped at its deadline or at shutdown.
    imports: { default: async },
    exports: { default: async },
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:cli": wasmtime_wasi::p2::bindings::cli,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        "wasi:filesystem": wasmtime_wasi::p2::bindings::filesystem,
        "wasi:sockets": wasmtime_wasi::p2::bindings::sockets,
        "wasi:random": wasmtime_wasi::p2::bindings::random,
        "wasi:keyvalue/store.bucket": Bucket,
    },
});

use self::mayfly::process::{job_context, kv_atomics, queue};
use self::wasi::config::store as config;
use self::wasi::keyvalue::{atomics, store};

/// An open `wasi:keyvalue` bucket: a name within the app's store.
pub struct Bucket {
    name: String,
}

/// Adds every mayfly service to a linker (WASI itself is added separately).
pub fn add_to_linker(
    linker: &mut Linker<GuestState>,
    with_job_context: bool,
) -> anyhow::Result<()> {
    queue::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, identity)
        .map_err(anyhow::Error::from)?;
    store::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, identity)
        .map_err(anyhow::Error::from)?;
    atomics::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, identity)
        .map_err(anyhow::Error::from)?;
    kv_atomics::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, identity)
        .map_err(anyhow::Error::from)?;
    config::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, identity)
        .map_err(anyhow::Error::from)?;
    if with_job_context {
        job_context::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, identity)
            .map_err(anyhow::Error::from)?;
    }
    Ok(())
}

fn identity(state: &mut GuestState) -> &mut GuestState {
    state
}

fn no_backend() -> String {
    "this process has no backing services attached".to_string()
}

/// Runs database work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| anyhow::anyhow!("the database task failed: {err}"))?
}

impl queue::Host for GuestState {
    async fn enqueue(
        &mut self,
        queue: String,
        payload: Vec<u8>,
        options: queue::EnqueueOptions,
    ) -> Result<String, String> {
        let backends = self.backends().ok_or_else(no_backend)?.clone();
        let job = NewJob {
            queue,
            payload,
            // The queue clamps absurd delays itself.
            delay: Duration::from_millis(options.delay_ms.unwrap_or(0)),
            idempotency_key: options.idempotency_key,
        };
        blocking(move || backends.queue.enqueue(job))
            .await
            .map(|enqueued| enqueued.id)
            .map_err(|err| format!("{err:#}"))
    }
}

fn kv_error(err: anyhow::Error) -> store::Error {
    store::Error::Other(format!("{err:#}"))
}

type KvHandle = std::sync::Arc<dyn crate::kv::Kv>;

impl GuestState {
    /// The bucket's name and the store behind it.
    fn bucket(&self, bucket: &Resource<Bucket>) -> Result<(String, KvHandle), store::Error> {
        let name = self
            .table()
            .get(bucket)
            .map(|b| b.name.clone())
            .map_err(|e| store::Error::Other(e.to_string()))?;
        Ok((name, self.kv()?))
    }

    fn kv(&self) -> Result<KvHandle, store::Error> {
        self.backends()
            .map(|b| b.kv.clone())
            .ok_or(store::Error::NoSuchStore)
    }
}

impl store::Host for GuestState {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, store::Error> {
        self.kv()?;
        // One app, one store: every identifier is a bucket in it, "" the default.
        let name = if identifier.is_empty() {
            "default".to_string()
        } else {
            identifier
        };
        self.table_mut()
            .push(Bucket { name })
            .map_err(|e| store::Error::Other(e.to_string()))
    }
}

impl store::HostBucket for GuestState {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, store::Error> {
        let (name, kv) = self.bucket(&bucket)?;
        blocking(move || kv.get(&name, &key))
            .await
            .map_err(kv_error)
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), store::Error> {
        let (name, kv) = self.bucket(&bucket)?;
        blocking(move || kv.set(&name, &key, &value))
            .await
            .map_err(kv_error)
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), store::Error> {
        let (name, kv) = self.bucket(&bucket)?;
        blocking(move || kv.delete(&name, &key))
            .await
            .map_err(kv_error)
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<bool, store::Error> {
        let (name, kv) = self.bucket(&bucket)?;
        blocking(move || kv.exists(&name, &key))
            .await
            .map_err(kv_error)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse, store::Error> {
        let (name, kv) = self.bucket(&bucket)?;
        let (keys, cursor) = blocking(move || kv.list_keys(&name, cursor))
            .await
            .map_err(kv_error)?;
        Ok(store::KeyResponse { keys, cursor })
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table_mut().delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for GuestState {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Result<u64, store::Error> {
        let (name, kv) = self.bucket(&bucket)?;
        blocking(move || kv.increment(&name, &key, delta))
            .await
            .map_err(kv_error)
    }
}

impl kv_atomics::Host for GuestState {
    async fn compare_and_swap(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        old: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<bool, store::Error> {
        let (name, kv) = self.bucket(&bucket)?;
        blocking(move || kv.compare_and_swap(&name, &key, old.as_deref(), &new))
            .await
            .map_err(kv_error)
    }
}

impl config::Host for GuestState {
    async fn get(&mut self, key: String) -> Result<Option<String>, config::Error> {
        Ok(self
            .config()
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone()))
    }

    async fn get_all(&mut self) -> Result<Vec<(String, String)>, config::Error> {
        Ok(self.config().to_vec())
    }
}

impl job_context::Host for GuestState {
    async fn cancelled(&mut self) -> bool {
        self.shutdown().is_draining()
    }

    async fn extend(&mut self, ms: u64) -> Result<u64, String> {
        let job = self
            .job()
            .ok_or_else(|| "extend is only for job guests".to_string())?
            .clone();
        let by = Duration::from_millis(ms).min(crate::queue::MAX_EXTEND);
        blocking(move || {
            job.backends
                .queue
                .heartbeat(&job.owner, std::slice::from_ref(&job.lease), by)
        })
        .await
        .map_err(|err| format!("{err:#}"))?;
        self.deadline().extend_to(by);
        Ok(crate::queue::now_ms() + by.as_millis() as u64)
    }
}
