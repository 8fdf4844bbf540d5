//! Joins an application group and prints each of its views until Ctrl-C,
//! then leaves (the async client, `member_interface::Client`).
//!
//! Run it with a member-interface daemon on this host
//! (`member-interface --mserver ADDR --socket PATH`):
//!
//! ```text
//! cargo run -p member-interface --example join_group -- PATH chat alice
//! ```
//!
//! Arguments: the MI's socket (default: the daemon's default, `member_interface::default_socket_path()`), the
//! group (default `chat`; created with the default options if it does not
//! exist yet), this member's name (default `member-<pid>`). Run it in a few
//! terminals with different names to watch the views change.

use member_interface::{AppError, Client, GroupOptions, MemberInfo, MemberName};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let socket = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(member_interface::default_socket_path);
    let group = args.next().unwrap_or_else(|| "chat".into());
    let name = args
        .next()
        .unwrap_or_else(|| format!("member-{}", std::process::id()));
    match run(&socket, &group, &name).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("join_group: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(socket: &std::path::Path, group: &str, name: &str) -> Result<(), AppError> {
    let client = Client::connect(socket).await?;
    println!("connected to {}", client.mi());
    // Create the group unless it exists: NameTaken means someone did.
    match client.create_group(group, GroupOptions::default()).await {
        Ok(()) => println!("created {group}"),
        Err(AppError::NameTaken) => {}
        Err(e) => return Err(e),
    }
    let me = MemberInfo::new(MemberName::parse(name)?);
    let mut membership = client.join(group, me).await?;
    println!("joined {group} as {name} (id {})", membership.me().id);
    loop {
        tokio::select! {
            view = membership.next_view() => {
                // The first view is the one that added us; then every
                // later view, in order. An error ends the membership.
                let view = view?;
                let names: Vec<&str> = view.members.iter().map(|m| m.name.as_str()).collect();
                println!("view {} of {}: {}", view.number, view.group, names.join(", "));
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    membership.leave().await?;
    println!("left {group}");
    Ok(())
}
