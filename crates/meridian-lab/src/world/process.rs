//! One child process of the world: started, SIGKILLed and restarted with the same arguments,
//! its stdout and stderr appended to `WORLD/logs/<name>.log`. Every child carries
//! [`WORLD_ENV`] naming its world's directory, so a test (or an operator) can find them all.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use tokio::process::{Child, Command};

use crate::error::LabError;

/// Environment variable set on every child: the directory of its world.
pub const WORLD_ENV: &str = "MERIDIAN_LAB_WORLD";

/// A restartable child process. Dropping it SIGKILLs the child if it is still running.
pub struct Proc {
    name: String,
    binary: PathBuf,
    args: Vec<String>,
    world: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// A process of the world in `world`, not yet started.
    pub fn new(name: String, binary: &Path, args: Vec<String>, world: &Path) -> Proc {
        Proc {
            log: world.join("logs").join(format!("{name}.log")),
            name,
            binary: binary.to_path_buf(),
            args,
            world: world.to_path_buf(),
            child: None,
        }
    }

    /// Its name, e.g. `node-eu-west-1`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Starts it (appending to its log).
    pub fn start(&mut self) -> Result<(), LabError> {
        let io = |what: String| move |source| LabError::Io { what, source };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io(format!("opening {}", self.log.display())))?;
        let err = out
            .try_clone()
            .map_err(io(format!("opening {}", self.log.display())))?;
        let child = Command::new(&self.binary)
            .args(&self.args)
            .env("MERIDIAN_LOG", "info,fjall=warn,lsm_tree=warn")
            .env(WORLD_ENV, &self.world)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(io(format!(
                "starting {} ({} {})",
                self.name,
                self.binary.display(),
                self.args.join(" ")
            )))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILLs it and reaps it.
    pub async fn kill(&mut self) -> Result<(), LabError> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.map_err(|source| LabError::Io {
                what: format!("killing {}", self.name),
                source,
            })?;
        }
        Ok(())
    }

    /// `Some(status)` if it was started and has exited on its own, `None` while it runs (or was
    /// never started).
    pub fn exited(&mut self) -> Result<Option<String>, LabError> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Ok(Some(status.to_string())),
            Some(Ok(None)) | None => Ok(None),
            Some(Err(source)) => Err(LabError::Io {
                what: format!("checking {}", self.name),
                source,
            }),
        }
    }

    /// Asks it to stop (SIGTERM) so it finishes in-flight work.
    pub fn terminate(&mut self) {
        if let Some(pid) = self.pid() {
            // The `kill` utility sends SIGTERM without unsafe code; a failure (already gone)
            // is harmless, and `wait_until` SIGKILLs whatever is left.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Waits for it to exit until `deadline`, then SIGKILLs it.
    pub async fn wait_until(&mut self, deadline: Instant) {
        if let Some(mut child) = self.child.take() {
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }
}
