//! End-to-end tests: the `weir` binary on golden pipelines, bad input and
//! hostile guests. Guests are built from source by `tests/build-plugins.sh`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should stop the test loudly"
)]

mod bad_input;
mod checkpoints;
mod cli;
mod event_time;
mod golden;
mod hostile;
mod support;
