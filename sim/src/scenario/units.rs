//! Value types scenario files write as strings: durations (`"2s"`, `"500ms"`), rates
//! (`"1M/s"`, `"2000/s"`), bandwidths (`"1Gbit/s"`) and ranges (`"1024-65535"`, `[64, 128]`).
//!
//! Each rejects a bad value with a message naming what was expected; the TOML deserializer
//! attaches the location. Not here: cross-references between tables (see `validate`).

use std::fmt;

use datapath::TimeNs;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// A duration in virtual nanoseconds, written `"<number><unit>"` with unit ns, us, ms, s,
/// m or h (`"1.5s"`, `"250ms"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DurationNs(pub TimeNs);

/// Packets (or connections) per second, written `"<number>[k|M|G]/s"` or as an integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Rate(pub u64);

/// Link bandwidth in bits per second, written `"<number>[k|M|G]bit/s"` (or `bps`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Bandwidth(pub u64);

/// A set of inclusive integer ranges: `80`, `"1024-65535"`, `[64, 128]`, `["1-5", 9]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RangeSet(pub Vec<(u32, u32)>);

/// Split `"12.5ms"` into a decimal number scaled by `10^9` and its suffix.
fn split_number(text: &str) -> Option<(u128, &str)> {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.len() > 9 || fraction.contains('.') {
        return None;
    }
    let whole: u128 = whole.parse().ok()?;
    let padded = format!("{fraction:0<9}");
    let fraction: u128 = padded.parse().ok()?;
    Some((
        whole.saturating_mul(1_000_000_000).saturating_add(fraction),
        suffix.trim(),
    ))
}

/// Parse a duration string to nanoseconds.
pub fn parse_duration(text: &str) -> Result<TimeNs, String> {
    let bad = || {
        format!(
            "invalid duration {text:?}: expected a number and a unit (ns, us, ms, s, m, h), e.g. \"500ms\""
        )
    };
    let (nano_units, unit) = split_number(text.trim()).ok_or_else(bad)?;
    let ns_per_unit: u128 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" | "min" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err(bad()),
    };
    let ns = nano_units.saturating_mul(ns_per_unit) / 1_000_000_000;
    match TimeNs::try_from(ns) {
        Ok(ns) if ns <= MAX_DURATION_NS => Ok(ns),
        _ => Err(format!(
            "duration {text:?} is too large (at most 2^60 ns, about 36 years)"
        )),
    }
}

/// The longest duration a file may give: virtual times add several durations (arrival,
/// link latency, service time, timeouts), and 2^60 ns leaves room for sixteen of them in a
/// `TimeNs` without overflow.
pub const MAX_DURATION_NS: TimeNs = 1 << 60;

fn parse_scaled(text: &str, units: &[&str], what: &str, example: &str) -> Result<u64, String> {
    let bad = || format!("invalid {what} {text:?}: expected e.g. {example:?}");
    let (nano_units, suffix) = split_number(text.trim()).ok_or_else(bad)?;
    let (multiplier, rest) = match suffix.chars().next() {
        Some('k') => (1_000u128, &suffix[1..]),
        Some('M') => (1_000_000, &suffix[1..]),
        Some('G') => (1_000_000_000, &suffix[1..]),
        _ => (1, suffix),
    };
    if !units.contains(&rest) {
        return Err(bad());
    }
    u64::try_from(nano_units.saturating_mul(multiplier) / 1_000_000_000)
        .map_err(|_| format!("{what} {text:?} is too large"))
}

/// Parse a rate string to events per second.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    parse_scaled(text, &["/s", "pps", ""], "rate", "2000/s")
}

/// Parse a bandwidth string to bits per second.
pub fn parse_bandwidth(text: &str) -> Result<u64, String> {
    parse_scaled(text, &["bit/s", "bps"], "bandwidth", "1Gbit/s")
}

/// Parse `"a-b"` or `"a"` into an inclusive range.
fn parse_range(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("invalid range {text:?}: expected \"low-high\" or a number");
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let low: u32 = low.trim().parse().map_err(|_| bad())?;
    let high: u32 = high.trim().parse().map_err(|_| bad())?;
    if low > high {
        return Err(format!("invalid range {text:?}: low end above high end"));
    }
    Ok((low, high))
}

