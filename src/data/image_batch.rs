//! Image classification data for training: loading the three on-disk formats behind one
//! function ([`load_images`]), the recipe settings of image tasks ([`ImageFormat`],
//! [`NormalizeConfig`], [`AugmentConfig`]), and batches built straight into one f32 buffer
//! ([`ImageBatchConfig::batch`]), and all of it from a recipe's `data:` section
//! ([`load_image_splits`]).
//!
//! # Batches
//!
//! A batch is `(images [B, C, H, W] f32, labels [B] Int)`; pixel `x` of channel `c` becomes
//! `(x / 255 − mean[c]) / std[c]`, computed in f32 in that order (torchvision's `ToTensor`
//! then `Normalize`, bit for bit). Padding pixels of a random crop are 0 before
//! normalisation, as torchvision's `RandomCrop(padding=p)` (zero fill) before `Normalize`.
//! Images are augmented and normalised in parallel (rayon), each written directly into its
//! slice of one preallocated buffer: no per-image tensor, no per-image allocation.
//!
//! # Reproducible augmentation
//!
//! The random choices (crop offsets, then flip) of the example at index `i` **of the data
//! set** (not its position in the batch) in epoch `e` are drawn from
//! [`item_rng`]`(seed, e, i)` only. A batch therefore holds the same pixels whatever the
//! thread count, the batch size or the other examples of the batch, and a run resumed in
//! the middle of epoch `e` reproduces every augmented image bit for bit as long as it
//! passes the same epoch number (the epoch, not the optimizer step, is the key: an example
//! is seen once per epoch, and its augmentation changes from one epoch to the next). The
//! choices are exactly those of [`Augment::apply`] and [`AugmentedDataset`](super::augment::AugmentedDataset)
//! for the same `(seed, epoch, index)`.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;
use serde::{Deserialize, Deserializer, Serialize};

use super::augment::{Augment, AugmentChoice, item_rng};
use super::batch::{ImageBatch, Normalize};
use super::cifar::{CIFAR10_CLASSES, CifarKind, load_cifar_bin};
use super::error::DataError;
use super::idx::load_idx_images;
use super::images::{ImageExample, ImageSet};

/// The on-disk format of an image data set (`data.format` in a recipe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageFormat {
    /// CIFAR-10 binaries: a directory with `data_batch_1.bin` … `data_batch_5.bin` (train)
    /// and `test_batch.bin` (test), or one `.bin` file.
    Cifar10,
    /// MNIST-style idx files (MNIST, Fashion-MNIST; raw or gzip): a directory with
    /// `train-images-idx3-ubyte[.gz]`/`train-labels-idx1-ubyte[.gz]` and the `t10k-` pair,
    /// or one images file whose labels file has the same name with `images-idx3` replaced
    /// by `labels-idx1`.
    Idx,
    /// An image folder: one subfolder per class holding PNG/JPEG files (torchvision's
    /// `ImageFolder`; classes sorted by name, images converted to RGB).
    ImageFolder,
}

impl ImageFormat {
    /// Guesses the format of `path`: a `.bin` file or a directory holding
    /// `data_batch_1.bin` or `test_batch.bin` is CIFAR-10; a file or directory whose name
    /// (or one of whose files' names) contains `idx3-ubyte` is idx; any other directory is
    /// an image folder.
    pub fn detect(path: &Path) -> Result<ImageFormat, DataError> {
        let name_has = |p: &Path, s: &str| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(s))
        };
        if path.is_file() {
            if super::error::file_extension(path).as_deref() == Some("bin") {
                return Ok(ImageFormat::Cifar10);
            }
            if name_has(path, "idx3-ubyte") {
                return Ok(ImageFormat::Idx);
            }
            return Err(DataError::Config(format!(
                "{}: cannot tell the image format from the file name; set `data.format` \
                 (cifar10, idx or image_folder)",
                path.display()
            )));
        }
        super::text::require_dir(path)?;
        if path.join("data_batch_1.bin").is_file() || path.join("test_batch.bin").is_file() {
            return Ok(ImageFormat::Cifar10);
        }
        let entries = std::fs::read_dir(path).map_err(|e| DataError::io(path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| DataError::io(path, e))?;
            if name_has(&entry.path(), "idx3-ubyte") {
                return Ok(ImageFormat::Idx);
            }
        }
        Ok(ImageFormat::ImageFolder)
    }
}

