//! The local lease store: one process, one directory, no AWS.
//!
//! Models: the lease table of a single worker (an embedded default, e.g. a
//! CLI consuming a stream alone), kept in a directory:
//!
//! - `leases.json`: the whole table, rewritten on every change by atomic
//!   replace (write `leases.json.tmp`, fsync it, rename it over
//!   `leases.json`, fsync the directory). A crash leaves either the old or
//!   the new table, never a mix.
//! - `lock`: holds an exclusive advisory lock (`flock` on Unix,
//!   `LockFileEx` on Windows) for as long as the store is open, and the
//!   holder's pid for the error message. A second [`LocalLeaseStore::open`]
//!   of the same directory, from another process or this one, fails with
//!   [`LocalStoreError::Locked`]. The OS releases the lock when the process
//!   dies, so a crash never leaves a stale lock; the file itself stays.
//!
//! The file format (JSON, `format` and `version` checked on open):
//!
//! ```json
//! {
//!   "format": "kinesin-local-lease-store",
//!   "version": 1,
//!   "leases": [
//!     { "stream": "orders", "shard": "shardId-000000000000",
//!       "owner": "host-1#17", "token": 3,
//!       "checkpoint": "49590338271490256608559692538361571095921575989136588898",
//!       "sub_sequence": 2, "pending_owner": null,
//!       "parents": [], "created_ms": 1767225600000,
//!       "checkpoint_serial": 4 }
//!   ],
//!   "heartbeats": [
//!     { "owner": "host-1#17", "beat": 42, "held": 1,
//!       "wants": ["orders|shardId-000000000001"], "alive": true,
//!       "streams": ["orders"] }
//!   ]
//! }
//! ```
//!
//! Field forms are those of the DynamoDB schema ([`crate::dynamo`]):
//! owners as `<worker id>#<incarnation>`, checkpoints as
//! [`kinesin_core::sequence::Checkpoint::to_parts`]; `null` or a missing
//! field means absent.
//!
//! Invariants: writes apply [`LeaseWrite::apply`] to the row in memory and
//! change memory only once the new file is in place, so memory and file
//! agree; a failure before the rename is [`ErrorClass::Transient`] (nothing
//! changed), a failed directory fsync after it is [`ErrorClass::Ambiguous`]
//! (the change is visible but may not survive a power loss). A file whose
//! structure does not decode (not JSON, another format or version, two
//! rows for one key) fails [`LocalLeaseStore::open`]. One row that does not
//! decode does not: it is kept as found (written back unchanged), named in
//! [`Rows::bad`] by every read of its partition, a lease write on its
//! shard is refused (so it is never created afresh over, nor taken), and
//! a heartbeat write of its worker replaces it.
//!
//! The directory, `lock` and `leases.json` must not be symbolic links
//! ([`LocalStoreError::Symlink`]): a link would let whoever controls it
//! redirect the table and its lock. On Unix they must also belong to the
//! process's effective user ([`LocalStoreError::NotOwned`]): the owner of
//! a directory can replace the table in it under the process's feet. A writer thread that dies (a panic)
//! fails the writes it held (`Ambiguous`) and every later write at once
//! (`Transient`), never leaving them to the caller's deadline.
//!
//! The file I/O runs on one writer thread of the store, never in the
//! returned futures: writes queue for it and are committed in groups (all
//! writes queued during one commit share the next file replace and fsync,
//! applied in arrival order, each answered with its own outcome). Reads
//! answer from memory at once.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use async_channel::Sender;

use kinesin_core::ids::{FencingToken, Owner, ShardId, ShardRef, StreamId};
use kinesin_core::io::ErrorClass;
use kinesin_core::table::{HeartbeatRow, LeaseRow, LeaseWrite};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::codec::{decode_heartbeat_row, decode_lease_row, encode_shard_ref, RowFields};
use crate::lease_store::{LeaseStore, RowError, Rows, StoreError, StoreFuture};

/// The `format` field of the file.
const FORMAT: &str = "kinesin-local-lease-store";
/// The `version` field of the file.
const VERSION: u64 = 1;
const DATA_FILE: &str = "leases.json";
const TEMP_FILE: &str = "leases.json.tmp";
const LOCK_FILE: &str = "lock";

