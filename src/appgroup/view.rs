//! Members and views of an application group (seed 003, section II.B.4 and
//! II.B.5; DESIGN.md section 7 for the JSON form).

use super::names::{GroupName, MemberKind, MemberName};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a process asks for when it joins a group: its name in the group
/// and its kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member's name, unique inside the group.
    pub name: MemberName,
    /// The member's kind (may be empty).
    pub kind: MemberKind,
}

impl MemberInfo {
    /// A member named `name` of the empty kind.
    pub fn new(name: MemberName) -> Self {
        MemberInfo {
            name,
            kind: MemberKind::default(),
        }
    }

    /// The same member with kind `kind`.
    pub fn with_kind(mut self, kind: MemberKind) -> Self {
        self.kind = kind;
        self
    }
}

/// One member of an application group as every member sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppMember {
    /// Its name in the group.
    pub name: MemberName,
    /// Its kind.
    pub kind: MemberKind,
    /// Its identity: a UUID v7 the member interface draws when the process
    /// joins, so a process that leaves and joins again is a new member.
    pub id: Uuid,
    /// The host it runs on, as its member interface names it (the address
    /// information `lookup` returns, seed 003 section II.B.4).
    pub host: String,
}

/// One numbered view of an application group: the members, in the order
/// they joined (the oldest first).
///
/// View numbers increase by one with each change committed for the group
/// (one sequence per group); every member receives every view of its group
/// in order, or is excluded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppView {
    /// The group.
    pub group: GroupName,
    /// The view number.
    pub number: u64,
    /// The members, in join order.
    pub members: Vec<AppMember>,
}

impl AppView {
    /// The member named `name`, if present.
    pub fn member(&self, name: &MemberName) -> Option<&AppMember> {
        self.members.iter().find(|m| &m.name == name)
    }

    /// Whether the member with identity `id` is in the view.
    pub fn contains(&self, id: Uuid) -> bool {
        self.members.iter().any(|m| m.id == id)
    }

    /// How many members the view has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the view has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The line `msctl --mi PATH join GROUP --json` prints for this view
    /// as seen by `me` (DESIGN.md section 7):
    /// `{"group": "...", "view": N, "me": {...}, "members": [{"name": "...",
    /// "kind": "...", "id": "UUID", "host": "..."}, ...]}`.
    pub fn to_json(&self, me: &AppMember) -> serde_json::Value {
        serde_json::json!({
            "group": self.group,
            "view": self.number,
            "me": me,
            "members": self.members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, kind: &str, n: u128) -> AppMember {
        AppMember {
            name: MemberName::parse(name).expect("name"),
            kind: MemberKind::parse(kind).expect("kind"),
            id: Uuid::from_u128(n),
            host: "host-a".into(),
        }
    }

    #[test]
    fn json_line_has_the_documented_fields() {
        let a = member("a", "primary", 1);
        let b = member("b", "", 2);
        let view = AppView {
            group: GroupName::parse("g").expect("group"),
            number: 7,
            members: vec![a.clone(), b],
        };
        let line = view.to_json(&a).to_string();
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["group"], "g");
        assert_eq!(v["view"], 7);
        assert_eq!(v["me"]["name"], "a");
        assert_eq!(v["me"]["id"], Uuid::from_u128(1).to_string());
        assert_eq!(v["members"][1]["name"], "b");
        assert_eq!(v["members"][1]["kind"], "");
        assert_eq!(v["members"][1]["host"], "host-a");
        assert_eq!(v["members"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn lookups() {
        let view = AppView {
            group: GroupName::parse("g").expect("group"),
            number: 1,
            members: vec![member("a", "", 1), member("b", "", 2)],
        };
        assert_eq!(view.len(), 2);
        assert!(!view.is_empty());
        assert!(view.contains(Uuid::from_u128(2)));
        assert!(!view.contains(Uuid::from_u128(3)));
        let b = MemberName::parse("b").expect("name");
        assert_eq!(view.member(&b).map(|m| m.id), Some(Uuid::from_u128(2)));
    }

    #[test]
    fn bincode_round_trip() {
        let view = AppView {
            group: GroupName::parse("g").expect("group"),
            number: u64::MAX,
            members: vec![member("a", "k", 1)],
        };
        let cfg = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&view, cfg).expect("encode");
        let (back, used): (AppView, usize) =
            bincode::serde::decode_from_slice(&bytes, cfg).expect("decode");
        assert_eq!(back, view);
        assert_eq!(used, bytes.len());
    }
}
