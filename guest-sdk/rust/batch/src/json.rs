//! Reading the top-level fields of a JSON object in place.
//!
//! Most stream operators need two or three fields of a row, not a typed copy
//! of all of it. [`Object`] walks a JSON object once and hands out each
//! field's name and raw value as slices of the input: nothing is copied,
//! unescaped or converted unless asked for. Strings are skipped eight bytes at
//! a time, which matters most in WebAssembly, where a byte-at-a-time loop
//! pays a deadline check per byte.
//!
//! The walk checks the object's structure (quotes, colons, commas, brackets),
//! not the contents of values it only steps over: a number is taken as it is
//! until the next delimiter, and a string's bytes are checked to be UTF-8
//! only when read with [`Value::as_str`]. The host's sources check every
//! line is JSON before an operator sees it.
//!
//! ```
//! use weir_batch::json::Object;
//!
//! let row = br#"{"auction":1007,"bidder":3,"url":"https://x/\"y\"","price":12}"#;
//! let [auction, price, kind] = Object::new(row).pick(["auction", "price", "type"])?;
//! assert_eq!(auction.and_then(|v| v.as_u64()), Some(1007));
//! assert_eq!(price.unwrap().raw(), b"12");
//! assert!(kind.is_none());
//!
//! for field in Object::new(row) {
//!     let field = field?;
//!     if field.name_is("url") {
//!         assert_eq!(field.value.as_str()?, r#"https://x/"y""#);
//!     }
//! }
//! # Ok::<(), weir_batch::json::JsonError>(())
//! ```

use std::borrow::Cow;
use std::fmt;

/// The JSON is not a well-formed object where the walk needed it to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset where the problem was found: in the object for a walk,
    /// in the value for [`Value::as_str`].
    pub at: usize,
    /// What was expected or wrong.
    pub what: &'static str,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.at, self.what)
    }
}

impl std::error::Error for JsonError {}

/// The raw text of one JSON value, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Value<'a>(&'a [u8]);

impl<'a> Value<'a> {
    /// The value's JSON text, exactly as in the input (strings keep their
    /// quotes and escapes).
    pub fn raw(&self) -> &'a [u8] {
        self.0
    }

    /// True for `null`.
    pub fn is_null(&self) -> bool {
        self.0 == b"null"
    }

    /// True for a string.
    pub fn is_str(&self) -> bool {
        self.0.first() == Some(&b'"')
    }

    /// The value as an unsigned integer: `None` unless it is a JSON number
    /// with no sign, fraction or exponent that fits a `u64`.
    #[inline(always)]
    pub fn as_u64(&self) -> Option<u64> {
        let digits = self.0;
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        // Up to 16 digits are read eight at a time, without a loop (a guest
        // checks its deadline on every loop iteration).
        if digits.len() <= 8 {
            return eight_digits(digits);
        }
        if digits.len() <= 16 {
            let (high, low) = digits.split_at(digits.len() - 8);
            return Some(eight_digits(high)? * 100_000_000 + eight_digits(low)?);
        }
        // Up to 19 digits cannot overflow, so only the rest needs checked
        // (on wasm32, 128-bit) multiplication.
        let (head, tail) = digits.split_at(digits.len().min(19));
        let mut n: u64 = 0;
        for &b in head {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            n = n * 10 + u64::from(d);
        }
        for &b in tail {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            n = n.checked_mul(10)?.checked_add(u64::from(d))?;
        }
        Some(n)
    }

    /// The value as a signed integer: `None` unless it is a JSON number with
    /// no fraction or exponent that fits an `i64`.
    #[inline(always)]
    pub fn as_i64(&self) -> Option<i64> {
        match self.0.split_first() {
            Some((b'-', rest)) => {
                let magnitude = Value(rest).as_u64()?;
                0i64.checked_sub_unsigned(magnitude)
            }
            _ => i64::try_from(self.as_u64()?).ok(),
        }
    }

    /// The value as a float: `None` unless it is a JSON number.
    pub fn as_f64(&self) -> Option<f64> {
        let first = *self.0.first()?;
        if first != b'-' && !first.is_ascii_digit() {
            return None; // Rust's parser also takes `inf`, `NaN` and `+1`
        }
        std::str::from_utf8(self.0).ok()?.parse().ok()
    }

    /// The value as `true` or `false`.
    pub fn as_bool(&self) -> Option<bool> {
        match self.0 {
            b"true" => Some(true),
            b"false" => Some(false),
            _ => None,
        }
    }

    /// The bytes between a string's quotes, escapes left as they are;
    /// `None` for a value that is not a string.
    pub fn str_raw(&self) -> Option<&'a [u8]> {
        match self.0 {
            [b'"', inner @ .., b'"'] => Some(inner),
            _ => None,
        }
    }

    /// The string value, unescaped (borrowed when it has no escapes).
    ///
    /// # Errors
    /// The value is not a string, is not UTF-8 or has a bad escape.
    pub fn as_str(&self) -> Result<Cow<'a, str>, JsonError> {
        let inner = self.str_raw().ok_or(JsonError {
            at: 0,
            what: "expected a string",
        })?;
        let bad_utf8 = |e: std::str::Utf8Error| JsonError {
            at: 1 + e.valid_up_to(),
            what: "a string is not UTF-8",
        };
        if !inner.contains(&b'\\') {
            return std::str::from_utf8(inner)
                .map(Cow::Borrowed)
                .map_err(bad_utf8);
        }
        unescape(inner).map(Cow::Owned)
    }
}

