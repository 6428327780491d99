//! The app's key-value store (`wasi:keyvalue`), shared by every process.
//!
//! Instances keep nothing between requests or jobs; this is where state goes.

use crate::__private::http_world::mayfly::process::kv_atomics;
use crate::__private::http_world::wasi::keyvalue::{atomics, store as wit};

pub use crate::Error;

impl From<wit::Error> for Error {
    fn from(err: wit::Error) -> Self {
        Error::new(match err {
            wit::Error::NoSuchStore => "no key-value store is attached to this process".into(),
            wit::Error::AccessDenied => "access to the key-value store was denied".into(),
            wit::Error::Other(message) => message,
        })
    }
}

/// A bucket of the store: a namespace of keys.
///
/// ```no_run
/// use mayfly_guest::kv::Store;
///
/// let store = Store::open_default()?;
/// store.set("greeting", "hello")?;
/// assert_eq!(store.get("greeting")?, Some(b"hello".to_vec()));
/// # Ok::<(), mayfly_guest::kv::Error>(())
/// ```
pub struct Store {
    bucket: wit::Bucket,
}

impl Store {
    /// Opens a bucket by name.
    ///
    /// ```no_run
    /// let sessions = mayfly_guest::kv::Store::open("sessions")?;
    /// # Ok::<(), mayfly_guest::kv::Error>(())
    /// ```
    pub fn open(bucket: &str) -> Result<Store, Error> {
        Ok(Store {
            bucket: wit::open(bucket)?,
        })
    }

    /// Opens the `default` bucket.
    ///
    /// ```no_run
    /// let store = mayfly_guest::kv::Store::open_default()?;
    /// # Ok::<(), mayfly_guest::kv::Error>(())
    /// ```
    pub fn open_default() -> Result<Store, Error> {
        Self::open("default")
    }

    /// The value at `key`, if there is one.
    ///
    /// ```no_run
    /// # let store = mayfly_guest::kv::Store::open_default()?;
    /// if let Some(bytes) = store.get("user:1")? {
    ///     println!("{} bytes", bytes.len());
    /// }
    /// # Ok::<(), mayfly_guest::kv::Error>(())
    /// ```
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.bucket.get(key)?)
    }

    /// Sets `key` to `value`.
    ///
    /// ```no_run
    /// # let store = mayfly_guest::kv::Store::open_default()?;
    /// store.set("user:1", r#"{"name":"Ada"}"#)?;
    /// # Ok::<(), mayfly_guest::kv::Error>(())
    /// ```
    pub fn set(&self, key: &str, value: impl AsRef<[u8]>) -> Result<(), Error> {
        Ok(self.bucket.set(key, value.as_ref())?)
    }

    /// Deletes `key` (absent keys are fine).
    ///
    /// ```no_run
    /// # let store = mayfly_guest::kv::Store::open_default()?;
    /// store.delete("user:1")?;
    /// # Ok::<(), mayfly_guest::kv::Error>(())
    /// ```
    pub fn delete(&self, key: &str) -> Result<(), Error> {
        Ok(self.bucket.delete(key)?)
    }

    /// Whether `key` has a value.
    ///
    /// ```no_run
    /// # let store = mayfly_guest::kv::Store::open_default()?;
    /// let known = store.exists("user:1")?;
    /// # Ok::<(), mayfly_guest::kv::Error>(())
    /// ```
    pub fn exists(&self, key: &str) -> Result<bool, Error> {
        Ok(self.bucket.exists(key)?)
    }

    /// Every key of the bucket, in order.
    ///
    /// ```no_run
    /// # let store = mayfly_guest::kv::Store::open_default()?;
    /// for key in store.keys()? {
    ///     println!("{key}");
    /// }
    /// # Ok::<(), mayfly_guest::kv::Error>(())
    /// ```
    pub fn keys(&self) -> Result<Vec<String>, Error> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.bucket.list_keys(cursor)?;
            keys.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// Adds `delta` to the counter at `key` (an absent key counts as 0) and
    /// returns the new value, atomically across every process.
    ///
    /// ```no_run
    /// # let store = mayfly_guest::kv::Store::open_default()?;
    /// let visits = store.increment("visits", 1)?;
    /// # Ok::<(), mayfly_guest::kv::Error>(())
    /// ```
    pub fn increment(&self, key: &str, delta: u64) -> Result<u64, Error> {
        Ok(atomics::increment(&self.bucket, key, delta)?)
    }

    /// Sets `key` to `new` only if it holds `old` (`None`: only if absent).
    /// Returns whether it did.
    ///
    /// ```no_run
    /// # let store = mayfly_guest::kv::Store::open_default()?;
    /// // Take a lock only if nobody holds it.
    /// let mine = store.compare_and_swap("lock", None, b"me")?;
    /// # Ok::<(), mayfly_guest::kv::Error>(())
    /// ```
    pub fn compare_and_swap(
        &self,
        key: &str,
        old: Option<&[u8]>,
        new: impl AsRef<[u8]>,
    ) -> Result<bool, Error> {
        Ok(kv_atomics::compare_and_swap(
            &self.bucket,
            key,
            old,
            new.as_ref(),
        )?)
    }
}
