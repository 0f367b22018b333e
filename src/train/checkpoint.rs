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
    /// Sum of the training losses since the last evaluation (for its mean).
    #[serde(default)]
    pub loss_sum: f64,
    /// Steps in [`TrainState::loss_sum`].
    #[serde(default)]
    pub loss_count: u64,
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

/// An `f32` tensor view for [`write_f32_tensors`].
struct F32Tensor<'a> {
    shape: Vec<usize>,
    values: &'a [f32],
}

impl safetensors::View for F32Tensor<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Owned(self.values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.values.len() * 4
    }
}

/// Writes named `f32` tensors and string metadata to a safetensors file (a step rule's
/// state), through a temporary file renamed into place.
pub fn write_f32_tensors(
    path: &Path,
    tensors: &[(&str, Vec<usize>, &[f32])],
    meta: &[(&str, String)],
) -> std::io::Result<()> {
    let views: Vec<(String, F32Tensor<'_>)> = tensors
        .iter()
        .map(|(n, s, v)| {
            (
                n.to_string(),
                F32Tensor {
                    shape: s.clone(),
                    values: v,
                },
            )
        })
        .collect();
    let meta: std::collections::HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Named `f32` tensors: name, shape, values.
pub type F32Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Reads what [`write_f32_tensors`] wrote: the tensors and the metadata.
pub fn read_f32_tensors(path: &Path) -> std::io::Result<(F32Tensors, Vec<(String, String)>)> {
    let bytes = std::fs::read(path)?;
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let (_, header) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let meta = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(bad(format!(
                "{name}: expected F32, found {:?}",
                view.dtype()
            )));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.push((name, view.shape().to_vec(), values));
    }
    Ok((out, meta))
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
            loss_sum: 0.0,
            loss_count: 0,
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