/// `text` as a JSON integer that fits a `u64`, as [`Value::as_u64`] reads
/// a value: no sign, leading zero, fraction or exponent.
///
/// ```
/// use weir_batch::json::{parse_i64, parse_u64};
/// assert_eq!(parse_u64(b"1007"), Some(1007));
/// assert_eq!((parse_u64(b"007"), parse_u64(b"-1")), (None, None));
/// assert_eq!(parse_i64(b"-1"), Some(-1));
/// ```
#[inline(always)]
pub fn parse_u64(text: &[u8]) -> Option<u64> {
    Value(text).as_u64()
}

/// `text` as a JSON integer that fits an `i64`, as [`Value::as_i64`]
/// reads a value.
#[inline(always)]
pub fn parse_i64(text: &[u8]) -> Option<i64> {
    Value(text).as_i64()
}

/// One field of an object: its name (a JSON string, quotes included) and
/// its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The name, as raw JSON text.
    pub name: Value<'a>,
    /// The value, as raw JSON text.
    pub value: Value<'a>,
    /// The name has an escape (known from the walk, so matching a plain
    /// name is one comparison).
    name_escaped: bool,
}

impl Field<'_> {
    /// True when the field is called `name` (after unescaping, so
    /// `"\u0070rice"` is `price`).
    #[inline(always)]
    pub fn name_is(&self, name: &str) -> bool {
        if self.name_escaped {
            return self.name.as_str().is_ok_and(|n| n == name);
        }
        crate::bytes_eq(&self.name.0[1..self.name.0.len() - 1], name.as_bytes())
    }
}

/// A walk over the top-level fields of a JSON object, in order.
///
/// As an iterator it yields each [`Field`] or the first error, then stops.
#[derive(Debug, Clone)]
pub struct Object<'a> {
    bytes: &'a [u8],
    at: usize,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Fields,
    Done,
}

impl<'a> Object<'a> {
    /// A walk over `bytes`, which should hold one JSON object.
    pub fn new(bytes: &'a [u8]) -> Self {
        Object {
            bytes,
            at: 0,
            state: State::Start,
        }
    }

    /// The value of field `name`, if the object has it (the first one, if
    /// it has several). Stops reading at that field.
    ///
    /// # Errors
    /// The object is malformed before the field or the end.
    #[inline(always)]
    pub fn get(self, name: &str) -> Result<Option<Value<'a>>, JsonError> {
        let wanted = Name::of(name.as_bytes());
        let mut found = None;
        self.walk(|field| {
            if field.is(field.plain_name(), name, wanted) {
                found = Some(field.value);
            }
            found.is_some()
        })?;
        Ok(found)
    }

    /// The values of several fields in one walk, in the order of `names`
    /// (the first occurrence of each). Stops reading once all are found.
    ///
    /// # Errors
    /// The object is malformed before the last of them or the end.
    #[inline(always)]
    pub fn pick<const N: usize>(
        self,
        names: [&str; N],
    ) -> Result<[Option<Value<'a>>; N], JsonError> {
        const { assert!(N <= 64, "pick at most 64 fields at once") };
        let wanted = names.map(|n| Name::of(n.as_bytes()));
        let mut found = [None; N];
        // One bit per name not found yet, so the match below reads no
        // memory for it.
        let mut missing = u64::MAX >> (64 - N.max(1));
        if N == 0 {
            return Ok(found);
        }
        self.walk(|field| {
            let name = field.plain_name();
            // A loop of constant length: unrolled, so a guest pays no
            // deadline check per name.
            for i in 0..N {
                if missing & (1 << i) != 0 && field.is(name, names[i], wanted[i]) {
                    found[i] = Some(field.value);
                    missing &= !(1 << i);
                    break;
                }
            }
            missing == 0
        })?;
        Ok(found)
    }

    /// Calls `visit` with each field until it returns true or the object
    /// ends. The same walk as the iterator, with the position in a local:
    /// nothing of it lives in memory, which in a guest means in linear
    /// memory, loaded and stored on every step.
    #[inline(always)]
    fn walk(self, mut visit: impl FnMut(&Field<'a>) -> bool) -> Result<(), JsonError> {
        let bytes = self.bytes;
        let Some(mut at) = self.next_name()? else {
            return Ok(());
        };
        loop {
            let (field, end) = field_at(bytes, at)?;
            if visit(&field) {
                return Ok(());
            }
            match after_value(bytes, skip_whitespace(bytes, end))? {
                Some(next) => at = next,
                None => return Ok(()),
            }
        }
    }

    /// Where the next field's name starts (after the `{` or the `,`), or
    /// `None` at the end of the object.
    #[inline(always)]
    fn next_name(&self) -> Result<Option<usize>, JsonError> {
        let bytes = self.bytes;
        let at = skip_whitespace(bytes, self.at);
        match self.state {
            State::Start => {
                if peek(bytes, at) != b'{' {
                    return Err(JsonError {
                        at,
                        what: "expected a JSON object",
                    });
                }
                let at = skip_whitespace(bytes, at + 1);
                Ok((peek(bytes, at) != b'}').then_some(at))
            }
            State::Fields => after_value(bytes, at),
            State::Done => Ok(None),
        }
    }

    fn next_field(&mut self) -> Result<Option<Field<'a>>, JsonError> {
        let walked = self
            .next_name()
            .and_then(|start| start.map(|at| field_at(self.bytes, at)).transpose());
        match walked {
            Ok(Some((field, end))) => {
                self.state = State::Fields;
                self.at = end;
                Ok(Some(field))
            }
            Ok(None) => {
                self.state = State::Done;
                Ok(None)
            }
            Err(e) => {
                self.state = State::Done;
                self.at = e.at;
                Err(e)
            }
        }
    }
}

