//! Claims awareness: the X12 envelope reader, the gate that blocks a bad or
//! duplicate interchange before it leaves, and acknowledgement tracking
//! (TA1, 999, 277CA) for what was sent.

pub mod ack;
pub mod gate;
pub mod reader;

pub use gate::{Environment, Rules};
pub use reader::{Envelope, Interchange, Problem, read, read_file};
