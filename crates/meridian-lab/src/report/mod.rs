//! The report of a lab run: its data model, and renderings for a terminal and a browser.

pub mod model;

pub use model::Report;
