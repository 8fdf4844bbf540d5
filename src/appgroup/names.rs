//! Validated names: [`GroupName`], [`MemberName`] and [`MemberKind`]
//! (seed 003, section II.B.2: a group's name is unique under its
//! name-scope; a member's name is unique inside its group).
//!
//! Each is a newtype over `String` that can only hold a valid value: the
//! constructors check, and serde decodes through the same check
//! (`#[serde(try_from = "String")]`), so a frame carrying an invalid name
//! fails to decode instead of smuggling it in.

use crate::coreset::MAX_GROUP_NAME;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Longest group or member name, in characters (the same limit as the
/// mserver group names, [`MAX_GROUP_NAME`]).
pub const MAX_NAME: usize = MAX_GROUP_NAME;

/// Longest member kind, in characters.
pub const MAX_KIND: usize = 32;

/// Why a string is not a valid name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("the {what} is empty")]
    Empty {
        /// Which kind of name ("group name", "member name", "member kind").
        what: &'static str,
    },
    /// The name is longer than allowed.
    #[error("the {what} has {len} characters, more than {max}")]
    TooLong {
        /// Which kind of name.
        what: &'static str,
        /// Its length in characters.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name holds a character it may not.
    #[error("the {what} holds {ch:?}, which is not allowed ({allowed})")]
    BadChar {
        /// Which kind of name.
        what: &'static str,
        /// The first offending character.
        ch: char,
        /// What is allowed, in words.
        allowed: &'static str,
    },
}

/// Checks `s` against a length range in characters and a character rule.
fn check(
    s: &str,
    what: &'static str,
    allow_empty: bool,
    max: usize,
    ok: fn(char) -> bool,
    allowed: &'static str,
) -> Result<(), NameError> {
    if s.is_empty() {
        return if allow_empty {
            Ok(())
        } else {
            Err(NameError::Empty { what })
        };
    }
    // Count at most max + 1 characters: an overlong string is not walked
    // to its end.
    let len = s.chars().take(max + 1).count();
    if len > max {
        return Err(NameError::TooLong {
            what,
            len: s.chars().count(),
            max,
        });
    }
    if let Some(ch) = s.chars().find(|&c| !ok(c)) {
        return Err(NameError::BadChar { what, ch, allowed });
    }
    Ok(())
}

fn group_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-'
}

fn printable(c: char) -> bool {
    !c.is_control()
}

