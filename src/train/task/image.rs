//! Image classification (CIFAR-10 binaries, MNIST/Fashion-MNIST idx files, image folders)
//! with any [`ImageClassifier`] (the ResNets of `shears-models`).

use std::marker::PhantomData;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};

use super::{Metrics, Outputs, Task, TaskError, config_err};
use crate::data::batch::ImageBatch;
use crate::data::image_batch::ImageBatchConfig;
use crate::data::images::ImageExample;
use crate::loss::cross_entropy_with_label_smoothing;
use crate::metrics::classification::accuracy;

/// A model that maps a batch of images `[B, C, H, W]` to class logits `[B, classes]`.
pub trait ImageClassifier: Module {
    /// The class logits of `images`.
    fn logits(&self, images: Tensor<4>) -> Tensor<2>;
}

/// Image classification: cross-entropy (with optional label smoothing) on the training
/// split, top-1 accuracy on the dev (test) split.
#[derive(Debug, Clone)]
pub struct ImageClassificationTask<M> {
    train: Vec<ImageExample>,
    dev: Vec<ImageExample>,
    train_batches: ImageBatchConfig,
    eval_batches: ImageBatchConfig,
    label_smoothing: f64,
    eval_batch_size: usize,
    model: PhantomData<fn() -> M>,
}

impl<M> ImageClassificationTask<M> {
    /// A task over `train` (batched with `train_batches`: normalisation, augmentation drawn
    /// from the seed, the epoch and the example index) and `dev` (normalised only).
    pub fn new(
        train: Vec<ImageExample>,
        dev: Vec<ImageExample>,
        train_batches: ImageBatchConfig,
        label_smoothing: f64,
        eval_batch_size: usize,
    ) -> Result<Self, TaskError> {
        if train.is_empty() {
            return Err(config_err("train", "no training images"));
        }
        if dev.is_empty() {
            return Err(config_err("dev", "no dev images"));
        }
        let shape = train[0].shape();
        if let Some(bad) = train.iter().chain(&dev).find(|e| e.shape() != shape) {
            return Err(config_err(
                "train",
                format!(
                    "images of different shapes, {shape:?} and {:?}: resize them to one shape",
                    bad.shape()
                ),
            ));
        }
        train_batches.normalize.check_channels(shape[0])?;
        Ok(Self {
            eval_batches: ImageBatchConfig::eval(train_batches.normalize.clone()),
            train,
            dev,
            train_batches,
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
}

impl<M: ImageClassifier> Task for ImageClassificationTask<M> {
    type Model = M;
    type Batch = ImageBatch;

    fn train_len(&self) -> usize {
        self.train.len()
    }

    fn dev_len(&self) -> usize {
        self.dev.len()
    }

    fn train_lengths(&self) -> Vec<usize> {
        vec![1; self.train.len()]
    }

    fn batch(&self, indices: &[usize], epoch: u64, device: &Device) -> ImageBatch {
        self.train_batches
            .batch(&self.train, indices, epoch, device)
            .expect("images and normalisation were checked when the task was built")
    }

    fn batch_shape(&self, batch: &Self::Batch) -> Vec<usize> {
        batch.images.dims().to_vec()
    }

    fn outputs(&self, model: &M, batch: &ImageBatch) -> Outputs {
        Outputs::logits(model.logits(batch.images.clone()))
    }

    fn loss(&self, _model: &M, outputs: &Outputs, batch: &ImageBatch) -> Tensor<1> {
        let logits = outputs.logits.clone().expect("a classifier outputs logits");
        cross_entropy_with_label_smoothing(logits, batch.labels.clone(), self.label_smoothing)
            .expect("label smoothing checked by the recipe; batch sizes agree")
    }

    fn evaluate(&self, model: &M, device: &Device) -> Result<Metrics, TaskError> {
        let mut predicted = Vec::with_capacity(self.dev.len());
        let all: Vec<usize> = (0..self.dev.len()).collect();
        for chunk in all.chunks(self.eval_batch_size) {
            let batch = self.eval_batches.batch(&self.dev, chunk, 0, device)?;
            let arg: Tensor<2, Int> = model.logits(batch.images).argmax(1);
            predicted.extend(arg.into_data().iter::<i64>().map(|c| c as usize));
        }
        let gold: Vec<usize> = self.dev.iter().map(|e| e.label).collect();
        let mut out = Metrics::new();
        out.insert("accuracy".into(), accuracy(&predicted, &gold)?);
        Ok(out)
    }

    fn main_metric(&self) -> &'static str {
        "accuracy"
    }

    fn outputs_cacheable(&self) -> bool {
        self.train_batches.augment.is_none()
    }
}
