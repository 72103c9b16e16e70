//! The lab (DESIGN §4): emulates a multi-region world on one machine: its WAN emulator, the
//! report's data model and the demo app deployed in every region.

pub mod app;
pub mod error;
pub mod report;
pub mod wan;

pub use error::LabError;
