//! The stop signal every stage observes (SIGINT/SIGTERM, `--exit-at-end`, or a test's future).
//!
//! One [`Trigger`] fires it; any number of cloned [`Shutdown`]s observe it. It fires once and
//! stays fired. A dropped trigger that never fired means "never": stages then stop because
//! their input closes, not because of this signal, so no stage stops early by accident.
//! [`Shutdown::requested`] is cancel-safe, for use in `tokio::select!`.

use std::future::Future;

use tokio::sync::watch;

/// Fires the stop signal.
#[derive(Debug)]
pub struct Trigger {
    tx: watch::Sender<bool>,
}

/// Observes the stop signal.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// A new, unfired signal.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger { tx }, Shutdown { rx })
}

impl Trigger {
    pub fn fire(&self) {
        self.tx.send_replace(true);
    }
}

impl Shutdown {
    /// A signal fired when `signal` resolves (spawned on the current runtime).
    pub fn on(signal: impl Future<Output = ()> + Send + 'static) -> Shutdown {
        let (trigger, shutdown) = channel();
        tokio::spawn(async move {
            signal.await;
            trigger.fire();
        });
        shutdown
    }

    /// A signal that never fires (one-shot commands, tests).
    pub fn never() -> Shutdown {
        let (trigger, shutdown) = channel();
        // Keep the sender alive so that `requested` stays pending rather than erroring.
        std::mem::forget(trigger);
        shutdown
    }

    pub fn is_requested(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once the signal has fired (at once if it already has); never if its trigger
    /// was dropped unfired.
    pub async fn requested(&mut self) {
        if self.rx.wait_for(|fired| *fired).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn fires_once_for_every_clone() {
        let (trigger, a) = channel();
        let mut b = a.clone();
        assert!(!a.is_requested());
        trigger.fire();
        assert!(a.is_requested());
        tokio::time::timeout(Duration::from_secs(1), b.requested())
            .await
            .expect("fired signal resolves");
        // Stays fired.
        tokio::time::timeout(Duration::from_secs(1), b.requested())
            .await
            .expect("still fired");
    }

    #[tokio::test]
    async fn a_dropped_trigger_is_not_a_stop() {
        let (trigger, mut s) = channel();
        drop(trigger);
        assert!(!s.is_requested());
        assert!(
            tokio::time::timeout(Duration::from_millis(50), s.requested())
                .await
                .is_err(),
            "an unfired, dropped trigger must not stop anything"
        );
        let mut n = Shutdown::never();
        assert!(
            tokio::time::timeout(Duration::from_millis(20), n.requested())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn from_a_future() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut s = Shutdown::on(async move {
            let _ = rx.await;
        });
        assert!(!s.is_requested());
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(1), s.requested())
            .await
            .unwrap();
        assert!(s.is_requested());
    }
}
