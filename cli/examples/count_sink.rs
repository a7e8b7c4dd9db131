//! The library side of `scripts/bench.sh library` on tokio: a consumer on
//! kinesin's public API (`kinesin_tokio::Consumer::builder()`, a local
//! store; its default batching, or one-record batches with
//! `--batching one`) whose sink counts the records of each batch and acks
//! it. See `common/counting.rs` for the arguments and what it prints.
//!
//! ```text
//! cargo run --release -p kinesin-cli --example count_sink -- \
//!     --stream NAME --mode polling|efo [--consumer NAME] --expect N \
//!     --local-store DIR [--batching defaults|one]
//! ```

#[path = "common/counting.rs"]
mod counting;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = counting::parse_args()?;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let tally = counting::library::<kinesin_tokio::TokioRuntime>(&sdk, &args).await?;
    println!("{}", tally.summary());
    Ok(())
}
