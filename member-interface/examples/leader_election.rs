//! Leader election on top of application-group views: every process joins
//! the group `workers`, and the oldest member of the current view (the
//! first in join order) is the leader. Since every member receives every
//! view in the same order, all of them agree on who leads in each view,
//! without any message of their own.
//!
//! The group is created with the keep-majority survive rule: when the
//! network partitions, only the part holding a majority of the last view
//! keeps running (its members see a view without the others); members in a
//! minority are excluded, so two leaders never act at once in two parts.
//!
//! Run it with a member-interface daemon on each host
//! (`member-interface --mserver ADDR --socket PATH`), in as many terminals
//! as you like, then stop the leader with Ctrl-C and watch the next oldest
//! take over:
//!
//! ```text
//! cargo run -p member-interface --example leader_election -- PATH w1
//! cargo run -p member-interface --example leader_election -- PATH w2
//! ```
//!
//! Arguments: the MI's socket (default: the daemon's default, `member_interface::default_socket_path()`), this
//! worker's name (default `worker-<pid>`).

use member_interface::{
    AppError, AppMember, AppView, Client, GroupOptions, MemberInfo, MemberName, SurviveRule,
};
use std::process::ExitCode;

/// The group every worker joins.
const GROUP: &str = "workers";

/// What this process is in a view.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Role {
    Leader,
    Follower { leader: String },
}

/// The role of `me` in `view`: the oldest member leads.
fn role_in(view: &AppView, me: &AppMember) -> Role {
    match view.members.first() {
        Some(oldest) if oldest.id == me.id => Role::Leader,
        Some(oldest) => Role::Follower {
            leader: oldest.name.to_string(),
        },
        // A view always holds its receiver; treat the impossible as "no
        // leader known yet" rather than crash.
        None => Role::Follower {
            leader: "nobody".into(),
        },
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let socket = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(member_interface::default_socket_path);
    let name = args
        .next()
        .unwrap_or_else(|| format!("worker-{}", std::process::id()));
    match run(&socket, &name).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("leader_election: {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(socket: &std::path::Path, name: &str) -> Result<(), AppError> {
    let client = Client::connect(socket).await?;
    let options = GroupOptions {
        survive: SurviveRule::KeepMajority,
        ..GroupOptions::default()
    };
    // The first worker creates the group; the others find it taken.
    match client.create_group(GROUP, options).await {
        Ok(()) | Err(AppError::NameTaken) => {}
        Err(e) => return Err(e),
    }
    let mut membership = client
        .join(GROUP, MemberInfo::new(MemberName::parse(name)?))
        .await?;
    let me = membership.me().clone();
    let mut role: Option<Role> = None;
    loop {
        let view = tokio::select! {
            view = membership.next_view() => match view {
                Ok(view) => view,
                // Excluded (our part lost its majority), the MI went away,
                // ...: we are no longer a worker, so we must not lead.
                Err(e) => {
                    if role == Some(Role::Leader) {
                        println!("{name}: stepping down: {e}");
                    }
                    return Err(e);
                }
            },
            _ = tokio::signal::ctrl_c() => break,
        };
        let now = role_in(&view, &me);
        if role.as_ref() != Some(&now) {
            match &now {
                // A real leader would start its work here, for this
                // view's workers (and stop it when it steps down).
                Role::Leader => println!(
                    "{name}: view {}: I am the leader of {} workers",
                    view.number,
                    view.len()
                ),
                Role::Follower { leader } => {
                    println!("{name}: view {}: following {leader}", view.number)
                }
            }
            role = Some(now);
        }
    }
    membership.leave().await?;
    println!("{name}: left {GROUP}");
    Ok(())
}
