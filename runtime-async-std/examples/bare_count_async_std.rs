//! The baseline of `scripts/bench.sh library` on async-std: a bare
//! aws-sdk-kinesis loop that only counts, on the same HTTP client as the
//! library side ([`kinesin_async_std::sdk_config`]), one task per shard.
//! The code is `cli/examples/common/counting.rs`, shared with tokio.
//!
//! ```text
//! cargo run --release -p kinesin-async-std --example bare_count_async_std -- \
//!     --stream NAME --mode polling|efo [--consumer NAME] --expect N
//! ```

use std::sync::Arc;

#[path = "../../cli/examples/common/counting.rs"]
mod counting;

fn main() -> anyhow::Result<()> {
    async_std::task::block_on(async {
        let args = counting::parse_args()?;
        let sdk = kinesin_async_std::sdk_config().await;
        let rt = Arc::new(kinesin_async_std::AsyncStdRuntime);
        let tally = counting::bare(rt, &sdk, &args).await?;
        println!("{}", tally.summary());
        // The shard tasks would read on forever.
        std::process::exit(0)
    })
}
