//! `kinesin consume --dead-letter FILE|kinesis:STREAM`: where batches
//! nacked `--max-deliveries` times go (poison records), so the shard moves
//! on without losing them.
//!
//! Rule encoded (the library's dead-letter contract, `DeadLetter::accept`):
//! a dead letter is accepted, and its records may then be checkpointed,
//! only once it is stored: for a file, its line written, flushed and
//! `fsync`ed (`File::sync_data`); for a Kinesis stream, every record put
//! (PutRecords answered with no failed entry, failed entries retried).
//! A dead letter that could not be stored is rejected: the checkpoint stays
//! before it and the library offers it again after the redelivery backoff.
//!
//! Formats. File: one JSON object per dead letter, `{"stream", "shard",
//! "first_sequence", "first_sub_sequence", "last_sequence",
//! "last_sub_sequence", "attempts", "fencing_token", "records": [...]}`,
//! the records being the objects `consume` prints. Kinesis: one record per
//! user record, its data the JSON object `consume` prints plus
//! `"attempts"`, its partition key the original one.
//!
//! Invariants: a failed file write leaves no partial line behind when the
//! file can be truncated back (a regular file); a letter is never accepted
//! after an error. Storage is at least once: a letter whose store succeeded
//! but whose shard was lost before the checkpoint is stored again by the
//! next owner.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_lite::StreamExt;
use kinesin_aws::{DeadLetter, DeadLetters};
use serde::Serialize;
use tracing::{info, warn};

use crate::consume::{Line, StreamNames};

/// Largest Kinesis record: data and partition key together (1 MiB).
const KINESIS_RECORD_MAX: usize = 1 << 20;
/// PutRecords limits: entries and bytes per call.
const PUT_MAX_ENTRIES: usize = 500;
const PUT_MAX_BYTES: usize = 5 << 20;

/// Where dead letters go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    File(PathBuf),
    Kinesis(String),
}

/// `--dead-letter` parser: `kinesis:STREAM` (name or ARN) or a file path.
pub fn parse_target(s: &str) -> Result<Target, String> {
    match s.strip_prefix("kinesis:") {
        Some("") => Err("kinesis: needs a stream name or ARN, e.g. kinesis:orders-dlq".into()),
        Some(stream) => Ok(Target::Kinesis(stream.to_owned())),
        None if s.is_empty() => Err("expected a file path or kinesis:STREAM".into()),
        None => Ok(Target::File(PathBuf::from(s))),
    }
}

#[derive(Serialize)]
struct FileLetter<'a> {
    stream: &'a str,
    shard: &'a str,
    first_sequence: &'a str,
    first_sub_sequence: u32,
    last_sequence: &'a str,
    last_sub_sequence: u32,
    attempts: u32,
    fencing_token: u64,
    records: Vec<Line<'a>>,
}

#[derive(Serialize)]
struct KinesisLetter<'a> {
    #[serde(flatten)]
    line: Line<'a>,
    attempts: u32,
}

/// An open dead-letter target.
pub enum Writer {
    File {
        path: PathBuf,
        file: std::fs::File,
    },
    Kinesis {
        client: aws_sdk_kinesis::Client,
        stream: String,
        call_timeout: Duration,
    },
}

