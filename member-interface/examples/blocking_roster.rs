//! Prints the roster of each view of an application group, N views long,
//! then leaves: the blocking client (`member_interface::blocking`), for
//! programs without an async runtime.
//!
//! Run it with a member-interface daemon on this host
//! (`member-interface --mserver ADDR --socket PATH`):
//!
//! ```text
//! cargo run -p member-interface --example blocking_roster -- PATH chat 5 bob
//! ```
//!
//! Arguments: the MI's socket, the group (created if missing), how many
//! views to print before leaving, and optionally this member's name
//! (default `roster-<pid>`).

use member_interface::blocking::Client;
use member_interface::{AppError, GroupOptions, MemberInfo, MemberName};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(socket), Some(group), Some(count)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("usage: blocking_roster SOCKET GROUP VIEWS [NAME]");
        return ExitCode::from(2);
    };
    let Ok(count) = count.parse::<u64>() else {
        eprintln!("blocking_roster: VIEWS must be a whole number, not {count:?}");
        return ExitCode::from(2);
    };
    let name = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| format!("roster-{}", std::process::id()));
    match run(socket, group, count, &name) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blocking_roster: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(socket: &str, group: &str, count: u64, name: &str) -> Result<(), AppError> {
    let client = Client::connect(socket)?;
    match client.create_group(group, GroupOptions::default()) {
        Ok(()) | Err(AppError::NameTaken) => {}
        Err(e) => return Err(e),
    }
    let mut membership = client.join(group, MemberInfo::new(MemberName::parse(name)?))?;
    for _ in 0..count {
        // Blocks until the next view (the first is the one that added us).
        let view = membership.next_view()?;
        println!(
            "view {} of {} ({} members):",
            view.number,
            view.group,
            view.len()
        );
        for (rank, m) in view.members.iter().enumerate() {
            let me = if m.id == membership.me().id {
                "  <- me"
            } else {
                ""
            };
            println!("  {rank:>3}  {:<24} on {}{me}", m.name.as_str(), m.host);
        }
    }
    membership.leave()?;
    println!("left {group} after {count} views");
    Ok(())
}
