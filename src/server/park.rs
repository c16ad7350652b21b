//! The idle set: where idle TCP connections wait without a task.
//!
//! A tokio task and its I/O registration cost about 900 bytes, however little
//! the task holds (see "Idle connections" in BENCHMARKS.md): most of what an
//! idle connection costs. So a connection silent for [`Config::park_after`]
//! leaves its task as a record of what it holds (socket, peer, connection
//! slots: about 100 bytes; the TCP module's `Parked`, which this module
//! knows only as an [`Idle`]), and its socket moves from tokio's epoll set
//! to this one's. One task per server watches the set:
//!
//! - a parked socket that becomes readable (data, or the client's close) goes
//!   back to tokio in a new task, which reads it as any connection's;
//! - one whose idle deadline passes is closed as idle;
//! - at shutdown, every parked connection is closed (none holds anything
//!   back, so none has anything left to answer).
//!
//! The set is an epoll instance of its own, made through mio (tokio's own
//! epoll layer); tokio's `AsyncFd` waits on its descriptor like on a socket.
//! Deadlines wait in tokio-util's `DelayQueue`. Connections arrive over a
//! bounded channel: when it is full, a connection stays in its task.
//!
//! [`Config::park_after`]: super::Config::park_after

use std::future::poll_fn;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Poll, Token};
use slab::Slab;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::time::{DelayQueue, delay_queue};

/// What waits in the idle set: a connection without a task, which the set
/// hands back to a task when it is readable, or closes. The set knows
/// nothing else of it, so that the dependency runs one way: the TCP module
/// parks its connections here.
pub(super) trait Idle: AsRawFd + Send + Sized + 'static {
    /// What waking or closing one needs: the server's shared state.
    type Owner: Send + Sync + 'static;
    /// When it is closed as idle if nothing arrives.
    fn idle_deadline(&self) -> tokio::time::Instant;
    /// Serves it in a new task again: it has become readable (or the set
    /// cannot keep it).
    fn resume(self, owner: &Arc<Self::Owner>);
    /// Closes it, as a connection in a task would be for the same reason.
    fn close(self, why: Closing, owner: &Self::Owner);
}

/// Why the idle set closes a parked connection.
#[derive(Clone, Copy, Debug)]
pub(super) enum Closing {
    Idle,
    Shutdown,
}

/// Connections on their way into the set at most; more stay in their tasks
/// until there is room.
const QUEUE: usize = 1024;

/// Readiness events taken from the set at once.
const EVENTS: usize = 256;

/// After this many connections have parked, the memory their tasks freed is
/// handed back to the system ([`release_freed_memory`]) ...
const RELEASE_AFTER_PARKED: usize = 1024;

/// ... once the parking has gone on for this long, and no more often.
const RELEASE_DELAY: Duration = Duration::from_secs(1);

/// The way into the idle set.
pub(super) type Sender<C> = mpsc::Sender<C>;

/// The idle set's channel: connections send themselves through [`Sender`];
/// [`run`] takes them from the receiver.
pub(super) fn channel<C: Idle>() -> (Sender<C>, mpsc::Receiver<C>) {
    mpsc::channel(QUEUE)
}

/// A parked connection and its place in the deadline queue.
struct Entry<C> {
    connection: C,
    deadline: delay_queue::Key,
}

/// Watches the idle set until the server shuts down. If the set cannot be
/// made or watched, every connection goes back to a task and none is parked
/// again.
pub(super) async fn run<C: Idle>(
    mut incoming: mpsc::Receiver<C>,
    shared: Arc<C::Owner>,
    shutdown: CancellationToken,
) {
    let mut set = match IdleSet::new() {
        Ok(set) => set,
        Err(e) => {
            tracing::warn!(error = %e, "no idle set: idle connections keep their tasks");
            incoming.close();
            while let Ok(connection) = incoming.try_recv() {
                connection.resume(&shared);
            }
            return;
        }
    };
    // Connections parked since memory was last released, and the timer of
    // the next release.
    let mut parked_since_release = 0;
    let release = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(release);
    let mut release_armed = false;
    let failure = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break None,
            Some(connection) = incoming.recv() => {
                set.park(connection, &shared);
                parked_since_release += 1;
                if parked_since_release >= RELEASE_AFTER_PARKED && !release_armed {
                    release.as_mut().reset(tokio::time::Instant::now() + RELEASE_DELAY);
                    release_armed = true;
                }
            }
            () = &mut release, if release_armed => {
                release_armed = false;
                parked_since_release = 0;
                release_freed_memory();
            }
            Some(expired) = poll_fn(|cx| set.deadlines.poll_expired(cx)) => {
                let entry = set.remove(expired.into_inner());
                entry.connection.close(Closing::Idle, &shared);
            }
            ready = set.epoll.readable_mut() => {
                let taken = ready.and_then(|mut ready| {
                    let epoll = ready.get_inner_mut();
                    epoll.poll(&mut set.events, Some(Duration::ZERO))?;
                    // Fewer events than room for them: the set is drained
                    // until its descriptor signals again.
                    if set.events.iter().count() < EVENTS {
                        ready.clear_ready();
                    }
                    Ok(())
                });
                if let Err(e) = taken {
                    break Some(e);
                }
                set.wake_readable(&shared);
            }
        }
    };
    // No more arrivals; those on their way are handled with the rest.
    incoming.close();
    match failure {
        None => {
            while let Ok(connection) = incoming.try_recv() {
                connection.close(Closing::Shutdown, &shared);
            }
            for entry in set.drain() {
                entry.connection.close(Closing::Shutdown, &shared);
            }
        }
        Some(e) => {
            tracing::warn!(error = %e, "the idle set failed: idle connections keep their tasks");
            while let Ok(connection) = incoming.try_recv() {
                connection.resume(&shared);
            }
            for entry in set.drain() {
                entry.connection.resume(&shared);
            }
        }
    }
}

