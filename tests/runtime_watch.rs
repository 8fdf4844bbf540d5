//! The crash watch (src/runtime/watch.rs) with real sockets on loopback: a
//! watched listener that goes away produces a hint and a confirming hint; a
//! listener that stays produces none; switching targets stops the old watch.

use actix::prelude::*;
use membership::id::NodeId;
use membership::runtime::{CrashWatch, CrashWatchListener, NodeUnreachable};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Collects the hints it is sent.
struct Collector(Arc<Mutex<Vec<NodeId>>>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<NodeUnreachable> for Collector {
    type Result = ();
    fn handle(&mut self, msg: NodeUnreachable, _: &mut Context<Self>) {
        if let Ok(mut v) = self.0.lock() {
            v.push(msg.0);
        }
    }
}

fn count(hints: &Arc<Mutex<Vec<NodeId>>>, node: NodeId) -> usize {
    hints
        .lock()
        .map(|v| v.iter().filter(|n| **n == node).count())
        .unwrap_or(0)
}

async fn wait_for(mut cond: impl FnMut() -> bool, limit: Duration) -> bool {
    let step = Duration::from_millis(10);
    let mut waited = Duration::ZERO;
    while waited < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(step).await;
        waited += step;
    }
    cond()
}

#[actix_rt::test]
async fn a_closed_listener_gives_two_hints_and_a_live_one_none() {
    let hints = Arc::new(Mutex::new(Vec::new()));
    let collector = Collector(hints.clone()).start();

    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let dying = CrashWatchListener::bind(addr).expect("bind dying");
    let living = CrashWatchListener::bind(addr).expect("bind living");
    let dying_node = NodeId::new(dying.local());
    let living_node = NodeId::new(living.local());

    let mut watch_dying = CrashWatch::new(collector.clone().recipient());
    let mut watch_living = CrashWatch::new(collector.clone().recipient());
    watch_dying.watch(Some(dying_node));
    watch_living.watch(Some(living_node));
    assert!(
        wait_for(
            || dying.open_connections() == 1 && living.open_connections() == 1,
            Duration::from_secs(5)
        )
        .await,
        "both watches connect"
    );
    assert_eq!(count(&hints, dying_node), 0, "no hint while it lives");

    // The process "dies": its listener and the held connection close.
    drop(dying);
    assert!(
        wait_for(|| count(&hints, dying_node) >= 2, Duration::from_secs(5)).await,
        "the close and the refused reconnection are both reported"
    );
    // Never about the living one.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(count(&hints, living_node), 0);
    assert!(
        watch_dying
            .stats()
            .hints
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );

    // Switching the target closes the old connection.
    watch_living.watch(None);
    assert!(
        wait_for(|| living.open_connections() == 0, Duration::from_secs(5)).await,
        "the listener sees the watcher go"
    );
    assert_eq!(watch_living.target(), None);
    assert_eq!(
        count(&hints, living_node),
        0,
        "stopping a watch is not a hint"
    );
}
