//! msctl's application-group commands, through the host's member interface
//! (`msctl --mi PATH join|create|view|lookup`; DESIGN.md section 7; seed
//! 003, section II.B.4). They use the public client library,
//! [`member_interface::Client`], over the MI's Unix socket; every call has
//! the `--timeout-ms` bound.
//!
//! `join` stays in the group and prints each view on its own line (with
//! `--json`, [`AppView::to_json`], the DESIGN.md section 7 object), flushing
//! stdout after each; SIGINT or SIGTERM makes it leave and exit 0. A
//! membership that ends otherwise is one line on stderr and exit code
//! [`EXIT_ENDED`] or [`EXIT_DISCONNECTED`].

use super::presets::{format_merge, format_scope, format_survive};
use daemon_shell::signals::Signals;
use member_interface::{
    AppError, AppMember, AppView, Client, ClientConfig, GroupName, GroupOptions, MemberInfo,
    MemberName, NameError,
};
use membership::appgroup::MAX_NAME;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Exit code: the MI did not answer, refused, or the call failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad usage (including names and options the MI refused as
/// invalid).
pub const EXIT_USAGE: u8 = 2;
/// Exit code of `join`: the group ended the membership (excluded by a
/// partition rule, views not read in time, ...).
pub const EXIT_ENDED: u8 = 3;
/// Exit code of `join`: the connection to the member interface was lost
/// (the daemon exited or broke the protocol).
pub const EXIT_DISCONNECTED: u8 = 4;

/// One application-group command, its arguments already checked.
#[derive(Debug)]
pub enum MiCommand {
    /// Join `group` as `member` and print every view until a signal.
    Join {
        /// The group.
        group: GroupName,
        /// Who joins.
        member: MemberInfo,
        /// Print the DESIGN.md section 7 JSON line per view.
        json: bool,
        /// Add `at_ns` to every JSON line and `join_called_ns` to the
        /// first ([`stamp`]; for `msbench app`).
        timestamps: bool,
    },
    /// Create `group` with `options`.
    Create {
        /// The group.
        group: GroupName,
        /// Its scopes and partition rules.
        options: GroupOptions,
        /// Print one JSON object.
        json: bool,
    },
    /// Print `group`'s current view.
    View {
        /// The group.
        group: GroupName,
        /// Print one JSON object.
        json: bool,
    },
    /// Print the member `member` of `group`.
    Lookup {
        /// The group.
        group: GroupName,
        /// The member's name.
        member: MemberName,
        /// Print one JSON object.
        json: bool,
    },
}

impl MiCommand {
    /// The words that start this command's error lines ("join chat").
    fn what(&self) -> String {
        match self {
            MiCommand::Join { group, .. } => format!("join {group}"),
            MiCommand::Create { group, .. } => format!("create {group}"),
            MiCommand::View { group, .. } => format!("view {group}"),
            MiCommand::Lookup { group, member, .. } => format!("lookup {group} {member}"),
        }
    }
}

/// Why a command failed: the line for stderr and the exit code.
struct Fail {
    line: String,
    code: u8,
}

impl Fail {
    fn new(line: impl Into<String>, code: u8) -> Fail {
        Fail {
            line: line.into(),
            code,
        }
    }

    /// A library error of command `what`.
    fn app(what: &str, e: &AppError) -> Fail {
        let code = match e {
            AppError::InvalidName(_) | AppError::InvalidOptions(_) => EXIT_USAGE,
            _ => EXIT_FAILED,
        };
        Fail::new(format!("{what}: {}", describe(e)), code)
    }
}

/// An error in words for the user (a few more precise than the library's
/// own one-line messages).
fn describe(e: &AppError) -> String {
    match e {
        AppError::NameTaken => "name taken (a group of that name exists in its name-scope, \
                                or a member of that name is in the group)"
            .into(),
        AppError::NoSuchGroup => {
            "no such application group (create it first: msctl --mi PATH create GROUP)".into()
        }
        other => other.to_string(),
    }
}

/// The default member name: `<hostname>-<pid>`, the host name cut so that
/// the whole stays a valid [`MemberName`].
pub fn default_member_name() -> Result<MemberName, NameError> {
    let pid = std::process::id().to_string();
    let room = MAX_NAME.saturating_sub(pid.len() + 1);
    let host: String = hostname()
        .chars()
        .filter(|c| !c.is_control())
        .take(room)
        .collect();
    MemberName::parse(&format!("{host}-{pid}"))
}

/// The host's name, as the kernel knows it.
fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| {
            let s = std::fs::read_to_string(p).ok()?;
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_owned())
        })
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "host".into())
}

