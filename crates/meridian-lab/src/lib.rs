//! The lab (DESIGN §4): emulates a multi-region world on one machine; so far its WAN emulator.

pub mod error;
pub mod report;
pub mod scenario;
pub mod wan;

pub use error::LabError;