/// Which split to read from a directory holding both (CIFAR-10 and idx directories; an
/// image folder or a single file is read whole, whatever the split).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageSplit {
    /// CIFAR-10 `data_batch_*.bin` (50,000 images); idx `train-*` (60,000).
    Train,
    /// CIFAR-10 `test_batch.bin` (10,000 images); idx `t10k-*` (10,000).
    Test,
}

/// Loads an image data set: `format` (`None`: [`ImageFormat::detect`]) at `path`, a
/// directory or a file as described for each [`ImageFormat`]; `split` picks the files of
/// a directory that holds both splits.
///
/// Classes: the CIFAR-10 names; for idx, the digits `0` … `9` (or up to the largest label);
/// for an image folder, the subfolder names. A missing directory is
/// [`DataError::MissingAsset`]; a missing file inside it is [`DataError::Io`] naming it.
pub fn load_images(
    format: Option<ImageFormat>,
    path: impl AsRef<Path>,
    split: ImageSplit,
) -> Result<ImageSet, DataError> {
    let path = path.as_ref();
    if !path.exists() {
        return Err(DataError::MissingAsset {
            path: path.to_path_buf(),
        });
    }
    let format = match format {
        Some(f) => f,
        None => ImageFormat::detect(path)?,
    };
    match format {
        ImageFormat::Cifar10 => load_cifar10(path, split),
        ImageFormat::Idx => {
            let (images, labels) = idx_files(path, split)?;
            load_idx_pair(&images, &labels)
        }
        ImageFormat::ImageFolder => load_folder(path),
    }
}

/// The CIFAR-10 training files of a directory: every `data_batch_N.bin`, by `N`.
fn cifar_train_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let p = entry.map_err(|e| DataError::io(dir, e))?.path();
        let n = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("data_batch_"))
            .and_then(|n| n.strip_suffix(".bin"))
            .and_then(|n| n.parse::<u32>().ok());
        if let Some(n) = n {
            files.push((n, p));
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(DataError::Inconsistent {
            path: dir.to_path_buf(),
            message: "no data_batch_*.bin file (CIFAR-10 training set)".into(),
        });
    }
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

fn load_cifar10(path: &Path, split: ImageSplit) -> Result<ImageSet, DataError> {
    let files = if path.is_dir() {
        match split {
            ImageSplit::Train => cifar_train_files(path)?,
            ImageSplit::Test => vec![path.join("test_batch.bin")],
        }
    } else {
        vec![path.to_path_buf()]
    };
    let parts = files
        .par_iter()
        .map(|f| load_cifar_bin(f, CifarKind::Cifar10))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ImageSet {
        examples: parts.concat(),
        classes: CIFAR10_CLASSES.iter().map(|s| (*s).to_owned()).collect(),
    })
}

