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

impl queue::Host for GuestState {
    fn enqueue(
        &mut self,
        queue: String,
        payload: Vec<u8>,
        options: queue::EnqueueOptions,
    ) -> Result<String, String> {
        let backends = self.backends().ok_or_else(no_backend)?;
        let job = NewJob {
            queue,
            payload,
            delay: Duration::from_millis(options.delay_ms.unwrap_or(0)),
            idempotency_key: options.idempotency_key,
        };
        backends
            .queue
            .enqueue(job)
            .map(|enqueued| enqueued.id)
            .map_err(|err| format!("{err:#}"))
    }
}

fn kv_error(err: anyhow::Error) -> store::Error {
    store::Error::Other(format!("{err:#}"))
}

impl GuestState {
    fn bucket_name(&self, bucket: &Resource<Bucket>) -> Result<String, store::Error> {
        self.table()
            .get(bucket)
            .map(|b| b.name.clone())
            .map_err(|e| store::Error::Other(e.to_string()))
    }

    fn kv(&self) -> Result<std::sync::Arc<dyn crate::kv::Kv>, store::Error> {
        self.backends()
            .map(|b| b.kv.clone())
            .ok_or(store::Error::NoSuchStore)
    }
}

impl store::Host for GuestState {
    fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, store::Error> {
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
    fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, store::Error> {
        let name = self.bucket_name(&bucket)?;
        self.kv()?.get(&name, &key).map_err(kv_error)
    }

    fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), store::Error> {
        let name = self.bucket_name(&bucket)?;
        self.kv()?.set(&name, &key, &value).map_err(kv_error)
    }

    fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), store::Error> {
        let name = self.bucket_name(&bucket)?;
        self.kv()?.delete(&name, &key).map_err(kv_error)
    }

    fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Result<bool, store::Error> {
        let name = self.bucket_name(&bucket)?;
        self.kv()?.exists(&name, &key).map_err(kv_error)
    }

    fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse, store::Error> {
        let name = self.bucket_name(&bucket)?;
        let (keys, cursor) = self.kv()?.list_keys(&name, cursor).map_err(kv_error)?;
        Ok(store::KeyResponse { keys, cursor })
    }

    fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table_mut().delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for GuestState {
    fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Result<u64, store::Error> {
        let name = self.bucket_name(&bucket)?;
        self.kv()?.increment(&name, &key, delta).map_err(kv_error)
    }
}

impl kv_atomics::Host for GuestState {
    fn compare_and_swap(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        old: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<bool, store::Error> {
        let name = self.bucket_name(&bucket)?;
        self.kv()?
            .compare_and_swap(&name, &key, old.as_deref(), &new)
            .map_err(kv_error)
    }
}

impl config::Host for GuestState {
    fn get(&mut self, key: String) -> Result<Option<String>, config::Error> {
        Ok(self
            .config()
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone()))
    }

    fn get_all(&mut self) -> Result<Vec<(String, String)>, config::Error> {
        Ok(self.config().to_vec())
    }
}

impl job_context::Host for GuestState {
    fn cancelled(&mut self) -> bool {
        self.shutdown().is_draining()
    }

    fn extend(&mut self, ms: u64) -> Result<u64, String> {
        let job = self
            .job()
            .ok_or_else(|| "extend is only for job guests".to_string())?;
        let by = Duration::from_millis(ms);
        job.backends
            .queue
            .heartbeat(&job.owner, std::slice::from_ref(&job.id), by)
            .map_err(|err| format!("{err:#}"))?;
        self.deadline().extend_to(by);
        Ok(crate::queue::now_ms() + ms)
    }
}
