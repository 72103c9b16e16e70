//! The lab (DESIGN §4): an emulated multi-region world on one machine — WAN emulator, world
//! launcher of real child processes, the demo app, virtual users, scenario files with a
//! timeline of faults — and the report of what users saw: latency, RTO, RPO, convergence, lag,
//! residency audit and egress cost.

pub mod analysis;
pub mod app;
pub mod audit;
pub mod cities;
pub mod error;
pub mod observe;
pub mod progress;
pub mod report;
pub mod resolve;
pub mod run;
pub mod scenario;
pub mod wan;
pub mod workload;
pub mod world;

pub use error::LabError;