/// Why [`LocalLeaseStore::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalStoreError {
    /// Another store (another process, or another open in this one) holds
    /// the directory.
    #[error(
        "local lease store {dir} is in use by another process ({holder}); a local store serves \
         one process: stop that process, choose another directory, or use the DynamoDB store \
         for several workers"
    )]
    Locked {
        /// The store directory.
        dir: PathBuf,
        /// Who holds it, from the lock file (e.g. "pid 1234").
        holder: String,
    },
    /// A file operation failed.
    #[error("local lease store: cannot {action} {path}: {source}")]
    Io {
        /// What was being done ("create", "lock", "read", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The table file exists but is not a valid table.
    #[error("local lease store file {path} is not a valid lease table: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the row and field when it is one row.
        detail: String,
    },
    /// The directory, or one of the store's files in it, is a symbolic
    /// link: whoever can change the link could point the lease table (and
    /// its lock) elsewhere.
    #[error(
        "local lease store: {path} is a symbolic link; pass the real directory (the store \
         refuses links so its table and lock cannot be redirected)"
    )]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// The directory, or one of the store's files in it, belongs to another
    /// user (Unix): whoever owns it could replace the lease table.
    #[error(
        "local lease store: {path} belongs to uid {owner}, not to this process's user (uid {uid});          use a directory of your own, or give it to this user (chown {uid} {path})"
    )]
    NotOwned {
        /// The directory or file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The process's effective user.
        uid: u32,
    },
}

/// The whole table in memory, in the order it is written.
#[derive(Clone, Debug, Default)]
struct Tables {
    leases: BTreeMap<ShardRef, LeaseRow>,
    /// Keyed by worker id: one row per worker, like DynamoDB.
    heartbeats: BTreeMap<String, HeartbeatRow>,
    /// Lease rows of the file that do not decode, keyed by their shard
    /// when the row names one.
    bad_leases: Vec<Kept<ShardRef>>,
    /// Heartbeat rows of the file that do not decode, keyed by their
    /// worker id when the row names one.
    bad_heartbeats: Vec<Kept<String>>,
}

/// A row of the file that does not decode: written back as found, named
/// by every read of its partition, never replaced by a lease write (a
/// Create of its shard is refused: the row exists). A heartbeat write of
/// its worker replaces it.
#[derive(Clone, Debug)]
struct Kept<K> {
    key: Option<K>,
    value: Value,
    error: RowError,
}

/// A single-process lease store in a directory (format in the module doc).
///
/// Writes go to one writer thread that commits them in groups: every write
/// queued while a commit runs goes into the next one, applied in arrival
/// order, with one file replace and one fsync for the whole group. So the
/// async callers never block on disk I/O, and a burst of checkpoints (one
/// per shard every commit period) costs one fsync instead of one each.
#[derive(Debug)]
pub struct LocalLeaseStore {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    /// The committed table: what `leases.json` holds.
    tables: Mutex<Tables>,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Group commits that replaced the file.
    commits: AtomicU64,
    /// Held (locked) for the life of the store.
    _lock: File,
    /// Tests: the writer thread panics at its next group.
    #[cfg(test)]
    panic_next: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct Queue {
    pending: Vec<(Change, Sender<Result<(), StoreError>>)>,
    closed: bool,
    /// The writer thread stopped by a panic: writes fail at once.
    dead: bool,
}

/// One queued write.
#[derive(Debug)]
enum Change {
    Lease(LeaseWrite),
    Heartbeat(HeartbeatRow),
    DeleteHeartbeat(Owner, u64),
    DeleteLease(ShardRef, FencingToken),
}

/// Why a group commit did not (surely) reach the disk.
struct CommitFailure {
    class: ErrorClass,
    action: &'static str,
    /// Names the file and carries the OS error's text.
    message: String,
}

impl CommitFailure {
    /// The answer for each write of the group (one failure, many callers).
    fn to_error(&self) -> StoreError {
        StoreError::new(self.class, self.action, self.message.clone())
    }
}

/// Refuses `path` (whose metadata is `meta`) unless the process's
/// effective user owns it.
#[cfg(unix)]
fn check_owner(path: &Path, meta: &fs::Metadata) -> Result<(), LocalStoreError> {
    use std::os::unix::fs::MetadataExt;
    let uid = rustix::process::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(LocalStoreError::NotOwned {
            path: path.to_path_buf(),
            owner: meta.uid(),
            uid,
        });
    }
    Ok(())
}