impl Writer {
    /// Open the target before consuming starts (a file that cannot be
    /// opened for appending is an error now, not at the first poison
    /// record).
    pub fn open(
        target: &Target,
        sdk: &aws_types::SdkConfig,
        call_timeout: Duration,
    ) -> Result<Self> {
        Ok(match target {
            Target::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| {
                        format!(
                            "--dead-letter: cannot open {} for appending",
                            path.display()
                        )
                    })?;
                Writer::File {
                    path: path.clone(),
                    file,
                }
            }
            Target::Kinesis(stream) => Writer::Kinesis {
                client: aws_sdk_kinesis::Client::new(sdk),
                stream: stream.clone(),
                call_timeout,
            },
        })
    }

    fn describe(&self) -> String {
        match self {
            Writer::File { path, .. } => format!("file {}", path.display()),
            Writer::Kinesis { stream, .. } => format!("Kinesis stream {stream}"),
        }
    }

    /// Store one dead letter (see the module rule); `Ok` means stored.
    pub async fn store(&mut self, letter: &DeadLetter, names: &mut StreamNames) -> Result<()> {
        let stream = names.display(letter.shard().stream.as_str()).to_owned();
        let shard = letter.shard().shard.as_str();
        let token = letter.fencing_token();
        let b64: Vec<String> = letter
            .records()
            .iter()
            .map(|r| crate::consume::base64(r.data()))
            .collect();
        let lines: Vec<Line<'_>> = letter
            .records()
            .iter()
            .zip(&b64)
            .map(|(r, data)| Line::new(&stream, shard, r, data, token))
            .collect();
        match self {
            Writer::File { path, file } => {
                let Some((first, last)) = letter.sequence_range() else {
                    return Ok(()); // no record: nothing to keep
                };
                let mut text = serde_json::to_vec(&FileLetter {
                    stream: &stream,
                    shard,
                    first_sequence: first.seq.as_str(),
                    first_sub_sequence: first.sub,
                    last_sequence: last.seq.as_str(),
                    last_sub_sequence: last.sub,
                    attempts: letter.attempts(),
                    fencing_token: token,
                    records: lines,
                })?;
                text.push(b'\n');
                let path = path.clone();
                tokio::task::block_in_place(|| append_synced(file, &text))
                    .with_context(|| format!("writing dead letter to {}", path.display()))
            }
            Writer::Kinesis {
                client,
                stream: target,
                call_timeout,
            } => {
                let mut items: Vec<(String, Vec<u8>, u64)> = Vec::with_capacity(lines.len());
                for line in lines {
                    let key = line.partition_key.to_owned();
                    let data = serde_json::to_vec(&KinesisLetter {
                        line,
                        attempts: letter.attempts(),
                    })?;
                    if data.len() + key.len() > KINESIS_RECORD_MAX {
                        bail!(
                            "a dead-lettered record of {shard} takes {} bytes as JSON, more than a \
                             Kinesis record holds (1 MiB): use --dead-letter FILE for records over \
                             ~760 KB",
                            data.len() + key.len()
                        );
                    }
                    items.push((key, data, 1));
                }
                let mut start = 0;
                while start < items.len() {
                    let mut end = start;
                    let mut bytes = 0;
                    while end < items.len()
                        && end - start < PUT_MAX_ENTRIES
                        && bytes + items[end].0.len() + items[end].1.len() <= PUT_MAX_BYTES
                    {
                        bytes += items[end].0.len() + items[end].1.len();
                        end += 1;
                    }
                    crate::produce::put_all(client, target, &items[start..end], *call_timeout)
                        .await?;
                    start = end;
                }
                Ok(())
            }
        }
    }
}

/// Append `text` and make it durable; on failure, cut a regular file back
/// to its length before (no partial line left).
fn append_synced(file: &mut std::fs::File, text: &[u8]) -> Result<()> {
    let before = file.metadata().map(|m| m.is_file().then_some(m.len()));
    let r = file
        .write_all(text)
        .and_then(|()| file.flush())
        .and_then(|()| file.sync_data());
    if let Err(e) = r {
        if let Ok(Some(len)) = before {
            let _ = file.set_len(len);
        }
        return Err(e.into());
    }
    Ok(())
}

/// Store every dead letter as it comes, until the consumer has shut down;
/// returns how many were stored.
pub async fn run(mut writer: Writer, mut letters: DeadLetters, mut names: StreamNames) -> u64 {
    let mut stored = 0;
    let target = writer.describe();
    while let Some(letter) = letters.next().await {
        let shard = letter.shard().shard.as_str().to_owned();
        let n = letter.records().len();
        let attempts = letter.attempts();
        match writer.store(&letter, &mut names).await {
            Ok(()) => {
                letter.accept();
                stored += 1;
                info!(
                    "dead letter: {n} records of {shard} nacked {attempts} times, stored in {target}"
                );
            }
            Err(e) => {
                letter.reject();
                warn!(
                    "dead letter of {shard} not stored ({e:#}): the checkpoint stays before it, \
                     offered again after the redelivery backoff"
                );
            }
        }
    }
    stored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_a_kinesis_stream_or_a_file() {
        assert_eq!(
            parse_target("kinesis:dlq"),
            Ok(Target::Kinesis("dlq".into()))
        );
        assert_eq!(
            parse_target("kinesis:arn:aws:kinesis:eu-west-1:1:stream/dlq"),
            Ok(Target::Kinesis(
                "arn:aws:kinesis:eu-west-1:1:stream/dlq".into()
            ))
        );
        assert_eq!(
            parse_target("./dead.jsonl"),
            Ok(Target::File("./dead.jsonl".into()))
        );
        assert!(parse_target("kinesis:").is_err());
        assert!(parse_target("").is_err());
    }

    #[test]
    fn appends_are_synced_and_a_full_disk_is_an_error() {
        let path = std::env::temp_dir().join(format!("kinesin-dl-{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        append_synced(&mut f, b"{\"a\":1}\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n");
        drop(f);
        let _ = std::fs::remove_file(&path);
        #[cfg(target_os = "linux")]
        {
            // /dev/full: every write fails with ENOSPC, as a full disk does.
            let mut full = std::fs::OpenOptions::new()
                .append(true)
                .open("/dev/full")
                .unwrap();
            assert!(append_synced(&mut full, b"{\"a\":2}\n").is_err());
        }
    }
}
