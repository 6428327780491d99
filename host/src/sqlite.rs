//! The embedded backend: queue and key-value store in one SQLite file,
//! shared safely by every mayfly process on the machine.
//!
//! Durability: WAL journal with `synchronous = NORMAL`. A commit is in the
//! WAL before the call returns, so it survives a crash of any process; only
//! a power loss can drop the last commits (`synchronous = FULL` would fsync
//! each one). Every state change is one `BEGIN IMMEDIATE` transaction, which
//! takes SQLite's single write lock: two workers can never lease one job.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::kv::{Kv, PAGE};
use crate::queue::{
    backoff, now_ms, Enqueued, JobInfo, LeaseRef, Leased, NewJob, Outcome, Policy, Queue, State,
    MAX_DELAY, MAX_PAYLOAD,
};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    payload BLOB NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_at INTEGER NOT NULL,
    enqueued_at INTEGER NOT NULL,
    finished_at INTEGER,
    lease_owner TEXT,
    lease_until INTEGER,
    last_error TEXT,
    idempotency_key TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (queue, state, run_at);
CREATE INDEX IF NOT EXISTS jobs_leases ON jobs (state, lease_until);
CREATE TABLE IF NOT EXISTS kv (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
";

pub struct Sqlite {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl Sqlite {
    /// Opens (creating if needed) the state database at `path`. A file that
    /// is not a mayfly state database is refused before anything is written.
    pub fn open(path: &Path) -> Result<Sqlite> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        }
        let refuse = |err: &dyn std::fmt::Display| {
            anyhow::anyhow!(
                "state file {} cannot be used ({err}); nothing was changed: check its \
                 permissions, or if it is damaged or not a mayfly state file, move it away \
                 or point [app] state / MAYFLY_QUEUE_URL at another file",
                path.display()
            )
        };
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| refuse(&e))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // Read before writing: a foreign or corrupt file fails here.
        let (version, objects) = read_header(&conn).map_err(|e| refuse(&e))?;
        if version > SCHEMA_VERSION {
            bail!(
                "state file {} was written by a newer mayfly (schema {version}); nothing was \
                 changed: upgrade mayfly",
                path.display()
            );
        }
        if version == 0 && objects > 0 {
            return Err(refuse(&"it is an SQLite database, but not one of mayfly's"));
        }
        // WAL is a property of the file: set once, by whichever process
        // comes first. Switching needs a moment alone with the file, and the
        // busy handler does not wait for that, so retry briefly.
        let mut tries = 0;
        loop {
            let mode: String = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .map_err(|e| refuse(&e))?;
            if mode.eq_ignore_ascii_case("wal") {
                break;
            }
            tries += 1;
            if tries > 200 {
                return Err(refuse(&"it cannot be switched to WAL journal mode"));
            }
            match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
                Ok(_) => {}
                Err(err) if is_busy(&err) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(err) => return Err(refuse(&err)),
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        if version == 0 {
            // Tables and version in one transaction: another process opening
            // the file at the same moment sees all of it or none of it.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (version, objects) = read_header(&tx)?;
            if version == 0 && objects == 0 {
                tx.execute_batch(SCHEMA)
                    .with_context(|| format!("cannot create the tables in {}", path.display()))?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            tx.commit()?;
        }
        Ok(Sqlite {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut conn).with_context(|| format!("state database {}", self.path.display()))
    }
}

fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn read_header(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    // One statement, one snapshot: another process may be creating the
    // schema right now, and two reads could see its before and its after.
    conn.query_row(
        "SELECT (SELECT user_version FROM pragma_user_version), (SELECT count(*) FROM sqlite_master)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

fn job_info(row: &rusqlite::Row<'_>) -> rusqlite::Result<JobInfo> {
    let state: String = row.get("state")?;
    let payload: Vec<u8> = row.get("payload")?;
    Ok(JobInfo {
        id: row.get::<_, i64>("id")?.to_string(),
        queue: row.get("queue")?,
        state: State::parse(&state).unwrap_or(State::Queued),
        attempts: row.get("attempts")?,
        enqueued_at_ms: row.get::<_, i64>("enqueued_at")? as u64,
        run_at_ms: row.get::<_, i64>("run_at")? as u64,
        finished_at_ms: row.get::<_, Option<i64>>("finished_at")?.map(|v| v as u64),
        last_error: row.get("last_error")?,
        idempotency_key: row.get("idempotency_key")?,
        payload_bytes: payload.len(),
        payload,
    })
}

fn parse_id(id: &str) -> Result<i64> {
    id.parse().with_context(|| {
        format!("`{id}` is not a job id (ids are numbers, as `mayfly enqueue` prints them)")
    })
}

impl Queue for Sqlite {
    fn enqueue(&self, job: NewJob) -> Result<Enqueued> {
        if job.payload.len() > MAX_PAYLOAD {
            bail!(
                "payload of {} bytes is over the limit of {MAX_PAYLOAD} bytes: store large data \
                 in the key-value store and enqueue its key",
                job.payload.len()
            );
        }
        let now = now_ms() as i64;
        let run_at = now + job.delay.min(MAX_DELAY).as_millis() as i64;
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(key) = &job.idempotency_key {
                let existing: Option<i64> = tx
                    .query_row(
                        "SELECT id FROM jobs WHERE idempotency_key = ?1",
                        [key],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(id) = existing {
                    return Ok(Enqueued {
                        id: id.to_string(),
                        created: false,
                    });
                }
            }
            tx.execute(
                "INSERT INTO jobs (queue, payload, state, run_at, enqueued_at, idempotency_key)
                 VALUES (?1, ?2, 'queued', ?3, ?4, ?5)",
                params![job.queue, job.payload, run_at, now, job.idempotency_key],
            )?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok(Enqueued {
                id: id.to_string(),
                created: true,
            })
        })
    }

    fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<String>> {
        if let Some(big) = jobs.iter().find(|job| job.payload.len() > MAX_PAYLOAD) {
            bail!(
                "payload of {} bytes is over the limit of {MAX_PAYLOAD} bytes",
                big.payload.len()
            );
        }
        let now = now_ms() as i64;
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut ids = Vec::with_capacity(jobs.len());
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO jobs (queue, payload, state, run_at, enqueued_at)
                     VALUES (?1, ?2, 'queued', ?3, ?4)",
                )?;
                for job in jobs {
                    let run_at = now + job.delay.min(MAX_DELAY).as_millis() as i64;
                    insert.execute(params![job.queue, job.payload, run_at, now])?;
                    ids.push(tx.last_insert_rowid().to_string());
                }
            }
            tx.commit()?;
            Ok(ids)
        })
    }

    fn count(&self, state: State) -> Result<u64> {
        self.with(|conn| {
            conn.query_row(
                "SELECT count(*) FROM jobs WHERE state = ?1",
                [state.as_str()],
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|n| n as u64)
    }

    fn lease(
        &self,
        queues: &[String],
        max: usize,
        owner: &str,
        policy: Policy,
    ) -> Result<Vec<Leased>> {
        if max == 0 || queues.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms() as i64;
        let until = now + policy.lease.as_millis() as i64;
        let queue_list = serde_json::to_string(queues)?;
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // An expired lease on the last attempt: the worker died holding
            // it, and there is no attempt left to give.
            tx.execute(
                "UPDATE jobs SET state = 'dead', finished_at = ?1, lease_owner = NULL,
                        lease_until = NULL,
                        last_error = 'lease expired on the last attempt (the worker stopped or died)'
                 WHERE state = 'running' AND lease_until < ?1 AND attempts >= ?2
                   AND queue IN (SELECT value FROM json_each(?3))",
                params![now, policy.max_attempts, queue_list],
            )?;
            let mut leased = Vec::new();
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE jobs SET state = 'running', attempts = attempts + 1,
                            lease_owner = ?1, lease_until = ?2
                     WHERE id IN (
                         SELECT id FROM jobs
                         WHERE queue IN (SELECT value FROM json_each(?3))
                           AND ((state = 'queued' AND run_at <= ?4)
                                OR (state = 'running' AND lease_until < ?4))
                         ORDER BY run_at, id LIMIT ?5)
                     RETURNING id, queue, payload, attempts, enqueued_at",
                )?;
                let rows = stmt.query_map(params![owner, until, queue_list, now, max as i64], |row| {
                    Ok(Leased {
                        id: row.get::<_, i64>(0)?.to_string(),
                        queue: row.get(1)?,
                        payload: row.get(2)?,
                        attempt: row.get(3)?,
                        enqueued_at_ms: row.get::<_, i64>(4)? as u64,
                    })
                })?;
                for row in rows {
                    leased.push(row?);
                }
            }
            tx.commit()?;
            leased.sort_by_key(|job| job.id.parse::<i64>().unwrap_or(0));
            Ok(leased)
        })
    }

    fn complete(
        &self,
        owner: &str,
        outcomes: &[(LeaseRef, Outcome)],
        policy: Policy,
    ) -> Result<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let now = now_ms() as i64;
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut done = tx.prepare_cached(
                    "UPDATE jobs SET state = 'done', finished_at = ?3, lease_owner = NULL,
                            lease_until = NULL
                     WHERE id = ?1 AND lease_owner = ?2 AND attempts = ?4 AND state = 'running'",
                )?;
                let mut retry = tx.prepare_cached(
                    "UPDATE jobs SET
                        state = CASE WHEN attempts >= ?4 THEN 'dead' ELSE 'queued' END,
                        finished_at = CASE WHEN attempts >= ?4 THEN ?3 ELSE NULL END,
                        run_at = ?5, last_error = ?6, lease_owner = NULL, lease_until = NULL
                     WHERE id = ?1 AND lease_owner = ?2 AND attempts = ?7 AND state = 'running'",
                )?;
                let mut fail = tx.prepare_cached(
                    "UPDATE jobs SET state = 'dead', finished_at = ?3, last_error = ?4,
                            lease_owner = NULL, lease_until = NULL
                     WHERE id = ?1 AND lease_owner = ?2 AND attempts = ?5 AND state = 'running'",
                )?;
                let mut release = tx.prepare_cached(
                    "UPDATE jobs SET state = 'queued', attempts = max(attempts - 1, 0), run_at = ?3,
                            lease_owner = NULL, lease_until = NULL
                     WHERE id = ?1 AND lease_owner = ?2 AND attempts = ?4 AND state = 'running'",
                )?;
                for (lease, outcome) in outcomes {
                    let Ok(id) = lease.id.parse::<i64>() else {
                        continue;
                    };
                    let attempt = lease.attempt;
                    match outcome {
                        Outcome::Done => {
                            done.execute(params![id, owner, now, attempt])?;
                        }
                        Outcome::Retry { reason, delay } => {
                            let delay = delay
                                .unwrap_or_else(|| backoff(attempt, jitter()))
                                .min(MAX_DELAY);
                            let run_at = now + delay.as_millis() as i64;
                            retry.execute(params![
                                id,
                                owner,
                                now,
                                policy.max_attempts,
                                run_at,
                                reason,
                                attempt
                            ])?;
                        }
                        Outcome::Fail { reason } => {
                            fail.execute(params![id, owner, now, reason, attempt])?;
                        }
                        Outcome::Release => {
                            release.execute(params![id, owner, now, attempt])?;
                        }
                    }
                }
            }
            tx.commit()
        })
    }

    fn heartbeat(&self, owner: &str, leases: &[LeaseRef], lease: Duration) -> Result<()> {
        if leases.is_empty() {
            return Ok(());
        }
        let until = now_ms() as i64 + lease.as_millis() as i64;
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE jobs SET lease_until = max(lease_until, ?3)
                     WHERE id = ?1 AND lease_owner = ?2 AND attempts = ?4 AND state = 'running'",
                )?;
                for held in leases {
                    if let Ok(id) = held.id.parse::<i64>() {
                        stmt.execute(params![id, owner, until, held.attempt])?;
                    }
                }
            }
            tx.commit()
        })
    }

    fn list(
        &self,
        queue: Option<&str>,
        state: Option<State>,
        limit: usize,
    ) -> Result<Vec<JobInfo>> {
        self.with(|conn| {
            let mut stmt = conn.prepare(
                "SELECT * FROM jobs WHERE (?1 IS NULL OR queue = ?1) AND (?2 IS NULL OR state = ?2)
                 ORDER BY id LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![queue, state.map(State::as_str), limit as i64],
                job_info,
            )?;
            rows.collect()
        })
    }

    fn get(&self, id: &str) -> Result<Option<JobInfo>> {
        let id = parse_id(id)?;
        self.with(|conn| {
            conn.query_row("SELECT * FROM jobs WHERE id = ?1", [id], job_info)
                .optional()
        })
    }

    fn revive(&self, id: &str) -> Result<()> {
        let numeric = parse_id(id)?;
        let now = now_ms() as i64;
        let revived = self.with(|conn| {
            conn.execute(
                "UPDATE jobs SET state = 'queued', attempts = 0, run_at = ?2, finished_at = NULL
                 WHERE id = ?1 AND state = 'dead'",
                params![numeric, now],
            )
        })?;
        if revived == 1 {
            return Ok(());
        }
        // Nothing changed: say why.
        match Queue::get(self, id)? {
            None => bail!("there is no job {id}"),
            Some(job) => bail!(
                "job {id} is {}, not dead: only dead jobs can be retried",
                job.state.as_str()
            ),
        }
    }

    fn purge(&self, state: State) -> Result<u64> {
        if !matches!(state, State::Done | State::Dead) {
            bail!(
                "only done or dead jobs can be purged, not {}",
                state.as_str()
            );
        }
        self.with(|conn| conn.execute("DELETE FROM jobs WHERE state = ?1", [state.as_str()]))
            .map(|n| n as u64)
    }
}

