//! Value types that follow .NET's per-protocol conventions: bytes ([`Binary`]) and instants
//! ([`DateTime`]) have one encoding in MessagePack and another in JSON, so the same hub method
//! talks to JSON and MessagePack clients the way an ASP.NET Core hub taking `byte[]` or
//! `DateTime` does.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::de::{self, Deserializer, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// Bytes: a MessagePack `bin` value, and a base64 string (standard alphabet, padded) in JSON,
/// as .NET's serializers write a `byte[]`. Binds from either (a JSON string that is not
/// valid base64 is an argument error).
///
/// ```
/// use signalr_core::protocol::Binary;
///
/// let bytes = Binary::from(vec![1, 2, 3]);
/// assert_eq!(serde_json::to_string(&bytes).unwrap(), r#""AQID""#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Binary(pub Vec<u8>);

impl Binary {
    /// The bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl From<Vec<u8>> for Binary {
    fn from(bytes: Vec<u8>) -> Self {
        Binary(bytes)
    }
}

impl From<&[u8]> for Binary {
    fn from(bytes: &[u8]) -> Self {
        Binary(bytes.to_vec())
    }
}

impl From<Binary> for Vec<u8> {
    fn from(binary: Binary) -> Self {
        binary.0
    }
}

impl Deref for Binary {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for Binary {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl AsRef<[u8]> for Binary {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for Binary {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Binary {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(BinaryVisitor)
        } else {
            deserializer.deserialize_byte_buf(BinaryVisitor)
        }
    }
}

struct BinaryVisitor;

impl<'de> Visitor<'de> for BinaryVisitor {
    type Value = Binary;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("binary data (MessagePack bin, or a base64 string in JSON)")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Binary, E> {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Binary)
            .map_err(|_| E::custom("the string is not valid base64"))
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Binary, E> {
        Ok(Binary(bytes.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Binary, E> {
        Ok(Binary(bytes))
    }
}

/// An instant in UTC with nanosecond precision, from `0000-01-01T00:00:00Z` to
/// `9999-12-31T23:59:59.999999999Z`: the MessagePack timestamp extension (type -1) and an
/// RFC 3339 (ISO 8601) string in JSON, as .NET's serializers write a `DateTime` and as the JS
/// client's MessagePack protocol reads a `Date`.
///
/// MessagePack input may use any of the three timestamp lengths (4, 8 or 12 bytes); output
/// uses the shortest that is exact. JSON output is `YYYY-MM-DDTHH:MM:SS[.fraction]Z` with
/// trailing zeros of the fraction left out; JSON input needs a UTC offset (`Z` or `±HH:MM`)
/// and at most nine fraction digits. Anything else, or an instant outside the range, fails
/// to bind with an error that says why.
///
/// ```
/// use signalr_core::protocol::DateTime;
///
/// let instant: DateTime = "2024-02-29T12:00:00.5+01:00".parse().unwrap();
/// assert_eq!(instant.to_string(), "2024-02-29T11:00:00.5Z");
/// assert_eq!(instant.unix_millis(), 1_709_204_400_500);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DateTime {
    seconds: i64,
    nanos: u32,
}

/// Why a [`DateTime`] could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DateTimeError(&'static str);

/// Seconds from the Unix epoch to 0000-01-01T00:00:00Z.
const MIN_SECONDS: i64 = -62_167_219_200;
/// Seconds from the Unix epoch to 9999-12-31T23:59:59Z.
const MAX_SECONDS: i64 = 253_402_300_799;
const NANOS_PER_SECOND: u32 = 1_000_000_000;
/// The MessagePack extension type of timestamps.
pub(crate) const TIMESTAMP_EXT: i8 = -1;

/// The newtype name under which rmp-serde (and so our MessagePack protocol) reads and writes
/// an extension value. Spelled out rather than imported so that `DateTime` keeps one
/// non-human-readable form whether or not the `msgpack` feature is on.
const EXT_STRUCT_NAME: &str = "_ExtStruct";

const OUT_OF_RANGE: DateTimeError =
    DateTimeError("the instant is outside 0000-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z");
const BAD_TEXT: DateTimeError =
    DateTimeError("not an RFC 3339 date-time (expected YYYY-MM-DDTHH:MM:SS[.fraction]Z or ±HH:MM)");

impl DateTime {
    /// 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: DateTime = DateTime {
        seconds: 0,
        nanos: 0,
    };

    /// The instant `seconds` and `nanos` after the Unix epoch (`seconds` may be negative;
    /// `nanos` always counts forward and must be below 1,000,000,000).
    pub fn from_unix(seconds: i64, nanos: u32) -> Result<DateTime, DateTimeError> {
        if nanos >= NANOS_PER_SECOND {
            return Err(DateTimeError("the nanoseconds must be below 1,000,000,000"));
        }
        if !(MIN_SECONDS..=MAX_SECONDS).contains(&seconds) {
            return Err(OUT_OF_RANGE);
        }
        Ok(DateTime { seconds, nanos })
    }

    /// The instant `millis` milliseconds after the Unix epoch (what a JS `Date.getTime()`
    /// returns).
    pub fn from_unix_millis(millis: i64) -> Result<DateTime, DateTimeError> {
        let nanos = millis.rem_euclid(1000) as u32 * 1_000_000;
        DateTime::from_unix(millis.div_euclid(1000), nanos)
    }

    /// The current time.
    pub fn now() -> DateTime {
        DateTime::try_from(SystemTime::now()).expect("the system clock is between years 0 and 9999")
    }

    /// Whole seconds since the Unix epoch (rounded down, so negative before 1970).
    pub fn unix_seconds(&self) -> i64 {
        self.seconds
    }

    /// The nanoseconds past [`unix_seconds`](Self::unix_seconds).
    pub fn subsec_nanos(&self) -> u32 {
        self.nanos
    }

    /// Milliseconds since the Unix epoch, rounded down.
    pub fn unix_millis(&self) -> i64 {
        self.seconds * 1000 + i64::from(self.nanos / 1_000_000)
    }

    /// Reads the data of a MessagePack timestamp extension value (4, 8 or 12 bytes).
    pub(crate) fn from_timestamp_ext(data: &[u8]) -> Result<DateTime, DateTimeError> {
        let (seconds, nanos) = match *data {
            [a, b, c, d] => (i64::from(u32::from_be_bytes([a, b, c, d])), 0),
            [..] if data.len() == 8 => {
                let packed = u64::from_be_bytes(data.try_into().expect("eight bytes"));
                ((packed & ((1 << 34) - 1)) as i64, (packed >> 34) as u32)
            }
            [..] if data.len() == 12 => {
                let nanos = u32::from_be_bytes(data[..4].try_into().expect("four bytes"));
                let seconds = i64::from_be_bytes(data[4..].try_into().expect("eight bytes"));
                (seconds, nanos)
            }
            _ => {
                return Err(DateTimeError(
                    "a MessagePack timestamp has 4, 8 or 12 bytes of data",
                ))
            }
        };
        DateTime::from_unix(seconds, nanos)
    }

    /// The data of the shortest exact MessagePack timestamp for this instant.
    pub(crate) fn timestamp_ext(&self) -> ([u8; 12], usize) {
        let mut data = [0u8; 12];
        if self.seconds >> 34 == 0 {
            if self.nanos == 0 && self.seconds >> 32 == 0 {
                data[..4].copy_from_slice(&(self.seconds as u32).to_be_bytes());
                return (data, 4);
            }
            let packed = (u64::from(self.nanos) << 34) | self.seconds as u64;
            data[..8].copy_from_slice(&packed.to_be_bytes());
            return (data, 8);
        }
        data[..4].copy_from_slice(&self.nanos.to_be_bytes());
        data[4..].copy_from_slice(&self.seconds.to_be_bytes());
        (data, 12)
    }
}

impl TryFrom<SystemTime> for DateTime {
    type Error = DateTimeError;