/// The images and labels files of an idx data set at `path` (see [`ImageFormat::Idx`]).
pub fn idx_files(path: &Path, split: ImageSplit) -> Result<(PathBuf, PathBuf), DataError> {
    if path.is_dir() {
        let prefix = match split {
            ImageSplit::Train => "train",
            ImageSplit::Test => "t10k",
        };
        let find = |stem: &str| {
            let gz = path.join(format!("{prefix}-{stem}-ubyte.gz"));
            if gz.exists() {
                gz
            } else {
                path.join(format!("{prefix}-{stem}-ubyte"))
            }
        };
        return Ok((find("images-idx3"), find("labels-idx1")));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if !name.contains("images-idx3") {
        return Err(DataError::Config(format!(
            "{}: an idx images file name contains `images-idx3` (its labels file is found by \
             replacing it with `labels-idx1`)",
            path.display()
        )));
    }
    Ok((
        path.to_path_buf(),
        path.with_file_name(name.replace("images-idx3", "labels-idx1")),
    ))
}

/// Loads an idx images file and its labels file; classes are the digits `0` … `9` (more
/// when a label is larger).
pub fn load_idx_pair(images: &Path, labels: &Path) -> Result<ImageSet, DataError> {
    let examples = load_idx_images(images, labels, 256)?;
    let n = examples
        .iter()
        .map(|e| e.label + 1)
        .max()
        .unwrap_or(0)
        .max(10);
    Ok(ImageSet {
        examples,
        classes: (0..n).map(|d| d.to_string()).collect(),
    })
}

#[cfg(feature = "image-folder")]
fn load_folder(path: &Path) -> Result<ImageSet, DataError> {
    super::images::load_image_folder(path, super::images::ColorMode::Rgb)
}

#[cfg(not(feature = "image-folder"))]
fn load_folder(path: &Path) -> Result<ImageSet, DataError> {
    Err(DataError::Config(format!(
        "{}: image folders need the cargo feature `image-folder`",
        path.display()
    )))
}

/// A standard deviation in a recipe: finite and > 0.
struct PositiveStd(f64);

impl<'de> Deserialize<'de> for PositiveStd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if v.is_finite() && v > 0.0 {
            Ok(PositiveStd(v))
        } else {
            Err(serde::de::Error::custom(format!(
                "{v} is not a valid standard deviation (finite, > 0)"
            )))
        }
    }
}

fn positive_stds<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    Ok(Vec::<PositiveStd>::deserialize(d)?
        .into_iter()
        .map(|s| s.0)
        .collect())
}

/// The fields of `data.normalize` as read, before the cross-field checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNormalize {
    mean: Vec<f64>,
    #[serde(deserialize_with = "positive_stds")]
    std: Vec<f64>,
}

/// `data.normalize`: per-channel statistics of pixels scaled to `0..=1`; a pixel `x` of
/// channel `c` becomes `(x / 255 − mean[c]) / std[c]`. When absent, the statistics of the
/// training set are used ([`Normalize::from_images`]).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "RawNormalize")]
pub struct NormalizeConfig {
    /// Mean per channel (as many values as the images have channels; finite).
    pub mean: Vec<f64>,
    /// Standard deviation per channel (same count as `mean`; each finite and > 0).
    pub std: Vec<f64>,
}

impl TryFrom<RawNormalize> for NormalizeConfig {
    type Error = String;

    fn try_from(raw: RawNormalize) -> Result<Self, String> {
        if raw.mean.is_empty() {
            return Err("`mean` needs one value per channel".into());
        }
        if raw.mean.len() != raw.std.len() {
            return Err(format!(
                "`mean` has {} values but `std` has {}: give one of each per channel",
                raw.mean.len(),
                raw.std.len()
            ));
        }
        if let Some(m) = raw.mean.iter().find(|m| !m.is_finite()) {
            return Err(format!("mean {m} is not finite"));
        }
        Ok(NormalizeConfig {
            mean: raw.mean,
            std: raw.std,
        })
    }
}

impl NormalizeConfig {
    /// The normalisation for images of `channels` channels; an error (naming
    /// `data.normalize`) when the channel counts differ.
    pub fn to_normalize(&self, channels: usize) -> Result<Normalize, DataError> {
        let n = Normalize::new(
            self.mean.iter().map(|&m| m as f32).collect(),
            self.std.iter().map(|&s| s as f32).collect(),
        )?;
        n.check_channels(channels)?;
        Ok(n)
    }
}

/// `data.augment`: training-time augmentation (never applied to dev/test data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    /// Random crop of the image zero-padded by this many pixels per side, keeping its size
    /// (CIFAR: 4); 0 (default): no crop.
    #[serde(default)]
    pub random_crop_padding: usize,
    /// Mirror left-right with probability 1/2 (default false).
    #[serde(default)]
    pub horizontal_flip: bool,
}

impl AugmentConfig {
    /// The augmentation, or `None` when it does nothing.
    pub fn to_augment(&self) -> Option<Augment> {
        let a = Augment {
            crop_padding: (self.random_crop_padding > 0).then_some(self.random_crop_padding),
            horizontal_flip: self.horizontal_flip,
        };
        (a.crop_padding.is_some() || a.horizontal_flip).then_some(a)
    }
}

