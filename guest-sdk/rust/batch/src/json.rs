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
        // Up to 19 digits cannot overflow, so the common case needs no
        // checked (on wasm32, 128-bit) multiplication.
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
        short_eq(&self.name.0[1..self.name.0.len() - 1], name.as_bytes())
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
    pub fn get(self, name: &str) -> Result<Option<Value<'a>>, JsonError> {
        for field in self {
            let field = field?;
            if field.name_is(name) {
                return Ok(Some(field.value));
            }
        }
        Ok(None)
    }

    /// The values of several fields in one walk, in the order of `names`
    /// (the first occurrence of each). Stops reading once all are found.
    ///
    /// # Errors
    /// The object is malformed before the last of them or the end.
    pub fn pick<const N: usize>(
        self,
        names: [&str; N],
    ) -> Result<[Option<Value<'a>>; N], JsonError> {
        let mut found = [None; N];
        let mut missing = N;
        for field in self {
            let field = field?;
            if let Some(slot) = names
                .iter()
                .zip(found.iter_mut())
                .find_map(|(name, slot)| (slot.is_none() && field.name_is(name)).then_some(slot))
            {
                *slot = Some(field.value);
                missing -= 1;
                if missing == 0 {
                    break;
                }
            }
        }
        Ok(found)
    }

    fn error(&mut self, what: &'static str) -> JsonError {
        self.state = State::Done;
        JsonError { at: self.at, what }
    }

    /// The byte at the cursor (0 past the end, which no check accepts).
    #[inline(always)]
    fn peek(&self) -> u8 {
        self.bytes.get(self.at).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn skip_whitespace(&mut self) {
        while is_whitespace(self.peek()) {
            self.at += 1;
        }
    }

    // The byte tests below are `if` chains rather than `match`es: LLVM
    // turns a byte `match` into a WebAssembly `br_table`, which runs as an
    // indirect jump (a hot spot in the guest's profile). The walk's helpers
    // are `inline(always)`: in a guest every call also checks the stack
    // limit and saves registers.
    #[inline(always)]
    fn next_field(&mut self) -> Result<Option<Field<'a>>, JsonError> {
        self.skip_whitespace();
        let byte = self.peek();
        if self.state == State::Fields {
            if byte == b',' {
                self.at += 1;
                self.skip_whitespace();
            } else if byte == b'}' {
                self.state = State::Done;
                return Ok(None);
            } else {
                return Err(self.error("expected `,` or `}`"));
            }
        } else if self.state == State::Start {
            if byte != b'{' {
                return Err(self.error("expected a JSON object"));
            }
            self.at += 1;
            self.skip_whitespace();
            if self.peek() == b'}' {
                self.state = State::Done;
                return Ok(None);
            }
            self.state = State::Fields;
        } else {
            return Ok(None);
        }
        if self.peek() != b'"' {
            return Err(self.error("expected a field name"));
        }
        let start = self.at;
        let name_escaped = self.string()?;
        let name = Value(&self.bytes[start..self.at]);
        self.skip_whitespace();
        if self.peek() != b':' {
            return Err(self.error("expected `:`"));
        }
        self.at += 1;
        self.skip_whitespace();
        let value = self.value()?;
        Ok(Some(Field {
            name,
            value,
            name_escaped,
        }))
    }

    /// Steps over one value and returns its text.
    #[inline(always)]
    fn value(&mut self) -> Result<Value<'a>, JsonError> {
        let start = self.at;
        let byte = self.peek();
        if byte == b'"' {
            self.string()?;
        } else if byte | 0x20 == b'{' {
            self.nested()?; // `{` or `[`
        } else {
            self.at = find_scalar_end(self.bytes, self.at).unwrap_or(self.bytes.len());
            if self.at == start {
                return Err(self.error(if start == self.bytes.len() {
                    "unexpected end"
                } else {
                    "expected a value"
                }));
            }
        }
        Ok(Value(&self.bytes[start..self.at]))
    }

    /// Steps over an object or array.
    fn nested(&mut self) -> Result<(), JsonError> {
        let mut depth = 0usize;
        loop {
            match self.bytes.get(self.at) {
                Some(b'"') => {
                    self.string()?;
                }
                Some(b'{' | b'[') => {
                    depth += 1;
                    self.at += 1;
                }
                Some(b'}' | b']') => {
                    depth -= 1;
                    self.at += 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                Some(_) => self.at += 1,
                None => return Err(self.error("unexpected end")),
            }
        }
    }

    /// Steps over a string, quotes included; true if it has an escape.
    #[inline(always)]
    fn string(&mut self) -> Result<bool, JsonError> {
        self.at += 1;
        let mut escaped = false;
        loop {
            match find_quote_or_backslash(self.bytes, self.at) {
                Some(i) if self.bytes[i] == b'"' => {
                    self.at = i + 1;
                    return Ok(escaped);
                }
                Some(i) => {
                    escaped = true;
                    self.at = i + 2; // skip the escaped byte
                }
                None => {
                    self.at = self.bytes.len();
                    return Err(self.error("unterminated string"));
                }
            }
        }
    }
}

