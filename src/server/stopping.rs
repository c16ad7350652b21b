//! The server's shutdown as a connection looks at it on every turn: one
//! load of a flag, where polling the shutdown token itself locks the
//! token's mutex (6% of the server's user time at 50 connections).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

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

    /// A future that completes when shutdown begins, for a connection to
    /// poll on every turn.
    pub fn watch(self: &Arc<Self>) -> Watch {
        Watch {
            stopping: self.clone(),
            wake: self.token.clone().cancelled_owned(),
            registered: false,
        }
    }
}

pin_project_lite::pin_project! {
    /// [`Stopping::watch`]: the token is polled once, so that the task is
    /// woken when shutdown begins; each poll after that reads the flag.
    pub(super) struct Watch {
        stopping: Arc<Stopping>,
        #[pin]
        wake: WaitForCancellationFutureOwned,
        registered: bool,
    }
}

impl Future for Watch {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.stopping.flag.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if !*this.registered {
            if this.wake.poll(cx).is_ready() {
                return Poll::Ready(());
            }
            *this.registered = true;
        }
        Poll::Pending
    }
}