const GROUP_CHARS: &str = "letters, digits, '.', '_' and '-'";
const PRINTABLE: &str = "printable characters, no control characters";

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal, $allow_empty:expr, $max:expr, $ok:expr, $allowed:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// Checks `s` and wraps it.
            pub fn parse(s: &str) -> Result<Self, NameError> {
                check(s, $what, $allow_empty, $max, $ok, $allowed)?;
                Ok($ty(s.to_owned()))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                check(&s, $what, $allow_empty, $max, $ok, $allowed)?;
                Ok($ty(s))
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = NameError;
            fn try_from(s: &str) -> Result<Self, NameError> {
                $ty::parse(s)
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                $ty::parse(s)
            }
        }

        impl From<$ty> for String {
            fn from(name: $ty) -> String {
                name.0
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// An application group's name: 1 to [`MAX_NAME`] characters of
    /// `[A-Za-z0-9._-]` (the rule of mserver group names,
    /// [`crate::coreset::valid_group_name`]). Unique under the group's
    /// name-scope (seed 003, section II.B.2).
    GroupName,
    "group name",
    false,
    MAX_NAME,
    group_char,
    GROUP_CHARS
);

name_type!(
    /// A member's name inside its group: 1 to [`MAX_NAME`] characters,
    /// none of them a control character. Unique inside the group: a second
    /// process joining under a name already present gets
    /// [`AppError::NameTaken`](super::AppError::NameTaken).
    MemberName,
    "member name",
    false,
    MAX_NAME,
    printable,
    PRINTABLE
);

name_type!(
    /// A member's kind: a short tag (0 to [`MAX_KIND`] characters, no
    /// control characters; empty by default) the application chooses, for
    /// example `"primary"` or `"replica"`. The partition rules can require
    /// a part to hold a member of a given kind
    /// ([`SurviveRule::ContainsKind`](super::SurviveRule::ContainsKind)).
    #[derive(Default)]
    MemberKind,
    "member kind",
    true,
    MAX_KIND,
    printable,
    PRINTABLE
);

impl MemberKind {
    /// Whether the kind is the empty tag.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coreset::valid_group_name;
    use proptest::prelude::*;

    #[test]
    fn group_names() {
        assert!(GroupName::parse("chat.room-1_a").is_ok());
        assert_eq!(
            GroupName::parse(""),
            Err(NameError::Empty { what: "group name" })
        );
        assert!(matches!(
            GroupName::parse("a b"),
            Err(NameError::BadChar { ch: ' ', .. })
        ));
        assert!(matches!(
            GroupName::parse("é"),
            Err(NameError::BadChar { ch: 'é', .. })
        ));
        let long = "a".repeat(MAX_NAME + 1);
        assert_eq!(
            GroupName::parse(&long),
            Err(NameError::TooLong {
                what: "group name",
                len: MAX_NAME + 1,
                max: MAX_NAME
            })
        );
        assert!(GroupName::parse(&"a".repeat(MAX_NAME)).is_ok());
        let name: GroupName = "g1".parse().expect("valid");
        assert_eq!(name.to_string(), "g1");
        assert_eq!(String::from(name), "g1");
    }

    #[test]
    fn member_names_and_kinds() {
        assert!(MemberName::parse("worker 7 (ünïcode)").is_ok());
        assert!(MemberName::parse("").is_err());
        assert!(matches!(
            MemberName::parse("a\nb"),
            Err(NameError::BadChar { ch: '\n', .. })
        ));
        assert!(MemberName::parse(&"é".repeat(MAX_NAME)).is_ok());
        assert!(MemberName::parse(&"é".repeat(MAX_NAME + 1)).is_err());
        assert!(MemberKind::parse("").is_ok());
        assert!(MemberKind::default().is_empty());
        assert!(MemberKind::parse(&"k".repeat(MAX_KIND)).is_ok());
        assert!(MemberKind::parse(&"k".repeat(MAX_KIND + 1)).is_err());
        assert!(MemberKind::parse("\u{7f}").is_err());
    }

    #[test]
    fn error_messages_are_one_line() {
        let e = GroupName::parse("a/b").expect_err("invalid");
        let msg = e.to_string();
        assert!(!msg.contains('\n'));
        assert!(msg.contains("group name"), "{msg}");
    }

    #[test]
    fn decoding_checks_names() {
        let cfg = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec("bad name!", cfg).expect("encode");
        let r: Result<(GroupName, usize), _> = bincode::serde::decode_from_slice(&bytes, cfg);
        assert!(r.is_err());
        let bytes = bincode::serde::encode_to_vec("good-name", cfg).expect("encode");
        let (g, _): (GroupName, usize) =
            bincode::serde::decode_from_slice(&bytes, cfg).expect("decode");
        assert_eq!(g.as_str(), "good-name");
    }

    proptest! {
        #[test]
        fn group_name_agrees_with_mserver_rule(s in "\\PC{0,70}|[A-Za-z0-9._-]{0,70}") {
            prop_assert_eq!(GroupName::parse(&s).is_ok(), valid_group_name(&s));
        }

        #[test]
        fn member_name_rule(s in "\\PC{0,70}|[\\x00-\\x7f]{0,10}") {
            let n = s.chars().count();
            let ok = (1..=MAX_NAME).contains(&n) && !s.chars().any(char::is_control);
            prop_assert_eq!(MemberName::parse(&s).is_ok(), ok);
        }
    }
}
