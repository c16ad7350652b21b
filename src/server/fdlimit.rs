//! The open-file limit: raised to the hard limit at start, and the
//! connection cap kept under it so that `accept(2)` runs out of connection
//! slots before it runs out of file descriptors.

use std::io;

/// File descriptors kept back from connections: listeners, stdio, logs,
/// the runtime's own, and room for refusing a connection politely.
pub const RESERVED_FDS: u64 = 32;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft
/// limit.
pub fn raise_to_hard_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// The current soft `RLIMIT_NOFILE`.
pub fn soft_limit() -> io::Result<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft)
}

/// The largest connection cap that fits in `soft_limit` descriptors.
pub fn max_connections_for(soft_limit: u64) -> usize {
    usize::try_from(soft_limit.saturating_sub(RESERVED_FDS))
        .unwrap_or(usize::MAX)
        .max(1)
}
