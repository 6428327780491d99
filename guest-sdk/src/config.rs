//! Configuration values from the manifest's `config` table
//! (`wasi:config/store`).

use crate::__private::http_world::wasi::config::store as wit;

/// The value of a configuration key, if the manifest declares it.
///
/// ```no_run
/// let region = mayfly_guest::config::get("region").unwrap_or_else(|| "eu".to_string());
/// ```
pub fn get(key: &str) -> Option<String> {
    wit::get(key).ok().flatten()
}

/// Every configuration key and value.
///
/// ```no_run
/// for (key, value) in mayfly_guest::config::all() {
///     println!("{key} = {value}");
/// }
/// ```
pub fn all() -> Vec<(String, String)> {
    wit::get_all().unwrap_or_default()
}
