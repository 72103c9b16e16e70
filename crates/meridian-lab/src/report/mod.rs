//! The report of a lab run: its data model, and renderings for a terminal and a browser.

mod charts;
mod format;
pub mod html;
pub mod model;
mod svg;
pub mod terminal;

use std::path::{Path, PathBuf};

pub use model::Report;

use crate::LabError;

/// Where [`write_all`] put the three renderings of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `report.json`: the report itself, pretty-printed JSON that deserializes to an equal
    /// [`Report`].
    pub json: PathBuf,
    /// `report.html`: the self-contained page of [`html::render`].
    pub html: PathBuf,
    /// `report.txt`: the plain-text summary of [`terminal::render`] (no colours).
    pub text: PathBuf,
}

/// Writes `report.json`, `report.html` and `report.txt` into `dir`, creating it (and its
/// parents) if needed and replacing files of those names, and returns their paths. Fails with
/// [`LabError::Io`] naming the directory or file that could not be written; files written before
/// a failure are left in place.
pub fn write_all(report: &Report, dir: &Path) -> Result<Paths, LabError> {
    std::fs::create_dir_all(dir).map_err(|source| LabError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    let paths = Paths {
        json: dir.join("report.json"),
        html: dir.join("report.html"),
        text: dir.join("report.txt"),
    };
    let json = serde_json::to_vec_pretty(report).map_err(|e| LabError::Io {
        what: format!("serializing the report for {}", paths.json.display()),
        source: e.into(),
    })?;
    write(&paths.json, &json)?;
    write(&paths.html, html::render(report).as_bytes())?;
    write(&paths.text, terminal::render(report).as_bytes())?;
    Ok(paths)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), LabError> {
    std::fs::write(path, bytes).map_err(|source| LabError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

#[cfg(test)]
mod tests;
