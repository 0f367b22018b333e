//! Checkpoints that a crash cannot corrupt.
//!
//! A checkpoint is a directory `checkpoints/step-<NNNNNNNNN>/` holding whatever the loop
//! saves (weights, masks, optimizer state) plus `state.json` ([`TrainState`]: step,
//! epoch, seed, schedule positions). It is written under a `.partial` name and renamed
//! into place only when complete; then the `checkpoints/latest` pointer is replaced
//! atomically, and only then are old checkpoints beyond `keep_last` removed. A run killed
//! at any moment therefore resumes from the last *complete* checkpoint and loses at most
//! the steps since it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::run_dir::{RunDirError, write_atomic};

/// Where the loop stands: everything besides tensors that an exact resume needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: u64,
    /// Optimizer steps per epoch (fixed for the run).
    pub steps_per_epoch: u64,
    /// The run's seed (data order and per-step RNG streams derive from it).
    pub seed: u64,
    /// The learning rate of the last step.
    pub lr: f64,
    /// The current sparsity target of each pruning modifier, by label.
    pub sparsity_targets: Vec<(String, f64)>,
    /// sha256 of the resolved recipe, so a resume with another recipe is refused.
    pub recipe_sha256: String,
    /// Wall-clock seconds spent by the run up to this checkpoint (all sessions).
    #[serde(default)]
    pub wall_seconds: f64,
}

impl TrainState {
    /// The epoch the next step belongs to.
    pub fn epoch(&self) -> u64 {
        self.step / self.steps_per_epoch.max(1)
    }

    /// The batch index of the next step within its epoch.
    pub fn batch_in_epoch(&self) -> u64 {
        self.step % self.steps_per_epoch.max(1)
    }
}

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `state.json` is unreadable.
    #[error("{path}: corrupt checkpoint state: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An atomic write failed.
    #[error(transparent)]
    Write(#[from] RunDirError),
}

/// A checkpoint being written; becomes visible only through [`CheckpointStore::commit`].
#[derive(Debug)]
pub struct PendingCheckpoint {
    /// Write the checkpoint's files here.
    pub dir: PathBuf,
    step: u64,
}

/// The checkpoints of one run.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    root: PathBuf,
    keep_last: usize,
}

const STATE: &str = "state.json";
const LATEST: &str = "latest";

fn io(path: &Path) -> impl Fn(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl CheckpointStore {
    /// The checkpoints under `<run_dir>/checkpoints`, keeping the last `keep_last` (at least 1).
    pub fn new(run_dir: &Path, keep_last: usize) -> Self {
        CheckpointStore {
            root: run_dir.join("checkpoints"),
            keep_last: keep_last.max(1),
        }
    }

    fn name(step: u64) -> String {
        format!("step-{step:09}")
    }

    /// Starts a checkpoint for `step` in a fresh `.partial` directory.
    pub fn begin(&self, step: u64) -> Result<PendingCheckpoint, CheckpointError> {
        let dir = self.root.join(format!("{}.partial", Self::name(step)));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(PendingCheckpoint { dir, step })
    }

    /// Writes `state.json`, publishes the checkpoint, points `latest` at it, then prunes
    /// old checkpoints. Returns the published directory.
    pub fn commit(
        &self,
        pending: PendingCheckpoint,
        state: &TrainState,
    ) -> Result<PathBuf, CheckpointError> {
        let json = serde_json::to_vec_pretty(state).expect("TrainState always serialises");
        write_atomic(&pending.dir.join(STATE), &json)?;
        let name = Self::name(pending.step);
        let dest = self.root.join(&name);
        if dest.exists() {
            std::fs::remove_dir_all(&dest).map_err(io(&dest))?;
        }
        std::fs::rename(&pending.dir, &dest).map_err(io(&dest))?;
        write_atomic(&self.root.join(LATEST), name.as_bytes())?;
        self.prune()?;
        Ok(dest)
    }

    fn published(&self) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
        if !self.root.is_dir() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io(&self.root))? {
            let entry = entry.map_err(io(&self.root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(step) = name
                .strip_prefix("step-")
                .and_then(|s| s.parse::<u64>().ok())
            {
                out.push((step, entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    fn prune(&self) -> Result<(), CheckpointError> {
        let all = self.published()?;
        let latest = self.latest()?;
        let excess = all.len().saturating_sub(self.keep_last);
        for (_, dir) in all.into_iter().take(excess) {
            if Some(&dir) != latest.as_ref().map(|(d, _)| d) {
                std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
            }
        }
        Ok(())
    }

    /// The latest complete checkpoint and its state, if any.
    pub fn latest(&self) -> Result<Option<(PathBuf, TrainState)>, CheckpointError> {
        let pointer = self.root.join(LATEST);
        let name = match std::fs::read_to_string(&pointer) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&pointer)(e)),
        };
        let dir = self.root.join(name.trim());
        let state_path = dir.join(STATE);
        let text = std::fs::read(&state_path).map_err(io(&state_path))?;
        let state = serde_json::from_slice(&text).map_err(|e| CheckpointError::Corrupt {
            path: state_path.clone(),
            message: e.to_string(),
        })?;
        Ok(Some((dir, state)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64) -> TrainState {
        TrainState {
            step,
            steps_per_epoch: 10,
            seed: 42,
            lr: 1e-4,
            sparsity_targets: vec![("p[0]".into(), 0.5)],
            recipe_sha256: "abc".into(),
            wall_seconds: 1.5,
        }
    }

    #[test]
    fn only_complete_checkpoints_are_visible_and_old_ones_are_pruned() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(tmp.path(), 2);
        assert!(store.latest().unwrap().is_none());
        for step in [10, 20, 30] {
            let p = store.begin(step).unwrap();
            std::fs::write(p.dir.join("model.bin"), step.to_le_bytes()).unwrap();
            store.commit(p, &state(step)).unwrap();
        }
        let (dir, s) = store.latest().unwrap().unwrap();
        assert_eq!(s, state(30));
        assert_eq!(
            std::fs::read(dir.join("model.bin")).unwrap(),
            30u64.to_le_bytes()
        );
        assert_eq!((s.epoch(), s.batch_in_epoch()), (3, 0));
        let kept: Vec<u64> = store
            .published()
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(kept, vec![20, 30]);

        // A crash while writing step 40: the partial directory is ignored.
        let p = store.begin(40).unwrap();
        std::fs::write(p.dir.join("model.bin"), b"half").unwrap();
        drop(p);
        assert_eq!(store.latest().unwrap().unwrap().1.step, 30);
        // Writing it again later succeeds.
        let p = store.begin(40).unwrap();
        store.commit(p, &state(40)).unwrap();
        assert_eq!(store.latest().unwrap().unwrap().1.step, 40);
    }

    #[test]
    fn a_corrupt_state_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(tmp.path(), 1);
        let p = store.begin(5).unwrap();
        let dir = store.commit(p, &state(5)).unwrap();
        std::fs::write(dir.join(STATE), b"{not json").unwrap();
        let e = store.latest().unwrap_err().to_string();
        assert!(e.contains("state.json: corrupt checkpoint state"), "{e}");
    }
}
