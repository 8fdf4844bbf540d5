//! Crash watch: the operating system tells us at once when a watched
//! process dies (DESIGN.md section 10, "process crash on a live host": the
//! host's refused connection is taken as a strong hint, confirmed by one
//! retry; issue 4, item 3).
//!
//! UDP alone cannot do this without traffic: the kernel answers "port
//! unreachable" only to a datagram sent after the death. So, as JGroups'
//! `FD_SOCK` does, every node keeps a TCP listener on the same IP and port
//! number as its UDP socket ([`CrashWatchListener`]), and a watcher keeps one
//! idle TCP connection to the node it monitors ([`CrashWatch`]). Nothing is
//! ever sent on it, so it costs no bandwidth. When the watched process dies
//! (SIGKILL, a panic, `exit`), its kernel closes the connection: the
//! watcher's read ends, it reports a hint, reconnects at once, and a
//! refused reconnection (the port is closed: nobody listens any more) is the
//! confirming second hint. A suspended process (SIGSTOP) keeps its sockets
//! open, so a pause is never mistaken for a crash; silent failures are left
//! to the protocol's timeouts.
//!
//! Hints go to the core as [`NodeUnreachable`], i.e.
//! [`Core::handle_unreachable`](crate::sansio::Core::handle_unreachable);
//! what a hint means is the core's business (the core-set confirms with an
//! immediate query). This module only owns sockets and tasks.
//!
//! Bounds: the listener holds at most [`MAX_WATCHERS`] accepted connections
//! (further ones are closed at once) and reads at most 64 bytes at a time
//! from each, discarding them; a watcher makes at most one connection
//! attempt per [`RECONNECT_INTERVAL`] while its target refuses, each bounded
//! by [`CONNECT_TIMEOUT`].

use super::driver::NodeUnreachable;
use crate::id::NodeId;
use actix::Recipient;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Most watch connections a listener keeps open at once.
pub const MAX_WATCHERS: usize = 256;
/// Bound on one connection attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between connection attempts to a target that refuses or cannot be
/// reached.
pub const RECONNECT_INTERVAL: Duration = Duration::from_millis(500);

/// The passive side: a TCP listener on the node's own address whose only
/// purpose is to exist while the process lives. Dropping it stops it.
#[derive(Debug)]
pub struct CrashWatchListener {
    local: SocketAddr,
    task: JoinHandle<()>,
    open: Arc<AtomicUsize>,
}

impl CrashWatchListener {
    /// Listens on `addr` (TCP, same IP and port as the node's UDP socket).
    /// Must be called inside a tokio runtime (an actix system is one).
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let local = std_listener.local_addr()?;
        let listener = TcpListener::from_std(std_listener)?;
        let open = Arc::new(AtomicUsize::new(0));
        let counter = open.clone();
        let task = tokio::spawn(async move {
            // The held connections belong to this task: aborting it (drop)
            // drops the set, which closes every one of them, as a process
            // exit would.
            let mut held = tokio::task::JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    Some(_) = held.join_next(), if !held.is_empty() => {
                        counter.store(held.len(), Ordering::Relaxed);
                        continue;
                    }
                };
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors and the like: back off a
                        // little rather than spin.
                        tracing::debug!(error = %e, "crash watch: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if held.len() >= MAX_WATCHERS {
                    drop(stream);
                    continue;
                }
                held.spawn(hold(stream));
                counter.store(held.len(), Ordering::Relaxed);
            }
        });
        Ok(CrashWatchListener { local, task, open })
    }

    /// The address listened on.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Watch connections currently held open.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for CrashWatchListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps an accepted connection open until the peer closes it, discarding
/// anything it sends.
async fn hold(mut stream: TcpStream) {
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Counters of a [`CrashWatch`].
#[derive(Debug, Default)]
pub struct CrashWatchStats {
    /// Connections established to a target.
    pub connected: AtomicUsize,
    /// Hints reported (closed connections and refused reconnections).
    pub hints: AtomicUsize,
}

/// The active side: one idle TCP connection to each node being monitored
/// (one per level of the hierarchy this mserver belongs to), reporting
/// [`NodeUnreachable`] when a connection closes and again when a
/// reconnection is refused. Dropping it stops the watch.
#[derive(Debug)]
pub struct CrashWatch {
    report: Recipient<NodeUnreachable>,
    current: BTreeMap<NodeId, JoinHandle<()>>,
    stats: Arc<CrashWatchStats>,
}

impl CrashWatch {
    /// A watch that reports to `report` (usually the core's driver).
    pub fn new(report: Recipient<NodeUnreachable>) -> Self {
        CrashWatch {
            report,
            current: BTreeMap::new(),
            stats: Arc::new(CrashWatchStats::default()),
        }
    }

    /// The node watched now (the lowest, when several are).
    pub fn target(&self) -> Option<NodeId> {
        self.current.keys().next().copied()
    }

    /// The nodes watched now.
    pub fn targets(&self) -> BTreeSet<NodeId> {
        self.current.keys().copied().collect()
    }

    /// The counters.
    pub fn stats(&self) -> &CrashWatchStats {
        &self.stats
    }

    /// Watches `target` instead of the current one (`None`: nothing).
    /// Watching the same node again changes nothing. Must be called inside
    /// a tokio runtime.
    pub fn watch(&mut self, target: Option<NodeId>) {
        self.watch_all(&target.into_iter().collect());
    }

    /// Watches exactly `targets`: connections to nodes no longer in it
    /// close, nodes new in it are connected to, the others stay as they
    /// are. Must be called inside a tokio runtime.
    pub fn watch_all(&mut self, targets: &BTreeSet<NodeId>) {
        self.current.retain(|node, task| {
            let keep = targets.contains(node);
            if !keep {
                task.abort();
            }
            keep
        });
        for node in targets {
            if !self.current.contains_key(node) {
                let task = tokio::spawn(watch_loop(*node, self.report.clone(), self.stats.clone()));
                self.current.insert(*node, task);
            }
        }
    }
}

impl Drop for CrashWatch {
    fn drop(&mut self) {
        for (_, task) in std::mem::take(&mut self.current) {
            task.abort();
        }
    }
}

/// Outcome of one connection attempt.
enum Attempt {
    Connected(TcpStream),
    /// The host answered that nobody listens there.
    Refused,
    /// Anything else (timeout, no route): no information.
    Failed,
}

async fn connect(addr: SocketAddr) -> Attempt {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => Attempt::Connected(stream),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Attempt::Refused,
        Ok(Err(_)) | Err(_) => Attempt::Failed,
    }
}

async fn watch_loop(node: NodeId, report: Recipient<NodeUnreachable>, stats: Arc<CrashWatchStats>) {
    let addr = node.addr();
    let hint = |stats: &CrashWatchStats| {
        stats.hints.fetch_add(1, Ordering::Relaxed);
        report.do_send(NodeUnreachable(node));
    };
    // A close of an established connection is the first hint, and a
    // refusal of the immediate reconnection confirms it. A target that
    // keeps refusing is reported once per interval.
    loop {
        match connect(addr).await {
            Attempt::Connected(mut stream) => {
                stats.connected.fetch_add(1, Ordering::Relaxed);
                let mut buf = [0u8; 64];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                tracing::debug!(%node, "crash watch: connection closed");
                hint(&stats);
                // Reconnect at once: a refusal confirms.
                continue;
            }
            Attempt::Refused => hint(&stats),
            Attempt::Failed => {}
        }
        tokio::time::sleep(RECONNECT_INTERVAL).await;
    }
}
