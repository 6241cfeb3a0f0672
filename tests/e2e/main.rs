//! End-to-end tests: the `weir` binary on golden pipelines, bad input and
//! hostile guests. Guests are built from source by `tests/build-plugins.sh`.

mod bad_input;
mod cli;
mod golden;
mod hostile;
mod support;
