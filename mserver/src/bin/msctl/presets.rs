//! The command-line spelling of an application group's options (seed 003,
//! sections II.B.2, II.B.3 and II.D; [`membership::appgroup::GroupOptions`]):
//! the partition-rule presets of `--survive` and `--merge`, and the scopes
//! of `--name-scope` and `--membership-scope`.
//!
//! | option | spellings |
//! |---|---|
//! | `--survive`, `--merge` | `keep-all`, `keep-majority`, `static-quorum=N` (N >= 1), `keep-oldest`, `contains-kind=KIND` |
//! | `--name-scope`, `--membership-scope` | `lan`, `level=N` (N >= 1), `core-set=NAME` |
//!
//! Parsing and formatting are inverse: `msctl groups` prints the rules in
//! the spelling `msctl create` takes. Every parse error is one line that
//! says what was expected.

use membership::appgroup::{MemberKind, MergeRule, Scope, SurviveRule};

/// What `--survive` and `--merge` accept, in words (for errors and help).
pub const PRESETS: &str =
    "keep-all, keep-majority, static-quorum=N, keep-oldest or contains-kind=KIND";

/// What `--name-scope` and `--membership-scope` accept, in words.
pub const SCOPES: &str = "lan, level=N or core-set=NAME";

/// The presets both rules share.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Preset {
    KeepAll,
    KeepMajority,
    StaticQuorum(u32),
    KeepOldest,
    ContainsKind(MemberKind),
}

fn parse_preset(s: &str) -> Result<Preset, String> {
    let bad = || format!("{s:?} is not a preset: expected {PRESETS}");
    match s.split_once('=') {
        None => match s {
            "keep-all" => Ok(Preset::KeepAll),
            "keep-majority" => Ok(Preset::KeepMajority),
            "keep-oldest" => Ok(Preset::KeepOldest),
            "static-quorum" => Err(format!("{s:?} needs a size: static-quorum=N (N >= 1)")),
            "contains-kind" => Err(format!("{s:?} needs a kind: contains-kind=KIND")),
            _ => Err(bad()),
        },
        Some(("static-quorum", n)) => match n.parse::<u32>() {
            Ok(0) => Err(format!(
                "{s:?}: a static quorum is at least 1 (keep-all has no condition)"
            )),
            Ok(n) => Ok(Preset::StaticQuorum(n)),
            Err(_) => Err(format!(
                "{s:?}: the quorum {n:?} is not a whole number from 1 to {}",
                u32::MAX
            )),
        },
        Some(("contains-kind", "")) => Err(format!("{s:?}: the kind is empty")),
        Some(("contains-kind", k)) => MemberKind::parse(k)
            .map(Preset::ContainsKind)
            .map_err(|e| format!("{s:?}: {e}")),
        Some(_) => Err(bad()),
    }
}

fn format_preset(p: &Preset) -> String {
    match p {
        Preset::KeepAll => "keep-all".into(),
        Preset::KeepMajority => "keep-majority".into(),
        Preset::StaticQuorum(n) => format!("static-quorum={n}"),
        Preset::KeepOldest => "keep-oldest".into(),
        Preset::ContainsKind(k) => format!("contains-kind={k}"),
    }
}

/// Parses a `--survive` value.
pub fn parse_survive(s: &str) -> Result<SurviveRule, String> {
    Ok(match parse_preset(s)? {
        Preset::KeepAll => SurviveRule::KeepAll,
        Preset::KeepMajority => SurviveRule::KeepMajority,
        Preset::StaticQuorum(n) => SurviveRule::StaticQuorum(n),
        Preset::KeepOldest => SurviveRule::KeepOldest,
        Preset::ContainsKind(k) => SurviveRule::ContainsKind(k),
    })
}

/// Parses a `--merge` value.
pub fn parse_merge(s: &str) -> Result<MergeRule, String> {
    Ok(match parse_preset(s)? {
        Preset::KeepAll => MergeRule::KeepAll,
        Preset::KeepMajority => MergeRule::KeepMajority,
        Preset::StaticQuorum(n) => MergeRule::StaticQuorum(n),
        Preset::KeepOldest => MergeRule::KeepOldest,
        Preset::ContainsKind(k) => MergeRule::ContainsKind(k),
    })
}

