//! Identifiers that cross the HTTP edge, parsed once into types so handlers,
//! stores and tools never see an unchecked string.

use std::fmt;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why an identifier was refused; the message is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// `^[A-Za-z0-9_-]{1,64}$`: safe as a single path component on every platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let ok = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ParseError(
                "must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'".into(),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserId {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<UserId> for String {
    fn from(value: UserId) -> Self {
        value.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A relative path below the user's directory: no root, no `..`, no NUL,
/// at most 200 characters. Symlinks are checked later, against the disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subdir(String);

impl Subdir {
    pub const MAX_LEN: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.chars().count() > Self::MAX_LEN {
            return Err(ParseError(format!(
                "subdir must be at most {} characters",
                Self::MAX_LEN
            )));
        }
        if raw.contains('\0') {
            return Err(ParseError("subdir must not contain NUL bytes".into()));
        }
        if raw.starts_with('/') || raw.starts_with('\\') {
            return Err(ParseError(
                "subdir must be relative to the user's directory".into(),
            ));
        }
        let path = Path::new(raw);
        for component in path.components() {
            match component {
                Component::Normal(_) | Component::CurDir => {}
                Component::ParentDir => {
                    return Err(ParseError("subdir must not contain '..'".into()));
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(ParseError(
                        "subdir must be relative to the user's directory".into(),
                    ));
                }
            }
        }
        Ok(Self(raw.trim_end_matches('/').to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Subdir {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Subdir> for String {
    fn from(value: Subdir) -> Self {
        value.0
    }
}

/// A session's UUID (v4 when we mint it; any UUID is accepted on lookup).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub Uuid);

impl SessionId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// `None` for anything that is not a UUID: such a session cannot exist.
    pub fn parse(raw: &str) -> Option<Self> {
        Uuid::parse_str(raw).ok().map(Self)
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_accepts_the_contract_alphabet() {
        for ok in ["alice", "A_b-9", &"x".repeat(64)] {
            assert!(UserId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn user_id_rejects_everything_else() {
        for bad in ["", "a b", "../x", "a/b", "é", &"x".repeat(65), "a.b"] {
            assert!(UserId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subdir_accepts_nested_relative_paths() {
        assert_eq!(Subdir::parse("a/b/c").unwrap().as_str(), "a/b/c");
        assert_eq!(Subdir::parse("proj/").unwrap().as_str(), "proj");
    }

    #[test]
    fn subdir_rejects_escapes() {
        for bad in ["/etc", "..", "a/../..", "a/..", "a\0b", &"x".repeat(201)] {
            assert!(Subdir::parse(bad).is_err(), "{bad:?}");
        }
    }
}
