//! `msctl --server ADDR events [--json]`: the mserver's view changes and
//! failure detections as they happen, one line each (Serf's `monitor`).
//!
//! One local RPC endpoint (sealed with the cluster key ring when one is
//! given, like every other msctl call) asks `PROC_EVENTS` again and again: the first
//! request takes the log's position (only what happens from now on is
//! printed), each next one waits up to a second at the mserver for an
//! entry after the last one printed. The mserver holds no state for us but
//! one waiting request, so stopping (or suspending) msctl costs it nothing.
//! Entries that left the mserver's bounded log before we asked for them
//! are reported as missed. Runs until interrupted; a call the mserver does
//! not answer ends it with exit code 1.

use membership::id::NodeId;
use membership::mserver::events::{Event, EventsReply, EventsRequest, LoggedEvent, PROC_EVENTS};
use membership::rpc::CallError;
use membership::wire::{decode_message, encode_body};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long each request waits at the mserver for an entry.
const WAIT: Duration = Duration::from_millis(1000);

/// Streams the events of `server` until the process is stopped; `Err`
/// when the mserver stops answering.
pub async fn run(
    server: SocketAddr,
    timeout: Duration,
    json: bool,
    failure: impl Fn(&CallError) -> String,
) -> anyhow::Result<()> {
    let mut endpoint = super::rpc_endpoint(server)?;
    let target = NodeId::new(server);
    let mut after: Option<u64> = None;
    let mut said_hello = false;
    loop {
        let request = EventsRequest {
            after,
            wait_ms: if after.is_some() {
                WAIT.as_millis() as u32
            } else {
                0
            },
        };
        let body = encode_body(&request)?;
        let call_timeout = timeout + WAIT;
        let result =
            super::call_once(&mut endpoint, target, PROC_EVENTS, body, call_timeout).await?;
        let reply = match result {
            Ok(bytes) => decode_message::<EventsReply>(&bytes)
                .map_err(|e| anyhow::anyhow!("{server} answered something unreadable: {e}"))?,
            Err(e) => {
                endpoint.handle.stop();
                anyhow::bail!("{}", failure(&e));
            }
        };
        if !said_hello {
            eprintln!(
                "msctl: watching the view changes and failure detections of {server} (Ctrl-C to stop)"
            );
            said_hello = true;
        }
        if reply.missed > 0 {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"kind": "missed", "count": reply.missed})
                );
            } else {
                println!(
                    "{} missed {} events (msctl was too slow)",
                    clock(0),
                    reply.missed
                );
            }
        }
        for e in &reply.events {
            let age = reply.now_us.saturating_sub(e.at_us);
            if json {
                println!("{}", json_line(e, age));
            } else {
                println!("{}", human_line(e, age));
            }
        }
        after = Some(reply.last);
    }
}

/// The wall-clock time `age_us` microseconds ago, as RFC 3339 UTC
/// (`2026-12-06T15:21:12.432Z`).
fn clock(age_us: u64) -> String {
    #[allow(clippy::disallowed_methods)] // a tool prints the time of day
    let now = SystemTime::now();
    let t = now
        .checked_sub(Duration::from_micros(age_us))
        .unwrap_or(now)
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(t)
}

/// `t` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn rfc3339(t: Duration) -> String {
    let secs = t.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        t.subsec_millis()
    )
}

/// One `--json` line: the entry's fields, plus `time` (when it happened,
/// RFC 3339 UTC by this host's clock).
fn json_line(e: &LoggedEvent, age_us: u64) -> serde_json::Value {
    let mut v = e.to_json();
    if let Some(map) = v.as_object_mut() {
        map.remove("at_us");
        map.insert("time".into(), clock(age_us).into());
    }
    v
}

fn addrs(list: &[mserver::admin::MemberInfo]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|m| format!("{}#{}", m.addr, m.rank))
        .collect();
    format!("[{}]", items.join(" "))
}

/// One human line.
fn human_line(e: &LoggedEvent, age_us: u64) -> String {
    let when = clock(age_us);
    match &e.event {
        Event::View {
            group,
            view,
            change,
            members,
            joined,
            failed,
            left,
            took_ms,
            ..
        } => {
            let mut what = Vec::new();
            if !joined.is_empty() {
                what.push(format!("joined={}", addrs(joined)));
            }
            if !failed.is_empty() {
                what.push(format!("failed={}", addrs(failed)));
            }
            if !left.is_empty() {
                what.push(format!("left={}", addrs(left)));
            }
            format!(
                "{when} view {view} of {group} ({change}) members={} {} took_ms={took_ms}",
                addrs(members),
                what.join(" ")
            )
        }
        Event::FailureDetected {
            group,
            member,
            cause,
            ..
        } => format!(
            "{when} failure detected in {group}: {}#{} (cause: {cause})",
            member.addr, member.rank
        ),
        Event::Excluded { group, view } => {
            format!("{when} excluded from {group} after view {view}; rejoining")
        }
        Event::Left { group } => format!("{when} left {group}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(Duration::ZERO), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(Duration::from_millis(1_796_570_472_432)),
            "2026-12-06T15:21:12.432Z"
        );
        assert_eq!(
            rfc3339(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
