//! Stop signals of `kinesin consume`: SIGTERM and SIGINT on Unix, Ctrl-C
//! (and Ctrl-Break, through tokio's ctrl_c) elsewhere (Windows).
//!
//! Both ways are compiled on every platform that has them: the Ctrl-C one
//! (`Signals::ctrl_c`, tokio's portable `ctrl_c`, which is SIGINT on Unix)
//! everywhere, so it is built and tested on Linux too; the Unix one only on
//! Unix. `Signals::install` picks the platform's: `cfg` selects, nothing
//! else differs.
//!
//! Invariant: [`Signals::recv`] resolves once per signal received, naming
//! it, so a second signal during shutdown is seen as a second one (the
//! Ctrl-C listener runs in its own task and queues what it hears, so a
//! Ctrl-C between two `recv` calls is not lost).

use anyhow::Result;

/// The installed handlers.
pub struct Signals {
    inner: Inner,
}

enum Inner {
    #[cfg(unix)]
    Unix {
        term: tokio::signal::unix::Signal,
        int: tokio::signal::unix::Signal,
    },
    // Built on Unix only by the tests: compiled everywhere all the same.
    #[cfg_attr(unix, allow(dead_code))]
    CtrlC(tokio::sync::mpsc::UnboundedReceiver<()>),
}

impl Signals {
    /// Install the platform's handlers (before the first await that may be
    /// long).
    pub fn install() -> Result<Self> {
        #[cfg(unix)]
        {
            Self::unix()
        }
        #[cfg(not(unix))]
        {
            Ok(Self::ctrl_c())
        }
    }

    /// SIGTERM and SIGINT.
    #[cfg(unix)]
    pub fn unix() -> Result<Self> {
        use anyhow::Context;
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            inner: Inner::Unix {
                term: signal(SignalKind::terminate()).context("installing a SIGTERM handler")?,
                int: signal(SignalKind::interrupt()).context("installing a SIGINT handler")?,
            },
        })
    }

    /// Ctrl-C (Windows: also Ctrl-Break; Unix: SIGINT), from a listener
    /// task. Where no console can be listened to, `recv` never resolves.
    #[cfg_attr(unix, allow(dead_code))]
    pub fn ctrl_c() -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                if tx.send(()).is_err() {
                    break;
                }
            }
        });
        Signals {
            inner: Inner::CtrlC(rx),
        }
    }

    /// The next signal, by name.
    pub async fn recv(&mut self) -> &'static str {
        match &mut self.inner {
            #[cfg(unix)]
            Inner::Unix { term, int } => {
                tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                }
            }
            Inner::CtrlC(rx) => match rx.recv().await {
                Some(()) => "Ctrl-C",
                // The listener ended: no console to listen to.
                None => std::future::pending().await,
            },
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::time::Duration;

    fn send(signal: &str) {
        let ok = std::process::Command::new("kill")
            .args([signal, &std::process::id().to_string()])
            .status()
            .expect("running kill")
            .success();
        assert!(ok, "kill {signal}");
    }

    /// Both ways, one test: they share the process's SIGINT.
    #[tokio::test]
    async fn each_way_names_every_signal_it_receives() {
        let mut unix = Signals::unix().unwrap();
        send("-TERM");
        let got = tokio::time::timeout(Duration::from_secs(5), unix.recv()).await;
        assert_eq!(got, Ok("SIGTERM"));
        send("-INT");
        let got = tokio::time::timeout(Duration::from_secs(5), unix.recv()).await;
        assert_eq!(got, Ok("SIGINT"));

        // The portable way: give its listener task time to register; a
        // second signal is seen as a second one.
        let mut portable = Signals::ctrl_c();
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..2 {
            send("-INT");
            let got = tokio::time::timeout(Duration::from_secs(5), portable.recv()).await;
            assert_eq!(got, Ok("Ctrl-C"));
        }
    }
}
