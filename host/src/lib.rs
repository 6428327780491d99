//! mayfly: run twelve-factor process types as WebAssembly components.
//!
//! A request or a job runs in a fresh component instance that is dropped
//! afterwards. The modules follow a request: [`manifest`] says what to run,
//! [`engine`] compiles and caches it, [`instance`] builds the store every
//! instance gets, [`http`] serves requests, [`lifecycle`] drains on SIGTERM.

pub mod bench;
pub mod engine;
pub mod export;
pub mod http;
pub mod instance;
pub mod job;
pub mod kv;
pub mod lifecycle;
pub mod logs;
pub mod manifest;
pub mod queue;
pub mod services;
pub mod sqlite;
pub mod state;
pub mod supervisor;
pub mod toolchain;
