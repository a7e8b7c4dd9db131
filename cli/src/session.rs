//! The AWS session of the CLI: the standard AWS environment, changed by the
//! session fields of a Bento config (`region`, `endpoint`, `credentials.*`).
//!
//! Rules encoded (Bento's session fields): `credentials.profile` names a
//! profile; `id` / `secret` / `token` are static keys; `from_ec2_role`
//! uses the instance role only (IMDS); `role` is assumed (STS AssumeRole,
//! with `role_external_id`) on top of whichever of these applies, or the
//! default chain; `endpoint` replaces every service endpoint. Credentials
//! and region are checked up front (within 15 s) so that their absence is
//! one clear line. Profiles may use `credential_process` and AWS SSO (IAM
//! Identity Center, `sso_session` or legacy `sso_start_url`); an SSO profile
//! without a login is an error that says to run `aws sso login`.

use anyhow::{bail, Result};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};

use crate::config::Session;

/// Deadline of resolving the credentials once at startup.
const CREDENTIALS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(15);

/// The AWS configuration for `session` (all defaults: the environment).
pub async fn aws_config(session: &Session) -> Result<aws_types::SdkConfig> {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = &session.region {
        loader = loader.region(aws_types::region::Region::new(region.clone()));
    }
    if let Some(endpoint) = &session.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let creds = &session.credentials;
    if let Some(profile) = &creds.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(keys) = &creds.static_keys {
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            keys.id.clone(),
            keys.secret.clone(),
            keys.token.clone(),
            None,
            "kinesin-config",
        ));
    }
    if creds.from_ec2_role {
        loader = loader.credentials_provider(
            aws_config::imds::credentials::ImdsCredentialsProvider::builder().build(),
        );
    }
    let mut sdk = loader.load().await;
    if sdk.region().is_none() {
        bail!(
            "no AWS region: set AWS_REGION (or a region in the AWS profile, or `region` in --config)"
        );
    }
    if let Some(role) = &creds.role {
        let mut assume = aws_config::sts::AssumeRoleProvider::builder(role.clone())
            .session_name("kinesin")
            .configure(&sdk);
        if let Some(id) = &creds.role_external_id {
            assume = assume.external_id(id.clone());
        }
        let provider = assume.build().await;
        sdk = sdk
            .into_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build();
    }
    match sdk.credentials_provider() {
        None => bail!("no AWS credentials provider configured"),
        Some(p) => {
            // The chain may call out (SSO, STS AssumeRole, IMDS): a deadline
            // as for every other call.
            let got = crate::deadline::within(
                "getting AWS credentials",
                CREDENTIALS_DEADLINE,
                p.provide_credentials(),
            )
            .await?;
            if let Err(e) = got {
                // The whole chain: the provider's own message is a source.
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    why.push_str(": ");
                    why.push_str(&s.to_string());
                    source = s.source();
                }
                if why.contains("sso/cache") {
                    bail!(
                        "no AWS credentials ({why}): the profile uses AWS SSO (IAM Identity \
                         Center) and has no valid login: run `aws sso login` for it, then retry"
                    );
                }
                bail!(
                    "no AWS credentials ({why}): set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, \
                     AWS_PROFILE, or run where an instance or container role is available (or \
                     set `credentials` in --config)"
                );
            }
        }
    }
    Ok(sdk)
}
