//! `kinesin consume --exec CMD`: each batch is handed to a command, the way
//! KCL's MultiLangDaemon lets a program in any language process records.
//!
//! Rule encoded: the command gets the batch as JSON Lines on its stdin (the
//! lines `consume` prints, one per user record), and the batch's shard in
//! its environment (`KINESIN_STREAM`, `KINESIN_SHARD`,
//! `KINESIN_FENCING_TOKEN`, `KINESIN_RECORDS`, `KINESIN_REDELIVERY`). Exit
//! status 0 acknowledges the batch (its records may be checkpointed); any
//! other status, death by a signal or `--exec-timeout` nacks it (it is
//! delivered again after the redelivery backoff, or dead-lettered past
//! `--max-deliveries`). A command that stops reading its stdin early is
//! judged by its exit status alone.
//!
//! Invariants: one command runs per batch and the batch is acked or nacked
//! only after the command has exited (or was killed); the command runs
//! through the platform's shell: `sh -c` on Unix, `cmd /C` elsewhere
//! (Windows). Both shell choices are compiled on every platform; `cfg`
//! only selects which one is used, so both are unit-tested here.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::AsyncWriteExt;

/// How a platform runs a command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    /// `sh -c LINE`.
    Posix,
    /// `cmd /C LINE`.
    Cmd,
}

impl Shell {
    /// The shell of the platform this binary runs on.
    pub fn native() -> Shell {
        if cfg!(unix) {
            Shell::Posix
        } else {
            Shell::Cmd
        }
    }

    /// Program and arguments that run `line`.
    pub fn argv(self, line: &str) -> (&'static str, Vec<String>) {
        match self {
            Shell::Posix => ("sh", vec!["-c".into(), line.to_owned()]),
            Shell::Cmd => ("cmd", vec!["/C".into(), line.to_owned()]),
        }
    }
}

/// The batch's shard and delivery, given to the command as environment.
#[derive(Clone, Debug)]
pub struct BatchEnv<'a> {
    pub stream: &'a str,
    pub shard: &'a str,
    pub fencing_token: u64,
    pub records: usize,
    pub redelivery: bool,
}

/// What the command said about a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Exit status 0.
    Ack,
    /// Anything else, with the reason (logged).
    Nack(String),
}

/// The command of `--exec`.
#[derive(Clone, Debug)]
pub struct Exec {
    line: String,
    shell: Shell,
    timeout: Option<Duration>,
}

impl Exec {
    pub fn new(line: &str, timeout: Option<Duration>) -> Self {
        Exec {
            line: line.to_owned(),
            shell: Shell::native(),
            timeout,
        }
    }

    /// Run the command once with `input` on its stdin. `Err` only when it
    /// could not be started at all (no shell): the caller stops.
    pub async fn run(&self, input: &[u8], env: &BatchEnv<'_>) -> Result<Verdict> {
        let (program, args) = self.shell.argv(&self.line);
        let mut child = tokio::process::Command::new(program)
            .args(&args)
            .env("KINESIN_STREAM", env.stream)
            .env("KINESIN_SHARD", env.shard)
            .env("KINESIN_FENCING_TOKEN", env.fencing_token.to_string())
            .env("KINESIN_RECORDS", env.records.to_string())
            .env("KINESIN_REDELIVERY", if env.redelivery { "1" } else { "0" })
            .stdin(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("--exec: cannot start {program} to run {:?}", self.line))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let feed = async move {
            let r = stdin.write_all(input).await;
            drop(stdin); // EOF
            r
        };
        let run = async { tokio::join!(feed, child.wait()) };
        let (fed, status) = match self.timeout {
            Some(t) => match tokio::time::timeout(t, run).await {
                Ok(v) => v,
                Err(_) => {
                    let _ = child.kill().await;
                    return Ok(Verdict::Nack(format!(
                        "still running after --exec-timeout {t:?}: killed"
                    )));
                }
            },
            None => run.await,
        };
        let status = match status {
            Ok(s) => s,
            Err(e) => return Ok(Verdict::Nack(format!("waiting for it failed: {e}"))),
        };
        if let Err(e) = fed {
            if e.kind() != std::io::ErrorKind::BrokenPipe && status.success() {
                return Ok(Verdict::Nack(format!("writing its stdin failed: {e}")));
            }
        }
        Ok(verdict(status))
    }
}

fn verdict(status: ExitStatus) -> Verdict {
    if status.success() {
        Verdict::Ack
    } else {
        match status.code() {
            Some(c) => Verdict::Nack(format!("exit status {c}")),
            None => Verdict::Nack(format!("{status}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shells_wrap_the_whole_line_as_one_argument() {
        let line = "grep -q poison || cat >> out.jsonl";
        assert_eq!(
            Shell::Posix.argv(line),
            ("sh", vec!["-c".to_owned(), line.to_owned()])
        );
        assert_eq!(
            Shell::Cmd.argv(line),
            ("cmd", vec!["/C".to_owned(), line.to_owned()])
        );
        assert_eq!(
            Shell::native(),
            if cfg!(unix) { Shell::Posix } else { Shell::Cmd }
        );
    }

    #[cfg(unix)]
    fn env() -> BatchEnv<'static> {
        BatchEnv {
            stream: "s",
            shard: "shardId-000000000001",
            fencing_token: 7,
            records: 2,
            redelivery: false,
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn exit_zero_acks_other_statuses_and_timeouts_nack() {
        let input = b"{\"a\":1}\n{\"a\":2}\n";
        let ok = Exec::new(
            "test \"$(wc -l)\" -eq 2 && test \"$KINESIN_SHARD\" = shardId-000000000001 && test \"$KINESIN_FENCING_TOKEN\" = 7",
            None,
        );
        assert_eq!(ok.run(input, &env()).await.unwrap(), Verdict::Ack);
        let fail = Exec::new("cat >/dev/null; exit 3", None);
        assert_eq!(
            fail.run(input, &env()).await.unwrap(),
            Verdict::Nack("exit status 3".into())
        );
        // Stops reading at once: judged by its status alone.
        let big = vec![b'x'; 1 << 20];
        let early = Exec::new("exit 0", None);
        assert_eq!(early.run(&big, &env()).await.unwrap(), Verdict::Ack);
        let slow = Exec::new("sleep 5", Some(Duration::from_millis(200)));
        let v = slow.run(input, &env()).await.unwrap();
        assert!(
            matches!(&v, Verdict::Nack(r) if r.contains("--exec-timeout")),
            "{v:?}"
        );
    }
}
