//! The server's shutdown as a connection looks at it on every turn: one
//! relaxed load of a flag, where polling the shutdown token itself locks
//! the token's mutex (6% of the server's user time at 50 connections).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Set once shutdown begins. The flag is set before `token` is cancelled,
/// so a connection woken by the token always finds the flag set.
#[derive(Debug, Default)]
pub(super) struct Stopping {
    flag: AtomicBool,
    token: CancellationToken,
}

impl Stopping {
    /// Follows `shutdown`: a task sets the flag when it is cancelled.
    /// Must be called within a tokio runtime.
    pub fn follow(shutdown: &CancellationToken) -> Arc<Stopping> {
        let stopping = Arc::new(Stopping::default());
        let (shutdown, follower) = (shutdown.clone(), stopping.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            follower.flag.store(true, Ordering::Release);
            follower.token.cancel();
        });
        stopping
    }

    /// Whether shutdown has begun: a load, no lock.
    pub fn now(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// A future to poll once, so that the task polling it is woken when
    /// shutdown begins; after that, [`now`](Self::now) says whether it has.
    pub fn wake_me(&self) -> WaitForCancellationFutureOwned {
        self.token.clone().cancelled_owned()
    }
}
