//! The lab (DESIGN §4): emulates a multi-region world on one machine; so far its WAN emulator,
//! the residency audit and the report's data model.

pub mod audit;
pub mod error;
pub mod report;
pub mod wan;

pub use error::LabError;