impl<'a> Iterator for Object<'a> {
    type Item = Result<Field<'a>, JsonError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_field().transpose()
    }
}

/// A wanted field name, as its length and first eight bytes: two compares
/// tell most names apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Name {
    len: usize,
    head: u64,
}

impl Name {
    #[inline(always)]
    fn of(name: &[u8]) -> Name {
        Name {
            len: name.len(),
            head: head_word(name),
        }
    }
}

impl<'a> Field<'a> {
    /// The name between its quotes and its [`Name`]; `None` when it has an
    /// escape.
    #[inline(always)]
    fn plain_name(&self) -> Option<(&'a [u8], Name)> {
        let inner = &self.name.0[1..self.name.0.len() - 1];
        (!self.name_escaped).then(|| (inner, Name::of(inner)))
    }

    /// True when the field, whose [`Field::plain_name`] is `plain`, is
    /// called `name`, whose [`Name`] is `wanted`.
    #[inline(always)]
    fn is(&self, plain: Option<(&[u8], Name)>, name: &str, wanted: Name) -> bool {
        match plain {
            Some((inner, have)) => {
                have == wanted
                    && (wanted.len <= 8 || crate::bytes_eq(&inner[8..], &name.as_bytes()[8..]))
            }
            None => self.name_is(name),
        }
    }
}

/// The first eight bytes of `s` as a little-endian word, zero-padded;
/// without a loop or a variable-length copy (which a guest makes a call).
#[inline(always)]
fn head_word(s: &[u8]) -> u64 {
    if let Some(word) = s.first_chunk::<8>() {
        return u64::from_le_bytes(*word);
    }
    if let (Some(low), Some(high)) = (s.first_chunk::<4>(), s.last_chunk::<4>()) {
        // Two overlapping halves: the shared bytes are equal, so OR keeps
        // them.
        let shift = 8 * (s.len() - 4);
        return u64::from(u32::from_le_bytes(*low)) | u64::from(u32::from_le_bytes(*high)) << shift;
    }
    // Neither a loop (a deadline check in a guest) nor a closure (which
    // need not be inlined).
    let mut word = 0;
    if let Some(&b) = s.first() {
        word |= u64::from(b);
    }
    if let Some(&b) = s.get(1) {
        word |= u64::from(b) << 8;
    }
    if let Some(&b) = s.get(2) {
        word |= u64::from(b) << 16;
    }
    word
}

/// The value of one to eight ASCII digits, `None` if any byte is not one,
/// by SWAR: the digits are shifted to the top of a word under leading `0`s,
/// checked in one go and combined pairwise (two digits, four, then eight).
#[inline(always)]
fn eight_digits(digits: &[u8]) -> Option<u64> {
    const ZEROS: u64 = u64::from_ne_bytes([b'0'; 8]);
    let n = digits.len();
    debug_assert!((1..=8).contains(&n));
    let pad = 8 * (8 - n as u32);
    // The first digit is the lowest byte: shifting up makes room below it.
    let word = head_word(digits).wrapping_shl(pad) | ZEROS.checked_shr(64 - pad).unwrap_or(0);
    // Every byte is 0x30..=0x39: its high nibble is 3, and adding 6 keeps it so.
    const HIGH: u64 = u64::from_ne_bytes([0xF0; 8]);
    let sixes = word.wrapping_add(u64::from_ne_bytes([0x06; 8]));
    if word & HIGH != ZEROS & HIGH || sixes & HIGH != ZEROS & HIGH {
        return None;
    }
    let v = word - ZEROS;
    let v = (v * 10 + (v >> 8)) & 0x00FF_00FF_00FF_00FF; // pairs
    let v = (v * 100 + (v >> 16)) & 0x0000_FFFF_0000_FFFF; // quads
    Some((v * 10_000 + (v >> 32)) & 0xFFFF_FFFF)
}

