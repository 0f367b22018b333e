//! The standard image augmentations (random crop with zero padding, horizontal flip), seeded
//! and reproducible.
//!
//! [`AugmentedDataset`] draws the random choices of item `i` in epoch `e` from a generator
//! seeded with `seed`, `e` and `i` only, so the augmented data set is the same whatever the
//! number of loader threads or the order in which items are fetched.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::data::dataset::{Dataset, DatasetError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::images::ImageExample;

/// Crops `img` at offset `(dy, dx)` of the image zero-padded by `pad` pixels on each side,
/// keeping its size (`dy = dx = pad` returns the image unchanged).
pub fn crop_padded(img: &ImageExample, pad: usize, dy: usize, dx: usize) -> ImageExample {
    let (c, h, w) = (img.channels, img.height, img.width);
    let mut pixels = vec![0u8; c * h * w];
    for ch in 0..c {
        for y in 0..h {
            // Row y of the crop is row y + dy - pad of the image.
            let Some(sy) = (y + dy).checked_sub(pad).filter(|&s| s < h) else {
                continue;
            };
            for x in 0..w {
                if let Some(sx) = (x + dx).checked_sub(pad).filter(|&s| s < w) {
                    pixels[(ch * h + y) * w + x] = img.pixels[(ch * h + sy) * w + sx];
                }
            }
        }
    }
    ImageExample {
        pixels,
        ..img.clone()
    }
}

/// Mirrors `img` left to right.
pub fn hflip(img: &ImageExample) -> ImageExample {
    let mut out = img.clone();
    let w = img.width;
    for row in out.pixels.chunks_exact_mut(w) {
        row.reverse();
    }
    out
}

/// Which augmentations to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Augment {
    /// Random crop of the image zero-padded by this many pixels per side (CIFAR: 4); `None`:
    /// no crop.
    pub crop_padding: Option<usize>,
    /// Flip left-right with probability 1/2.
    pub horizontal_flip: bool,
}

impl Augment {
    /// The usual CIFAR training augmentation: random crop with 4 pixels of padding and
    /// horizontal flips.
    pub fn cifar() -> Self {
        Self {
            crop_padding: Some(4),
            horizontal_flip: true,
        }
    }

    /// Draws the random choices from `rng`: the crop offsets first (when cropping), then
    /// the flip (when flipping). [`Augment::apply`] and the batch builder of
    /// [`image_batch`](super::image_batch) both use this draw, so they agree exactly.
    pub fn draw(&self, rng: &mut impl Rng) -> AugmentChoice {
        let (pad, dy, dx) = match self.crop_padding {
            Some(pad) if pad > 0 => {
                let dy = rng.random_range(0..=2 * pad);
                let dx = rng.random_range(0..=2 * pad);
                (pad, dy, dx)
            }
            _ => (0, 0, 0),
        };
        let flip = self.horizontal_flip && rng.random_bool(0.5);
        AugmentChoice { pad, dy, dx, flip }
    }

    /// Applies the augmentations with the random choices drawn from `rng` (crop offsets
    /// first, then the flip).
    pub fn apply(&self, img: &ImageExample, rng: &mut impl Rng) -> ImageExample {
        self.draw(rng).apply(img)
    }
}

/// The random choices of one augmented image (see [`Augment::draw`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AugmentChoice {
    /// Zero padding per side of the crop (0: no crop).
    pub pad: usize,
    /// Row offset of the crop in the padded image (`0..=2·pad`; `pad` = no shift).
    pub dy: usize,
    /// Column offset of the crop in the padded image (`0..=2·pad`).
    pub dx: usize,
    /// Whether the (cropped) image is mirrored left to right.
    pub flip: bool,
}

impl AugmentChoice {
    /// The identity (no crop, no flip).
    pub const NONE: AugmentChoice = AugmentChoice {
        pad: 0,
        dy: 0,
        dx: 0,
        flip: false,
    };

    /// Applies the choices: crop of the padded image, then the flip.
    pub fn apply(&self, img: &ImageExample) -> ImageExample {
        let out = if self.pad > 0 {
            crop_padded(img, self.pad, self.dy, self.dx)
        } else {
            img.clone()
        };
        if self.flip { hflip(&out) } else { out }
    }

    /// Where output pixel `(y, x)` comes from in an `h × w` source image: `Some((sy, sx))`,
    /// or `None` for a padding pixel (value 0).
    #[inline]
    pub fn source(&self, y: usize, x: usize, h: usize, w: usize) -> Option<(usize, usize)> {
        // The flip mirrors the cropped image: output column x is crop column w - 1 - x.
        let cx = if self.flip { w - 1 - x } else { x };
        let sy = (y + self.dy).checked_sub(self.pad).filter(|&s| s < h)?;
        let sx = (cx + self.dx).checked_sub(self.pad).filter(|&s| s < w)?;
        Some((sy, sx))
    }
}

/// The generator used for item `index` in `epoch` (SplitMix64-style mixing of the three).
pub fn item_rng(seed: u64, epoch: u64, index: u64) -> StdRng {
    let mut z = seed
        ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ index.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// A data set of images that applies [`Augment`] on the fly, reproducibly (see the module
/// docs). Call [`AugmentedDataset::set_epoch`] (or use the shared handle from
/// [`AugmentedDataset::epoch_handle`]) at the start of each epoch.
pub struct AugmentedDataset<D> {
    inner: D,
    augment: Augment,
    seed: u64,
    epoch: Arc<AtomicU64>,
}

impl<D> AugmentedDataset<D> {
    /// Wraps `inner`.
    pub fn new(inner: D, augment: Augment, seed: u64) -> Self {
        Self {
            inner,
            augment,
            seed,
            epoch: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Sets the epoch whose random choices are used.
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// A handle to the epoch counter, to keep after the data set moved into a data loader.
    pub fn epoch_handle(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.epoch)
    }
}

impl<D: Dataset<ImageExample>> Dataset<ImageExample> for AugmentedDataset<D> {
    fn get(&self, index: usize) -> Result<ImageExample, DatasetError> {
        let img = self.inner.get(index)?;
        let mut rng = item_rng(self.seed, self.epoch.load(Ordering::SeqCst), index as u64);
        Ok(self.augment.apply(&img, &mut rng))
    }

    fn len(&self) -> usize {
        self.inner.len()
    }
}
