//! Backing services attached by URL: the job queue and the key-value store.
//!
//! `sqlite://PATH` (relative to the manifest's directory, or absolute with
//! `sqlite:///abs/path`) is the embedded default. The manifest's
//! `[app] state` names one URL for both; `MAYFLY_QUEUE_URL` and
//! `MAYFLY_KV_URL` override each, as twelve-factor config does.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};

use crate::kv::Kv;
use crate::queue::Queue;
use crate::sqlite::Sqlite;

/// The services a process is attached to.
#[derive(Clone)]
pub struct Backends {
    pub queue: Arc<dyn Queue>,
    pub kv: Arc<dyn Kv>,
}

/// Opens the backends named by `state` (or its environment overrides).
pub fn open(state: &str, base: &Path) -> Result<Backends> {
    let queue_url = std::env::var("MAYFLY_QUEUE_URL").unwrap_or_else(|_| state.to_string());
    let kv_url = std::env::var("MAYFLY_KV_URL").unwrap_or_else(|_| state.to_string());
    let queue_db = open_sqlite(&queue_url, base)?;
    let kv_db = if kv_url == queue_url {
        queue_db.clone()
    } else {
        open_sqlite(&kv_url, base)?
    };
    Ok(Backends {
        queue: queue_db,
        kv: kv_db,
    })
}

/// Opens one URL as both queue and key-value store.
pub fn open_url(url: &str, base: &Path) -> Result<Backends> {
    let db = open_sqlite(url, base)?;
    Ok(Backends {
        queue: db.clone(),
        kv: db,
    })
}

fn open_sqlite(url: &str, base: &Path) -> Result<Arc<Sqlite>> {
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("`{url}` is not a state URL: write it like sqlite://.mayfly/state.db");
    };
    match scheme {
        "sqlite" => {
            if rest.is_empty() {
                bail!("`{url}` names no file: write it like sqlite://.mayfly/state.db");
            }
            Ok(Arc::new(Sqlite::open(&base.join(rest))?))
        }
        other => bail!(
            "unknown state URL scheme `{other}` in `{url}`: mayfly supports sqlite:// \
             (for example sqlite://.mayfly/state.db)"
        ),
    }
}
