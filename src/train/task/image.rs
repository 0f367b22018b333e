//! Image classification (CIFAR-10 binaries, MNIST/Fashion-MNIST idx files, image folders)
//! with any [`ImageClassifier`] (the ResNets of `shears-models`).

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rayon::prelude::*;

use super::{Metrics, Outputs, Task, TaskError};
use std::borrow::Cow;
use std::marker::PhantomData;

use crate::data::augment::{Augment, item_rng};
use crate::data::images::ImageExample;
use crate::metrics::classification::accuracy;

/// A model that maps a batch of images `[B, C, H, W]` to class logits `[B, classes]`.
pub trait ImageClassifier: Module {
    /// The class logits of `images`.
    fn logits(&self, images: Tensor<4>) -> Tensor<2>;
    /// Number of classes.
    fn num_classes(&self) -> usize;
}

/// Per-channel normalisation `(x / 255 − mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelNorm {
    /// Mean per channel (of pixels scaled to `0..=1`).
    pub mean: Vec<f32>,
    /// Standard deviation per channel.
    pub std: Vec<f32>,
}

/// A batch of images and their classes.
#[derive(Debug, Clone)]
pub struct ImageTensors {
    /// Normalised images `[B, C, H, W]`.
    pub images: Tensor<4>,
    /// Classes `[B]`.
    pub labels: Tensor<1, Int>,
}

/// Image classification: cross-entropy (with optional label smoothing) on the training
/// split, accuracy on the dev (test) split.
#[derive(Debug, Clone)]
pub struct ImageClassificationTask<M> {
    train: Vec<ImageExample>,
    dev: Vec<ImageExample>,
    norm: ChannelNorm,
    augment: Option<Augment>,
    seed: u64,
    label_smoothing: f64,
    eval_batch_size: usize,
    model: PhantomData<fn() -> M>,
}

impl<M> ImageClassificationTask<M> {
    /// A task over `train` and `dev` (all images of one shape, channels matching `norm`).
    /// Augmentation of training example `i` in epoch `e` is drawn from `(seed, e, i)`.
    pub fn new(
        train: Vec<ImageExample>,
        dev: Vec<ImageExample>,
        norm: ChannelNorm,
        augment: Option<Augment>,
        seed: u64,
        label_smoothing: f64,
        eval_batch_size: usize,
    ) -> Result<Self, TaskError> {
        if train.is_empty() {
            return Err(super::config_err("train", "no training images"));
        }
        if dev.is_empty() {
            return Err(super::config_err("dev", "no dev images"));
        }
        let shape = train[0].shape();
        if let Some(bad) = train.iter().chain(&dev).find(|e| e.shape() != shape) {
            return Err(super::config_err(
                "train",
                format!(
                    "images of different shapes: {:?} and {:?} (resize them to one shape)",
                    shape,
                    bad.shape()
                ),
            ));
        }
        if norm.mean.len() != shape[0] || norm.std.len() != shape[0] {
            return Err(super::config_err(
                "normalize",
                format!(
                    "{} mean and {} std values for images of {} channels",
                    norm.mean.len(),
                    norm.std.len(),
                    shape[0]
                ),
            ));
        }
        Ok(Self {
            train,
            dev,
            norm,
            augment,
            seed,
            label_smoothing,
            eval_batch_size: eval_batch_size.max(1),
            model: PhantomData,
        })
    }


    /// The largest class index + 1 over both splits.
    pub fn num_classes(&self) -> usize {
        self.train
            .iter()
            .chain(&self.dev)
            .map(|e| e.label + 1)
            .max()
            .unwrap_or(0)
    }