/// Ownership is not checked off Unix (ACLs decide there).
#[cfg(not(unix))]
fn check_owner(_path: &Path, _meta: &fs::Metadata) -> Result<(), LocalStoreError> {
    Ok(())
}

impl LocalLeaseStore {
    /// Open the store in `dir` (created if missing), taking its lock and
    /// loading `leases.json` if it exists.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, LocalStoreError> {
        let dir = dir.as_ref().to_path_buf();
        let io_err = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| LocalStoreError::Io {
                action,
                path,
                source,
            }
        };
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        for path in [dir.clone(), dir.join(LOCK_FILE), dir.join(DATA_FILE)] {
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(LocalStoreError::Symlink { path });
                }
                Ok(m) => check_owner(&path, &m)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("inspect", &path)(e)),
            }
        }

        let lock_path = dir.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                // Best effort: the pid is only for the message.
                let _ = File::open(&lock_path).and_then(|mut f| f.read_to_string(&mut holder));
                let holder = match holder.trim() {
                    "" => "pid unknown".to_owned(),
                    pid => format!("pid {pid}"),
                };
                return Err(LocalStoreError::Locked { dir, holder });
            }
            Err(TryLockError::Error(e)) => return Err(io_err("lock", &lock_path)(e)),
        }
        lock.set_len(0)
            .and_then(|()| lock.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .map_err(io_err("write", &lock_path))?;

        let temp_path = dir.join(TEMP_FILE);
        if temp_path.exists() {
            // Left by a crash before its rename: never part of the table.
            fs::remove_file(&temp_path).map_err(io_err("remove", &temp_path))?;
        }
        let data_path = dir.join(DATA_FILE);
        let tables = match fs::read(&data_path) {
            Ok(bytes) => decode_file(&bytes).map_err(|detail| LocalStoreError::Corrupt {
                path: data_path.clone(),
                detail,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Tables::default(),
            Err(e) => return Err(io_err("read", &data_path)(e)),
        };
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            tables: Mutex::new(tables),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            commits: AtomicU64::new(0),
            _lock: lock,
            #[cfg(test)]
            panic_next: std::sync::atomic::AtomicBool::new(false),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("kinesin-local-store".into())
                .spawn(move || shared.run_writer())
                .map_err(io_err("start the writer thread for", &dir))?
        };
        Ok(LocalLeaseStore {
            shared,
            writer: Some(writer),
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// How many times the file was replaced so far: one group commit
    /// carries every write queued while the previous one ran.
    pub fn file_commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// Queue `change` for the writer thread and wait for its commit.
    async fn write(&self, change: Change) -> Result<(), StoreError> {
        let (tx, rx) = async_channel::bounded(1);
        {
            let mut queue = self.shared.queue();
            if queue.dead {
                return Err(StoreError::new(
                    ErrorClass::Transient,
                    "write",
                    "the local lease store's writer thread stopped (a panic: please report \
                     it); nothing can be written any more: restart the consumer",
                ));
            }
            if queue.closed {
                return Err(StoreError::new(
                    ErrorClass::Transient,
                    "write",
                    "the local lease store is closing",
                ));
            }
            queue.pending.push((change, tx));
        }
        self.shared.wake.notify_one();
        rx.recv().await.unwrap_or_else(|_| {
            // The writer thread died (a panic) with our write queued: it
            // may or may not be in the file.
            Err(StoreError::new(
                ErrorClass::Ambiguous,
                "write",
                "the local lease store's writer thread stopped",
            ))
        })
    }
}

impl Drop for LocalLeaseStore {
    /// Commits what is queued, then stops the writer thread (the lock is
    /// released when the last reference goes).
    fn drop(&mut self) {
        self.shared.queue().closed = true;
        self.shared.wake.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Shared {
    fn tables(&self) -> MutexGuard<'_, Tables> {
        // Memory changes only after a successful persist, so the tables are
        // consistent even if a holder panicked.
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer thread: one group commit per wake-up, until closed and
    /// drained.
    fn run_writer(&self) {
        /// Runs when the writer returns or unwinds: a panic fails every
        /// queued write at once (their senders are dropped) and marks the
        /// store dead, so later writes fail at once too instead of waiting
        /// for the caller's deadline.
        struct Stopped<'a>(&'a Shared);
        impl Drop for Stopped<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    let mut queue = self.0.queue();
                    queue.dead = true;
                    queue.pending.clear();
                }
            }
        }
        let _stopped = Stopped(self);
        loop {
            let group = {
                let mut queue = self.queue();
                while queue.pending.is_empty() && !queue.closed {
                    queue = self
                        .wake
                        .wait(queue)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if queue.pending.is_empty() {
                    return;
                }
                std::mem::take(&mut queue.pending)
            };
            #[cfg(test)]
            if self.panic_next.swap(false, Ordering::Relaxed) {
                panic!("writer thread panic injected by a test");
            }
            self.commit_group(group);
        }
    }

    /// Apply `group` in order to a copy of the committed table (a lease
    /// write refused by its condition is answered at once and changes
    /// nothing), persist the copy once, then make it the committed table
    /// and answer the rest with the outcome.
    fn commit_group(&self, group: Vec<(Change, Sender<Result<(), StoreError>>)>) {
        let mut next = self.tables().clone();
        let mut applied = Vec::with_capacity(group.len());
        for (change, reply) in group {
            match change {
                Change::Lease(write) => {
                    if let Some(k) = next
                        .bad_leases
                        .iter()
                        .find(|k| k.key.as_ref() == Some(write.shard()))
                    {
                        // The row exists but does not decode: no write of
                        // ours may replace what we cannot read.
                        let _ = reply.try_send(Err(StoreError::new(
                            ErrorClass::ConditionalFailed,
                            "write_lease",
                            format!("the stored row does not decode: {}", k.error),
                        )));
                        continue;
                    }
                    match write.apply(next.leases.get(write.shard())) {
                        Ok(row) => {
                            next.leases.insert(write.shard().clone(), row);
                            applied.push(reply);
                        }
                        Err(e) => {
                            let _ = reply.try_send(Err(StoreError::new(
                                ErrorClass::ConditionalFailed,
                                "write_lease",
                                e.to_string(),
                            )));
                        }
                    }
                }
                Change::Heartbeat(row) => {
                    let worker = row.owner.worker.to_string();
                    if !HeartbeatRow::put_applies(next.heartbeats.get(&worker), &row) {
                        let _ = reply.try_send(Err(StoreError::new(
                            ErrorClass::ConditionalFailed,
                            "write_heartbeat",
                            format!("the row of {worker:?} is a later incarnation's"),
                        )));
                        continue;
                    }
                    next.bad_heartbeats
                        .retain(|k| k.key.as_deref() != Some(worker.as_str()));
                    next.heartbeats.insert(worker, row);
                    applied.push(reply);
                }
                Change::DeleteLease(shard, token) => {
                    if LeaseRow::delete_applies(next.leases.get(&shard), token) {
                        next.leases.remove(&shard);
                        applied.push(reply);
                    } else {
                        let _ = reply.try_send(Err(StoreError::new(
                            ErrorClass::ConditionalFailed,
                            "delete_lease",
                            format!("the row of {shard} is held, not ended or changed"),
                        )));
                    }
                }
                Change::DeleteHeartbeat(owner, beat) => {
                    let worker = owner.worker.to_string();
                    if HeartbeatRow::delete_applies(next.heartbeats.get(&worker), &owner, beat) {
                        next.heartbeats.remove(&worker);
                        applied.push(reply);
                    } else {
                        let _ = reply.try_send(Err(StoreError::new(
                            ErrorClass::ConditionalFailed,
                            "delete_heartbeat",
                            format!("the row of {worker:?} changed or is gone"),
                        )));
                    }
                }
            }
        }
        if applied.is_empty() {
            return;
        }
        let outcome = self.persist(&next);
        self.commits.fetch_add(1, Ordering::Relaxed);
        let visible = match &outcome {
            Ok(()) => true,
            Err(f) => f.class == ErrorClass::Ambiguous,
        };
        if visible {
            *self.tables() = next;
        }
        for reply in applied {
            let answer = match &outcome {
                Ok(()) => Ok(()),
                Err(f) => Err(f.to_error()),
            };
            let _ = reply.try_send(answer);
        }
    }

    /// Replace `leases.json` with `tables`: Transient when nothing reached
    /// the file, Ambiguous when it was replaced but the directory could not
    /// be synced.
    fn persist(&self, tables: &Tables) -> Result<(), CommitFailure> {
        let temp_path = self.dir.join(TEMP_FILE);
        let data_path = self.dir.join(DATA_FILE);
        let bytes = encode_file(tables).map_err(|e| CommitFailure {
            class: ErrorClass::Transient,
            action: "encode",
            message: e.to_string(),
        })?;
        let written = File::create(&temp_path)
            .and_then(|mut f| {
                f.write_all(&bytes)?;
                f.sync_all()
            })
            .map_err(|e| (e, "write"))
            .and_then(|()| fs::rename(&temp_path, &data_path).map_err(|e| (e, "rename")));
        if let Err((e, action)) = written {
            let _ = fs::remove_file(&temp_path);
            return Err(CommitFailure {
                class: ErrorClass::Transient,
                action,
                message: format!("{}: {e}", temp_path.display()),
            });
        }
        sync_dir(&self.dir).map_err(|e| CommitFailure {
            class: ErrorClass::Ambiguous,
            action: "fsync",
            message: format!(
                "{} replaced, but the directory could not be synced: {e}",
                data_path.display()
            ),
        })
    }
}

/// Make a rename in `dir` durable: fsync the directory on Unix. Windows
/// has no directory fsync (and cannot open a directory as a `File`): there
/// the rename (`MoveFileEx` with replace) is as durable as it gets. Both
/// branches are compiled everywhere; `cfg!` picks one.
fn sync_dir(dir: &Path) -> io::Result<()> {
    if cfg!(unix) {
        File::open(dir)?.sync_all()
    } else {
        Ok(())
    }
}

impl LeaseStore for LocalLeaseStore {
    fn read_leases<'a>(&'a self, stream: &'a StreamId) -> StoreFuture<'a, Rows<LeaseRow>> {
        Box::pin(async move {
            let tables = self.shared.tables();
            Ok(Rows {
                rows: tables
                    .leases
                    .values()
                    .filter(|row| &row.shard.stream == stream)
                    .cloned()
                    .collect(),
                // A bad row that names no stream may be any stream's.
                bad: tables
                    .bad_leases
                    .iter()
                    .filter(|k| k.key.as_ref().is_none_or(|s| &s.stream == stream))
                    .map(|k| k.error.clone())
                    .collect(),
            })
        })
    }

    fn write_lease<'a>(&'a self, write: &'a LeaseWrite) -> StoreFuture<'a, ()> {
        Box::pin(self.write(Change::Lease(write.clone())))
    }

    fn read_heartbeats(&self) -> StoreFuture<'_, Rows<HeartbeatRow>> {
        Box::pin(async move {
            let tables = self.shared.tables();
            Ok(Rows {
                rows: tables.heartbeats.values().cloned().collect(),
                bad: tables
                    .bad_heartbeats
                    .iter()
                    .map(|k| k.error.clone())
                    .collect(),
            })
        })
    }

    fn write_heartbeat<'a>(&'a self, row: &'a HeartbeatRow) -> StoreFuture<'a, ()> {
        Box::pin(self.write(Change::Heartbeat(row.clone())))
    }

    fn delete_lease<'a>(&'a self, shard: &'a ShardRef, token: FencingToken) -> StoreFuture<'a, ()> {
        Box::pin(self.write(Change::DeleteLease(shard.clone(), token)))
    }

    fn delete_heartbeat<'a>(&'a self, owner: &'a Owner, beat: u64) -> StoreFuture<'a, ()> {
        Box::pin(self.write(Change::DeleteHeartbeat(owner.clone(), beat)))
    }

    fn list_streams(&self) -> StoreFuture<'_, Vec<StreamId>> {
        Box::pin(async move {
            let tables = self.shared.tables();
            let mut streams: Vec<StreamId> =
                tables.leases.keys().map(|r| r.stream.clone()).collect();
            streams.dedup();
            Ok(streams)
        })
    }
}

