//! Keys: which part of an event is its key, and which parallel subtask owns
//! it.
//!
//! Keys hash into a fixed number of *key groups* (`max_parallelism`, 128 by
//! default); each subtask owns a contiguous range of groups. State is
//! stored per key group, so a checkpoint can be restored at another
//! parallelism by handing out the groups differently (Flink's scheme).

use std::borrow::Cow;
use std::fmt;

use weir_batch::json::{Object, Value, needs_escape, value_at};

/// The default number of key groups.
pub const DEFAULT_MAX_PARALLELISM: u16 = 128;

/// Where an event's key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySelector {
    /// The event's own key (`key_by = "$key"`).
    EventKey,
    /// A top-level field of the JSON value (`key_by = "page"`). Strings
    /// give their text, other values their JSON text.
    Field(Field),
}

/// A field `key_by` reads, with what a row that leads with it starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    name: String,
    /// `{"name":`, when the name needs no escape: a value starting so
    /// has the field first, and is read there without a walk.
    leading: Option<Box<[u8]>>,
}

impl Field {
    fn new(name: &str) -> Self {
        let leading = (!needs_escape(name.as_bytes()))
            .then(|| format!("{{\"{name}\":").into_bytes().into_boxed_slice());
        Field {
            name: name.to_string(),
            leading,
        }
    }
}

impl KeySelector {
    /// Parses the `key_by` setting.
    pub fn parse(text: &str) -> Self {
        match text {
            "$key" => KeySelector::EventKey,
            field => KeySelector::Field(Field::new(field)),
        }
    }

    /// The key of an event.
    ///
    /// # Errors
    /// An event without a key, a value that is not a JSON object, or an
    /// object without the field, explained for a person.
    pub fn key<'a>(&self, key: Option<&'a [u8]>, value: &'a [u8]) -> Result<Cow<'a, [u8]>, String> {
        match self {
            KeySelector::EventKey => key
                .map(Cow::Borrowed)
                .ok_or_else(|| "the event has no key (key_by = \"$key\")".to_string()),
            KeySelector::Field(field) => match &field.leading {
                // The field comes first, written plainly: its value is
                // what `json_field` would find, with no walk.
                Some(leading) if value.starts_with(leading) => {
                    match value_at(value, leading.len()) {
                        Ok(raw) => field_key(raw, &field.name),
                        Err(e) => Err(format!("cannot read field `{}`: {e}", field.name)),
                    }
                }
                _ => json_field(value, &field.name),
            },
        }
    }
}

impl fmt::Display for KeySelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySelector::EventKey => f.write_str("$key"),
            KeySelector::Field(field) => f.write_str(&field.name),
        }
    }
}

/// Reads top-level field `field` of the JSON object `value` without
/// building the object (with [`weir_batch::json`], which guests use too):
/// strings give their (unescaped) text, anything else its JSON text.
///
/// It scans only as far as the field, so it runs once per event where
/// `key_by` is applied (the router, or a lone window subtask) at the cost
/// of a few comparisons for a leading field. The
/// rest of the object is not checked: sources check that each line is JSON
/// before it gets here (see `source::jsonl`), and the operator that reads
/// the value parses it anyway.
///
/// ```
/// use weir_core::keys::json_field;
/// assert_eq!(&*json_field(br#"{"a":{"x":1},"page":"/home"}"#, "page").unwrap(), b"/home");
/// assert_eq!(&*json_field(br#"{"auction":1007}"#, "auction").unwrap(), b"1007");
/// assert!(json_field(br#"{"a":1}"#, "page").unwrap_err().contains("`page`"));
/// ```
///
/// # Errors
/// A value that is not an object, JSON malformed before the field (or
/// anywhere, when the field is missing), or a missing or `null` field.
pub fn json_field<'a>(value: &'a [u8], field: &str) -> Result<Cow<'a, [u8]>, String> {
    let raw = Object::new(value)
        .get(field)
        .map_err(|e| format!("cannot read field `{field}`: {e}"))?
        .ok_or_else(|| format!("the field `{field}` is missing"))?;
    field_key(raw, field)
}

