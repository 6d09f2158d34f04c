//! ferry: a scheduled batch transfer agent for EDI and claims exchange.
//!
//! The binary is a thin shell over these modules so integration tests reach
//! everything the operator can.

pub mod agent;
pub mod alert;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod config;
pub mod edi;
pub mod ledger;
pub mod logging;
pub mod observe;
pub mod schedule;
pub mod transfer;
pub mod transport;
pub mod watch;
