//! SELECT: dispatch of requests to procedures by number (seed 004, section
//! 5.3.3).
//!
//! The address space is flat: a 16-bit [`Procedure`] (the book's "16-bit
//! selector field"). On the client side SELECT only puts the number in the
//! request (CHAN carries it as [`super::chan::Request::procedure`]); on the
//! server side it looks up the registered [`Handler`] and runs it. A handler
//! either answers at once ([`HandlerResult::Reply`]) or defers: the request
//! then surfaces as [`super::RpcEvent::Request`] and is answered later with
//! [`super::Rpc::respond`]. An unknown number is answered with
//! "no such procedure", which the caller sees as
//! [`super::CallError::NoSuchProcedure`] (not a timeout).
//!
//! The book also gives SELECT the job of managing concurrency (opening more
//! CHAN channels); here CHAN itself runs any number of calls per peer, so
//! there is nothing left to manage.

use crate::id::{Incarnation, NodeId};
use crate::time::Instant;
use std::collections::BTreeMap;
use std::fmt;

/// A procedure number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Procedure(pub u16);

impl From<u16> for Procedure {
    fn from(p: u16) -> Self {
        Procedure(p)
    }
}

impl fmt::Display for Procedure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "proc#{}", self.0)
    }
}

/// What a handler learns about the request besides its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestContext {
    /// The caller.
    pub from: NodeId,
    /// The caller's incarnation.
    pub from_incarnation: Incarnation,
    /// The procedure called.
    pub procedure: Procedure,
    /// When the request is being executed.
    pub now: Instant,
}

/// What a handler does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerResult {
    /// Answer now with this reply.
    Reply(Vec<u8>),
    /// Answer later: the request surfaces as [`super::RpcEvent::Request`]
    /// and is answered with [`super::Rpc::respond`].
    Deferred,
}

/// A procedure's implementation. It runs at most once per call.
pub type Handler = Box<dyn FnMut(&RequestContext, &[u8]) -> HandlerResult>;

/// The result of [`Select::dispatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    /// The handler answered.
    Reply(Vec<u8>),
    /// The handler deferred.
    Deferred,
    /// No handler is registered for the procedure.
    NoSuchProcedure,
}

/// SELECT counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectStats {
    /// Handlers run.
    pub dispatched: u64,
    /// Of which answered at once.
    pub replied: u64,
    /// Of which deferred.
    pub deferred: u64,
    /// Requests for unregistered procedures.
    pub no_such_procedure: u64,
}

/// The dispatcher: a table of handlers by procedure number.
#[derive(Default)]
pub struct Select {
    handlers: BTreeMap<Procedure, Handler>,
    stats: SelectStats,
}

impl fmt::Debug for Select {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Select")
            .field("procedures", &self.handlers.keys().collect::<Vec<_>>())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Select {
    /// An empty table.
    pub fn new() -> Self {
        Select::default()
    }

    /// Registers `handler` for `procedure`, returning the one it replaces.
    pub fn register(&mut self, procedure: Procedure, handler: Handler) -> Option<Handler> {
        self.handlers.insert(procedure, handler)
    }

    /// Removes the handler of `procedure`.
    pub fn unregister(&mut self, procedure: Procedure) -> Option<Handler> {
        self.handlers.remove(&procedure)
    }

    /// Whether `procedure` has a handler.
    pub fn is_registered(&self, procedure: Procedure) -> bool {
        self.handlers.contains_key(&procedure)
    }

    /// Runs the handler of `ctx.procedure` on `body`.
    pub fn dispatch(&mut self, ctx: &RequestContext, body: &[u8]) -> Dispatch {
        let Some(handler) = self.handlers.get_mut(&ctx.procedure) else {
            self.stats.no_such_procedure += 1;
            return Dispatch::NoSuchProcedure;
        };
        self.stats.dispatched += 1;
        match handler(ctx, body) {
            HandlerResult::Reply(r) => {
                self.stats.replied += 1;
                Dispatch::Reply(r)
            }
            HandlerResult::Deferred => {
                self.stats.deferred += 1;
                Dispatch::Deferred
            }
        }
    }

    /// Counters.
    pub fn stats(&self) -> &SelectStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(p: u16) -> RequestContext {
        RequestContext {
            from: NodeId::v4(127, 0, 0, 1, 1),
            from_incarnation: Incarnation::NIL,
            procedure: Procedure(p),
            now: Instant::ZERO,
        }
    }

    #[test]
    fn dispatches_by_number() {
        let mut s = Select::new();
        s.register(
            Procedure(1),
            Box::new(|_, b| HandlerResult::Reply(b.iter().rev().copied().collect())),
        );
        s.register(Procedure(2), Box::new(|_, _| HandlerResult::Deferred));
        assert_eq!(
            s.dispatch(&ctx(1), b"abc"),
            Dispatch::Reply(b"cba".to_vec())
        );
        assert_eq!(s.dispatch(&ctx(2), b""), Dispatch::Deferred);
        assert_eq!(s.dispatch(&ctx(3), b""), Dispatch::NoSuchProcedure);
        assert_eq!(s.stats().dispatched, 2);
        assert_eq!(s.stats().no_such_procedure, 1);
        assert!(s.unregister(Procedure(1)).is_some());
        assert_eq!(s.dispatch(&ctx(1), b"abc"), Dispatch::NoSuchProcedure);
        assert!(format!("{s:?}").contains("Procedure(2)"));
    }
}
