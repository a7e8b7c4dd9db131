//! Stop signals of `kinesin consume`: SIGTERM and SIGINT on Unix, Ctrl-C
//! (and Ctrl-Break, through tokio's ctrl_c) elsewhere (Windows).
//!
//! Invariant: [`Signals::recv`] resolves once per signal received, naming
//! it, so a second signal during shutdown is seen as a second one.

use anyhow::Result;

/// The installed handlers.
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Install the handlers (before the first await that may be long).
    pub fn install() -> Result<Self> {
        #[cfg(unix)]
        {
            use anyhow::Context;
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                term: signal(SignalKind::terminate()).context("installing a SIGTERM handler")?,
                int: signal(SignalKind::interrupt()).context("installing a SIGINT handler")?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    /// The next signal, by name.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                // No console to listen to: never resolves.
                Err(_) => std::future::pending().await,
            }
        }
    }
}
