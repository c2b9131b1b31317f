//! [`SmallString`]: the text type of method names and invocation and stream ids.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use compact_str::CompactString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An immutable string that keeps up to 24 bytes inline (12 on 32-bit targets), without an
/// allocation of its own.
///
/// Method names and invocation ids are nearly always that short (clients number their
/// invocations `"0"`, `"1"`, …), so reading an invocation allocates nothing for either; a
/// longer one is kept on the heap like a `String`. It reads as a `&str` (through `Deref`,
/// [`as_str`](Self::as_str) and `Display`), compares, hashes and orders as one, and is made
/// from `&str` or `String` with `into()`.
///
/// The representation is [`compact_str`]'s, kept behind this type so it can change without
/// changing the API.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SmallString(CompactString);

impl SmallString {
    /// The empty string.
    pub const fn new() -> Self {
        SmallString(CompactString::const_new(""))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The text as a `String` (which allocates for text that was kept inline).
    pub fn into_string(self) -> String {
        self.0.into_string()
    }
}

impl Deref for SmallString {
    type Target = str;

    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl AsRef<str> for SmallString {
    fn as_ref(&self) -> &str {
        self.0.as_str()
    }
}

impl Borrow<str> for SmallString {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for SmallString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for SmallString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl From<&str> for SmallString {
    fn from(text: &str) -> Self {
        SmallString(CompactString::new(text))
    }
}

impl From<&String> for SmallString {
    fn from(text: &String) -> Self {
        SmallString(CompactString::new(text))
    }
}

/// Reuses the `String`'s allocation when it is too long to keep inline.
impl From<String> for SmallString {
    fn from(text: String) -> Self {
        SmallString(CompactString::from(text))
    }
}

impl From<SmallString> for String {
    fn from(text: SmallString) -> Self {
        text.into_string()
    }
}

impl PartialEq<str> for SmallString {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for SmallString {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for SmallString {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<SmallString> for str {
    fn eq(&self, other: &SmallString) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<SmallString> for &str {
    fn eq(&self, other: &SmallString) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<SmallString> for String {
    fn eq(&self, other: &SmallString) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for SmallString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SmallString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        CompactString::deserialize(deserializer).map(SmallString)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::SmallString;

    #[test]
    fn short_and_long_text_read_back_the_same() {
        // Either side of the inline limit, and multi-byte characters across it.
        let (inline, longer, accents) = ("x".repeat(24), "x".repeat(25), "é".repeat(50));
        for text in ["", "0", "SendMessage", &inline, &longer, &accents] {
            let small = SmallString::from(text);
            assert_eq!(small.as_str(), text);
            assert_eq!(small, text);
            assert_eq!(SmallString::from(text.to_owned()), small);
            assert_eq!(String::from(small.clone()), text);
            assert_eq!(format!("{small}|{small:?}"), format!("{text}|{text:?}"));
        }
    }

    #[test]
    fn it_is_a_map_key_found_by_str() {
        let mut map = HashMap::new();
        map.insert(SmallString::from("17"), 1);
        assert_eq!(map.get("17"), Some(&1));
        assert_eq!(map.remove("17"), Some(1));
    }

    #[test]
    fn it_round_trips_through_serde_as_a_string() {
        let small: SmallString = serde_json::from_str(r#""a\"b""#).unwrap();
        assert_eq!(small, "a\"b");
        assert_eq!(serde_json::to_string(&small).unwrap(), r#""a\"b""#);
    }
}