/// The key a field's value gives: a string's text, other values' JSON text.
#[inline(always)]
fn field_key<'a>(raw: Value<'a>, field: &str) -> Result<Cow<'a, [u8]>, String> {
    if raw.is_null() {
        Err(format!("the field `{field}` is null"))
    } else if raw.is_str() {
        match raw.as_str() {
            Ok(Cow::Borrowed(s)) => Ok(Cow::Borrowed(s.as_bytes())),
            Ok(Cow::Owned(s)) => Ok(Cow::Owned(s.into_bytes())),
            Err(e) => Err(format!("cannot read field `{field}`: {e}")),
        }
    } else {
        Ok(Cow::Borrowed(raw.raw()))
    }
}

/// The keys `key_by` gave a batch's events, one per event in order, kept
/// beside the batch instead of written into its events (see
/// [`EventKeys`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchKeys {
    bytes: Vec<u8>,
    /// Where each key ends in `bytes`.
    ends: Vec<usize>,
}

impl BatchKeys {
    /// Room for `events` keys of about `key_bytes` bytes in all.
    pub fn with_capacity(events: usize, key_bytes: usize) -> Self {
        BatchKeys {
            bytes: Vec::with_capacity(key_bytes),
            ends: Vec::with_capacity(events),
        }
    }

    /// Appends the next event's key.
    #[inline]
    pub fn push(&mut self, key: &[u8]) {
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len());
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Empties the list, keeping its buffers.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// The keys in event order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let key = &self.bytes[start..end];
            start = end;
            key
        })
    }
}

