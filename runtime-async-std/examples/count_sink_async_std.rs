//! The library side of `scripts/bench.sh library` on async-std (no tokio
//! runtime in the process): `kinesin_async_std::Consumer::builder()` on
//! [`kinesin_async_std::sdk_config`], a local store, a sink that counts and
//! acks. The code is `cli/examples/common/counting.rs`, shared with the
//! tokio example.
//!
//! ```text
//! cargo run --release -p kinesin-async-std --example count_sink_async_std -- \
//!     --stream NAME --mode polling|efo [--consumer NAME] --expect N \
//!     --local-store DIR [--batching defaults|one]
//! ```

#[path = "../../cli/examples/common/counting.rs"]
mod counting;

fn main() -> anyhow::Result<()> {
    async_std::task::block_on(async {
        let args = counting::parse_args()?;
        let sdk = kinesin_async_std::sdk_config().await;
        let tally = counting::library::<kinesin_async_std::AsyncStdRuntime>(&sdk, &args).await?;
        println!("{}", tally.summary());
        Ok(())
    })
}
