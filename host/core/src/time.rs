//! Event time: reading timestamps, generating watermarks per source
//! partition and merging them over a task's inputs.
//!
//! A watermark `w` says "no event with a timestamp `<= w` is expected any
//! more" (Flink's convention). Windows ending at `end` fire once the
//! watermark reaches `end - 1`.

use serde::Deserialize;

/// The watermark at the end of bounded input: everything fires.
pub const END_OF_TIME: i64 = i64::MAX;

/// The watermark before any event.
pub const BEFORE_TIME: i64 = i64::MIN;

/// How an event-time field is written.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// An integer: milliseconds since the Unix epoch.
    #[default]
    EpochMs,
    /// An RFC 3339 string such as `2024-01-01T12:00:00.250Z` or
    /// `2024-01-01T13:00:00+01:00`.
    Rfc3339,
}

/// Parses an RFC 3339 timestamp into epoch milliseconds (sub-millisecond
/// digits are truncated).
///
/// ```
/// use weir_core::time::parse_rfc3339;
/// assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Ok(1_500));
/// assert_eq!(parse_rfc3339("2024-01-01T01:00:00+01:00"), Ok(1_704_067_200_000));
/// assert!(parse_rfc3339("2024-13-01T00:00:00Z").is_err());
/// ```
///
/// # Errors
/// Text that is not an RFC 3339 date-time, with what is wrong.
pub fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let b = text.as_bytes();
    let bad = |what: &str| format!("`{text}` is not an RFC 3339 time: {what}");
    let num = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let digits = b.get(range).ok_or_else(|| bad("too short"))?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad("expected digits"));
        }
        Ok(digits
            .iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, allowed: &[u8]| -> Result<(), String> {
        match b.get(at) {
            Some(c) if allowed.contains(c) => Ok(()),
            _ => Err(bad("unexpected separator")),
        }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    sep(4, b"-")?;
    sep(7, b"-")?;
    sep(10, b"Tt ")?;
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    sep(13, b":")?;
    sep(16, b":")?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(bad("no such date"));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(bad("no such time of day"));
    }
    let mut pos = 19;
    let mut millis = 0;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while b.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        if pos == start {
            return Err(bad("empty fraction"));
        }
        let frac = &b[start..pos.min(start + 3)];
        millis = frac.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0'))
            * 10i64.pow(3 - frac.len() as u32);
    }
    let offset_minutes = match b.get(pos) {
        Some(b'Z' | b'z') if pos + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if pos + 6 == b.len() => {
            sep(pos + 3, b":")?;
            let minutes = num(pos + 1..pos + 3)? * 60 + num(pos + 4..pos + 6)?;
            if *sign == b'+' { minutes } else { -minutes }
        }
        _ => return Err(bad("expected `Z` or an offset like `+01:00` at the end")),
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Ok(seconds * 1000 + millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `[watermark]` in the pipeline file.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct WatermarkSpec {
    /// Bounded out-of-orderness: events may arrive up to this much later
    /// (in event time) than the latest event seen in their partition.
    pub max_out_of_orderness_ms: u64,
    /// A source partition with no event for this long (wall time) stops
    /// holding the watermark back until it sends again. `None`: never.
    pub idle_timeout_ms: Option<u64>,
}

/// The watermark of one source partition: the largest timestamp seen minus
/// the allowed out-of-orderness, minus one (Flink's
/// `BoundedOutOfOrdernessWatermarks`).
#[derive(Debug, Clone, Copy)]
pub struct BoundedOutOfOrderness {
    delay: i64,
    max_seen: i64,
}

impl BoundedOutOfOrderness {
    /// A generator allowing `delay_ms` of disorder.
    pub fn new(delay_ms: u64) -> Self {
        BoundedOutOfOrderness {
            delay: i64::try_from(delay_ms).unwrap_or(i64::MAX),
            max_seen: BEFORE_TIME,
        }
    }

    /// Notes an event's timestamp.
    pub fn observe(&mut self, timestamp: i64) {
        self.max_seen = self.max_seen.max(timestamp);
    }

    /// The largest timestamp seen (recorded in checkpoints).
    pub fn max_seen(&self) -> i64 {
        self.max_seen
    }

    /// Continues from a checkpoint's [`Self::max_seen`].
    pub fn resume(&mut self, max_seen: i64) {
        self.max_seen = self.max_seen.max(max_seen);
    }

    /// The current watermark.
    pub fn watermark(&self) -> i64 {
        if self.max_seen == BEFORE_TIME {
            return BEFORE_TIME;
        }
        self.max_seen.saturating_sub(self.delay).saturating_sub(1)
    }
}

/// The watermark of a task with several inputs: the minimum over the
/// inputs that are not idle. It never goes backwards.
///
/// ```
/// use weir_core::time::WatermarkTracker;
/// let mut t = WatermarkTracker::new(2);
/// assert_eq!(t.update(0, 100), None);        // input 1 has said nothing yet
/// assert_eq!(t.update(1, 50), Some(50));
/// assert_eq!(t.set_idle(1, true), Some(100)); // input 1 went quiet
/// ```
#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    inputs: Vec<i64>,
    idle: Vec<bool>,
    current: i64,
}

impl WatermarkTracker {
    /// A tracker over `inputs` inputs, all active and at [`BEFORE_TIME`].
    pub fn new(inputs: usize) -> Self {
        WatermarkTracker {
            inputs: vec![BEFORE_TIME; inputs],
            idle: vec![false; inputs],
            current: BEFORE_TIME,
        }
    }

    /// The merged watermark.
    pub fn current(&self) -> i64 {
        self.current
    }

    /// True when every input is idle (the task is idle too).
    pub fn all_idle(&self) -> bool {
        self.idle.iter().all(|idle| *idle)
    }

    /// Input `input` reports `watermark` (and is active again); returns the
    /// new merged watermark when it advanced.
    pub fn update(&mut self, input: usize, watermark: i64) -> Option<i64> {
        if let Some(w) = self.inputs.get_mut(input) {
            *w = (*w).max(watermark);
            self.idle[input] = false;
        }
        self.advance()
    }

    /// Marks input `input` idle or active; returns the new merged watermark
    /// when that advanced it.
    pub fn set_idle(&mut self, input: usize, idle: bool) -> Option<i64> {
        if let Some(flag) = self.idle.get_mut(input) {
            *flag = idle;
        }
        self.advance()
    }

    fn advance(&mut self) -> Option<i64> {
        let min = self
            .inputs
            .iter()
            .zip(&self.idle)
            .filter(|(_, idle)| !**idle)
            .map(|(w, _)| *w)
            .min()?;
        (min > self.current).then(|| {
            self.current = min;
            min
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_agrees_with_known_instants() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00Z"), Ok(1_704_067_200_000));
        assert_eq!(
            parse_rfc3339("2024-02-29T23:59:59.999Z"),
            Ok(1_709_251_199_999)
        );
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Ok(-1000));
        assert_eq!(
            parse_rfc3339("2024-01-01T00:00:00.123456-00:30"),
            Ok(1_704_069_000_123)
        );
        for bad in [
            "",
            "2024-01-01",
            "2024-01-01T00:00:00",
            "2023-02-29T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0100",
            "2024-01-01T00:00:00Zjunk",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bounded_out_of_orderness_trails_the_maximum() {
        let mut g = BoundedOutOfOrderness::new(1000);
        assert_eq!(g.watermark(), BEFORE_TIME);
        g.observe(5000);
        g.observe(3000);
        assert_eq!(g.watermark(), 3999);
    }

    #[test]
    fn the_merged_watermark_is_the_minimum_over_active_inputs() {
        let mut t = WatermarkTracker::new(3);
        assert_eq!(t.update(0, 10), None);
        assert_eq!(t.update(1, 20), None);
        assert_eq!(t.update(2, 5), Some(5));
        assert_eq!(t.update(2, 30), Some(10));
        assert_eq!(t.set_idle(0, true), Some(20));
        // Coming back with an older watermark never moves time backwards.
        assert_eq!(t.update(0, 12), None);
        assert_eq!(t.current(), 20);
        assert_eq!(t.update(0, END_OF_TIME), None);
        assert_eq!(t.update(1, END_OF_TIME), Some(30));
        assert!(!t.all_idle());
    }
}
