//! `kinesin leases`: the lease table as a text table on stdout; rows that
//! do not decode are left out and named on stderr. Every call has the
//! `--call-timeout` deadline (`deadline`). `import` and `rewind` live in
//! `import.rs`.

use std::collections::BTreeSet;
use std::process::ExitCode;

use anyhow::{Context, Result};
use kinesin_aws::{DynamoLeaseStore, LeaseStore};
use kinesin_core::ids::StreamId;
use kinesin_core::io::ErrorClass;
use kinesin_core::sequence::Checkpoint;
use kinesin_core::table::{HeartbeatRow, LeaseRow};

use crate::deadline::call;
use crate::LeasesArgs;

pub async fn run(args: LeasesArgs) -> Result<ExitCode> {
    let after = crate::deadline::from_secs(args.call_timeout)?;
    let table = args.lease_table.clone().unwrap_or_default();
    let sdk = crate::aws_config(None).await?;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let store = DynamoLeaseStore::new(client, &table);
    let heartbeats = match tokio::time::timeout(after, store.read_heartbeats()).await {
        Err(_) => anyhow::bail!(
            "DynamoDB Query (heartbeats) got no answer within {after:?}: check the endpoint, the \
             network and the region the AWS config points at (--call-timeout sets the deadline)"
        ),
        Ok(Ok(h)) => {
            report_bad_rows(&h.bad);
            h.rows
        }
        Ok(Err(e)) if e.class() == ErrorClass::ResourceNotFound => {
            anyhow::bail!("lease table {table:?} does not exist")
        }
        Ok(Err(e)) => return Err(anyhow::Error::new(e).context("reading heartbeats")),
    };
    let mut streams: Vec<String> = call(
        "DynamoDB Scan (streams of the lease table; needs dynamodb:Scan)",
        after,
        store.list_streams(),
    )
    .await?
    .into_iter()
    .map(|s| s.as_str().to_owned())
    .collect();
    if let Some(want) = &args.stream {
        streams.retain(|s| s == want || s.rsplit_once(":stream/").is_some_and(|(_, n)| n == want));
        if streams.is_empty() {
            anyhow::bail!("no lease of stream {want:?} in table {table:?}");
        }
    }
    let mut rows: Vec<[String; 7]> = Vec::new();
    for s in &streams {
        let stream = StreamId::new(s.as_str());
        let leases = call(
            "DynamoDB Query (lease rows)",
            after,
            store.read_leases(&stream),
        )
        .await
        .with_context(|| format!("reading the leases of {s}"))?;
        report_bad_rows(&leases.bad);
        let leases = leases.rows;
        let ended: BTreeSet<&str> = leases
            .iter()
            .filter(|l| l.checkpoint == Some(Checkpoint::ShardEnd))
            .map(|l| l.shard.shard.as_str())
            .collect();
        for l in &leases {
            rows.push(row(s, l, &ended, &heartbeats));
        }
    }
    print_table(
        [
            "STREAM",
            "SHARD",
            "OWNER",
            "TOKEN",
            "CHECKPOINT",
            "PARENTS",
            "STATE",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// Rows that do not decode are left out of the table and named on stderr.
fn report_bad_rows(bad: &[kinesin_aws::RowError]) {
    for e in bad {
        eprintln!("warning: {e} (left out below)");
    }
}

fn row(
    stream: &str,
    l: &LeaseRow,
    ended: &BTreeSet<&str>,
    heartbeats: &[HeartbeatRow],
) -> [String; 7] {
    let name = stream
        .rsplit_once(":stream/")
        .map(|(_, n)| n)
        .unwrap_or(stream);
    let owner = l
        .owner
        .as_ref()
        .map(|o| o.worker.to_string())
        .unwrap_or_else(|| "-".into());
    let checkpoint = match &l.checkpoint {
        None => "-".to_owned(),
        Some(c) => match c.to_parts() {
            (v, None) => v,
            (v, Some(sub)) => format!("{v}/{sub}"),
        },
    };
    let parents = if l.parents.is_empty() {
        "-".to_owned()
    } else {
        l.parents
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    let state = if l.checkpoint == Some(Checkpoint::ShardEnd) {
        "ended".to_owned()
    } else if let Some(o) = &l.owner {
        let hb = heartbeats.iter().find(|h| h.owner.worker == o.worker);
        let base = match hb {
            Some(h) if h.owner.incarnation != o.incarnation => {
                "held by an earlier incarnation".to_owned()
            }
            Some(h) if !h.alive => "held (owner stopped)".to_owned(),
            None => "held (no heartbeat)".to_owned(),
            Some(_) => "held".to_owned(),
        };
        match &l.pending_owner {
            Some(p) => format!("{base}, hand-off to {}", p.worker),
            None => base,
        }
    } else if l.parents.iter().any(|p| !ended.contains(p.as_str())) {
        "free (waits for parents)".to_owned()
    } else {
        "free".to_owned()
    };
    [
        name.to_owned(),
        l.shard.shard.as_str().to_owned(),
        owner,
        l.token.0.to_string(),
        checkpoint,
        parents,
        state,
    ]
}

fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}