    /// Normalised pixels of `images` (augmented by `augment(i, image)` first), in one buffer.
    fn tensors<'a>(
        &self,
        images: Vec<Cow<'a, ImageExample>>,
        device: &Device,
    ) -> ImageTensors {
        let [c, h, w] = images.first().map_or([0, 0, 0], |e| e.shape());
        let plane = h * w;
        let mut data = vec![0f32; images.len() * c * plane];
        data.par_chunks_mut(c * plane)
            .zip(images.par_iter())
            .for_each(|(out, img)| {
                for ch in 0..c {
                    let (m, s) = (self.norm.mean[ch], self.norm.std[ch]);
                    let src = &img.pixels[ch * plane..(ch + 1) * plane];
                    for (o, &p) in out[ch * plane..(ch + 1) * plane].iter_mut().zip(src) {
                        *o = (f32::from(p) / 255.0 - m) / s;
                    }
                }
            });
        let labels: Vec<i64> = images.iter().map(|e| e.label as i64).collect();
        let n = images.len();
        ImageTensors {
            images: Tensor::from_data(TensorData::new(data, [n, c, h, w]), device),
            labels: Tensor::from_data(TensorData::new(labels, [n]), device),
        }
    }
}

/// Cross-entropy of `logits` against `labels` with label smoothing `eps`, as PyTorch's
/// `F.cross_entropy(logits, labels, label_smoothing=eps)` (mean over the batch).
pub fn smoothed_cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>, eps: f64) -> Tensor<1> {
    let [n, k] = logits.dims();
    let log_p = burn::tensor::activation::log_softmax(logits, 1);
    let picked = log_p
        .clone()
        .gather(1, labels.reshape([n, 1]))
        .sum()
        .div_scalar(n as f64)
        .neg();
    if eps == 0.0 {
        return picked;
    }
    let uniform = log_p.sum().div_scalar((n * k) as f64).neg();
    picked.mul_scalar(1.0 - eps).add(uniform.mul_scalar(eps))
}

impl<M: ImageClassifier> Task for ImageClassificationTask<M> {
    type Model = M;
    type Batch = ImageTensors;

    fn dev_len(&self) -> usize {
        self.dev.len()
    }

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn train_lengths(&self) -> Vec<usize> {
        vec![1; self.train.len()]
    }

    fn batch(&self, indices: &[usize], epoch: u64, device: &Device) -> ImageTensors {
        let t = self;
        let images: Vec<Cow<'_, ImageExample>> = indices
            .par_iter()
            .map(|&i| {
                let img = &t.train[i];
                match &t.augment {
                    Some(a) => {
                        Cow::Owned(a.apply(img, &mut item_rng(t.seed, epoch, i as u64)))
                    }
                    None => Cow::Borrowed(img),
                }
            })
            .collect();
        t.tensors(images, device)
    }

    fn outputs(&self, model: &M, batch: &ImageTensors) -> Outputs {
        Outputs::logits(model.logits(batch.images.clone()))
    }

    fn loss(&self, _model: &M, outputs: &Outputs, batch: &ImageTensors) -> Tensor<1> {
        let logits = outputs.logits.clone().expect("a classifier outputs logits");
        smoothed_cross_entropy(logits, batch.labels.clone(), self.label_smoothing)
    }

    fn evaluate(&self, model: &M, device: &Device) -> Result<Metrics, TaskError> {
        let t = self;
        let mut predicted = Vec::with_capacity(t.dev.len());
        for chunk in t.dev.chunks(t.eval_batch_size) {
            let batch = t.tensors(chunk.iter().map(Cow::Borrowed).collect(), device);
            let arg: Tensor<2, Int> = model.logits(batch.images).argmax(1);
            predicted.extend(arg.into_data().iter::<i64>().map(|c| c as usize));
        }
        let gold: Vec<usize> = t.dev.iter().map(|e| e.label).collect();
        let mut out = Metrics::new();
        out.insert("accuracy".into(), accuracy(&predicted, &gold)?);
        Ok(out)
    }

    fn main_metric(&self) -> &'static str {
        "accuracy"
    }

    fn outputs_cacheable(&self) -> bool {
        self.augment.is_none()
    }
}