/// Where the events of a batch reaching a keyed window find the key they
/// are grouped by.
#[derive(Debug, Clone, Copy)]
pub enum EventKeys<'a> {
    /// In the events themselves.
    InEvents,
    /// Beside the batch, one per event: the router applied `key_by` to
    /// send each event to its subtask.
    Beside(&'a BatchKeys),
    /// `key_by` is still to apply, by the receiver: with one subtask
    /// downstream, the router passes a batch on as it came.
    Select(&'a KeySelector),
}

/// Two events' keys are the same (`None` only equals `None`), by word
/// compares: keys are mostly a few bytes, where a `memcmp` call costs more
/// than the compare.
#[inline(always)]
pub fn same_key(a: Option<&[u8]>, b: Option<&[u8]>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => weir_batch::bytes_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// The key group of a key, in `0..max_parallelism`. Stable across runs,
/// builds and platforms (it decides where state lives in checkpoints).
pub fn key_group(key: &[u8], max_parallelism: u16) -> u16 {
    // FNV-1a, then the murmur3 finaliser to spread the low bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    let max = u64::from(max_parallelism.max(1));
    // The same group either way; a mask spares a division per event for
    // the usual power of two (128).
    if max.is_power_of_two() {
        (h & (max - 1)) as u16
    } else {
        (h % max) as u16
    }
}

/// The subtask (of `parallelism`) that owns `group` (Flink's
/// `computeOperatorIndexForKeyGroup`): contiguous ranges of groups.
pub fn subtask_for_group(group: u16, max_parallelism: u16, parallelism: usize) -> usize {
    usize::from(group) * parallelism / usize::from(max_parallelism.max(1))
}

/// The key groups subtask `subtask` (of `parallelism`) owns: the inverse of
/// [`subtask_for_group`] (Flink's `computeKeyGroupRangeForOperatorIndex`).
pub fn key_groups_of(
    subtask: usize,
    max_parallelism: u16,
    parallelism: usize,
) -> std::ops::RangeInclusive<u16> {
    let max = usize::from(max_parallelism.max(1));
    let p = parallelism.max(1);
    let start = (subtask * max).div_ceil(p);
    let end = ((subtask + 1) * max).div_ceil(p);
    let clamp = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
    clamp(start)..=clamp(end).saturating_sub(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_group_ranges_invert_the_assignment() {
        for max in [1u16, 7, 128, 4096] {
            for p in 1..=usize::from(max).min(9) {
                for g in 0..max {
                    let s = super::subtask_for_group(g, max, p);
                    assert!(
                        super::key_groups_of(s, max, p).contains(&g),
                        "{g} {max} {p}"
                    );
                }
            }
        }
    }

    use super::*;

    #[test]
    fn a_leading_field_reads_as_the_walk_reads_it() {
        let rows: [&[u8]; 12] = [
            br#"{"s":1007,"t":2}"#,
            br#"{"s":"a\"b","t":2}"#,
            br#"{"s": "x" }"#,
            br#"{"s":{"k":[1,"]"]},"t":1}"#,
            br#"{"s":null}"#,
            br#"{"s":"#,
            br#"{"s":"unterminated}"#,
            br#"{"s":1"#,
            br#"{"st":1,"s":2}"#,
            br#"{ "s":3}"#,
            br#"{"t":1,"s":4}"#,
            br#"{"\u0073":5}"#,
        ];
        let selector = KeySelector::parse("s");
        for row in rows {
            assert_eq!(
                selector.key(None, row),
                json_field(row, "s"),
                "{}",
                String::from_utf8_lossy(row)
            );
        }
        assert_eq!(&*selector.key(None, rows[0]).unwrap(), b"1007");
        // A name that needs escaping is always walked to.
        let quoted = KeySelector::parse("a\"b");
        assert_eq!(&*quoted.key(None, br#"{"a\"b":1}"#).unwrap(), b"1");
    }

    #[test]
    fn fields_of_every_json_type_read_as_bytes() {
        let v = br#"{"s":"a\"b","n":-1.5e3,"b":true,"o":{"k":[1,2]},"skip":[{"s":1}]}"#;
        assert_eq!(&*json_field(v, "s").unwrap(), b"a\"b");
        assert_eq!(&*json_field(v, "n").unwrap(), b"-1.5e3");
        assert_eq!(&*json_field(v, "b").unwrap(), b"true");
        assert_eq!(&*json_field(v, "o").unwrap(), br#"{"k":[1,2]}"#);
        assert!(
            json_field(br#"{"s":null}"#, "s")
                .unwrap_err()
                .contains("null")
        );
        assert!(json_field(b"[1]", "s").is_err());
        assert!(json_field(b"{\"s\":", "s").is_err());
        assert!(json_field(b"{\"s\"", "s").is_err());
        assert!(json_field(br#"{"t":"x"y,"s":1}"#, "s").is_err());
        assert!(json_field(br#"{"t":"unterminated}"#, "s").is_err());
        assert!(json_field(br#"{"t":[1,2}"#, "s").is_err());
        // Escapes in names and in skipped strings.
        assert_eq!(
            &*json_field(br#"{"q":"a\"}","\u0073":2}"#, "s").unwrap(),
            b"2"
        );
        assert_eq!(&*json_field(br#" { "s" : 7 , "t":1}"#, "s").unwrap(), b"7");
        assert!(json_field(b"{}", "s").unwrap_err().contains("missing"));
        // A nested field of the same name is not the top-level one.
        assert!(json_field(br#"{"o":{"s":1}}"#, "s").is_err());
    }

    #[test]
    fn the_event_key_selector_needs_a_key() {
        let sel = KeySelector::parse("$key");
        assert_eq!(&*sel.key(Some(b"k"), b"{}").unwrap(), b"k");
        assert!(sel.key(None, b"{}").is_err());
    }

    #[test]
    fn key_groups_are_stable_and_spread() {
        // Pinned: a change here moves state between key groups and breaks
        // restoring old checkpoints.
        // (Values from an independent implementation of the same hash.)
        for (key, groups) in [
            (&b"user-1"[..], [69, 77, 453, 0]),
            (b"8416", [117, 57, 1397, 0]),
            (b"", [38, 42, 2342, 0]),
        ] {
            let got = [128, 100, 4096, 1].map(|max| key_group(key, max));
            assert_eq!(got, groups, "{key:?}");
        }
        let mut counts = [0u32; 128];
        for i in 0..128_000u32 {
            counts[usize::from(key_group(i.to_string().as_bytes(), 128))] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }

    #[test]
    fn groups_map_to_contiguous_subtask_ranges() {
        let owners: Vec<usize> = (0..8).map(|g| subtask_for_group(g, 8, 3)).collect();
        assert_eq!(owners, [0, 0, 0, 1, 1, 1, 2, 2]);
        assert!((0..128).all(|g| subtask_for_group(g, 128, 1) == 0));
    }
}