/// The byte at `at` (0 past the end, which no check accepts).
#[inline(always)]
fn peek(bytes: &[u8], at: usize) -> u8 {
    bytes.get(at).copied().unwrap_or(0)
}

#[inline(always)]
fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    // Mostly there is none: no loop entered then.
    if !is_whitespace(peek(bytes, at)) {
        return at;
    }
    while is_whitespace(peek(bytes, at)) {
        at += 1;
    }
    at
}

// The byte tests below are `if` chains rather than `match`es: LLVM turns a
// byte `match` into a WebAssembly `br_table`, which runs as an indirect
// jump (a hot spot in the guest's profile). The helpers are
// `inline(always)`: in a guest every call also checks the stack limit and
// saves registers.

/// After a value (and whitespace) at `at`: the start of the next field's
/// name after a `,`, or `None` at the closing `}`.
#[inline(always)]
fn after_value(bytes: &[u8], at: usize) -> Result<Option<usize>, JsonError> {
    let byte = peek(bytes, at);
    if byte == b',' {
        Ok(Some(skip_whitespace(bytes, at + 1)))
    } else if byte == b'}' {
        Ok(None)
    } else {
        Err(JsonError {
            at,
            what: "expected `,` or `}`",
        })
    }
}

/// The field whose name starts at `at`, and the position after its value.
#[inline(always)]
fn field_at(bytes: &[u8], at: usize) -> Result<(Field<'_>, usize), JsonError> {
    if peek(bytes, at) != b'"' {
        return Err(JsonError {
            at,
            what: "expected a field name",
        });
    }
    let (name_end, name_escaped) = string_end(bytes, at)?;
    let colon = skip_whitespace(bytes, name_end);
    if peek(bytes, colon) != b':' {
        return Err(JsonError {
            at: colon,
            what: "expected `:`",
        });
    }
    let start = skip_whitespace(bytes, colon + 1);
    let end = value_end(bytes, start)?;
    let field = Field {
        name: Value(&bytes[at..name_end]),
        value: Value(&bytes[start..end]),
        name_escaped,
    };
    Ok((field, end))
}

/// The value that starts at `at` (after any whitespace), read as far as
/// its end and no further: for a reader that already knows where a field's
/// value begins (e.g. after a leading `{"name":` it compared itself).
///
/// ```
/// use weir_batch::json::value_at;
/// let row = br#"{"auction":1007,"bidder":5}"#;
/// assert_eq!(value_at(row, 11).unwrap().raw(), b"1007");
/// assert_eq!(value_at(br#"{"a": "x\"y"}"#, 5).unwrap().raw(), br#""x\"y""#);
/// assert!(value_at(b"{\"a\":", 5).is_err());
/// ```
///
/// # Errors
/// No value there, or one that does not end.
#[inline(always)]
pub fn value_at(bytes: &[u8], at: usize) -> Result<Value<'_>, JsonError> {
    let start = skip_whitespace(bytes, at);
    let end = value_end(bytes, start)?;
    Ok(Value(&bytes[start..end]))
}

/// The end of the value that starts at `start`.
#[inline(always)]
fn value_end(bytes: &[u8], start: usize) -> Result<usize, JsonError> {
    let byte = peek(bytes, start);
    if byte == b'"' {
        return Ok(string_end(bytes, start)?.0);
    }
    if byte | 0x20 == b'{' {
        return nested_end(bytes, start); // `{` or `[`
    }
    let end = find_scalar_end(bytes, start).unwrap_or(bytes.len());
    if end == start {
        return Err(JsonError {
            at: start,
            what: if start == bytes.len() {
                "unexpected end"
            } else {
                "expected a value"
            },
        });
    }
    Ok(end)
}

/// The end of the object or array that starts at `at`.
fn nested_end(bytes: &[u8], mut at: usize) -> Result<usize, JsonError> {
    let mut depth = 0usize;
    loop {
        match bytes.get(at) {
            Some(b'"') => at = string_end(bytes, at)?.0,
            Some(b'{' | b'[') => {
                depth += 1;
                at += 1;
            }
            Some(b'}' | b']') => {
                depth -= 1;
                at += 1;
                if depth == 0 {
                    return Ok(at);
                }
            }
            Some(_) => at += 1,
            None => {
                return Err(JsonError {
                    at,
                    what: "unexpected end",
                });
            }
        }
    }
}

/// The end of the string that starts at `at` (after its closing quote),
/// and whether it has an escape.
#[inline(always)]
fn string_end(bytes: &[u8], at: usize) -> Result<(usize, bool), JsonError> {
    match find_quote_or_backslash(bytes, at + 1) {
        Some(i) if bytes[i] == b'"' => Ok((i + 1, false)),
        Some(i) => Ok((escaped_string_end(bytes, i)?, true)),
        None => Err(unterminated(bytes)),
    }
}

/// The end of a string from its first backslash at `at` on.
fn escaped_string_end(bytes: &[u8], mut at: usize) -> Result<usize, JsonError> {
    loop {
        at += 2; // the backslash and the byte it escapes
        match find_quote_or_backslash(bytes, at) {
            Some(i) if bytes[i] == b'"' => return Ok(i + 1),
            Some(i) => at = i,
            None => return Err(unterminated(bytes)),
        }
    }
}

