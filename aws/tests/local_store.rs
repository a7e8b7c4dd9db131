//! LocalLeaseStore: the same checks as the DynamoDB store, plus the lock
//! and durability of the directory.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Result};
use kinesin_aws::{LeaseStore, LocalLeaseStore, LocalStoreError};
use kinesin_core::ids::{FencingToken, Owner, StreamId};
use kinesin_core::io::ErrorClass;
use kinesin_core::sequence::Checkpoint;
use kinesin_core::table::{HeartbeatRow, LeaseRow, LeaseWrite};

/// Set in the child process of `local_store_refuses_a_second_process`.
const CHILD_DIR_ENV: &str = "KINESIN_TEST_LOCAL_STORE_CHILD_DIR";

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "kinesin-local-store-{test}-{}-{nanos}",
            std::process::id()
        ));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn local_lease_life_round_trip() -> Result<()> {
    let dir = TempDir::new("life");
    let store = LocalLeaseStore::open(&dir.0)?;
    common::lease_life_round_trip(&store, "orders").await
}

#[tokio::test]
async fn local_store_lists_each_stream_with_leases_once() -> Result<()> {
    let dir = TempDir::new("list");
    let store = LocalLeaseStore::open(&dir.0)?;
    common::list_streams_names_each_stream_with_leases_once(&store).await
}

#[tokio::test]
async fn local_store_decides_like_lease_write_apply() -> Result<()> {
    let dir = TempDir::new("conformance");
    let store = LocalLeaseStore::open(&dir.0)?;
    let (accepted, refused) = common::check_store_matches_apply(&store, "conf").await?;
    eprintln!("conformance: {accepted} accepted, {refused} refused, all as LeaseWrite::apply");
    Ok(())
}

#[tokio::test]
async fn local_heartbeats_round_trip() -> Result<()> {
    let dir = TempDir::new("heartbeats");
    let store = LocalLeaseStore::open(&dir.0)?;
    common::heartbeats_round_trip(&store, "orders").await
}

#[tokio::test]
async fn local_store_survives_reopen() -> Result<()> {
    let dir = TempDir::new("reopen");
    let s = common::shard("orders", "shardId-000000000000");
    let owner = Owner::new("w", 1);
    let beat = HeartbeatRow {
        owner: owner.clone(),
        beat: 3,
        held: 1,
        wants: vec![],
        alive: true,
        streams: Vec::new(),
    };
    let (leases, beats) = {
        let store = LocalLeaseStore::open(&dir.0)?;
        store
            .write_lease(&LeaseWrite::Create(LeaseRow::new(s.clone(), vec![], 5)))
            .await?;
        store
            .write_lease(&LeaseWrite::Take {
                shard: s.clone(),
                expect_owner: None,
                expect_token: FencingToken(0),
                to: owner.clone(),
            })
            .await?;
        store
            .write_lease(&LeaseWrite::Checkpoint {
                shard: s.clone(),
                owner,
                token: FencingToken(1),
                checkpoint: Checkpoint::ShardEnd,
                serial: 1,
            })
            .await?;
        store.write_heartbeat(&beat).await?;
        (
            store.read_leases(&s.stream).await?.rows,
            store.read_heartbeats().await?.rows,
        )
    };
    ensure!(leases.len() == 1 && leases[0].checkpoint == Some(Checkpoint::ShardEnd));

    let store = LocalLeaseStore::open(&dir.0)?;
    ensure!(store.read_leases(&s.stream).await?.rows == leases);
    ensure!(store.read_heartbeats().await?.rows == beats && beats == [beat]);
    ensure!(
        !dir.0.join("leases.json.tmp").exists(),
        "no temp file is left behind"
    );
    Ok(())
}

#[test]
fn local_store_refuses_a_second_open_in_this_process() -> Result<()> {
    let dir = TempDir::new("second-open");
    let first = LocalLeaseStore::open(&dir.0)?;
    match LocalLeaseStore::open(&dir.0) {
        Err(LocalStoreError::Locked { .. }) => {}
        other => bail!("expected Locked, got {other:?}"),
    }
    drop(first);
    LocalLeaseStore::open(&dir.0)?;
    Ok(())
}

