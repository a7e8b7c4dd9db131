//! The baseline of `scripts/bench.sh library` on tokio: a bare
//! aws-sdk-kinesis loop that only counts (the SDK's default HTTP client,
//! one task per shard). See `common/counting.rs`.
//!
//! ```text
//! cargo run --release -p kinesin-cli --example bare_count -- \
//!     --stream NAME --mode polling|efo [--consumer NAME] --expect N
//! ```

use std::sync::Arc;

#[path = "common/counting.rs"]
mod counting;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = counting::parse_args()?;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let rt = Arc::new(kinesin_tokio::TokioRuntime::default());
    let tally = counting::bare(rt, &sdk, &args).await?;
    println!("{}", tally.summary());
    // The shard tasks would read on forever.
    std::process::exit(0);
}