// ---------------------------------------------------------------------------
// File format

#[derive(Serialize)]
struct FileOut<'a> {
    format: &'static str,
    version: u64,
    leases: Vec<Entry<'a, LeaseOut<'a>>>,
    heartbeats: Vec<Entry<'a, HeartbeatOut<'a>>>,
}

/// A row of the file: one we write, or a row that did not decode, written
/// back as found.
#[derive(Serialize)]
#[serde(untagged)]
enum Entry<'a, T> {
    Row(T),
    Kept(&'a Value),
}

#[derive(Serialize)]
struct LeaseOut<'a> {
    stream: &'a str,
    shard: &'a str,
    owner: Option<String>,
    token: u64,
    checkpoint: Option<String>,
    sub_sequence: Option<u32>,
    pending_owner: Option<String>,
    parents: Vec<&'a str>,
    created_ms: u64,
    #[serde(skip_serializing_if = "is_zero")]
    checkpoint_serial: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct HeartbeatOut<'a> {
    owner: String,
    beat: u64,
    held: u32,
    wants: Vec<String>,
    alive: bool,
    streams: Vec<&'a str>,
}

fn encode_file(tables: &Tables) -> serde_json::Result<Vec<u8>> {
    let leases = tables
        .leases
        .values()
        .map(|row| {
            let (checkpoint, sub_sequence) = match row.checkpoint.as_ref().map(|cp| cp.to_parts()) {
                Some((value, sub)) => (Some(value), sub),
                None => (None, None),
            };
            Entry::Row(LeaseOut {
                stream: row.shard.stream.as_str(),
                shard: row.shard.shard.as_str(),
                owner: row.owner.as_ref().map(|o| o.encode()),
                token: row.token.0,
                checkpoint,
                sub_sequence,
                pending_owner: row.pending_owner.as_ref().map(|o| o.encode()),
                parents: row.parents.iter().map(|p| p.as_str()).collect(),
                created_ms: row.created_ms,
                checkpoint_serial: row.checkpoint_serial,
            })
        })
        .chain(tables.bad_leases.iter().map(|k| Entry::Kept(&k.value)))
        .collect();
    let heartbeats = tables
        .heartbeats
        .values()
        .map(|row| {
            Entry::Row(HeartbeatOut {
                owner: row.owner.encode(),
                beat: row.beat,
                held: row.held,
                wants: row.wants.iter().map(encode_shard_ref).collect(),
                alive: row.alive,
                streams: row.streams.iter().map(|s| s.as_str()).collect(),
            })
        })
        .chain(tables.bad_heartbeats.iter().map(|k| Entry::Kept(&k.value)))
        .collect();
    let file = FileOut {
        format: FORMAT,
        version: VERSION,
        leases,
        heartbeats,
    };
    let mut bytes = serde_json::to_vec_pretty(&file)?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn decode_file(bytes: &[u8]) -> Result<Tables, String> {
    let file: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let top = Fields {
        row: "(top level)".to_owned(),
        obj: file.as_object().ok_or("not a JSON object")?,
    };
    let format = top.str("format").map_err(|e| e.to_string())?;
    let version = top.u64("version").map_err(|e| e.to_string())?;
    if format != FORMAT || version != VERSION {
        return Err(format!(
            "format {format:?} version {version}; this kinesin reads {FORMAT:?} version \
             {VERSION} (a newer kinesin wrote it, or it is another file)"
        ));
    }
    let mut tables = Tables::default();
    for (i, value) in top
        .array("leases")
        .map_err(|e| e.to_string())?
        .iter()
        .enumerate()
    {
        let row = match decode_lease(i, value) {
            Ok(row) => row,
            Err(error) => {
                let key = match (value.get("stream"), value.get("shard")) {
                    (Some(Value::String(stream)), Some(Value::String(shard))) => Some(
                        ShardRef::new(StreamId::new(stream.as_str()), ShardId::new(shard.as_str())),
                    ),
                    _ => None,
                };
                tables.bad_leases.push(Kept {
                    key,
                    value: value.clone(),
                    error,
                });
                continue;
            }
        };
        if let Some(dup) = tables.leases.insert(row.shard.clone(), row) {
            return Err(format!("leases[{i}]: a second row for {}", dup.shard));
        }
    }
    for (i, value) in top
        .array("heartbeats")
        .map_err(|e| e.to_string())?
        .iter()
        .enumerate()
    {
        let row = match decode_heartbeat(i, value) {
            Ok(row) => row,
            Err(error) => {
                let key = value
                    .get("owner")
                    .and_then(Value::as_str)
                    .and_then(Owner::decode)
                    .map(|o| o.worker.to_string());
                tables.bad_heartbeats.push(Kept {
                    key,
                    value: value.clone(),
                    error,
                });
                continue;
            }
        };
        let worker = row.owner.worker.to_string();
        if tables.heartbeats.insert(worker.clone(), row).is_some() {
            return Err(format!(
                "heartbeats[{i}]: a second row for worker {worker:?}"
            ));
        }
    }
    Ok(tables)
}

/// Typed access to one JSON object for the shared decoders; every failure
/// names the row and field.
struct Fields<'a> {
    row: String,
    obj: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    /// Missing and `null` both mean absent.
    fn get(&self, field: &'static str) -> Option<&'a Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    fn str(&self, field: &'static str) -> Result<&'a str, RowError> {
        self.opt_str(field)?
            .ok_or_else(|| self.err(field, "is missing"))
    }

    fn array(&self, field: &'static str) -> Result<&'a [Value], RowError> {
        match self.get(field) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(other) => Err(self.err(field, format!("is {other}, not an array"))),
        }
    }
}

impl<'a> RowFields<'a> for Fields<'a> {
    fn row(&self) -> &str {
        &self.row
    }

    fn opt_str(&self, field: &'static str) -> Result<Option<&'a str>, RowError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.err(field, format!("is {other}, not a string"))),
        }
    }

    fn opt_u64(&self, field: &'static str) -> Result<Option<u64>, RowError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.err(field, format!("is {v}, not an unsigned integer"))),
        }
    }

    fn opt_bool(&self, field: &'static str) -> Result<Option<bool>, RowError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.err(field, format!("is {other}, not true/false"))),
        }
    }

    fn strings(&self, field: &'static str) -> Result<Vec<&'a str>, RowError> {
        self.array(field)?
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.err(field, format!("has {v}, not a string")))
            })
            .collect()
    }
}