/// A survive rule in the spelling [`parse_survive`] takes.
pub fn format_survive(r: &SurviveRule) -> String {
    format_preset(&match r {
        SurviveRule::KeepAll => Preset::KeepAll,
        SurviveRule::KeepMajority => Preset::KeepMajority,
        SurviveRule::StaticQuorum(n) => Preset::StaticQuorum(*n),
        SurviveRule::KeepOldest => Preset::KeepOldest,
        SurviveRule::ContainsKind(k) => Preset::ContainsKind(k.clone()),
    })
}

/// A merge rule in the spelling [`parse_merge`] takes.
pub fn format_merge(r: &MergeRule) -> String {
    format_preset(&match r {
        MergeRule::KeepAll => Preset::KeepAll,
        MergeRule::KeepMajority => Preset::KeepMajority,
        MergeRule::StaticQuorum(n) => Preset::StaticQuorum(*n),
        MergeRule::KeepOldest => Preset::KeepOldest,
        MergeRule::ContainsKind(k) => Preset::ContainsKind(k.clone()),
    })
}

/// Parses a `--name-scope` or `--membership-scope` value, and checks it
/// ([`Scope::validate`]).
pub fn parse_scope(s: &str) -> Result<Scope, String> {
    let scope = match s.split_once('=') {
        None if s == "lan" => Scope::Lan,
        Some(("level", n)) => match n.parse::<u8>() {
            Ok(n) => Scope::Level(n),
            Err(_) => {
                return Err(format!(
                    "{s:?}: the level {n:?} is not a whole number from 1 to {}",
                    u8::MAX
                ))
            }
        },
        Some(("core-set", name)) => Scope::CoreSet(name.to_owned()),
        _ => return Err(format!("{s:?} is not a scope: expected {SCOPES}")),
    };
    scope.validate().map_err(|e| format!("{s:?}: {e}"))?;
    Ok(scope)
}

/// A scope in the spelling [`parse_scope`] takes.
pub fn format_scope(s: &Scope) -> String {
    match s {
        Scope::Lan => "lan".into(),
        Scope::Level(n) => format!("level={n}"),
        Scope::CoreSet(name) => format!("core-set={name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_format_back() {
        let db = MemberKind::parse("db").expect("kind");
        let cases = [
            ("keep-all", SurviveRule::KeepAll, MergeRule::KeepAll),
            (
                "keep-majority",
                SurviveRule::KeepMajority,
                MergeRule::KeepMajority,
            ),
            (
                "static-quorum=3",
                SurviveRule::StaticQuorum(3),
                MergeRule::StaticQuorum(3),
            ),
            (
                "keep-oldest",
                SurviveRule::KeepOldest,
                MergeRule::KeepOldest,
            ),
            (
                "contains-kind=db",
                SurviveRule::ContainsKind(db.clone()),
                MergeRule::ContainsKind(db),
            ),
        ];
        for (text, survive, merge) in cases {
            assert_eq!(parse_survive(text), Ok(survive.clone()), "{text}");
            assert_eq!(parse_merge(text), Ok(merge.clone()), "{text}");
            assert_eq!(format_survive(&survive), text);
            assert_eq!(format_merge(&merge), text);
        }
    }

    #[test]
    fn bad_presets_say_why_in_one_line() {
        for bad in [
            "",
            "keep-some",
            "KEEP-ALL",
            "keep-all=1",
            "static-quorum",
            "static-quorum=",
            "static-quorum=0",
            "static-quorum=-1",
            "static-quorum=x",
            "static-quorum=99999999999",
            "contains-kind",
            "contains-kind=",
            "contains-kind=\u{7}",
            &format!("contains-kind={}", "k".repeat(100)),
        ] {
            let e = parse_survive(bad).expect_err(bad);
            assert!(!e.is_empty() && !e.contains('\n'), "{bad:?}: {e}");
            assert!(parse_merge(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scopes_parse_and_format_back() {
        for (text, scope) in [
            ("lan", Scope::Lan),
            ("level=1", Scope::Level(1)),
            ("level=3", Scope::Level(3)),
            ("core-set=backbone", Scope::CoreSet("backbone".into())),
        ] {
            assert_eq!(parse_scope(text), Ok(scope.clone()));
            assert_eq!(format_scope(&scope), text);
        }
        for bad in [
            "",
            "LAN",
            "level",
            "level=0",
            "level=256",
            "level=two",
            "core-set=",
            "core-set=no spaces",
            "galaxy=1",
        ] {
            let e = parse_scope(bad).expect_err(bad);
            assert!(!e.contains('\n'), "{bad:?}: {e}");
        }
    }
}