fn jitter() -> f64 {
    // Good enough spread for backoff; not for anything secret.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

const KV_READ: &str = "SELECT value FROM kv WHERE bucket = ?1 AND key = ?2";
const KV_WRITE: &str = "INSERT INTO kv (bucket, key, value) VALUES (?1, ?2, ?3)
                        ON CONFLICT (bucket, key) DO UPDATE SET value = excluded.value";

fn kv_read(conn: &Connection, bucket: &str, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached(KV_READ)?
        .query_row([bucket, key], |r| r.get(0))
        .optional()
}

fn kv_write(conn: &Connection, bucket: &str, key: &str, value: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached(KV_WRITE)?
        .execute(params![bucket, key, value])
        .map(drop)
}

impl Sqlite {
    /// Reads a key and maybe writes it, in one write transaction: the
    /// atomic operations. `decide` returns what to write (if anything) and
    /// the answer.
    fn read_modify_write<T>(
        &self,
        bucket: &str,
        key: &str,
        decide: impl FnOnce(Option<&[u8]>) -> (Option<Vec<u8>>, T),
    ) -> Result<T> {
        self.with(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = kv_read(&tx, bucket, key)?;
            let (write, answer) = decide(current.as_deref());
            if let Some(value) = write {
                kv_write(&tx, bucket, key, &value)?;
            }
            tx.commit()?;
            Ok(answer)
        })
    }
}

