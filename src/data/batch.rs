//! Tokenization of text examples and batching into burn tensors: dynamic padding (to the
//! longest sequence of the batch), optional length bucketing, images with per-channel
//! normalisation.
//!
//! The batchers implement burn's [`Batcher`], so they plug into
//! `DataLoaderBuilder::new(batcher).batch_size(n).num_workers(k).build(dataset)`
//! (worker threads build batches in parallel).

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::error::DataError;
use super::images::ImageExample;
use super::squad::{SquadFeature, configured_tokenizer};
use super::text::{Label, TextExample};

/// A tokenized text example.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedText {
    /// The example id.
    pub id: String,
    /// Token ids with special tokens, unpadded.
    pub input_ids: Vec<u32>,
    /// Segment ids (0 first sentence, 1 second sentence).
    pub token_type_ids: Vec<u32>,
    /// The label.
    pub label: Label,
}

fn label_kind(l: &Label) -> u8 {
    match l {
        Label::Class(_) => 0,
        Label::Score(_) => 1,
        Label::Missing => 2,
    }
}

/// Tokenizes examples (all cores) with special tokens and `longest_first` truncation to
/// `max_length` tokens; the tokenizer's own padding is turned off. All examples must have the
/// same kind of label (all classes, all scores or all missing).
pub fn encode_texts(
    tokenizer: &Tokenizer,
    examples: &[TextExample],
    max_length: usize,
) -> Result<Vec<EncodedText>, DataError> {
    if let Some(first) = examples.first()
        && let Some(bad) = examples
            .iter()
            .find(|e| label_kind(&e.label) != label_kind(&first.label))
    {
        return Err(DataError::Config(format!(
            "mixed label kinds: example {} has {:?} but example {} has {:?}",
            first.id, first.label, bad.id, bad.label
        )));
    }
    let tok = configured_tokenizer(
        tokenizer,
        TruncationParams {
            direction: TruncationDirection::Right,
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        },
    )?;
    let mut out = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(1024) {
        let inputs: Vec<tokenizers::EncodeInput> = chunk
            .iter()
            .map(|e| match &e.text_pair {
                Some(p) => (e.text.clone(), p.clone()).into(),
                None => e.text.clone().into(),
            })
            .collect();
        let encodings = tok
            .encode_batch(inputs, true)
            .map_err(|e| DataError::Tokenizer {
                context: format!("examples {}..{}", chunk[0].id, chunk[chunk.len() - 1].id),
                message: e.to_string(),
            })?;
        out.extend(chunk.iter().zip(encodings).map(|(e, enc)| EncodedText {
            id: e.id.clone(),
            input_ids: enc.get_ids().to_vec(),
            token_type_ids: enc.get_type_ids().to_vec(),
            label: e.label,
        }));
    }
    Ok(out)
}

/// The id of the padding token: the tokenizer's padding setting if it has one, else the
/// `[PAD]` (BERT) or `<pad>` (RoBERTa) token.
pub fn pad_token_id(tokenizer: &Tokenizer) -> Result<u32, DataError> {
    if let Some(p) = tokenizer.get_padding() {
        return Ok(p.pad_id);
    }
    ["[PAD]", "<pad>"]
        .iter()
        .find_map(|t| tokenizer.token_to_id(t))
        .ok_or_else(|| DataError::Tokenizer {
            context: "padding".into(),
            message: "no padding setting and no [PAD] or <pad> token".into(),
        })
}

/// Pads token sequences to the longest one: `(input_ids, token_type_ids, attention_mask)` as
/// `[batch, longest]` tensors (mask 1 = token, 0 = padding; padding gets `pad_id` and
/// segment 0).
pub fn pad_batch<'a>(
    seqs: impl Iterator<Item = (&'a [u32], &'a [u32])> + Clone,
    pad_id: u32,
    device: &Device,
) -> (Tensor<2, Int>, Tensor<2, Int>, Tensor<2, Int>) {
    let batch = seqs.clone().count();
    let longest = seqs.clone().map(|(ids, _)| ids.len()).max().unwrap_or(0);
    let mut ids = vec![i64::from(pad_id); batch * longest];
    let mut types = vec![0i64; batch * longest];
    let mut mask = vec![0i64; batch * longest];
    for (b, (i, t)) in seqs.enumerate() {
        for (k, (&id, &ty)) in i.iter().zip(t).enumerate() {
            ids[b * longest + k] = i64::from(id);
            types[b * longest + k] = i64::from(ty);
            mask[b * longest + k] = 1;
        }
    }
    let shape = [batch, longest];
    (
        Tensor::from_data(TensorData::new(ids, shape), device),
        Tensor::from_data(TensorData::new(types, shape), device),
        Tensor::from_data(TensorData::new(mask, shape), device),
    )
}