/// How batches are built: normalisation, and optional seeded augmentation.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBatchConfig {
    /// The per-channel normalisation (its channel count must match the images').
    pub normalize: Normalize,
    /// The augmentation (`None`: images as stored, e.g. for evaluation).
    pub augment: Option<Augment>,
    /// Seed of the augmentation's random choices (see the module docs).
    pub seed: u64,
}

impl ImageBatchConfig {
    /// Normalisation only (evaluation batches).
    pub fn eval(normalize: Normalize) -> Self {
        Self {
            normalize,
            augment: None,
            seed: 0,
        }
    }

    /// Normalisation and augmentation seeded with `seed` (training batches).
    pub fn train(normalize: Normalize, augment: Option<Augment>, seed: u64) -> Self {
        Self {
            normalize,
            augment,
            seed,
        }
    }

    /// The augmentation choices of data-set example `index` in `epoch`.
    pub fn choice(&self, epoch: u64, index: usize) -> AugmentChoice {
        match &self.augment {
            Some(a) => a.draw(&mut item_rng(self.seed, epoch, index as u64)),
            None => AugmentChoice::NONE,
        }
    }

    /// Writes the normalised (and, in training, augmented) examples `indices` of
    /// `examples` into `out` (`[indices.len(), C, H, W]`, row-major) and returns their
    /// labels. All images must have the shape of the first one and as many channels as
    /// the normalisation; `out` must hold exactly `indices.len() · C · H · W` values.
    /// Runs on all cores.
    pub fn fill(
        &self,
        examples: &[ImageExample],
        indices: &[usize],
        epoch: u64,
        out: &mut [f32],
    ) -> Result<Vec<i64>, DataError> {
        let shape = self.batch_shape(examples, indices)?;
        let [c, h, w] = shape;
        let chw = c * h * w;
        if out.len() != indices.len() * chw {
            return Err(DataError::Config(format!(
                "image batch buffer holds {} values, {} images of shape {shape:?} need {}",
                out.len(),
                indices.len(),
                indices.len() * chw
            )));
        }
        // Per-channel lookup tables computed with the exact formula, so every pixel is
        // bit-identical to `(x as f32 / 255 - mean) / std`.
        let lut: Vec<[f32; 256]> = (0..c)
            .map(|ch| {
                let (m, s) = (self.normalize.mean[ch], self.normalize.std[ch]);
                std::array::from_fn(|x| (x as f32 / 255.0 - m) / s)
            })
            .collect();
        out.par_chunks_mut(chw.max(1))
            .zip(indices.par_iter())
            .for_each(|(dst, &index)| {
                let img = &examples[index];
                let choice = self.choice(epoch, index);
                for (ch, table) in lut.iter().enumerate() {
                    let plane = &img.pixels[ch * h * w..(ch + 1) * h * w];
                    let dst = &mut dst[ch * h * w..(ch + 1) * h * w];
                    for y in 0..h {
                        for x in 0..w {
                            let p = match choice.source(y, x, h, w) {
                                Some((sy, sx)) => plane[sy * w + sx],
                                None => 0,
                            };
                            dst[y * w + x] = table[usize::from(p)];
                        }
                    }
                }
            });
        Ok(indices.iter().map(|&i| examples[i].label as i64).collect())
    }

    /// The batch of examples `indices` (data-set indices, which key the augmentation) of
    /// `examples` in `epoch`, on `device`: see [`fill`](Self::fill) and the module docs.
    pub fn batch(
        &self,
        examples: &[ImageExample],
        indices: &[usize],
        epoch: u64,
        device: &Device,
    ) -> Result<ImageBatch, DataError> {
        let [c, h, w] = self.batch_shape(examples, indices)?;
        let n = indices.len();
        let mut data = vec![0f32; n * c * h * w];
        let labels = self.fill(examples, indices, epoch, &mut data)?;
        Ok(ImageBatch {
            images: Tensor::from_data(TensorData::new(data, [n, c, h, w]), device),
            labels: Tensor::from_data(TensorData::new(labels, [n]), device),
        })
    }