impl<'a> Iterator for Object<'a> {
    type Item = Result<Field<'a>, JsonError>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        self.next_field().transpose()
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
/// byte of the word, or for which `byte_hit` holds in the tail.
#[inline(always)]
fn find(
    bytes: &[u8],
    from: usize,
    hit: impl Fn(u64) -> u64,
    byte_hit: impl Fn(u8) -> bool,
) -> Option<usize> {
    let mut at = from;
    while let Some(chunk) = bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let hits = hit(u64::from_le_bytes(*chunk));
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    bytes
        .get(at..)?
        .iter()
        .position(|&b| byte_hit(b))
        .map(|i| at + i)
}

/// Index of the first `"` or `\` at or after `from`.
#[inline(always)]
fn find_quote_or_backslash(bytes: &[u8], from: usize) -> Option<usize> {
    find(
        bytes,
        from,
        |w| bytes_equal(w, b'"') | bytes_equal(w, b'\\'),
        |b| b == b'"' || b == b'\\',
    )
}

/// Index of the first byte at or after `from` that ends a number or
/// literal: `,`, `}`, `]` or whitespace (any byte up to space).
#[inline(always)]
fn find_scalar_end(bytes: &[u8], from: usize) -> Option<usize> {
    find(
        bytes,
        from,
        |w| {
            bytes_equal(w, b',')
                | bytes_equal(w, b'}')
                | bytes_equal(w, b']')
                | bytes_below(w, 0x21)
        },
        |b| b == b',' || b == b'}' || b == b']' || b <= b' ',
    )
}

/// True when `s` cannot be written between JSON quotes as it is: it holds
/// a `"`, a `\` or a control character.
pub fn needs_escape(s: &[u8]) -> bool {
    find(
        s,
        0,
        |w| bytes_equal(w, b'"') | bytes_equal(w, b'\\') | bytes_below(w, 0x20),
        |b| b == b'"' || b == b'\\' || b < 0x20,
    )
    .is_some()
}

/// `a == b`, comparing words rather than calling `memcmp` (which a
/// WebAssembly guest runs a byte at a time).
#[inline(always)]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    fn word(s: &[u8], at: usize) -> u64 {
        s.get(at..)
            .and_then(<[u8]>::first_chunk::<8>)
            .map_or(0, |c| u64::from_le_bytes(*c))
    }
    fn half(s: &[u8], at: usize) -> u32 {
        s.get(at..)
            .and_then(<[u8]>::first_chunk::<4>)
            .map_or(0, |c| u32::from_le_bytes(*c))
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0..4 => a == b,
        4..8 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        _ => {
            let mut at = 0;
            while at + 8 < n {
                if word(a, at) != word(b, at) {
                    return false;
                }
                at += 8;
            }
            word(a, n - 8) == word(b, n - 8)
        }
    }
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
                assert!(short_eq(&s, &t));
                t[cut] ^= 1;
                assert!(!short_eq(&s, &t), "{s:?} {cut}");
                assert!(!short_eq(&s, &s[..cut]));
            }
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