fn unterminated(bytes: &[u8]) -> JsonError {
    JsonError {
        at: bytes.len(),
        what: "unterminated string",
    }
}

// Scanning eight bytes at a time ("SWAR"): a WebAssembly guest checks its
// CPU deadline on every loop iteration, so fewer iterations matter there
// more than natively.
const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// Flags (high bit) the bytes of `w` equal to `byte`. Only the lowest flag
/// is exact: a borrow may flag bytes above a real match.
fn bytes_equal(w: u64, byte: u8) -> u64 {
    bytes_below(w ^ (ONES * u64::from(byte)), 1)
}

/// Flags the bytes of `w` below `n` (`n` ≤ 128); only the lowest is exact.
fn bytes_below(w: u64, n: u8) -> u64 {
    w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS
}

/// JSON whitespace: space, tab, line feed, carriage return.
fn is_whitespace(byte: u8) -> bool {
    const MASK: u64 = 1 << b' ' | 1 << b'\t' | 1 << b'\n' | 1 << b'\r';
    byte <= b' ' && MASK & (1 << byte) != 0
}

/// Index of the first byte at or after `from` for which `hit` flags a
/// byte of the word.
///
/// In a guest every loop iteration checks the CPU deadline, so the first
/// word (where most names, strings and numbers end) is read before the
/// loop, and the last few bytes as one zero-padded word rather than a
/// byte at a time.
#[inline(always)]
fn find(bytes: &[u8], from: usize, hit: impl Fn(u64) -> u64) -> Option<usize> {
    let mut at = from;
    if let Some(chunk) = bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let hits = hit(u64::from_le_bytes(*chunk));
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
        while let Some(chunk) = bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
            let hits = hit(u64::from_le_bytes(*chunk));
            if hits != 0 {
                return Some(at + (hits.trailing_zeros() / 8) as usize);
            }
            at += 8;
        }
    }
    let rest = bytes.get(at..).filter(|rest| !rest.is_empty())?;
    // Flags in the padding are dropped; those below are exact, as a
    // borrow only runs upwards.
    let hits = hit(head_word(rest)) & (HIGHS >> (8 * (8 - rest.len())));
    (hits != 0).then(|| at + (hits.trailing_zeros() / 8) as usize)
}

/// Index of the first `"` or `\` at or after `from`.
#[inline(always)]
fn find_quote_or_backslash(bytes: &[u8], from: usize) -> Option<usize> {
    find(bytes, from, |w| {
        bytes_equal(w, b'"') | bytes_equal(w, b'\\')
    })
}

/// Index of the first byte at or after `from` that ends a number or
/// literal: `,`, `}`, `]` or whitespace (any byte up to space).
#[inline(always)]
fn find_scalar_end(bytes: &[u8], from: usize) -> Option<usize> {
    find(bytes, from, |w| {
        bytes_equal(w, b',') | bytes_equal(w, b'}') | bytes_equal(w, b']') | bytes_below(w, 0x21)
    })
}

/// True when `s` cannot be written between JSON quotes as it is: it holds
/// a `"`, a `\` or a control character.
#[inline(always)]
pub fn needs_escape(s: &[u8]) -> bool {
    find(s, 0, |w| {
        bytes_equal(w, b'"') | bytes_equal(w, b'\\') | bytes_below(w, 0x20)
    })
    .is_some()
}

/// Appends `value` in decimal, as JSON writes an integer.
///
/// Without a loop or a variable-length copy (in a guest, a deadline check
/// per iteration and a call per copy): up to eight digits are made at once
/// in one word, which is written whole and then cut to its length.
///
/// ```
/// let mut out = b"n=".to_vec();
/// weir_batch::json::write_u64(&mut out, 1_234_567_890);
/// assert_eq!(out, b"n=1234567890");
/// ```
#[inline(always)]
pub fn write_u64(buf: &mut Vec<u8>, value: u64) {
    const E8: u64 = 100_000_000;
    if value < E8 {
        write_short(buf, value as u32);
    } else if value < E8 * E8 {
        write_short(buf, (value / E8) as u32);
        buf.extend_from_slice(&ascii_digits((value % E8) as u32).to_le_bytes());
    } else {
        write_short(buf, (value / (E8 * E8)) as u32);
        buf.extend_from_slice(&ascii_digits((value / E8 % E8) as u32).to_le_bytes());
        buf.extend_from_slice(&ascii_digits((value % E8) as u32).to_le_bytes());
    }
}

/// Appends `value` in decimal, as JSON writes an integer.
#[inline(always)]
pub fn write_i64(buf: &mut Vec<u8>, value: i64) {
    if value < 0 {
        buf.push(b'-');
    }
    write_u64(buf, value.unsigned_abs());
}

