//! Run an operator natively on sample values, for unit tests.
//!
//! ```
//! use weir_guest::{Config, Error, Event, Operator, Output, Emit};
//!
//! struct Upper;
//! impl Operator for Upper {
//!     fn new(_: &Config) -> Result<Self, Error> { Ok(Upper) }
//!     fn process(&mut self, e: &Event<'_>, out: &mut Output) -> Result<(), Error> {
//!         let upper = e.value_str()?.to_uppercase();
//!         out.emit(Emit::like(e).with_value(upper.as_bytes()));
//!         Ok(())
//!     }
//! }
//!
//! let out = weir_guest::testing::run::<Upper>(&[], &["abc", "x"])?;
//! assert_eq!(out, ["ABC", "X"]);
//! # Ok::<(), weir_guest::Error>(())
//! ```

use crate::{Config, Error, Operator, Output, batch};

/// Builds `O` from `config`, runs it over `values` (one event each, no key,
/// timestamp = index) in one batch, and returns the output values as text.
///
/// # Errors
/// The operator's own error from `new` or `process`, or an output value
/// that is not UTF-8.
pub fn run<O: Operator>(config: &[(&str, &str)], values: &[&str]) -> Result<Vec<String>, Error> {
    let mut operator = O::new(&Config::from_pairs(config.iter().copied()))?;
    let mut input = batch::BatchWriter::new();
    for (i, value) in values.iter().enumerate() {
        input.push(
            i64::try_from(i).unwrap_or(i64::MAX),
            None,
            value.as_bytes(),
            &[],
        );
    }
    let input = input.finish();
    let mut out = Output::new();
    crate::run_batch(&mut operator, &input, &mut out).map_err(|e| Error::new(e.to_string()))?;
    let bytes = out.finish();
    let batch = batch::Batch::new(&bytes).map_err(|e| Error::new(e.to_string()))?;
    batch
        .iter()
        .map(|e| Ok(std::str::from_utf8(e.value)?.to_string()))
        .collect()
}