    fn try_from(time: SystemTime) -> Result<DateTime, DateTimeError> {
        match time.duration_since(UNIX_EPOCH) {
            Ok(after) => {
                let seconds = i64::try_from(after.as_secs()).map_err(|_| OUT_OF_RANGE)?;
                DateTime::from_unix(seconds, after.subsec_nanos())
            }
            Err(before) => {
                let before = before.duration();
                let seconds = i64::try_from(before.as_secs()).map_err(|_| OUT_OF_RANGE)?;
                match before.subsec_nanos() {
                    0 => DateTime::from_unix(-seconds, 0),
                    nanos => DateTime::from_unix(-seconds - 1, NANOS_PER_SECOND - nanos),
                }
            }
        }
    }
}

impl From<DateTime> for SystemTime {
    fn from(time: DateTime) -> SystemTime {
        let nanos = Duration::from_nanos(u64::from(time.nanos));
        if time.seconds >= 0 {
            UNIX_EPOCH + Duration::from_secs(time.seconds as u64) + nanos
        } else {
            UNIX_EPOCH - Duration::from_secs(time.seconds.unsigned_abs()) + nanos
        }
    }
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The civil date (year, month, day) `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl fmt::Display for DateTime {
    /// RFC 3339 in UTC, with as many fraction digits as the instant needs (none for whole
    /// seconds), like .NET's `System.Text.Json`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.seconds.div_euclid(86_400);
        let second_of_day = self.seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60
        )?;
        if self.nanos != 0 {
            let mut digits = 9;
            let mut fraction = self.nanos;
            while fraction % 10 == 0 {
                fraction /= 10;
                digits -= 1;
            }
            write!(f, ".{fraction:0digits$}")?;
        }
        f.write_str("Z")
    }
}

impl fmt::Debug for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DateTime({self})")
    }
}

/// Reads `N` ASCII digits at `at` as a number.
fn digits<const N: usize>(text: &[u8], at: usize) -> Result<u32, DateTimeError> {
    let field = text.get(at..at + N).ok_or(BAD_TEXT)?;
    field.iter().try_fold(0u32, |value, &b| {
        if b.is_ascii_digit() {
            Ok(value * 10 + u32::from(b - b'0'))
        } else {
            Err(BAD_TEXT)
        }
    })
}

fn expect(text: &[u8], at: usize, allowed: &[u8]) -> Result<(), DateTimeError> {
    match text.get(at) {
        Some(b) if allowed.contains(b) => Ok(()),
        _ => Err(BAD_TEXT),
    }
}

impl FromStr for DateTime {
    type Err = DateTimeError;

    /// Parses an RFC 3339 date-time with a UTC offset, such as `2024-05-01T08:30:00Z`,
    /// `2024-05-01T08:30:00.123Z` (a JS `toISOString()`) or `2024-05-01T10:30:00+02:00`.
    fn from_str(text: &str) -> Result<DateTime, DateTimeError> {
        let text = text.as_bytes();
        let year = digits::<4>(text, 0)?;
        expect(text, 4, b"-")?;
        let month = digits::<2>(text, 5)?;
        expect(text, 7, b"-")?;
        let day = digits::<2>(text, 8)?;
        expect(text, 10, b"Tt ")?;
        let hour = digits::<2>(text, 11)?;
        expect(text, 13, b":")?;
        let minute = digits::<2>(text, 14)?;
        expect(text, 16, b":")?;
        let second = digits::<2>(text, 17)?;
        let mut at = 19;
        let mut nanos = 0;
        if text.get(at) == Some(&b'.') {
            at += 1;
            let start = at;
            while text.get(at).is_some_and(u8::is_ascii_digit) {
                at += 1;
            }
            let count = at - start;
            if count == 0 || count > 9 {
                return Err(DateTimeError(
                    "an RFC 3339 fraction of a second has one to nine digits",
                ));
            }
            let fraction = text[start..at]
                .iter()
                .fold(0u32, |value, &b| value * 10 + u32::from(b - b'0'));
            nanos = fraction * 10u32.pow((9 - count) as u32);
        }
        let offset_seconds = match text.get(at) {
            Some(b'Z' | b'z') if at + 1 == text.len() => 0,
            Some(sign @ (b'+' | b'-')) if at + 6 == text.len() => {
                let hours = digits::<2>(text, at + 1)?;
                expect(text, at + 3, b":")?;
                let minutes = digits::<2>(text, at + 4)?;
                if hours > 23 || minutes > 59 {
                    return Err(BAD_TEXT);
                }
                let offset = i64::from(hours * 3600 + minutes * 60);
                if *sign == b'-' {
                    -offset
                } else {
                    offset
                }
            }
            None => {
                return Err(DateTimeError(
                    "an RFC 3339 date-time needs a UTC offset (Z or ±HH:MM)",
                ))
            }
            Some(_) => return Err(BAD_TEXT),
        };
        let year = i64::from(year);
        if !(1..=12).contains(&month)
            || day == 0
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return Err(DateTimeError("the date or time of day does not exist"));
        }
        let seconds = days_from_civil(year, month, day) * 86_400
            + i64::from(hour * 3600 + minute * 60 + second)
            - offset_seconds;
        DateTime::from_unix(seconds, nanos)
    }
}

/// The `(type, data)` pair rmp-serde's extension convention expects inside
/// [`EXT_STRUCT_NAME`].
struct ExtValue<'a>(i8, &'a [u8]);

impl Serialize for ExtValue<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        struct Data<'a>(&'a [u8]);
        impl Serialize for Data<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(self.0)
            }
        }
        let mut pair = serializer.serialize_tuple(2)?;
        pair.serialize_element(&self.0)?;
        pair.serialize_element(&Data(self.1))?;
        pair.end()
    }
}

impl Serialize for DateTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            let (data, len) = self.timestamp_ext();
            serializer
                .serialize_newtype_struct(EXT_STRUCT_NAME, &ExtValue(TIMESTAMP_EXT, &data[..len]))
        }
    }
}

impl<'de> Deserialize<'de> for DateTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(DateTimeVisitor)
        } else {
            // MessagePack presents an extension value as a newtype; a string is read too.
            deserializer.deserialize_any(DateTimeVisitor)
        }
    }
}

struct DateTimeVisitor;

impl<'de> Visitor<'de> for DateTimeVisitor {
    type Value = DateTime;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a date-time (a MessagePack timestamp, or an RFC 3339 string)")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<DateTime, E> {
        text.parse().map_err(E::custom)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, ext: D) -> Result<DateTime, D::Error> {
        let (tag, ExtData(data)) = <(i8, ExtData)>::deserialize(ext)?;
        if tag != TIMESTAMP_EXT {
            return Err(de::Error::custom(format_args!(
                "MessagePack extension type {tag} is not a timestamp (type -1)"
            )));
        }
        DateTime::from_timestamp_ext(&data).map_err(de::Error::custom)
    }
}

/// The data bytes of an extension value.
struct ExtData(Vec<u8>);

impl<'de> Deserialize<'de> for ExtData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_bytes(BinaryVisitor)
            .map(|binary| ExtData(binary.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instant(text: &str) -> DateTime {
        text.parse().unwrap()
    }

    #[cfg(feature = "msgpack")]
    #[test]
    fn the_extension_newtype_name_is_rmp_serdes() {
        assert_eq!(EXT_STRUCT_NAME, rmp_serde::MSGPACK_EXT_STRUCT_NAME);
    }

    #[test]
    fn civil_conversions_agree_across_the_whole_range() {
        for days in (MIN_SECONDS / 86_400..=MAX_SECONDS / 86_400).step_by(7) {
            let (year, month, day) = civil_from_days(days);
            assert!(day >= 1 && day <= days_in_month(year, month));
            assert_eq!(days_from_civil(year, month, day), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(MIN_SECONDS / 86_400), (0, 1, 1));
        assert_eq!(civil_from_days(MAX_SECONDS / 86_400), (9999, 12, 31));
    }

    #[test]
    fn formats_rfc_3339_with_the_shortest_fraction() {
        let cases = [
            ((0, 0), "1970-01-01T00:00:00Z"),
            ((1_709_204_400, 500_000_000), "2024-02-29T11:00:00.5Z"),
            ((1_700_000_000, 123_000_000), "2023-11-14T22:13:20.123Z"),
            ((-1, 999_999_999), "1969-12-31T23:59:59.999999999Z"),
            ((MIN_SECONDS, 0), "0000-01-01T00:00:00Z"),
            ((MAX_SECONDS, 1), "9999-12-31T23:59:59.000000001Z"),
        ];
        for ((seconds, nanos), text) in cases {
            let time = DateTime::from_unix(seconds, nanos).unwrap();
            assert_eq!(time.to_string(), text);
            assert_eq!(instant(text), time, "{text} parses back");
        }
    }

    #[test]
    fn parses_offsets_fractions_and_lowercase() {
        assert_eq!(
            instant("2024-01-01T01:30:00+01:30"),
            instant("2024-01-01T00:00:00Z")
        );
        assert_eq!(
            instant("2023-12-31t23:00:00-01:00"),
            instant("2024-01-01T00:00:00z")
        );
        assert_eq!(
            instant("2024-01-01 00:00:00.1Z").subsec_nanos(),
            100_000_000
        );
        assert_eq!(
            instant("2024-01-01T00:00:00.123456789Z").subsec_nanos(),
            123_456_789
        );
    }

    #[test]
    fn rejects_text_that_is_not_an_instant() {
        for text in [
            "",
            "2024-01-01",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00.1234567890Z",
            "2024-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T23:59:60Z",
            "2024-01-01T00:00:00+24:00",
            "2024-01-01T00:00:00+0100",
            "2024-01-01T00:00:00Zjunk",
            "+2024-01-01T00:00:00Z",
            "0000-01-01T00:00:00+00:01",
            "٢٠٢٤-01-01T00:00:00Z",
        ] {
            assert!(text.parse::<DateTime>().is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn timestamp_ext_picks_the_shortest_exact_length() {
        let cases: [((i64, u32), &[u8]); 5] = [
            ((0, 0), &[0, 0, 0, 0]),
            ((u32::MAX as i64, 0), &[0xff, 0xff, 0xff, 0xff]),
            ((1, 1), &[0, 0, 0, 0x04, 0, 0, 0, 1]),
            ((1 << 32, 0), &[0, 0, 0, 1, 0, 0, 0, 0]),
            (
                (-1, 0),
                &[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            ),
        ];
        for ((seconds, nanos), data) in cases {
            let time = DateTime::from_unix(seconds, nanos).unwrap();
            let (bytes, len) = time.timestamp_ext();
            assert_eq!(&bytes[..len], data, "{time}");
            assert_eq!(DateTime::from_timestamp_ext(data).unwrap(), time);
        }
    }

    #[test]
    fn timestamp_ext_rejects_bad_lengths_nanoseconds_and_range() {
        assert!(DateTime::from_timestamp_ext(&[0; 5]).is_err());
        assert!(DateTime::from_timestamp_ext(&[]).is_err());
        // 64-bit form with nanoseconds 0x3fffffff (over a second).
        assert!(DateTime::from_timestamp_ext(&[0xff, 0xff, 0xff, 0xfc, 0, 0, 0, 0]).is_err());
        // 96-bit form with i64::MAX seconds.
        let mut far = [0u8; 12];
        far[4..].copy_from_slice(&i64::MAX.to_be_bytes());
        assert!(DateTime::from_timestamp_ext(&far).is_err());
    }

    #[test]
    fn converts_to_and_from_system_time() {
        for (seconds, nanos) in [(0, 0), (1_700_000_000, 5), (-1, 999_999_999), (-86_401, 1)] {
            let time = DateTime::from_unix(seconds, nanos).unwrap();
            assert_eq!(DateTime::try_from(SystemTime::from(time)).unwrap(), time);
        }
        assert_eq!(
            DateTime::from_unix_millis(-1).unwrap(),
            DateTime::from_unix(-1, 999_000_000).unwrap()
        );
        assert_eq!(DateTime::from_unix_millis(-1).unwrap().unix_millis(), -1);
    }
}
