//! The same client for programs without an async runtime: each call blocks
//! the calling thread until the answer, its timeout, or the connection's
//! end.
//!
//! A [`Client`] owns a current-thread tokio runtime; the connection's
//! background tasks run on it while a call of this client (or of one of
//! its memberships) is blocked, so frames the MI sends in between wait in
//! the socket until the next call, and views in the membership's queue
//! (bounded as in [`crate::Client`]). The blocking types must not be used
//! from inside an async runtime: they return [`AppError::Internal`] there
//! instead of blocking it.

use crate::client::ClientConfig;
use crate::proto::MembershipId;
use membership::appgroup::{AppError, AppMember, AppView, GroupName, GroupOptions, MemberInfo};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;

/// The client's own runtime; shut down without blocking when the last
/// client or membership is dropped (so dropping one inside an async
/// context does not panic).
#[derive(Debug)]
struct Rt(Option<Runtime>);

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs `f` to completion on `rt`, unless called from inside a runtime.
fn run<T>(rt: &Rt, f: impl Future<Output = Result<T, AppError>>) -> Result<T, AppError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(AppError::Internal(
            "the blocking client was called from inside an async runtime; use member_interface::Client there".into(),
        ));
    }
    match &rt.0 {
        Some(rt) => rt.block_on(f),
        None => Err(AppError::Disconnected),
    }
}

/// A blocking connection to the host's member interface; see
/// [`crate::Client`] for the calls and their errors.
#[derive(Debug)]
pub struct Client {
    // Dropped before the runtime it runs on.
    inner: crate::Client,
    rt: Arc<Rt>,
}

impl Client {
    /// Connects to the MI listening on the Unix socket `path`, with the
    /// default [`ClientConfig`].
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, AppError> {
        Client::connect_with(path, ClientConfig::default())
    }

    /// Connects with `config`; see [`crate::Client::connect_with`].
    pub fn connect_with(path: impl AsRef<Path>, config: ClientConfig) -> Result<Client, AppError> {
        let rt = Rt(Some(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| AppError::Internal(format!("cannot start a runtime: {e}")))?,
        ));
        let inner = run(&rt, crate::Client::connect_with(path, config))?;
        Ok(Client {
            inner,
            rt: Arc::new(rt),
        })
    }

    /// The MI's description of itself, from the handshake.
    pub fn mi(&self) -> &str {
        self.inner.mi()
    }

    /// Creates a group; see [`crate::Client::create_group`].
    pub fn create_group(
        &self,
        name: impl AsRef<str>,
        options: GroupOptions,
    ) -> Result<(), AppError> {
        run(&self.rt, self.inner.create_group(name, options))
    }

    /// Joins a group; see [`crate::Client::join`].
    pub fn join(&self, group: impl AsRef<str>, member: MemberInfo) -> Result<Membership, AppError> {
        let inner = run(&self.rt, self.inner.join(group, member))?;
        Ok(Membership {
            inner,
            rt: Arc::clone(&self.rt),
        })
    }

    /// A group's current view; see [`crate::Client::view`].
    pub fn view(&self, group: impl AsRef<str>) -> Result<AppView, AppError> {
        run(&self.rt, self.inner.view(group))
    }

    /// A member's address information; see [`crate::Client::lookup`].
    pub fn lookup(
        &self,
        group: impl AsRef<str>,
        member: impl AsRef<str>,
    ) -> Result<AppMember, AppError> {
        run(&self.rt, self.inner.lookup(group, member))
    }
}

/// A blocking membership; see [`crate::Membership`]. Also an [`Iterator`]
/// of views that ends when the membership ends
/// ([`Membership::end_reason`] says why).
#[derive(Debug)]
pub struct Membership {
    // Dropped (and its leave queued) before the runtime.
    inner: crate::Membership,
    rt: Arc<Rt>,
}

impl Membership {
    /// The MI's id for this membership.
    pub fn id(&self) -> MembershipId {
        self.inner.id()
    }

    /// The group.
    pub fn group(&self) -> &GroupName {
        self.inner.group()
    }

    /// This member as the group sees it.
    pub fn me(&self) -> &AppMember {
        self.inner.me()
    }

    /// Why the membership ended, once it has.
    pub fn end_reason(&self) -> Option<&AppError> {
        self.inner.end_reason()
    }

    /// Blocks until the next view, or the end of the membership; see
    /// [`crate::Membership::next_view`].
    pub fn next_view(&mut self) -> Result<AppView, AppError> {
        run(&self.rt, self.inner.next_view())
    }

    /// Blocks at most `timeout` for the next view: [`AppError::Timeout`] if
    /// none came (the membership goes on).
    pub fn next_view_timeout(&mut self, timeout: Duration) -> Result<AppView, AppError> {
        let inner = &mut self.inner;
        run(&self.rt, async move {
            tokio::time::timeout(timeout, inner.next_view())
                .await
                .map_err(|_| AppError::Timeout)?
        })
    }

    /// The group's current view, asked of the MI.
    pub fn view(&self) -> Result<AppView, AppError> {
        run(&self.rt, self.inner.view())
    }

    /// A member of this group.
    pub fn lookup(&self, member: impl AsRef<str>) -> Result<AppMember, AppError> {
        run(&self.rt, self.inner.lookup(member))
    }

    /// Leaves the group and waits for the MI to confirm.
    pub fn leave(self) -> Result<(), AppError> {
        let Membership { inner, rt } = self;
        run(&rt, inner.leave())
    }
}

impl Iterator for Membership {
    type Item = AppView;

    fn next(&mut self) -> Option<AppView> {
        self.next_view().ok()
    }
}