    /// The common shape of the selected images, checked against the normalisation.
    fn batch_shape(
        &self,
        examples: &[ImageExample],
        indices: &[usize],
    ) -> Result<[usize; 3], DataError> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= examples.len()) {
            return Err(DataError::Config(format!(
                "image batch refers to example {bad} of a set of {}",
                examples.len()
            )));
        }
        let Some(&first) = indices.first() else {
            return Ok([self.normalize.mean.len(), 0, 0]);
        };
        let shape = examples[first].shape();
        if let Some(&i) = indices.iter().find(|&&i| examples[i].shape() != shape) {
            return Err(DataError::Config(format!(
                "image {i} has shape {:?} but image {first} has {shape:?}: one batch needs one \
                 shape",
                examples[i].shape()
            )));
        }
        if let Some(&i) = indices
            .iter()
            .find(|&&i| examples[i].pixels.len() != shape.iter().product::<usize>())
        {
            return Err(DataError::Config(format!(
                "image {i} has {} pixel values for shape {shape:?}",
                examples[i].pixels.len()
            )));
        }
        self.normalize.check_channels(shape[0])?;
        Ok(shape)
    }
}

/// The data of an image-classification recipe, ready for training: both splits and the
/// batch settings of each.
#[derive(Debug, Clone)]
pub struct ImageSplits {
    /// The training set (`data.train`, its training split).
    pub train: ImageSet,
    /// The dev set (`data.dev`, or the test split of `data.train`'s directory).
    pub dev: ImageSet,
    /// Training batches: normalisation and augmentation seeded with the run's seed.
    pub train_batches: ImageBatchConfig,
    /// Evaluation batches: the same normalisation, no augmentation.
    pub eval_batches: ImageBatchConfig,
}

/// Loads the splits of an image task from a recipe's `data:` section:
///
/// * `train` (required): read with [`load_images`] (`format`, or detected), training split;
/// * `dev`: read as the test split of its path; when absent, the test split of `train`'s
///   directory (CIFAR-10 `test_batch.bin`, idx `t10k-*`); an image folder or a single
///   file needs `dev`;
/// * `max_train_examples` / `max_dev_examples`: the first examples only (file order);
/// * `normalize` (checked against the images' channels), else [`Normalize::from_images`]
///   of the (possibly truncated) training set;
/// * `augment` for training batches, seeded with `seed` (the recipe's `training.seed`).
pub fn load_image_splits(
    data: &crate::recipe::sections::DataSection,
    seed: u64,
) -> Result<ImageSplits, DataError> {
    let train_path = data.train.as_deref().ok_or_else(|| {
        DataError::Config("data.train: required for image tasks (a file or directory)".into())
    })?;
    let train_path = Path::new(train_path);
    let format = match data.format {
        Some(f) => f,
        None => {
            if !train_path.exists() {
                return Err(DataError::MissingAsset {
                    path: train_path.to_path_buf(),
                });
            }
            ImageFormat::detect(train_path)?
        }
    };
    let mut train = load_images(Some(format), train_path, ImageSplit::Train)?;
    let mut dev = match data.dev.as_ref().map(|d| d.main()) {
        Some(dev) => load_images(Some(format), dev, ImageSplit::Test)?,
        None if train_path.is_dir() && format != ImageFormat::ImageFolder => {
            load_images(Some(format), train_path, ImageSplit::Test)?
        }
        None => {
            return Err(DataError::Config(format!(
                "data.dev: required when data.train ({}) is a single file or an image folder",
                train_path.display()
            )));
        }
    };
    if let Some(n) = data.max_train_examples {
        train.examples.truncate(n);
    }
    if let Some(n) = data.max_dev_examples {
        dev.examples.truncate(n);
    }
    let Some(first) = train.examples.first() else {
        return Err(DataError::Inconsistent {
            path: train_path.to_path_buf(),
            message: "no training images".into(),
        });
    };
    let normalize = match &data.normalize {
        Some(n) => n.to_normalize(first.channels)?,
        None => Normalize::from_images(&train.examples)?,
    };
    let augment = data.augment.and_then(|a| a.to_augment());
    Ok(ImageSplits {
        train,
        dev,
        train_batches: ImageBatchConfig::train(normalize.clone(), augment, seed),
        eval_batches: ImageBatchConfig::eval(normalize),
    })
}