/// Reads a value written as a string (or a TOML integer, read as its digits); an unsigned
/// integer of another format (the JSON of a report: how these types serialize) is a count
/// of the base unit (the third field: `ns`, `/s`, `bit/s`), so reports read back.
struct StringVisitor<F>(F, &'static str, &'static str);

impl<T, F: Fn(&str) -> Result<T, String>> Visitor<'_> for StringVisitor<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.1)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        (self.0)(&v.to_string()).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.0)(&format!("{v}{}", self.2)).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for DurationNs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let visitor = StringVisitor(
            |s: &str| parse_duration(s).map(DurationNs),
            "a duration string such as \"500ms\"",
            "ns",
        );
        d.deserialize_any(visitor)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let visitor = StringVisitor(
            |s: &str| parse_rate(s).map(Rate),
            "a rate such as \"2000/s\"",
            "/s",
        );
        d.deserialize_any(visitor)
    }
}

impl<'de> Deserialize<'de> for Bandwidth {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let visitor = StringVisitor(
            |s: &str| parse_bandwidth(s).map(Bandwidth),
            "a bandwidth such as \"1Gbit/s\"",
            "bit/s",
        );
        d.deserialize_any(visitor)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RangeItem {
    Number(u32),
    Text(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RangeInput {
    One(RangeItem),
    Many(Vec<RangeItem>),
}

impl RangeItem {
    fn range(self) -> Result<(u32, u32), String> {
        match self {
            Self::Number(n) => Ok((n, n)),
            Self::Text(text) => parse_range(&text),
        }
    }
}

impl<'de> Deserialize<'de> for RangeSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = match RangeInput::deserialize(d).map_err(|_| {
            de::Error::custom("invalid range: expected a number, \"low-high\" or a list of them")
        })? {
            RangeInput::One(item) => vec![item],
            RangeInput::Many(items) => items,
        };
        let ranges = items
            .into_iter()
            .map(RangeItem::range)
            .collect::<Result<Vec<_>, _>>()
            .map_err(de::Error::custom)?;
        if ranges.is_empty() {
            return Err(de::Error::custom("invalid range: empty list"));
        }
        Ok(Self(ranges))
    }
}

impl RangeSet {
    /// A single inclusive range.
    pub fn single(low: u32, high: u32) -> Self {
        Self(vec![(low, high)])
    }

    /// Number of values in the set (ranges may overlap; overlaps count twice).
    pub fn len(&self) -> u64 {
        self.0
            .iter()
            .map(|&(low, high)| u64::from(high - low) + 1)
            .sum()
    }

    /// True when the set has no values (never, once deserialized).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `index`-th value (modulo the set's size).
    pub fn nth(&self, index: u64) -> u32 {
        let mut index = index % self.len().max(1);
        for &(low, high) in &self.0 {
            let size = u64::from(high - low) + 1;
            if index < size {
                return low + index as u32;
            }
            index -= size;
        }
        self.0.first().map_or(0, |r| r.0)
    }

    /// The highest value in the set.
    pub fn max(&self) -> u32 {
        self.0.iter().map(|r| r.1).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_parse() {
        assert_eq!(parse_duration("2s"), Ok(2_000_000_000));
        assert_eq!(parse_duration("1.5ms"), Ok(1_500_000));
        assert_eq!(parse_duration("250us"), Ok(250_000));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("abc").is_err());
        assert_eq!(parse_rate("1M/s"), Ok(1_000_000));
        assert_eq!(parse_rate("2000/s"), Ok(2000));
        assert_eq!(parse_rate("2.5k/s"), Ok(2500));
        assert!(parse_rate("abc").is_err());
        assert_eq!(parse_bandwidth("1Gbit/s"), Ok(1_000_000_000));
        assert!(parse_bandwidth("1G").is_err());
        assert_eq!(parse_range("1024-65535"), Ok((1024, 65535)));
        assert!(parse_range("9-1").is_err());
        let set = RangeSet(vec![(1, 2), (10, 10)]);
        assert_eq!((set.len(), set.nth(2), set.nth(3)), (3, 10, 1));
    }
}