/// The labels of a text batch.
#[derive(Debug, Clone)]
pub enum BatchLabels {
    /// Class indices, `[batch]`.
    Class(Tensor<1, Int>),
    /// Regression targets, `[batch]`.
    Score(Tensor<1>),
    /// Unlabelled examples.
    Missing,
}

/// A padded batch of text examples.
#[derive(Debug, Clone)]
pub struct TextBatch {
    /// Token ids, `[batch, longest]`.
    pub input_ids: Tensor<2, Int>,
    /// Segment ids, `[batch, longest]`.
    pub token_type_ids: Tensor<2, Int>,
    /// 1 for tokens, 0 for padding, `[batch, longest]`.
    pub attention_mask: Tensor<2, Int>,
    /// The labels.
    pub labels: BatchLabels,
}

/// Batches [`EncodedText`]s with dynamic padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextBatcher {
    /// The padding token id (see [`pad_token_id`]).
    pub pad_id: u32,
}

impl Batcher<EncodedText, TextBatch> for TextBatcher {
    /// # Panics
    /// If the items mix label kinds ([`encode_texts`] rejects such sets).
    fn batch(&self, items: Vec<EncodedText>, device: &Device) -> TextBatch {
        let seqs = items
            .iter()
            .map(|e| (e.input_ids.as_slice(), e.token_type_ids.as_slice()));
        let (input_ids, token_type_ids, attention_mask) = pad_batch(seqs, self.pad_id, device);
        let n = items.len();
        let labels = match items.first().map(|e| e.label) {
            Some(Label::Class(_)) => {
                let v: Vec<i64> = items
                    .iter()
                    .map(|e| match e.label {
                        Label::Class(c) => c as i64,
                        other => panic!("mixed label kinds in a batch: {other:?}"),
                    })
                    .collect();
                BatchLabels::Class(Tensor::from_data(TensorData::new(v, [n]), device))
            }
            Some(Label::Score(_)) => {
                let v: Vec<f32> = items
                    .iter()
                    .map(|e| match e.label {
                        Label::Score(s) => s,
                        other => panic!("mixed label kinds in a batch: {other:?}"),
                    })
                    .collect();
                BatchLabels::Score(Tensor::from_data(TensorData::new(v, [n]), device))
            }
            _ => BatchLabels::Missing,
        };
        TextBatch {
            input_ids,
            token_type_ids,
            attention_mask,
            labels,
        }
    }
}

/// A padded batch of SQuAD windows.
#[derive(Debug, Clone)]
pub struct SquadBatch {
    /// Token ids, `[batch, longest]`.
    pub input_ids: Tensor<2, Int>,
    /// Segment ids, `[batch, longest]`.
    pub token_type_ids: Tensor<2, Int>,
    /// 1 for tokens, 0 for padding, `[batch, longest]`.
    pub attention_mask: Tensor<2, Int>,
    /// Answer start token per window (0 = no answer in the window), `[batch]`.
    pub start_positions: Tensor<1, Int>,
    /// Answer end token per window, `[batch]`.
    pub end_positions: Tensor<1, Int>,
}

/// Batches [`SquadFeature`]s with dynamic padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SquadBatcher {
    /// The padding token id.
    pub pad_id: u32,
}

impl Batcher<SquadFeature, SquadBatch> for SquadBatcher {
    fn batch(&self, items: Vec<SquadFeature>, device: &Device) -> SquadBatch {
        let seqs = items
            .iter()
            .map(|e| (e.input_ids.as_slice(), e.token_type_ids.as_slice()));
        let (input_ids, token_type_ids, attention_mask) = pad_batch(seqs, self.pad_id, device);
        let n = items.len();
        let starts: Vec<i64> = items.iter().map(|f| f.start_position as i64).collect();
        let ends: Vec<i64> = items.iter().map(|f| f.end_position as i64).collect();
        SquadBatch {
            input_ids,
            token_type_ids,
            attention_mask,
            start_positions: Tensor::from_data(TensorData::new(starts, [n]), device),
            end_positions: Tensor::from_data(TensorData::new(ends, [n]), device),
        }
    }
}

