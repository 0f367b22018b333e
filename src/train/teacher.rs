//! The distillation teacher at run time: none, a snapshot of the student still to be
//! taken (`teacher: self`), or a loaded frozen model, with its outputs cached when the task
//! allows.

use burn::tensor::{Device, Tensor, TensorData};

use super::task::{Outputs, Task};
use crate::distill::OutputKey;

/// Where the teacher stands.
pub enum Teacher<M> {
    /// No distillation.
    None,
    /// `teacher: self`, before the snapshot is taken.
    PendingSnapshot,
    /// A frozen model in inference mode (on the inference device).
    Loaded {
        /// The teacher.
        model: M,
        /// Its outputs for every training example, when the task allows caching.
        cache: Option<TeacherCache>,
    },
}

impl<M> Teacher<M> {
    /// A loaded teacher without cached outputs.
    pub fn loaded(model: M) -> Self {
        Self::Loaded { model, cache: None }
    }

    /// The teacher's outputs for training examples `idx` of epoch `epoch`, on `device`
    /// (constants: no gradient flows into the teacher). `None` when no teacher is loaded.
    pub fn outputs<T: Task<Model = M>>(
        &mut self,
        task: &T,
        idx: &[usize],
        epoch: u64,
        plain: &Device,
        device: &Device,
        cache_batch: usize,
    ) -> Option<Outputs> {
        let Self::Loaded { model, cache } = self else {
            return None;
        };
        if cache.is_none() && task.outputs_cacheable() {
            *cache = Some(TeacherCache::build(task, model, plain, cache_batch));
        }
        Some(match cache {
            Some(c) => c.batch(idx, device),
            None => {
                let tb = task.batch(idx, epoch, plain);
                let mut out = Outputs::default();
                for (k, v) in task.outputs(model, &tb).into_entries() {
                    out.set(k, Tensor::from_data(v.into_data(), device));
                }
                out
            }
        })
    }
}

/// The teacher's outputs for every training example, computed once (inference mode, in a
/// fixed batching by length, so the values do not depend on when a run was resumed) and
/// reused every epoch: distillation then costs no teacher forward per step.
pub struct TeacherCache {
    /// `(key, width, rows)`: row `i` of `rows` (`width` values) belongs to example `i`.
    outputs: Vec<(OutputKey, usize, Vec<f32>)>,
}

impl TeacherCache {
    fn build<T: Task>(task: &T, teacher: &T::Model, device: &Device, batch_size: usize) -> Self {
        let n = task.train_len();
        let lengths = task.train_lengths();
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by_key(|&i| (lengths[i], i));
        let mut outputs: Vec<(OutputKey, usize, Vec<f32>)> = Vec::new();
        for chunk in idx.chunks(batch_size.max(1)) {
            let b = task.batch(chunk, 0, device);
            for (k, t) in task.outputs(teacher, &b).into_entries() {
                let width = t.dims()[1];
                let pos = match outputs.iter().position(|(key, _, _)| *key == k) {
                    Some(p) => p,
                    None => {
                        outputs.push((k, width, vec![0.0; n * width]));
                        outputs.len() - 1
                    }
                };
                let rows = &mut outputs[pos].2;
                let values: Vec<f32> = t.into_data().iter::<f32>().collect();
                for (r, v) in chunk.iter().zip(values.chunks(width)) {
                    rows[r * width..(r + 1) * width].copy_from_slice(v);
                }
            }
        }
        Self { outputs }
    }

    fn batch(&self, idx: &[usize], device: &Device) -> Outputs {
        let mut out = Outputs::default();
        for (k, width, rows) in &self.outputs {
            let mut flat = Vec::with_capacity(idx.len() * width);
            for &i in idx {
                flat.extend_from_slice(&rows[i * width..(i + 1) * width]);
            }
            out.set(
                *k,
                Tensor::from_data(TensorData::new(flat, [idx.len(), *width]), device),
            );
        }
        out
    }
}