/// Appends `value` (below 10⁸) without leading zeros.
#[inline(always)]
fn write_short(buf: &mut Vec<u8>, value: u32) {
    let digits = 1
        + u32::from(value >= 10)
        + u32::from(value >= 100)
        + u32::from(value >= 1_000)
        + u32::from(value >= 10_000)
        + u32::from(value >= 100_000)
        + u32::from(value >= 1_000_000)
        + u32::from(value >= 10_000_000);
    let end = buf.len() + digits as usize;
    // The leading zeros are the low bytes: shifted out.
    buf.extend_from_slice(&(ascii_digits(value) >> (8 * (8 - digits))).to_le_bytes());
    buf.truncate(end);
}

/// `value` (below 10⁸) as eight ASCII digits with leading zeros, the first
/// in the lowest byte: split into halves of four digits, pairs, then
/// digits, all lanes at once (each multiply-and-shift divides every lane
/// by 100 or 10, exactly for lanes this small).
#[inline(always)]
fn ascii_digits(value: u32) -> u64 {
    let halves = u64::from(value / 10_000) | u64::from(value % 10_000) << 32;
    let hundreds = ((halves * 10_486) >> 20) & 0x0000_007F_0000_007F;
    let pairs = hundreds | (halves - hundreds * 100) << 16;
    let tens = ((pairs * 103) >> 10) & 0x000F_000F_000F_000F;
    let digits = tens | (pairs - tens * 10) << 8;
    digits + u64::from_ne_bytes([b'0'; 8])
}

/// Unescapes the inside of a JSON string.
fn unescape(inner: &[u8]) -> Result<String, JsonError> {
    let err = |at: usize, what| JsonError { at: at + 1, what };
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let b = inner[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let escaped = *inner.get(i + 1).ok_or(err(i, "bad escape"))?;
        i += 2;
        let c = match escaped {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let high = hex4(inner, i).ok_or(err(i, "bad \\u escape"))?;
                i += 4;
                let code = if (0xD800..0xDC00).contains(&high) {
                    let low = match inner.get(i..i + 2) {
                        Some(b"\\u") => hex4(inner, i + 2),
                        _ => None,
                    }
                    .filter(|low| (0xDC00..0xE000).contains(low))
                    .ok_or(err(i, "unpaired surrogate"))?;
                    i += 6;
                    0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                } else {
                    high
                };
                char::from_u32(code).ok_or(err(i, "unpaired surrogate"))?
            }
            _ => return Err(err(i - 2, "bad escape")),
        };
        let mut utf8 = [0; 4];
        out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
    }
    String::from_utf8(out).map_err(|e| err(e.utf8_error().valid_up_to(), "a string is not UTF-8"))
}

fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> Result<Vec<(String, String)>, JsonError> {
        Object::new(json.as_bytes())
            .map(|f| {
                let f = f?;
                Ok((
                    f.name.as_str()?.into_owned(),
                    String::from_utf8_lossy(f.value.raw()).into_owned(),
                ))
            })
            .collect()
    }

    #[test]
    fn walks_every_kind_of_value() {
        let got = fields(
            r#" { "s" : "a\"b\\" , "n":-1.5e3,"t":true,"z":null,"o":{"k":[1,"]}"]},"a":[] } "#,
        )
        .unwrap();
        let want = [
            ("s", r#""a\"b\\""#),
            ("n", "-1.5e3"),
            ("t", "true"),
            ("z", "null"),
            ("o", r#"{"k":[1,"]}"]}"#),
            ("a", "[]"),
        ];
        assert_eq!(
            got,
            want.map(|(n, v)| (n.to_string(), v.to_string())).to_vec()
        );
        assert_eq!(fields("{}").unwrap(), []);
        assert_eq!(fields(" { } ").unwrap(), []);
    }

    #[test]
    fn strings_of_every_length_end_at_their_closing_quote() {
        // Exercises the eight-byte scan at every offset, with and without an
        // escape near the end of a word.
        for len in 0..40usize {
            for escape_at in [None, Some(0), Some(len / 2), Some(len.saturating_sub(1))] {
                let mut s: String = (0..len)
                    .map(|i| char::from(b'a' + (i % 26) as u8))
                    .collect();
                if let Some(at) = escape_at.filter(|&at| at < len) {
                    s.replace_range(at..=at, "\\\"");
                }
                let json = format!(r#"{{"k":"{s}","after":1}}"#);
                let [k, after] = Object::new(json.as_bytes()).pick(["k", "after"]).unwrap();
                assert_eq!(k.unwrap().raw(), format!("\"{s}\"").as_bytes(), "{json}");
                assert_eq!(after.and_then(|v| v.as_u64()), Some(1), "{json}");
            }
        }
    }

    #[test]
    fn word_scans_agree_with_byte_scans() {
        let alphabet = b"a0\"\\,}] \t\x01\x1f\x7f\xff";
        let mut seed = 7u64;
        for _ in 0..2000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 59) as usize + (seed >> 62) as usize * 8;
            let s: Vec<u8> = (0..len)
                .map(|i| alphabet[((seed >> (i % 50)) as usize + i) % alphabet.len()])
                .collect();
            let q = s.iter().position(|&b| b == b'"' || b == b'\\');
            assert_eq!(find_quote_or_backslash(&s, 0), q, "{s:?}");
            let end = s
                .iter()
                .position(|&b| matches!(b, b',' | b'}' | b']') || b <= b' ');
            assert_eq!(find_scalar_end(&s, 0), end, "{s:?}");
            let esc = s.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20);
            assert_eq!(needs_escape(&s), esc, "{s:?}");
            for cut in 0..s.len() {
                let mut t = s.clone();
                assert!(crate::bytes_eq(&s, &t));
                t[cut] ^= 1;
                assert!(!crate::bytes_eq(&s, &t), "{s:?} {cut}");
                assert!(!crate::bytes_eq(&s, &s[..cut]));
            }
        }
    }

    /// `pick` as the iterator gives it: the first occurrence of each name,
    /// stopping once all are found, or the first error before that.
    fn pick_by_iterating<'a, const N: usize>(
        json: &'a [u8],
        names: [&str; N],
    ) -> Result<[Option<Value<'a>>; N], JsonError> {
        let mut found = [None; N];
        for field in Object::new(json) {
            let field = field?;
            if let Some(i) = (0..N).find(|&i| found[i].is_none() && field.name_is(names[i])) {
                found[i] = Some(field.value);
                if found.iter().all(Option::is_some) {
                    break;
                }
            }
        }
        Ok(found)
    }

    #[test]
    fn pick_and_get_agree_with_the_iterator_on_random_objects() {
        // Objects from random parts (escaped and repeated names, nested
        // values, whitespace), some cut short or with a byte replaced.
        let names = [
            "a",
            "bb",
            "price",
            "date_time",
            "a_long_name_1",
            "\\u0070rice",
        ];
        let values = [
            "1",
            "-2.5e3",
            "true",
            "null",
            "\"s\"",
            "\"q\\\"\"",
            "\"0123456789abcdef01\"",
            "[1,{\"a\":\"]\"}]",
            "{}",
            "18446744073709551615",
        ];
        let blanks = ["", " ", "\n\t"];
        let mut seed = 5u64;
        let mut next = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        for _ in 0..3000 {
            let mut json = String::from(blanks[next(3)]);
            json.push('{');
            for i in 0..next(7) {
                if i > 0 {
                    json.push(',');
                }
                json.push_str(blanks[next(3)]);
                json.push_str(&format!("\"{}\"", names[next(names.len())]));
                json.push_str(blanks[next(3)]);
                json.push(':');
                json.push_str(blanks[next(3)]);
                json.push_str(values[next(values.len())]);
                json.push_str(blanks[next(3)]);
            }
            json.push('}');
            let mut bytes = json.into_bytes();
            match next(4) {
                0 => bytes.truncate(next(bytes.len() + 1)),
                1 => {
                    let at = next(bytes.len());
                    bytes[at] = b"{}[],:\" 1x\\"[next(11)];
                }
                _ => {}
            }
            let want = pick_by_iterating(&bytes, ["price", "a", "date_time", "a_long_name_1"]);
            let got = Object::new(&bytes).pick(["price", "a", "date_time", "a_long_name_1"]);
            assert_eq!(got, want, "{}", String::from_utf8_lossy(&bytes));
            let [want] = pick_by_iterating(&bytes, ["bb"]).map_or([None], |v| v);
            if let Ok(got) = Object::new(&bytes).get("bb") {
                assert_eq!(got, want, "{}", String::from_utf8_lossy(&bytes));
            }
            assert_eq!(
                Object::new(&bytes).get("bb").is_err(),
                pick_by_iterating(&bytes, ["bb"]).is_err()
            );
        }
    }

    #[test]
    fn malformed_objects_name_the_byte() {
        let err = |json: &str| {
            Object::new(json.as_bytes())
                .find_map(Result::err)
                .map(|e| (e.at, e.what))
        };
        assert_eq!(err("[1]"), Some((0, "expected a JSON object")));
        assert_eq!(err(r#"{"a" 1}"#), Some((5, "expected `:`")));
        assert_eq!(err(r#"{"a":1 "b":2}"#), Some((7, "expected `,` or `}`")));
        assert_eq!(err(r#"{"a":"x"#), Some((7, "unterminated string")));
        assert_eq!(err(r#"{"a":"#), Some((5, "unexpected end")));
        assert_eq!(err(r#"{"a":{"b":1}"#), Some((12, "expected `,` or `}`")));
        assert_eq!(err(r#"{"a":{"b":1"#), Some((11, "unexpected end")));
        assert_eq!(err(r#"{1:2}"#), Some((1, "expected a field name")));
        // The iterator stops after an error.
        let mut walk = Object::new(br#"{"a":1 x"#);
        assert!(walk.next().unwrap().is_ok());
        assert!(walk.next().unwrap().is_err());
        assert!(walk.next().is_none());
    }

    #[test]
    fn get_and_pick_stop_at_what_they_need() {
        // Garbage after the field is not read.
        let v = br#"{"a":1,"b":"x",!!!"#;
        assert_eq!(Object::new(v).get("b").unwrap().unwrap().raw(), b"\"x\"");
        assert!(Object::new(v).get("c").is_err());
        let [b, a] = Object::new(v).pick(["b", "a"]).unwrap();
        assert_eq!(
            (a.unwrap().raw(), b.unwrap().raw()),
            (&b"1"[..], &b"\"x\""[..])
        );
        // The first occurrence wins; escaped names match.
        let v = br#"{"p":1,"\u0070":2,"q":3}"#;
        assert_eq!(Object::new(v).get("p").unwrap().unwrap().raw(), b"1");
        let [p, q] = Object::new(v).pick(["p", "q"]).unwrap();
        assert_eq!((p.unwrap().raw(), q.unwrap().raw()), (&b"1"[..], &b"3"[..]));
        assert!(Object::new(b"").get("p").is_err());
        let w = br#"{"\u0070":2}"#;
        assert_eq!(Object::new(w).get("p").unwrap().unwrap().raw(), b"2");
    }

    #[test]
    fn numbers_convert_only_when_they_are_what_is_asked() {
        let n = |s: &'static str| Value(s.as_bytes());
        assert_eq!(n("0").as_u64(), Some(0));
        assert_eq!(n("18446744073709551615").as_u64(), Some(u64::MAX));
        for bad in [
            "18446744073709551616",
            "01",
            "-1",
            "1.0",
            "1e3",
            "",
            "\"1\"",
            "+1",
        ] {
            assert_eq!(n(bad).as_u64(), None, "{bad}");
        }
        assert_eq!(n("-9223372036854775808").as_i64(), Some(i64::MIN));
        assert_eq!(n("9223372036854775807").as_i64(), Some(i64::MAX));
        assert_eq!(n("9223372036854775808").as_i64(), None);
        assert_eq!(n("-0").as_i64(), Some(0));
        assert_eq!(n("-1.5e3").as_f64(), Some(-1500.0));
        for bad in ["inf", "NaN", "+1", "\"1\"", "true"] {
            assert_eq!(n(bad).as_f64(), None, "{bad}");
        }
        assert_eq!(n("true").as_bool(), Some(true));
        assert!(n("null").is_null());
    }

    #[test]
    fn integers_of_every_length_parse_as_rust_does() {
        // Eight digits at a time up to 16, a loop beyond: every length, and
        // every position of a byte that is not a digit.
        let mut seed = 11u64;
        for len in 1..=21usize {
            for _ in 0..50 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let text: String = (0..len)
                    .map(|i| char::from(b'0' + ((seed >> (i * 3 % 61)) % 10) as u8))
                    .collect();
                let want = text
                    .parse::<u64>()
                    .ok()
                    .filter(|_| len == 1 || !text.starts_with('0'));
                assert_eq!(Value(text.as_bytes()).as_u64(), want, "{text}");
                for (at, bad) in [(0, b'/'), (len / 2, b':'), (len - 1, b'a'), (len - 1, 0xB0)] {
                    let mut bytes = text.clone().into_bytes();
                    bytes[at] = bad;
                    assert_eq!(Value(&bytes).as_u64(), None, "{bytes:?}");
                }
            }
        }
    }

    #[test]
    fn integers_are_written_as_rust_writes_them() {
        let mut seed = 3u64;
        let mut values = vec![0, 9, 10, 99_999_999, 100_000_000, u64::MAX, i64::MAX as u64];
        for digits in 1..=20u32 {
            let low = 10u64.checked_pow(digits - 1).unwrap_or(0);
            values.extend([low, low.saturating_mul(10).saturating_sub(1)]);
            for _ in 0..100 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                values.push(low.saturating_add(seed % low.saturating_mul(9).max(1)));
            }
        }
        for value in values {
            let mut out = b"x".to_vec();
            write_u64(&mut out, value);
            assert_eq!(out, format!("x{value}").as_bytes());
            let signed = value as i64;
            out.clear();
            write_i64(&mut out, signed);
            assert_eq!(out, signed.to_string().as_bytes());
        }
    }

    #[test]
    fn strings_unescape() {
        for (s, want) in [
            (r#""plain""#, "plain"),
            (
                r#""q\"b\\s\/n\nt\tr\rb\bf\f""#,
                "q\"b\\s/n\nt\tr\rb\u{8}f\u{c}",
            ),
            (r#""\u00e9\u4e2d\ud83d\ude00""#, "é中😀"),
            ("\"é中😀\"", "é中😀"),
            (r#""""#, ""),
        ] {
            assert_eq!(Value(s.as_bytes()).as_str().unwrap(), want, "{s}");
        }
        for bad in [
            r#""\ud83d""#,
            r#""\ud83d\u0041""#,
            r#""\x""#,
            r#""\u12""#,
            "1",
        ] {
            assert!(Value(bad.as_bytes()).as_str().is_err(), "{bad}");
        }
        assert!(Value(b"\"\xff\"").as_str().is_err());
        assert!(Value(b"\"\\n\xff\"").as_str().is_err());
    }
}
