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

/// Locks `m`, even if a panic poisoned it: the lab's locks guard plain data held for short
/// steps, which stays usable.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