/// Hands the heap's free pages back to the system. The tasks of the
/// connections just parked freed over 1 KB each, but glibc's allocator keeps
/// freed memory that is not at the top of the heap, so after a burst of
/// thousands of connections going idle the server would hold its peak
/// memory for good. `malloc_trim(3)` releases every whole free page, in every
/// arena; it takes well under a millisecond for a heap of tens of megabytes
/// (0.3 ms measured for 27 MB of 160-byte blocks, seven in eight freed), and
/// runs at most once per [`RELEASE_DELAY`], after [`RELEASE_AFTER_PARKED`]
/// connections have parked. Other allocators return memory on their own.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists.
        unsafe { libc::malloc_trim(0) };
    }
}

/// The parked connections, keyed by their epoll token.
struct IdleSet<C> {
    epoll: AsyncFd<Poll>,
    events: Events,
    parked: Slab<Entry<C>>,
    deadlines: DelayQueue<usize>,
}

impl<C: Idle> IdleSet<C> {
    fn new() -> io::Result<Self> {
        let poll = Poll::new()?;
        // SAFETY: a mio `Poll` owns its epoll descriptor, closes it only when
        // dropped, and reports the same one for as long as it lives.
        let epoll = unsafe { AsyncFd::register_with_interest(poll, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(IdleSet {
            epoll,
            events: Events::with_capacity(EVENTS),
            parked: Slab::new(),
            deadlines: DelayQueue::new(),
        })
    }

    /// Adds `connection`, or gives it back to a task if epoll refuses it.
    fn park(&mut self, connection: C, shared: &Arc<C::Owner>) {
        let place = self.parked.vacant_entry();
        let key = place.key();
        // Registering reports the socket at once if it is already readable,
        // so data that arrived on the way here is not missed.
        let registered = self.epoll.get_ref().registry().register(
            &mut SourceFd(&connection.as_raw_fd()),
            Token(key),
            mio::Interest::READABLE,
        );
        match registered {
            Ok(()) => {
                let deadline = self.deadlines.insert_at(key, connection.idle_deadline());
                place.insert(Entry {
                    connection,
                    deadline,
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot park a connection; it keeps its task");
                connection.resume(shared);
            }
        }
    }

    /// Hands every connection in the last events back to a task.
    fn wake_readable(&mut self, shared: &Arc<C::Owner>) {
        let keys: Vec<usize> = self.events.iter().map(|event| event.token().0).collect();
        for key in keys {
            // Each parked socket is reported at most once per poll, and only
            // while registered, which it is exactly while in `parked`.
            if self.parked.contains(key) {
                let entry = self.remove(key);
                self.deadlines.remove(&entry.deadline);
                entry.connection.resume(shared);
            }
        }
    }

    /// Takes the connection with `key` out of the set (its deadline is the
    /// caller's to remove, unless it has expired).
    fn remove(&mut self, key: usize) -> Entry<C> {
        let entry = self.parked.remove(key);
        // Deregistered before the socket goes back to tokio's epoll or is
        // closed; a failure leaves at worst a stale registration that its
        // close removes.
        if let Err(e) = self
            .epoll
            .get_ref()
            .registry()
            .deregister(&mut SourceFd(&entry.connection.as_raw_fd()))
        {
            tracing::debug!(error = %e, "epoll deregistration of a parked connection");
        }
        entry
    }

    /// Takes every connection out of the set.
    fn drain(&mut self) -> impl Iterator<Item = Entry<C>> + '_ {
        self.deadlines.clear();
        self.parked.drain()
    }
}
