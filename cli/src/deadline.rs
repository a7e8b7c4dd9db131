//! Deadlines of the CLI's own AWS calls (`produce`, `leases`): the same
//! rule as the consumer builder's call timeout (15 s by default). A call
//! that gets no answer in time (a black-holed endpoint: a TCP peer that
//! accepts and never answers) is an error naming the call, never a hang.
//!
//! Invariant: every network call of `kinesin produce` and `kinesin leases`
//! goes through [`call`].

use std::future::Future;
use std::time::Duration;

/// Default deadline of one AWS call, as `ConsumerBuilder::call_timeout`.
pub const DEFAULT_CALL_TIMEOUT_SECS: f64 = 15.0;

/// The deadline given on the command line (`--call-timeout SECS`).
pub fn from_secs(secs: f64) -> anyhow::Result<Duration> {
    if !(secs.is_finite() && secs > 0.0 && secs < 1e9) {
        return Err(crate::config::UsageError(format!(
            "invalid value '{secs}' for '--call-timeout <SECS>': must be a positive number of \
             seconds"
        ))
        .into());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Run one AWS call with a deadline; an error names the call.
pub async fn call<T, E>(
    operation: &str,
    after: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> anyhow::Result<T>
where
    E: Into<anyhow::Error>,
{
    // Boxed (in `within`): SDK futures are large.
    within(operation, after, fut)
        .await?
        .map_err(|e| e.into().context(operation.to_owned()))
}

/// Run one call with a deadline and hand its own result back (for callers
/// that look at the SDK error); a missed deadline is an error naming the
/// call.
pub async fn within<F: Future>(
    operation: &str,
    after: Duration,
    fut: F,
) -> anyhow::Result<F::Output> {
    tokio::time::timeout(after, Box::pin(fut))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "{operation} got no answer within {after:?}: check the endpoint, the network and \
                 the region the AWS config points at (--call-timeout sets the deadline)"
            )
        })
}