/// Runs twice: as the test, and (with `CHILD_DIR_ENV` set) as the second
/// process that the test starts on the same directory.
#[test]
fn local_store_refuses_a_second_process() -> Result<()> {
    if let Some(dir) = std::env::var_os(CHILD_DIR_ENV) {
        match LocalLeaseStore::open(PathBuf::from(dir)) {
            Err(err @ LocalStoreError::Locked { .. }) => println!("CHILD LOCKED: {err}"),
            other => bail!("the child must be refused with Locked, got {other:?}"),
        }
        return Ok(());
    }
    let dir = TempDir::new("second-process");
    let _held = LocalLeaseStore::open(&dir.0)?;
    let out = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "local_store_refuses_a_second_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, &dir.0)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && stdout.contains("CHILD LOCKED:"),
        "child did not see the lock:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    ensure!(
        stdout.contains(&format!("pid {}", std::process::id())),
        "the error names the holder's pid: {stdout}"
    );
    Ok(())
}

#[test]
fn local_store_reports_a_corrupt_file_by_name() -> Result<()> {
    let dir = TempDir::new("corrupt");
    std::fs::create_dir_all(&dir.0)?;
    std::fs::write(
        dir.0.join("leases.json"),
        b"{\"format\": \"kinesin-local-lease-store\", \"version\": 1, \"leases\": {}}",
    )?;
    match LocalLeaseStore::open(&dir.0) {
        Err(err @ LocalStoreError::Corrupt { .. }) => {
            let msg = err.to_string();
            ensure!(msg.contains("leases.json"), "{msg}");
            ensure!(msg.contains("`leases`"), "{msg}");
        }
        other => bail!("expected Corrupt, got {other:?}"),
    }
    std::fs::write(dir.0.join("leases.json"), b"not json")?;
    ensure!(matches!(
        LocalLeaseStore::open(&dir.0),
        Err(LocalStoreError::Corrupt { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn local_bad_rows_are_named_and_skipped_and_kept() -> Result<()> {
    let dir = TempDir::new("badrows");
    {
        let store = LocalLeaseStore::open(&dir.0)?;
        common::add_good_rows(&store, "s").await?;
    }
    // One lease row with a negative token, one heartbeat row whose beat is
    // not a number, next to the good rows.
    let path = dir.0.join("leases.json");
    let mut file: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    file["leases"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(
            {"stream": "s", "shard": "shardId-7", "token": -1, "created_ms": 0}
        ));
    file["heartbeats"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(
            {"owner": "bad#1", "beat": "many", "held": 0, "alive": true}
        ));
    std::fs::write(&path, serde_json::to_vec(&file)?)?;
    {
        let store = LocalLeaseStore::open(&dir.0)?;
        common::bad_rows_are_named_and_skipped(
            &store,
            "s",
            "shardId-7",
            ("(s/shardId-7)", "token"),
            ("(bad#1)", "beat"),
        )
        .await?;
    }
    // Written back as found: still there, still named, after the rewrites.
    let store = LocalLeaseStore::open(&dir.0)?;
    let leases = store.read_leases(&StreamId::new("s")).await?;
    ensure!(
        leases.rows.len() == 1 && leases.bad.len() == 1 && leases.bad[0].field == "token",
        "{leases:?}"
    );
    ensure!(store.read_heartbeats().await?.bad.is_empty());
    Ok(())
}

#[tokio::test]
async fn local_store_keeps_streams_apart() -> Result<()> {
    let dir = TempDir::new("streams");
    let store = LocalLeaseStore::open(&dir.0)?;
    for stream in ["a", "b"] {
        for shard in ["shardId-1", "shardId-0"] {
            let s = common::shard(stream, shard);
            store
                .write_lease(&LeaseWrite::Create(LeaseRow::new(s, vec![], 0)))
                .await?;
        }
    }
    let rows = store.read_leases(&StreamId::new("b")).await?.rows;
    let names: Vec<String> = rows.iter().map(|r| r.shard.to_string()).collect();
    ensure!(names == ["b:shardId-0", "b:shardId-1"], "{names:?}");
    Ok(())
}

#[tokio::test]
async fn local_store_group_commit_answers_each_write_on_its_own() -> Result<()> {
    let dir = TempDir::new("group");
    let store = std::sync::Arc::new(LocalLeaseStore::open(&dir.0)?);
    // 64 creates of distinct rows and 2 of the same row, all at once: every
    // distinct one succeeds, exactly one of the twins is refused by its
    // condition, however the writer groups them.
    let mut tasks = Vec::new();
    for i in 0..66 {
        let store = store.clone();
        let shard = if i < 64 {
            format!("shardId-{i:012}")
        } else {
            "shardId-twin".to_owned()
        };
        tasks.push(tokio::spawn(async move {
            let s = common::shard("group", &shard);
            (
                i,
                store
                    .write_lease(&LeaseWrite::Create(LeaseRow::new(s, vec![], 0)))
                    .await
                    .map_err(|e| e.class()),
            )
        }));
    }
    let mut twins = Vec::new();
    for task in tasks {
        let (i, result) = task.await?;
        if i < 64 {
            ensure!(result.is_ok(), "create {i}: {result:?}");
        } else {
            twins.push(result);
        }
    }
    twins.sort_by_key(|r| r.is_ok());
    ensure!(
        twins == [Err(ErrorClass::ConditionalFailed), Ok(())],
        "one twin created, one refused: {twins:?}"
    );
    let commits = store.file_commits();
    ensure!(
        (1..=65).contains(&commits),
        "{commits} file commits for 65 writes"
    );
    eprintln!("66 concurrent creates: {commits} file commits");
    drop(store);
    let store = LocalLeaseStore::open(&dir.0)?;
    ensure!(store.read_leases(&StreamId::new("group")).await?.rows.len() == 65);
    Ok(())
}

/// A store directory (or its table file) reached through a symbolic link
/// is refused with an error naming the link: whoever can change the link
/// could redirect the lease table and its lock.
#[cfg(unix)]
#[test]
fn local_store_refuses_a_directory_reached_through_a_symlink() -> Result<()> {
    let dir = TempDir::new("symlink");
    let real = dir.0.join("real");
    std::fs::create_dir_all(&real)?;
    let link = dir.0.join("link");
    std::os::unix::fs::symlink(&real, &link)?;
    match LocalLeaseStore::open(&link) {
        Err(LocalStoreError::Symlink { path }) => ensure!(path == link, "names {path:?}"),
        other => bail!("expected Symlink, got {other:?}"),
    }
    // The table file as a link: refused too.
    let elsewhere = dir.0.join("elsewhere.json");
    std::fs::write(&elsewhere, b"")?;
    std::os::unix::fs::symlink(&elsewhere, real.join("leases.json"))?;
    match LocalLeaseStore::open(&real) {
        Err(LocalStoreError::Symlink { path }) => {
            ensure!(path == real.join("leases.json"), "names {path:?}")
        }
        other => bail!("expected Symlink, got {other:?}"),
    }
    Ok(())
}

/// A directory (or a table file in it) owned by another user is refused
/// before anything is written in it, with an error naming it and saying
/// what to do: its owner could replace the table under the process.
#[cfg(unix)]
#[test]
fn local_store_refuses_a_directory_owned_by_another_user() -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new("not-owned");
    let store = dir.0.join("store");
    std::fs::create_dir_all(&store)?;
    let me = std::fs::metadata(&store)?.uid();
    // Another user's directory: as root, chown a fresh one to `nobody`;
    // otherwise the root directory is one (owned by root).
    let (theirs, owner) = if me == 0 {
        std::os::unix::fs::chown(&store, Some(65534), None)?;
        (store.clone(), 65534)
    } else {
        (PathBuf::from("/"), 0)
    };
    match LocalLeaseStore::open(&theirs) {
        Err(e) => {
            let message = e.to_string();
            match e {
                LocalStoreError::NotOwned {
                    path,
                    owner: o,
                    uid,
                } => ensure!(
                    path == theirs && o == owner && uid == me,
                    "names {path:?}, owner {o}, uid {uid}"
                ),
                other => bail!("expected NotOwned, got {other:?}"),
            }
            ensure!(
                message.contains("belongs to uid") && message.contains("chown"),
                "{message}"
            );
        }
        Ok(_) => bail!("opened a directory owned by uid {owner}"),
    }
    if me == 0 {
        ensure!(
            !store.join("lock").exists(),
            "a lock file was created in the refused directory"
        );
        // Our directory again, with another user's table file in it.
        std::os::unix::fs::chown(&store, Some(0), None)?;
        let data = store.join("leases.json");
        std::fs::write(&data, b"")?;
        std::os::unix::fs::chown(&data, Some(65534), None)?;
        match LocalLeaseStore::open(&store) {
            Err(LocalStoreError::NotOwned { path, .. }) => {
                ensure!(path == data, "names {path:?}")
            }
            other => bail!("expected NotOwned for the table file, got {other:?}"),
        }
        std::fs::remove_file(&data)?;
        LocalLeaseStore::open(&store)?;
    }
    Ok(())
}
