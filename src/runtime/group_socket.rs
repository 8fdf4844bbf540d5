//! A second socket for a core: one bound to a multicast group's port and
//! joined to its class D address, whose datagrams go to a core that already
//! runs on its own socket (the mcaster's relay, the mserver's node). Both
//! daemons need it; it only moves packets (DESIGN.md section 3).

use super::driver::{CoreDriver, WithCore};
use super::queue::PacketQueue;
use super::socket::{PacketsReady, SocketActor, SocketOptions, StopSocket};
use crate::id::ProtocolId;
use crate::sansio::Core;
use actix::prelude::*;
use std::io;
use std::sync::Arc;

/// A group socket feeding a core. [`GroupSocket::stop`] closes it.
pub struct GroupSocket {
    socket: Addr<SocketActor>,
    feed: Addr<GroupFeed>,
}

impl GroupSocket {
    /// Binds `options` (the caller sets the group's address, address reuse,
    /// the multicast join and authentication), subscribes `protocols`, and
    /// hands every packet of them to `core`. Must be called inside an actix
    /// system.
    pub fn open<C>(
        options: SocketOptions,
        protocols: &[ProtocolId],
        core: Addr<CoreDriver<C>>,
    ) -> io::Result<Self>
    where
        C: Core + Unpin + 'static,
        C::Event: Send + 'static,
    {
        let mut socket = SocketActor::bind(options)?;
        let ctx: Context<GroupFeed> = Context::new();
        let queues = protocols
            .iter()
            .map(|p| socket.subscribe(*p, None, ctx.address().recipient()))
            .collect();
        let socket = socket.start();
        let deliver: Box<dyn Fn(Vec<super::queue::InboundPacket>)> = Box::new(move |packets| {
            core.do_send(WithCore::new(move |c: &mut C, now| {
                for p in &packets {
                    c.handle_packet(now, p.incoming());
                }
            }));
        });
        let feed = ctx.run(GroupFeed { deliver, queues });
        Ok(GroupSocket { socket, feed })
    }

    /// The socket actor (for its counters, key ring, faults).
    pub fn socket(&self) -> &Addr<SocketActor> {
        &self.socket
    }

    /// Closes the socket and stops feeding.
    pub fn stop(self) {
        self.socket.do_send(StopSocket);
        drop(self.feed);
    }
}

/// Hands the packets of a group socket to the core.
struct GroupFeed {
    deliver: Box<dyn Fn(Vec<super::queue::InboundPacket>)>,
    queues: Vec<Arc<PacketQueue>>,
}

impl Actor for GroupFeed {
    type Context = Context<Self>;
}

impl Handler<PacketsReady> for GroupFeed {
    type Result = ();

    fn handle(&mut self, _: PacketsReady, _: &mut Self::Context) {
        let packets: Vec<_> = self.queues.iter().flat_map(|q| q.take_all()).collect();
        if !packets.is_empty() {
            (self.deliver)(packets);
        }
    }
}
