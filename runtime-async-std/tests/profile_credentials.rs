//! Region and credentials from a shared config profile through
//! [`kinesin_async_std::sdk_config`], with no tokio runtime (aws-config
//! reads the profile files with blocking std::fs, then resolves on the
//! seams this crate wires). One test in this binary: it rewrites the
//! process environment.

mod common;

use anyhow::{ensure, Context, Result};
use aws_credential_types::provider::ProvideCredentials;
use common::{assert_no_tokio, unique};

#[test]
fn region_and_credentials_come_from_a_profile_without_tokio() -> Result<()> {
    let dir = std::env::temp_dir().join(unique("profile"));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("config");
    let credentials = dir.join("credentials");
    std::fs::write(&config, "[profile kinesin-test]\nregion = eu-west-3\n")?;
    std::fs::write(
        &credentials,
        "[kinesin-test]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = secretprofile\n",
    )?;
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ] {
        std::env::remove_var(var);
    }
    std::env::set_var("AWS_CONFIG_FILE", &config);
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &credentials);
    std::env::set_var("AWS_PROFILE", "kinesin-test");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");

    let result = async_std::task::block_on(async {
        assert_no_tokio();
        let sdk = kinesin_async_std::sdk_config().await;
        ensure!(
            sdk.region().map(|r| r.as_ref()) == Some("eu-west-3"),
            "region {:?}",
            sdk.region()
        );
        let creds = sdk
            .credentials_provider()
            .context("no credentials provider")?
            .provide_credentials()
            .await
            .context("resolving credentials")?;
        ensure!(creds.access_key_id() == "AKIDPROFILE", "{creds:?}");
        assert_no_tokio();
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}
