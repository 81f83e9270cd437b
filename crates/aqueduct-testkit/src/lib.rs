//! What Aqueduct's tests share, so that no crate copies another's fixtures: the simulator with
//! a store and a registered connection ([`sim_env`]), the simulator as a child process
//! ([`process`]), and HL7 v2 message fixtures ([`hl7`]).
//!
//! A dev-dependency only: no shipped crate depends on it. It knows the simulator's test
//! clients and credentials, which nothing outside tests may.
#![allow(clippy::unwrap_used, clippy::expect_used)] // fixtures fail loudly by design

pub mod hl7;
pub mod process;
pub mod sim_env;
