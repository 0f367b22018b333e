//! Gradient sources: what an optimizer step calls to get the gradients of the training
//! loss at the current weights.
//!
//! A [`GradientSource`] is fixed to one optimizer step (its micro-batches, its dropout
//! seed, the distillation state of that step), so a step rule may call it more than once
//! at different weights (CrAM evaluates the same batch at θ and at a perturbed θ′) and get
//! gradients of the same loss function each time.

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor};

use super::check_finite_loss;
use super::engine::EngineError;
use super::order::mix;
use super::task::Task;
use super::teacher::Teacher;
use crate::distill::{combine, kd_loss};
use crate::profile::{StepPhase, span};
use crate::recipe::plan::DistillPlan;

/// The gradients of one optimizer step.
pub struct StepGrads {
    /// Gradients of the (size-weighted) mean loss over the step's examples.
    pub grads: GradientsParams,
    /// The loss value.
    pub loss: f64,
    /// Examples the gradients cover.
    pub examples: usize,
}

/// Computes the gradients of the step's loss for a model (see the module docs).
pub trait GradientSource<M> {
    /// The gradients of the loss at `model`'s weights on the step's batch.
    fn grads(&mut self, model: &M) -> Result<StepGrads, EngineError>;
}

/// Distillation during one step: the plan and the teacher.
pub struct Distilling<'a, M> {
    /// Hardness, temperature, distilled outputs.
    pub plan: &'a DistillPlan,
    /// The teacher (loaded).
    pub teacher: &'a mut Teacher<M>,
    /// The inference device of the teacher.
    pub plain: &'a Device,
    /// Batch size of the one-time teacher pass that fills its output cache.
    pub cache_batch: usize,
}

/// The standard source: the task loss — `(1 − hardness)·task + hardness·KD` while
/// distilling — over the step's micro-batches, each weighted by its size so that
/// accumulation equals one large batch, with the device RNG (dropout) seeded from the
/// step's seed before the first micro-batch of every call and held for the whole call
/// ([`super::rng`]).
pub struct BatchGradients<'a, T: Task> {
    /// The task.
    pub task: &'a T,
    /// The training (autodiff) device.
    pub device: &'a Device,
    /// The seed of this step's random streams.
    pub seed: u64,
    /// The optimizer step (for messages).
    pub step: u64,
    /// The epoch the step belongs to (augmentation).
    pub epoch: u64,
    /// The example indices of each micro-batch.
    pub micro_batches: Vec<&'a [usize]>,
    /// Distillation, when active at this step.
    pub distill: Option<Distilling<'a, T::Model>>,
    /// Data parallel: the other (autodiff) devices each micro-batch is split over; empty
    /// for a one-device run. The first shard runs on `device`.
    pub replicas: &'a [Device],
    /// The main device without autodiff, where the other shards' gradients are summed.
    pub main: &'a Device,
}

impl<T: Task> GradientSource<T::Model> for BatchGradients<'_, T> {
    fn grads(&mut self, model: &T::Model) -> Result<StepGrads, EngineError> {
        // The other devices' generators first: where one shares the main device's backend
        // (two Flex shards), the main seed below is the one that holds.
        let _replica_rngs: Vec<_> = self
            .replicas
            .iter()
            .enumerate()
            .map(|(k, d)| crate::rng::seeded(d, mix(self.seed, k as u64 + 1)))
            .collect();
        // Held until the last dropout mask of the call is drawn.
        let _rng = crate::rng::seeded(self.device, self.seed);
        let total: usize = self.micro_batches.iter().map(|b| b.len()).sum();
        // The weights of this call on every other device (the broadcast of a DDP step).
        let forks: Vec<(T::Model, &Device)> = self
            .replicas
            .iter()
            .map(|d| (model.clone().fork(d), d))
            .collect();
        let mut accumulator = GradientsAccumulator::<T::Model>::new();
        let mut loss_sum = 0.0f64;
        for idx in self.micro_batches.clone() {
            // Every shard is launched before any loss is read back, so GPUs overlap.
            let mut losses = Vec::with_capacity(1 + forks.len());
            let shards = shard(idx, 1 + forks.len());
            for (k, part) in shards.into_iter().enumerate() {
                if part.is_empty() {
                    continue;
                }
                let (m, device) = match k {
                    0 => (model, self.device),
                    k => (&forks[k - 1].0, forks[k - 1].1),
                };
                let loss = self.shard_loss(m, part, device)?;
                // Shards and micro-batches are weighted by their size, so the sum equals
                // the mean over the whole step's batch.
                let loss = loss.mul_scalar(part.len() as f64 / total.max(1) as f64);
                let _backward = span(StepPhase::Backward);
                let mut grads = GradientsParams::from_grads(loss.backward(), m);
                if k > 0 {
                    grads = grads.to_device(self.main, m);
                }
                accumulator.accumulate(model, grads);
                losses.push(loss);
            }
            for loss in losses {
                let value = loss.into_scalar::<f64>();
                check_finite_loss(self.step, value)?;
                loss_sum += value;
            }
        }
        Ok(StepGrads {
            grads: accumulator.grads(),
            loss: loss_sum,
            examples: total,
        })
    }
}

