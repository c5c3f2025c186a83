//! `gistfans`: see `gistfans --help`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    gistfans::cli::run().await
}
