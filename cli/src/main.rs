//! `kinesin`: consume Kinesis streams as JSON Lines, produce test records,
//! inspect a lease table.
//!
//! Exit codes: 0 on success (also after SIGINT / SIGTERM, once the final
//! checkpoints are written and the leases released), 2 on a usage error
//! (clap), 1 on any other error, printed as one line on stderr.
#![forbid(unsafe_code)]

mod admin;
mod config;
mod consume;
mod deadletter;
mod deadline;
mod exec;
mod import;
mod leases;
mod produce;
mod session;
mod signals;
mod stats;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Consume Amazon Kinesis Data Streams across a fleet of workers (polling or
/// Enhanced Fan-Out, leases and checkpoints in DynamoDB or a local store).
///
/// Endpoints, region and credentials come from the standard AWS environment
/// (AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL_KINESIS, ...). Logs go to
/// stderr, filtered by RUST_LOG (default: info for kinesin, warn otherwise).
#[derive(Parser, Debug)]
#[command(name = "kinesin", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Consume streams; one JSON object per user record on stdout.
    Consume(ConsumeArgs),
    /// Put test records into a stream (summary on stderr).
    Produce(ProduceArgs),
    /// Print a lease table: stream, shard, owner, fencing token, checkpoint,
    /// parent shards, state; `import` checkpoints from Bento or KCL,
    /// `rewind` a stopped fleet.
    Leases(LeasesArgs),
    /// One view of a fleet from the lease table and the stream: per shard
    /// owner, token, checkpoint, parents/children, lag; per worker heartbeat
    /// age and leases. Reads only.
    Status(status::StatusArgs),
    /// Small operations for demos and tests (split a shard, tally outputs).
    #[command(hide = true, subcommand)]
    Admin(admin::AdminCommand),
}

/// `kinesin consume`.
#[derive(Args, Debug)]
#[command(after_help = "\
stdout: JSON Lines, one object per user record (KPL sub-records de-aggregated):
  {\"stream\":\"...\",\"shard\":\"shardId-000000000001\",\"sequence\":\"4959...\",\"sub_sequence\":0,
   \"partition_key\":\"...\",\"data\":\"<base64>\",\"arrival_ms\":1764090000000,\"fencing_token\":7}
stderr: logs and, on a terminal, a progress line (records/s, shards held, lag).
--exec CMD: each batch's lines go to CMD's stdin instead; exit 0 acks, anything else nacks
  (redelivered after the backoff; with --max-deliveries N, the N-th nack sends the batch to
  --dead-letter FILE|kinesis:STREAM and the shard moves on once it is stored).
SIGINT / SIGTERM: stop reading, flush output, write final checkpoints, release leases, exit 0.")]
pub struct ConsumeArgs {
    /// Stream name or ARN; repeatable.
    #[arg(long = "stream", value_name = "NAME")]
    pub streams: Vec<String>,
    /// Enhanced Fan-Out with this consumer name (registered if missing, waited
    /// for until ACTIVE; never deregistered); without it: polling.
    #[arg(long, value_name = "NAME")]
    pub efo: Option<String>,
    /// DynamoDB lease/checkpoint table (fleet mode).
    #[arg(long, value_name = "TABLE", conflicts_with = "local_store")]
    pub lease_table: Option<String>,
    /// Create the lease table if it is missing.
    #[arg(long)]
    pub create_table: bool,
    /// Single-process lease/checkpoint store (default when no lease table:
    /// ./.kinesin-state).
    #[arg(long, value_name = "PATH")]
    pub local_store: Option<PathBuf>,
    /// Worker id (default: hostname-pid).
    #[arg(long, value_name = "ID")]
    pub worker_id: Option<String>,
    /// Position when a shard has no checkpoint: oldest, latest or an RFC 3339
    /// timestamp (default oldest).
    #[arg(long, value_name = "oldest|latest|RFC3339-TIMESTAMP", value_parser = config::parse_start)]
    pub start: Option<config::Start>,
    /// Stop gracefully after SECS with no new record on any held shard
    /// (counted from the first held shard, not from launch).
    #[arg(long, value_name = "SECS")]
    pub exit_when_idle: Option<f64>,
    /// Stop gracefully after N records delivered.
    #[arg(long, value_name = "N")]
    pub max_records: Option<u64>,
    /// A Bento config: a whole one (its input.aws_kinesis, also inside
    /// input.broker.inputs; other sections ignored with a warning), the bare
    /// `aws_kinesis:` block, or its fields at the top. Every aws_kinesis
    /// field is honoured (README, Configuration); unknown fields are errors.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve Prometheus metrics on http://ADDR/metrics and the worker's
    /// health on http://ADDR/healthz (200 ready, 503 starting or failing).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
    /// Hand each batch to CMD instead of printing it: CMD runs through the
    /// shell (`sh -c`; `cmd /C` on Windows) once per batch with the batch's
    /// JSON Lines on its stdin and KINESIN_STREAM, KINESIN_SHARD,
    /// KINESIN_FENCING_TOKEN, KINESIN_RECORDS, KINESIN_REDELIVERY (0/1) in
    /// its environment. Exit status 0 acknowledges the batch; any other
    /// status nacks it: delivered again after the redelivery backoff.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// Kill a command of --exec still running after SECS and nack its batch.
    #[arg(long, value_name = "SECS", requires = "exec", value_parser = positive_secs)]
    pub exec_timeout: Option<std::time::Duration>,
    /// A batch nacked N times by --exec goes to --dead-letter and its shard
    /// moves on (default: redelivered for ever).
    #[arg(long, value_name = "N", requires_all = ["exec", "dead_letter"],
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_deliveries: Option<u32>,
    /// Where batches nacked --max-deliveries times go: a file (JSON Lines, one
    /// object per batch, fsynced before the checkpoint may cover it) or
    /// kinesis:STREAM (one record per user record, original partition key).
    #[arg(long, value_name = "FILE|kinesis:STREAM", requires = "max_deliveries",
          value_parser = deadletter::parse_target)]
    pub dead_letter: Option<deadletter::Target>,
    /// Delay before a nacked batch is delivered again, doubled at each
    /// further nack of it (default 0.1, Bento's).
    #[arg(long, value_name = "SECS", requires = "exec", value_parser = nonnegative_secs)]
    pub redelivery_backoff: Option<std::time::Duration>,
    /// Longest redelivery delay (default 5, Bento's).
    #[arg(long, value_name = "SECS", requires = "exec", value_parser = positive_secs)]
    pub redelivery_backoff_max: Option<std::time::Duration>,
    /// Deadline of one PutRecords call of --dead-letter kinesis:STREAM.
    #[arg(long, value_name = "SECS", default_value_t = deadline::DEFAULT_CALL_TIMEOUT_SECS)]
    pub call_timeout: f64,
}

