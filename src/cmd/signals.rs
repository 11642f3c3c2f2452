//! Stop signals for the serving commands (`serve`, `run`, `demo`).
//!
//! SIGTERM is how the kubelet (or a service manager) asks for an orderly stop: the command
//! drains and exits 0. SIGINT is Ctrl-C, a person at a terminal who wants the prompt back:
//! no drain, no grace period. A second signal of either kind during a shutdown ends it at
//! once, so a drain can always be cut short. Those exits use the shell's code for death by
//! that signal, 128 + its number: 130 for SIGINT, 143 for SIGTERM.

use std::future::Future;

/// A signal asking the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: drain, then stop.
    Terminate,
    /// SIGINT (Ctrl-C): stop now.
    Interrupt,
}

impl Signal {
    /// 128 + the signal number, what a shell reports for a process the signal killed.
    pub fn exit_code(self) -> i32 {
        match self {
            Signal::Terminate => 143,
            Signal::Interrupt => 130,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Signal::Terminate => "SIGTERM",
            Signal::Interrupt => "SIGINT",
        }
    }
}

/// SIGTERM and SIGINT, listened for from start-up on. Once installed, neither signal ends the
/// process by itself: every wait for one goes through [`Signals::next`].
pub struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next stop signal.
    pub async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => Signal::Terminate,
                _ = self.interrupt.recv() => Signal::Interrupt,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Interrupt
        }
    }

    /// Waits for a stop signal, then runs `stop` with it unless another signal arrives
    /// first. The exit code: 0 once `stop` has finished after SIGTERM, else the code of the
    /// signal that ended the process ([`Signal::exit_code`]).
    pub async fn stop_with<F>(&mut self, stop: impl FnOnce(Signal) -> F) -> i32
    where
        F: Future<Output = ()>,
    {
        let first = self.next().await;
        tracing::info!(signal = first.name(), "shutting down");
        tokio::select! {
            () = stop(first) => match first {
                Signal::Terminate => 0,
                Signal::Interrupt => first.exit_code(),
            },
            second = self.next() => {
                tracing::warn!(signal = second.name(), "second stop signal: exiting at once");
                second.exit_code()
            }
        }
    }
}