fn object<'a>(row: String, value: &'a Value) -> Result<Fields<'a>, RowError> {
    match value.as_object() {
        Some(obj) => Ok(Fields { row, obj }),
        None => Err(RowError::new(
            row,
            "(row)",
            format!("is {value}, not an object"),
        )),
    }
}

fn decode_lease(i: usize, value: &Value) -> Result<LeaseRow, RowError> {
    let mut f = object(format!("leases[{i}]"), value)?;
    let stream = f
        .opt_str("stream")?
        .ok_or_else(|| f.err("stream", "is missing"))?;
    let shard = f
        .opt_str("shard")?
        .ok_or_else(|| f.err("shard", "is missing"))?;
    f.row = format!("leases[{i}] ({stream}/{shard})");
    decode_lease_row(
        &f,
        ShardRef::new(StreamId::new(stream), ShardId::new(shard)),
    )
}

fn decode_heartbeat(i: usize, value: &Value) -> Result<HeartbeatRow, RowError> {
    let mut f = object(format!("heartbeats[{i}]"), value)?;
    if let Some(owner) = f.opt_str("owner")? {
        f.row = format!("heartbeats[{i}] ({owner})");
    }
    decode_heartbeat_row(&f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesin_core::ids::{FencingToken, Owner};
    use kinesin_core::sequence::{Checkpoint, ExtSeq, SeqNum};

    fn tables() -> Tables {
        let sref = ShardRef::new(StreamId::new("s"), ShardId::new("shardId-1"));
        let mut row = LeaseRow::new(sref.clone(), vec![ShardId::new("shardId-0")], 5);
        row.owner = Some(Owner::new("w#x", 2));
        row.token = FencingToken(u64::MAX);
        row.checkpoint = Some(Checkpoint::Within(ExtSeq::new(
            SeqNum::parse("12345").unwrap(),
            7,
        )));
        let beat = HeartbeatRow {
            owner: Owner::new("w#x", 2),
            beat: 9,
            held: 1,
            wants: vec![sref.clone()],
            alive: false,
            streams: vec![StreamId::new("s")],
        };
        Tables {
            leases: BTreeMap::from([(sref, row)]),
            heartbeats: BTreeMap::from([("w#x".to_owned(), beat)]),
            ..Tables::default()
        }
    }

    #[test]
    fn file_round_trips() {
        let t = tables();
        let back = decode_file(&encode_file(&t).unwrap()).unwrap();
        assert_eq!(back.leases, t.leases);
        assert_eq!(back.heartbeats, t.heartbeats);
    }

    #[test]
    fn bad_row_is_kept_naming_row_and_field() {
        let text = String::from_utf8(encode_file(&tables()).unwrap()).unwrap();
        // The lease row comes first in the file.
        let bad = text.replacen("\"w#x#2\"", "\"nobody\"", 1);
        let t = decode_file(bad.as_bytes()).unwrap();
        assert!(t.leases.is_empty());
        let kept = &t.bad_leases[0];
        assert_eq!(
            kept.key,
            Some(ShardRef::new(StreamId::new("s"), ShardId::new("shardId-1")))
        );
        let err = kept.error.to_string();
        assert!(err.contains("leases[0] (s/shardId-1)"), "{err}");
        assert!(err.contains("`owner`"), "{err}");
        // Written back as found.
        let again = decode_file(&encode_file(&t).unwrap()).unwrap();
        assert_eq!(again.bad_leases[0].value, kept.value);
        assert_eq!(again.heartbeats, t.heartbeats);
    }

    #[test]
    fn other_version_is_refused() {
        let text = String::from_utf8(encode_file(&Tables::default()).unwrap()).unwrap();
        let err =
            decode_file(text.replace("\"version\": 1", "\"version\": 2").as_bytes()).unwrap_err();
        assert!(err.contains("version 2"), "{err}");
    }

    /// A writer thread that died (a panic) fails the write it held and
    /// every later write at once, instead of leaving each to hang until the
    /// driver's call deadline (15 s per write).
    #[test]
    fn a_dead_writer_thread_fails_writes_at_once() {
        let dir =
            std::env::temp_dir().join(format!("kinesin-local-dead-writer-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = Arc::new(LocalLeaseStore::open(&dir).unwrap());
        store.shared.panic_next.store(true, Ordering::Relaxed);
        let beat = |n: u64| HeartbeatRow {
            owner: Owner::new("w", 1),
            beat: n,
            held: 0,
            wants: Vec::new(),
            alive: true,
            streams: Vec::new(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let s = store.clone();
        std::thread::spawn(move || {
            for n in 0..3 {
                let r = futures_lite::future::block_on(s.write_heartbeat(&beat(n)));
                let _ = tx.send(r.map_err(|e| e.class()));
            }
        });
        // Hang detection only (the old code never answered the later ones).
        let wait = std::time::Duration::from_secs(30);
        let first = rx.recv_timeout(wait).expect("the held write is answered");
        assert_eq!(first, Err(ErrorClass::Ambiguous));
        // The second may be queued while the writer unwinds (the held
        // write's sender drops before the store is marked dead): it fails
        // as Ambiguous then; any write after that sees the dead store.
        let second = rx.recv_timeout(wait).expect("a later write fails at once");
        assert!(
            matches!(second, Err(ErrorClass::Transient | ErrorClass::Ambiguous)),
            "{second:?}"
        );
        let third = rx.recv_timeout(wait).expect("a later write fails at once");
        assert_eq!(third, Err(ErrorClass::Transient));
        drop(store);
        let _ = fs::remove_dir_all(&dir);
    }
}
