//! Integration tests: end to end against the simulator, fault cases against a scripted
//! authorization server, and property tests of the parsers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod mock;
mod props;
mod sim;
