//! The key-value store behind `wasi:keyvalue`: one trait, backends chosen by
//! URL (the same database as the queue).
//!
//! Values are bytes. `increment` keeps its counter as decimal text, so a
//! counter reads back as `"42"` with `get`.

use anyhow::Result;

/// Most keys `list_keys` returns at once; a cursor fetches the rest.
pub const PAGE: usize = 1000;

pub trait Kv: Send + Sync {
    fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>>;
    fn set(&self, bucket: &str, key: &str, value: &[u8]) -> Result<()>;
    fn delete(&self, bucket: &str, key: &str) -> Result<()>;
    fn exists(&self, bucket: &str, key: &str) -> Result<bool>;
    /// Keys in order, a page from `cursor`; the next cursor if more remain.
    fn list_keys(&self, bucket: &str, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>)>;
    /// Adds `delta` to the counter at `key` (absent: 0) and returns the sum.
    fn increment(&self, bucket: &str, key: &str, delta: u64) -> Result<u64>;
    /// Sets `key` to `new` if it holds `old` (`None`: absent).
    fn compare_and_swap(
        &self,
        bucket: &str,
        key: &str,
        old: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool>;
}