impl Kv for Sqlite {
    fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.with(|conn| kv_read(conn, bucket, key))
    }

    fn set(&self, bucket: &str, key: &str, value: &[u8]) -> Result<()> {
        self.with(|conn| kv_write(conn, bucket, key, value))
    }

    fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        self.with(|conn| {
            conn.prepare_cached("DELETE FROM kv WHERE bucket = ?1 AND key = ?2")?
                .execute([bucket, key])
        })
        .map(drop)
    }

    fn exists(&self, bucket: &str, key: &str) -> Result<bool> {
        self.with(|conn| {
            conn.prepare_cached("SELECT 1 FROM kv WHERE bucket = ?1 AND key = ?2")?
                .exists([bucket, key])
        })
    }

    fn list_keys(&self, bucket: &str, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>)> {
        let offset = cursor.unwrap_or(0);
        let mut keys: Vec<String> = self.with(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key FROM kv WHERE bucket = ?1 ORDER BY key LIMIT ?2 OFFSET ?3",
            )?;
            let rows = stmt.query_map(params![bucket, PAGE as i64 + 1, offset as i64], |r| {
                r.get(0)
            })?;
            rows.collect()
        })?;
        // One key past the page tells whether there is a next page.
        let next = (keys.len() > PAGE).then(|| offset + PAGE as u64);
        keys.truncate(PAGE);
        Ok((keys, next))
    }

    fn increment(&self, bucket: &str, key: &str, delta: u64) -> Result<u64> {
        let next = self.read_modify_write(bucket, key, |current| {
            let current = match current {
                None => Some(0),
                Some(bytes) => std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok()),
            };
            match current {
                Some(n) => {
                    let next = n.wrapping_add(delta);
                    (Some(next.to_string().into_bytes()), Some(next))
                }
                None => (None, None),
            }
        })?;
        next.with_context(|| format!("key `{key}` holds something that is not a counter"))
    }

    fn compare_and_swap(
        &self,
        bucket: &str,
        key: &str,
        old: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool> {
        self.read_modify_write(bucket, key, |current| {
            if current == old {
                (Some(new.to_vec()), true)
            } else {
                (None, false)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database in a directory of its own, removed when dropped.
    struct TempDb {
        dir: PathBuf,
        db: Sqlite,
    }

    impl std::ops::Deref for TempDb {
        type Target = Sqlite;
        fn deref(&self) -> &Sqlite {
            &self.db
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn temp_db(name: &str) -> TempDb {
        let dir = std::env::temp_dir().join(format!("mayfly-sqlite-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = Sqlite::open(&dir.join("state.db")).unwrap();
        TempDb { dir, db }
    }

    fn policy_with(max_attempts: u32, lease: Duration) -> Policy {
        Policy {
            max_attempts,
            lease,
        }
    }

    fn policy() -> Policy {
        policy_with(2, Duration::from_secs(30))
    }

    fn job(queue: &str) -> NewJob {
        NewJob {
            queue: queue.into(),
            payload: b"x".to_vec(),
            delay: Duration::ZERO,
            idempotency_key: None,
        }
    }

    #[test]
    fn a_leased_job_is_invisible_until_acked_or_expired() {
        let db = temp_db("lease");
        let id = db.enqueue(job("q")).unwrap().id;
        let queues = vec!["q".to_string()];
        let first = db.lease(&queues, 10, "a", policy()).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].id.as_str(), first[0].attempt), (id.as_str(), 1));
        assert!(db.lease(&queues, 10, "b", policy()).unwrap().is_empty());
        db.complete("a", &[(first[0].lease_ref(), Outcome::Done)], policy())
            .unwrap();
        assert_eq!(Queue::get(&*db, &id).unwrap().unwrap().state, State::Done);
    }

    #[test]
    fn release_does_not_count_an_attempt_and_retry_past_max_is_dead() {
        let db = temp_db("retry");
        let id = db.enqueue(job("q")).unwrap().id;
        let queues = vec!["q".to_string()];
        let leased = db.lease(&queues, 1, "a", policy()).unwrap();
        db.complete("a", &[(leased[0].lease_ref(), Outcome::Release)], policy())
            .unwrap();
        assert_eq!(Queue::get(&*db, &id).unwrap().unwrap().attempts, 0);

        for attempt in 1..=2 {
            let leased = db.lease(&queues, 1, "a", policy()).unwrap();
            assert_eq!(leased[0].attempt, attempt);
            let retry = Outcome::Retry {
                reason: format!("boom {attempt}"),
                delay: Some(Duration::ZERO),
            };
            db.complete("a", &[(leased[0].lease_ref(), retry)], policy())
                .unwrap();
        }
        let info = Queue::get(&*db, &id).unwrap().unwrap();
        assert_eq!(info.state, State::Dead);
        assert_eq!(info.last_error.as_deref(), Some("boom 2"));
        db.revive(&id).unwrap();
        assert_eq!(Queue::get(&*db, &id).unwrap().unwrap().state, State::Queued);
    }

    #[test]
    fn a_late_outcome_of_an_expired_attempt_does_not_touch_the_next_one() {
        let db = temp_db("stale");
        let id = db.enqueue(job("q")).unwrap().id;
        let queues = vec!["q".to_string()];
        let short = policy_with(5, Duration::from_millis(1));
        let first = db.lease(&queues, 1, "a", short).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        // The lease expired; the same owner gets the job again.
        let second = db.lease(&queues, 1, "a", policy()).unwrap();
        assert_eq!(second[0].attempt, 2);
        db.complete("a", &[(first[0].lease_ref(), Outcome::Done)], policy())
            .unwrap();
        assert_eq!(
            Queue::get(&*db, &id).unwrap().unwrap().state,
            State::Running
        );
        db.complete("a", &[(second[0].lease_ref(), Outcome::Done)], policy())
            .unwrap();
        assert_eq!(Queue::get(&*db, &id).unwrap().unwrap().state, State::Done);
    }

    #[test]
    fn expired_leases_of_other_queues_are_not_dead_lettered_by_this_worker() {
        let db = temp_db("otherqueue");
        let id = db.enqueue(job("b")).unwrap().id;
        let short = policy_with(5, Duration::from_millis(1));
        db.lease(&["b".to_string()], 1, "b-worker", short).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        let strict = policy_with(1, Duration::from_secs(30));
        db.lease(&["a".to_string()], 1, "a-worker", strict).unwrap();
        assert_eq!(
            Queue::get(&*db, &id).unwrap().unwrap().state,
            State::Running
        );
    }

    #[test]
    fn kv_counters_and_compare_and_swap() {
        let db = temp_db("kv");
        assert_eq!(db.increment("b", "n", 2).unwrap(), 2);
        assert_eq!(db.increment("b", "n", 3).unwrap(), 5);
        assert_eq!(Kv::get(&*db, "b", "n").unwrap().unwrap(), b"5");
        assert!(db.compare_and_swap("b", "k", None, b"1").unwrap());
        assert!(!db.compare_and_swap("b", "k", None, b"2").unwrap());
        assert!(db.compare_and_swap("b", "k", Some(b"1"), b"2").unwrap());
        assert_eq!(db.list_keys("b", None).unwrap().0, vec!["k", "n"]);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused_untouched() {
        let dir =
            std::env::temp_dir().join(format!("mayfly-sqlite-{}-corrupt", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        let junk = vec![0x5au8; 8192];
        std::fs::write(&path, &junk).unwrap();
        let err = Sqlite::open(&path).err().unwrap().to_string();
        assert!(
            err.contains("nothing was changed") && err.contains("state.db"),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), junk);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