/// A positive number of seconds, as a duration.
fn positive_secs(s: &str) -> Result<std::time::Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(std::time::Duration::from_secs_f64(v)),
        _ => Err(format!("expected a positive number of seconds, got {s:?}")),
    }
}

/// Zero or a positive number of seconds, as a duration.
fn nonnegative_secs(s: &str) -> Result<std::time::Duration, String> {
    if s.parse::<f64>().is_ok_and(|v| v == 0.0) {
        Ok(std::time::Duration::ZERO)
    } else {
        positive_secs(s)
    }
}

/// `kinesin produce`.
#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// Stream name or ARN.
    #[arg(long, value_name = "NAME")]
    pub stream: String,
    /// Number of user records to put.
    #[arg(long, value_name = "N")]
    pub count: u64,
    /// Create the stream if it does not exist (and wait until ACTIVE).
    #[arg(long)]
    pub create: bool,
    /// Shard count of a created stream.
    #[arg(long, value_name = "K", default_value_t = 1, requires = "create")]
    pub shards: u32,
    /// Bytes of data per user record (at least the record's id).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    pub size: usize,
    /// Partition keys key-0..key-(K-1), round robin.
    #[arg(long, value_name = "K", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Pack M user records per Kinesis record in the KPL aggregated format
    /// (the M records of one aggregate share a partition key).
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(u64).range(1..))]
    pub aggregate: Option<u64>,
    /// Deadline of one AWS call.
    #[arg(long, value_name = "SECS", default_value_t = deadline::DEFAULT_CALL_TIMEOUT_SECS)]
    pub call_timeout: f64,
}

/// `kinesin leases`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct LeasesArgs {
    #[command(subcommand)]
    pub action: Option<LeasesAction>,
    /// DynamoDB lease/checkpoint table.
    #[arg(long, value_name = "TABLE", required = true)]
    pub lease_table: Option<String>,
    /// Only this stream (name or ARN); default: every stream in the table.
    #[arg(long, value_name = "NAME")]
    pub stream: Option<String>,
    /// Deadline of one AWS call.
    #[arg(long, value_name = "SECS", default_value_t = deadline::DEFAULT_CALL_TIMEOUT_SECS)]
    pub call_timeout: f64,
}

/// `kinesin leases import | rewind`.
#[derive(Subcommand, Debug)]
pub enum LeasesAction {
    /// Carry the checkpoints of a Bento checkpoint table or a KCL lease
    /// table over into kinesin's lease table (prints each shard).
    Import(import::ImportArgs),
    /// Move every shard of a stopped fleet to oldest, latest or a time.
    Rewind(import::RewindArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e).context("starting the tokio runtime")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Consume(args) => consume::run(args).await,
            Command::Produce(args) => produce::run(args).await,
            Command::Leases(args) => match args.action {
                Some(LeasesAction::Import(a)) => import::import(a).await,
                Some(LeasesAction::Rewind(a)) => import::rewind(a).await,
                None => leases::run(args).await,
            },
            Command::Status(args) => status::run(args).await,
            Command::Admin(cmd) => admin::run(cmd).await,
        }
    });
    // Do not wait for stray SDK tasks.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

/// One line on stderr: the error and its causes.
fn fail(e: &anyhow::Error) -> ExitCode {
    if let Some(u) = e.downcast_ref::<config::UsageError>() {
        eprintln!("error: {u}\n\nFor more information, try '--help'.");
        return ExitCode::from(2);
    }
    let mut line = format!("kinesin: error: {e}");
    let mut last = e.to_string();
    for cause in e.chain().skip(1) {
        let s = cause.to_string();
        // SDK errors often repeat their source's text; print each once.
        if !s.is_empty() && !last.contains(&s) {
            line.push_str(": ");
            line.push_str(&s);
        }
        last = s;
    }
    eprintln!("{}", line.replace('\n', " "));
    ExitCode::from(1)
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,aws_config=error,kinesin=info,kinesin_aws=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// The AWS configuration from the standard environment (and a config's
/// session fields, see [`session`]).
pub async fn aws_config(region: Option<String>) -> anyhow::Result<aws_types::SdkConfig> {
    session::aws_config(&config::Session {
        region,
        ..config::Session::default()
    })
    .await
}