/// Runs `command` against the MI listening on `path`, on a runtime of its
/// own; prints the results and returns the exit code.
pub fn run(path: PathBuf, timeout: Duration, command: MiCommand) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("msctl: cannot start a runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match rt.block_on(execute(&path, timeout, command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("msctl: {}", f.line);
            ExitCode::from(f.code)
        }
    }
}

async fn connect(path: &Path, timeout: Duration) -> Result<Client, Fail> {
    let config = ClientConfig {
        call_timeout: timeout,
        name: format!("msctl (pid {})", std::process::id()),
        ..ClientConfig::default()
    };
    match Client::connect_with(path, config).await {
        Ok(c) => Ok(c),
        Err(AppError::Connect(detail)) => Err(Fail::new(not_listening(path, &detail), EXIT_FAILED)),
        Err(AppError::Timeout) => Err(Fail::new(
            format!(
                "the member interface on {} did not answer within {timeout:?}",
                path.display()
            ),
            EXIT_FAILED,
        )),
        Err(AppError::Disconnected) => Err(Fail::new(
            format!(
                "{} does not speak the member-interface protocol (it closed the connection)",
                path.display()
            ),
            EXIT_FAILED,
        )),
        Err(e) => Err(Fail::new(
            format!("connect to {}: {}", path.display(), describe(&e)),
            EXIT_FAILED,
        )),
    }
}

/// The line for a socket that could not be reached: why, from a second
/// attempt's error kind (the library gives only text).
fn not_listening(path: &Path, detail: &str) -> String {
    use std::io::ErrorKind;
    match std::os::unix::net::UnixStream::connect(path) {
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            format!(
                "no member-interface listening on {} (is the daemon running?)",
                path.display()
            )
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => format!(
            "cannot connect to {}: permission denied (the socket is mode 0660: \
             run as its owner or a member of its group)",
            path.display()
        ),
        _ => format!("cannot connect to the member interface: {detail}"),
    }
}

async fn execute(path: &Path, timeout: Duration, command: MiCommand) -> Result<(), Fail> {
    let what = command.what();
    let printed =
        |r: Result<(), String>| r.map_err(|e| Fail::new(format!("{what}: {e}"), EXIT_FAILED));
    match command {
        MiCommand::Join {
            group,
            member,
            json,
            timestamps,
        } => {
            // Installed before connecting, so that a signal during the
            // join is not fatal: it is seen once joined, and the member
            // leaves.
            let signals = Signals::stop().map_err(|e| {
                Fail::new(
                    format!("{what}: cannot install the signal handlers: {e}"),
                    EXIT_FAILED,
                )
            })?;
            let client = connect(path, timeout).await?;
            let style = match (json, timestamps) {
                (false, _) => Style::Readable,
                (true, false) => Style::Json,
                (true, true) => Style::JsonStamped,
            };
            join(&client, &what, group, member, style, signals).await
        }
        MiCommand::Create {
            group,
            options,
            json,
        } => {
            let client = connect(path, timeout).await?;
            client
                .create_group(&group, options.clone())
                .await
                .map_err(|e| Fail::app(&what, &e))?;
            printed(print_line(&if json {
                serde_json::json!({
                    "created": group,
                    "name_scope": format_scope(&options.name_scope),
                    "membership_scope": format_scope(&options.membership_scope),
                    "survive": format_survive(&options.survive),
                    "merge": format_merge(&options.merge),
                })
                .to_string()
            } else {
                format!("created {group}")
            }))
        }
        MiCommand::View { group, json } => {
            let client = connect(path, timeout).await?;
            let view = client
                .view(&group)
                .await
                .map_err(|e| Fail::app(&what, &e))?;
            printed(print_line(&if json {
                view_json(&view).to_string()
            } else {
                view_line(&view)
            }))
        }
        MiCommand::Lookup {
            group,
            member,
            json,
        } => {
            let client = connect(path, timeout).await?;
            let m = client
                .lookup(&group, &member)
                .await
                .map_err(|e| Fail::app(&what, &e))?;
            printed(print_line(&if json {
                serde_json::json!({
                    "group": group,
                    "name": m.name,
                    "kind": m.kind,
                    "id": m.id,
                    "host": m.host,
                })
                .to_string()
            } else {
                member_line(&m)
            }))
        }
    }
}

/// How `join` prints each view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    /// [`view_line`].
    Readable,
    /// [`AppView::to_json`].
    Json,
    /// [`AppView::to_json`] with [`stamp`]'s fields.
    JsonStamped,
}