/// Per-channel normalisation `(pixel / 255 - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    /// Mean per channel (of pixels scaled to `0..=1`).
    pub mean: Vec<f32>,
    /// Standard deviation per channel.
    pub std: Vec<f32>,
}

impl Normalize {
    /// Only scaling to `0..=1`.
    pub fn unit(channels: usize) -> Self {
        Self {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// The usual CIFAR-10 statistics (training set mean and std per channel).
    pub fn cifar10() -> Self {
        Self {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2470, 0.2435, 0.2616],
        }
    }

    /// The usual MNIST statistics.
    pub fn mnist() -> Self {
        Self {
            mean: vec![0.1307],
            std: vec![0.3081],
        }
    }

    /// The usual Fashion-MNIST statistics.
    pub fn fashion_mnist() -> Self {
        Self {
            mean: vec![0.2860],
            std: vec![0.3530],
        }
    }

    /// A checked normalisation: as many means as standard deviations (at least one), means
    /// finite, standard deviations finite and > 0.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self, DataError> {
        if mean.is_empty() || mean.len() != std.len() {
            return Err(DataError::Config(format!(
                "data.normalize: {} means and {} standard deviations (one of each per channel)",
                mean.len(),
                std.len()
            )));
        }
        if let Some((c, m)) = mean.iter().enumerate().find(|(_, m)| !m.is_finite()) {
            return Err(DataError::Config(format!(
                "data.normalize.mean[{c}] = {m} is not finite"
            )));
        }
        if let Some((c, s)) = std
            .iter()
            .enumerate()
            .find(|(_, s)| !(s.is_finite() && **s > 0.0))
        {
            return Err(DataError::Config(format!(
                "data.normalize.std[{c}] = {s} is not a valid standard deviation (finite, > 0)"
            )));
        }
        Ok(Self { mean, std })
    }

    /// An error (naming `data.normalize`) unless the normalisation has `channels` channels.
    pub fn check_channels(&self, channels: usize) -> Result<(), DataError> {
        if self.mean.len() == channels && self.std.len() == channels {
            Ok(())
        } else {
            Err(DataError::Config(format!(
                "data.normalize has {} means and {} standard deviations for images of {channels}                  channels",
                self.mean.len(),
                self.std.len()
            )))
        }
    }

    /// The per-channel mean and (population) standard deviation of the pixels of `images`
    /// scaled to `0..=1`, from exact integer sums (runs on all cores). All images must have
    /// the channel count of the first; a constant channel gets a standard deviation of 1.
    pub fn from_images(images: &[ImageExample]) -> Result<Self, DataError> {
        use rayon::prelude::*;
        let Some(first) = images.first() else {
            return Err(DataError::Config(
                "no images to compute the normalisation from".into(),
            ));
        };
        let c = first.channels;
        if let Some((i, img)) = images.iter().enumerate().find(|(_, im)| {
            im.channels != c || im.pixels.len() != im.shape().iter().product::<usize>()
        }) {
            return Err(DataError::Config(format!(
                "image {i} has shape {:?} and {} pixel values; image 0 has {c} channels",
                img.shape(),
                img.pixels.len()
            )));
        }
        // Per channel: (number of pixels, sum, sum of squares), exact in u64/u128.
        let zero = || vec![(0u64, 0u64, 0u128); c];
        let sums = images
            .par_iter()
            .fold(zero, |mut acc, img| {
                let plane = img.height * img.width;
                for (ch, a) in acc.iter_mut().enumerate() {
                    for &p in &img.pixels[ch * plane..(ch + 1) * plane] {
                        a.0 += 1;
                        a.1 += u64::from(p);
                        a.2 += u128::from(u32::from(p) * u32::from(p));
                    }
                }
                acc
            })
            .reduce(zero, |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    x.0 += y.0;
                    x.1 += y.1;
                    x.2 += y.2;
                }
                a
            });
        let mut mean = Vec::with_capacity(c);
        let mut std = Vec::with_capacity(c);
        for (n, s, q) in sums {
            let n = n.max(1) as f64;
            let m = s as f64 / n;
            let var = (q as f64 / n - m * m).max(0.0);
            let sd = var.sqrt() / 255.0;
            mean.push((m / 255.0) as f32);
            std.push(if sd > 0.0 { sd as f32 } else { 1.0 });
        }
        Ok(Self { mean, std })
    }

    /// Normalises one image into `[C, H, W]` floats.
    pub fn apply(&self, img: &ImageExample) -> Vec<f32> {
        let plane = img.height * img.width;
        img.pixels
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let c = (i / plane).min(self.mean.len().saturating_sub(1));
                (f32::from(p) / 255.0 - self.mean[c]) / self.std[c]
            })
            .collect()
    }
}