impl<T: Task> BatchGradients<'_, T> {
    /// The (unweighted) loss of `model` on examples `idx`, on `device`: the task loss, or
    /// its mix with the distillation terms while distilling.
    fn shard_loss(
        &mut self,
        model: &T::Model,
        idx: &[usize],
        device: &Device,
    ) -> Result<Tensor<1>, EngineError> {
        let xb = {
            let _data = span(StepPhase::Data);
            self.task.batch(idx, self.epoch, device)
        };
        let _forward = span(StepPhase::Forward);
        let outputs = self.task.outputs(model, &xb);
        let task_loss = self.task.loss(model, &outputs, &xb);
        let Some(d) = &mut self.distill else {
            return Ok(task_loss);
        };
        let Some(t_out) =
            d.teacher
                .outputs(self.task, idx, self.epoch, d.plain, device, d.cache_batch)
        else {
            return Ok(task_loss);
        };
        let terms: Vec<Tensor<1>> = d
            .plan
            .output_keys
            .iter()
            .filter_map(|k| {
                let s = outputs.get(*k)?;
                let t = t_out.get(*k)?;
                Some(kd_loss(s.clone(), t.clone(), d.plan.temperature))
            })
            .collect();
        Ok(combine(task_loss, terms, d.plan.hardness))
    }
}

/// `idx` cut into `parts` contiguous shards whose sizes differ by at most one, the larger
/// first (PyTorch's `DataParallel` scatter rule).
pub fn shard(idx: &[usize], parts: usize) -> Vec<&[usize]> {
    let parts = parts.max(1);
    let (base, extra) = (idx.len() / parts, idx.len() % parts);
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for k in 0..parts {
        let len = base + usize::from(k < extra);
        out.push(&idx[start..start + len]);
        start += len;
    }
    out
}

/// Gradients of mini-batches other than the step's, with the model in inference behaviour
/// (no dropout, BatchNorm on its running statistics): what OBS collects for its Fisher.
pub trait GradientSampler<M> {
    /// The gradient of the mean task loss over mini-batch `i` (of `batch_size` examples) of
    /// the seeded sample `stream` of the training set; a function of (run seed, `stream`,
    /// `i`) only, so a resumed run samples the same.
    fn sample(
        &mut self,
        model: &M,
        stream: u64,
        i: usize,
        batch_size: usize,
    ) -> Result<StepGrads, EngineError>;
}

/// The standard sampler over a task's training split on the autodiff device.
pub struct TaskSampler<'a, T: Task> {
    /// The task.
    pub task: &'a T,
    /// The autodiff device.
    pub device: &'a Device,
    /// The run's seed.
    pub seed: u64,
    /// Puts the model's normalisation layers in inference behaviour
    /// ([`crate::arch::Architecture::norm_in_eval`]).
    pub norm_in_eval: fn(&mut T::Model),
    order: Option<(u64, Vec<usize>)>,
}

impl<'a, T: Task> TaskSampler<'a, T> {
    /// A sampler over `task`'s training split.
    pub fn new(
        task: &'a T,
        device: &'a Device,
        seed: u64,
        norm_in_eval: fn(&mut T::Model),
    ) -> Self {
        Self {
            task,
            device,
            seed,
            norm_in_eval,
            order: None,
        }
    }
}

/// Turns every training flag (dropout) off, keeping gradients.
struct NoDropout;

impl burn::module::ModuleMapper for NoDropout {
    fn map_flag(
        &mut self,
        flag: burn::module::Param<burn::module::Flag>,
    ) -> burn::module::Param<burn::module::Flag> {
        flag.with_value(false)
    }
}

impl<T: Task> GradientSampler<T::Model> for TaskSampler<'_, T> {
    fn sample(
        &mut self,
        model: &T::Model,
        stream: u64,
        i: usize,
        batch_size: usize,
    ) -> Result<StepGrads, EngineError> {
        let n = self.task.train_len();
        if self.order.as_ref().is_none_or(|(s, _)| *s != stream) {
            self.order = Some((
                stream,
                super::order::epoch_order(n, mix(self.seed, stream), 0, true),
            ));
        }
        let order = &self.order.as_ref().expect("set above").1;
        let bs = batch_size.clamp(1, n.max(1));
        let idx: Vec<usize> = (0..bs).map(|b| order[(i * bs + b) % n]).collect();
        let mut eval_model = model.clone().map(&mut NoDropout);
        (self.norm_in_eval)(&mut eval_model);
        BatchGradients {
            task: self.task,
            device: self.device,
            seed: mix(mix(self.seed, stream), i as u64),
            step: 0,
            epoch: 0,
            micro_batches: vec![idx.as_slice()],
            distill: None,
            replicas: &[],
            main: self.device,
        }
        .grads(&eval_model)
    }
}