/// CLOCK_REALTIME now, in nanoseconds since the Unix epoch (0 if the clock
/// is before it). Only for the `--timestamps` fields: a benchmark on the
/// same host compares them with its own realtime readings.
#[allow(clippy::disallowed_methods)] // msctl is a tool: it owns its clock
fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Adds `"at_ns": at_ns` to a JSON line, and `"join_called_ns"` when given
/// (the first line); the other fields stay as they are (DESIGN.md
/// section 7 allows added fields).
fn stamp(line: &mut serde_json::Value, at_ns: u64, join_called_ns: Option<u64>) {
    if let Some(obj) = line.as_object_mut() {
        obj.insert("at_ns".into(), at_ns.into());
        if let Some(t) = join_called_ns {
            obj.insert("join_called_ns".into(), t.into());
        }
    }
}

async fn join(
    client: &Client,
    what: &str,
    group: GroupName,
    member: MemberInfo,
    style: Style,
    mut signals: Signals,
) -> Result<(), Fail> {
    let mut join_called_ns = (style == Style::JsonStamped).then(realtime_ns);
    let mut membership = client
        .join(&group, member)
        .await
        .map_err(|e| Fail::app(what, &e))?;
    let me = membership.me().clone();
    loop {
        tokio::select! {
            biased;
            sig = signals.recv() => {
                tracing::debug!("{sig}: leaving {group}");
                return membership
                    .leave()
                    .await
                    .map_err(|e| Fail::new(format!("{what}: leave on {sig}: {}", describe(&e)), EXIT_FAILED));
            }
            next = membership.next_view() => match next {
                Ok(view) => {
                    let line = match style {
                        Style::Readable => view_line(&view),
                        Style::Json => view.to_json(&me).to_string(),
                        Style::JsonStamped => {
                            let mut v = view.to_json(&me);
                            stamp(&mut v, realtime_ns(), join_called_ns.take());
                            v.to_string()
                        }
                    };
                    if let Err(e) = print_line(&line) {
                        // Nobody reads the views any more: leave rather
                        // than stay a member that sees nothing.
                        let _ = membership.leave().await;
                        return Err(Fail::new(format!("{what}: {e}; left the group"), EXIT_FAILED));
                    }
                }
                Err(e) => {
                    let code = match e {
                        AppError::Disconnected => EXIT_DISCONNECTED,
                        _ => EXIT_ENDED,
                    };
                    return Err(Fail::new(format!("{what}: the membership ended: {}", describe(&e)), code));
                }
            },
        }
    }
}

/// Writes one line to stdout and flushes it.
fn print_line(line: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))
}

/// `view N of GROUP: name1 (host), name2 (host)`.
pub fn view_line(view: &AppView) -> String {
    let members: Vec<String> = view
        .members
        .iter()
        .map(|m| format!("{} ({})", m.name, m.host))
        .collect();
    format!(
        "view {} of {}: {}",
        view.number,
        view.group,
        if members.is_empty() {
            "no members".into()
        } else {
            members.join(", ")
        }
    )
}

/// A view without a "me": `{"group", "view", "members"}` (the fields of
/// the join line that do not depend on who asks).
pub fn view_json(view: &AppView) -> serde_json::Value {
    serde_json::json!({
        "group": view.group,
        "view": view.number,
        "members": view.members,
    })
}

/// `NAME (kind KIND) on HOST, id UUID`.
fn member_line(m: &AppMember) -> String {
    let kind = if m.kind.as_str().is_empty() {
        String::new()
    } else {
        format!(" (kind {})", m.kind)
    };
    format!("{}{kind} on {}, id {}", m.name, m.host, m.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use member_interface::MemberKind;
    use uuid::Uuid;

    fn member(name: &str, host: &str) -> AppMember {
        AppMember {
            name: MemberName::parse(name).expect("name"),
            kind: MemberKind::default(),
            id: Uuid::from_u128(1),
            host: host.into(),
        }
    }

    #[test]
    fn default_name_is_valid_and_ends_with_the_pid() {
        let name = default_member_name();
        let name = name.expect("valid");
        assert!(name.as_str().ends_with(&format!("-{}", std::process::id())));
    }

    #[test]
    fn readable_lines() {
        let view = AppView {
            group: GroupName::parse("chat").expect("group"),
            number: 4,
            members: vec![member("alice", "h1"), member("bob", "h2")],
        };
        assert_eq!(view_line(&view), "view 4 of chat: alice (h1), bob (h2)");
        assert_eq!(view_json(&view)["view"], 4);
        assert_eq!(
            member_line(&member("bob", "h2")),
            format!("bob on h2, id {}", Uuid::from_u128(1))
        );
    }
}
