//! The yardstick for `mayfly bench churn`: a bare wasmtime loop with nothing
//! of mayfly in it, the way a careful embedder would write it (pooling
//! allocator with memory, tables and stacks kept resident, batched
//! decommits, `pagemap_scan`; wasmtime's default guard pages). It
//! instantiates a `wasi:http/proxy` component, calls it with `GET /`, reads
//! the body and drops the instance, in one task, for a while.
//!
//! `cargo run --release -p mayfly --example bare_churn -- COMPONENT [SECONDS]`

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

struct State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: bare_churn COMPONENT [SECONDS]");
    let seconds: f64 = args.next().map(|s| s.parse().unwrap()).unwrap_or(5.0);

    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(16)
        .total_core_instances(128)
        .total_memories(32)
        .total_tables(64)
        .total_stacks(16)
        .max_memory_size(64 << 20)
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10)
        .decommit_batch_size(32)
        .pagemap_scan(Enabled::Auto);
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config)?;
    let component = Component::from_file(&engine, &path)?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    let pre = ProxyPre::new(linker.instantiate_pre(&component)?)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    // The loop runs on the runtime's worker, like the instance tasks it spawns.
    let count = runtime.block_on(runtime.spawn(async move {
        let end = Instant::now() + Duration::from_secs_f64(seconds);
        let mut count = 0u64;
        while Instant::now() < end {
            let mut store = Store::new(
                &engine,
                State {
                    wasi: WasiCtx::builder().build(),
                    http: WasiHttpCtx::new(),
                    table: ResourceTable::new(),
                },
            );
            let (sender, receiver) = tokio::sync::oneshot::channel();
            let request = hyper::Request::builder()
                .uri("http://localhost/")
                .body(Full::new(bytes::Bytes::new()))?;
            let request = store
                .data_mut()
                .http()
                .new_incoming_request(Scheme::Http, request)?;
            let out = store.data_mut().http().new_response_outparam(sender)?;
            let pre = pre.clone();
            let task = tokio::spawn(async move {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, request, out)
                    .await
            });
            let response = receiver.await??;
            response
                .into_body()
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            task.await??;
            count += 1;
        }
        anyhow::Ok(count)
    }))??;
    println!("{:.0} instances/s", count as f64 / seconds);
    Ok(())
}