/// A batch of images.
#[derive(Debug, Clone)]
pub struct ImageBatch {
    /// Normalised images, `[batch, C, H, W]`.
    pub images: Tensor<4>,
    /// Class indices, `[batch]`.
    pub labels: Tensor<1, Int>,
}

/// Batches [`ImageExample`]s (all of one shape) with normalisation.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBatcher {
    /// The normalisation (its channel count must match the images').
    pub normalize: Normalize,
}

impl Batcher<ImageExample, ImageBatch> for ImageBatcher {
    /// # Panics
    /// If the images differ in shape or their channel count differs from the normalisation's.
    fn batch(&self, items: Vec<ImageExample>, device: &Device) -> ImageBatch {
        let shape = items.first().map_or([0, 0, 0], |i| i.shape());
        assert!(
            items.iter().all(|i| i.shape() == shape),
            "images of different shapes in one batch"
        );
        assert_eq!(
            shape[0],
            self.normalize.mean.len(),
            "normalisation has {} channels, images {}",
            self.normalize.mean.len(),
            shape[0]
        );
        let n = items.len();
        let mut data = Vec::with_capacity(n * shape.iter().product::<usize>());
        for img in &items {
            data.extend(self.normalize.apply(img));
        }
        let labels: Vec<i64> = items.iter().map(|i| i.label as i64).collect();
        ImageBatch {
            images: Tensor::from_data(
                TensorData::new(data, [n, shape[0], shape[1], shape[2]]),
                device,
            ),
            labels: Tensor::from_data(TensorData::new(labels, [n]), device),
        }
    }
}

/// An order of item indices for length bucketing: the items are shuffled (with `seed`),
/// cut into pools of `pool_batches * batch_size`, each pool is sorted by length and cut
/// into batches, and the batches are shuffled. Consecutive runs of `batch_size` indices of
/// the result are batches of similar lengths (less padding). Feed it to
/// [`ReorderedDataset`] and a data loader *without* shuffling.
pub fn length_bucketed_order(
    lengths: &[usize],
    batch_size: usize,
    pool_batches: usize,
    seed: u64,
) -> Vec<usize> {
    let batch_size = batch_size.max(1);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut idx: Vec<usize> = (0..lengths.len()).collect();
    idx.shuffle(&mut rng);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for pool in idx.chunks_mut(batch_size * pool_batches.max(1)) {
        pool.sort_by_key(|&i| lengths[i]);
        batches.extend(pool.chunks(batch_size).map(<[usize]>::to_vec));
    }
    // Keep a short final batch last so every other batch is full.
    let last_short = batches.last().is_some_and(|b| b.len() < batch_size);
    let tail = if last_short { batches.pop() } else { None };
    batches.shuffle(&mut rng);
    batches.extend(tail);
    batches.concat()
}

/// A view of a data set in a given order of indices.
pub struct ReorderedDataset<D> {
    inner: D,
    order: Vec<usize>,
}

impl<D> ReorderedDataset<D> {
    /// `order[i]` is the index in `inner` of item `i`.
    pub fn new<I>(inner: D, order: Vec<usize>) -> Result<Self, DataError>
    where
        D: Dataset<I>,
    {
        if let Some(&bad) = order.iter().find(|&&i| i >= inner.len()) {
            return Err(DataError::Config(format!(
                "order refers to item {bad} of a data set of {}",
                inner.len()
            )));
        }
        Ok(Self { inner, order })
    }
}

impl<I, D: Dataset<I>> Dataset<I> for ReorderedDataset<D> {
    fn get(&self, index: usize) -> Result<I, DatasetError> {
        self.inner.get(self.order[index])
    }

    fn len(&self) -> usize {
        self.order.len()
    }
}
