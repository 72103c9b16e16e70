//! The lab (DESIGN §4): emulates a multi-region world on one machine; so far its WAN emulator.

pub mod analysis;
pub mod cities;
pub mod error;
pub mod observe;
pub mod progress;
pub mod report;
pub mod run;
pub mod scenario;
pub mod wan;
pub mod workload;
pub mod world;

pub use error::LabError;
