//! The idx format of MNIST and Fashion-MNIST (raw or gzip-compressed; detected from the
//! gzip magic bytes, not the file name).
//!
//! Layout: two zero bytes, a type byte (`0x08` = unsigned byte, the only type these sets
//! use), the number of dimensions, each dimension as a big-endian `u32`, then the data.
//! Images are `idx3` (magic `0x00000803`, `[N, H, W]`), labels `idx1` (magic `0x00000801`,
//! `[N]`).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::{DataError, read_file};
use super::images::{ImageExample, ImageSet};

/// An idx array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions.
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

/// Reads a file, gunzipping it when it starts with the gzip magic bytes `1f 8b`.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = read_file(path)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| DataError::Truncated {
                path: path.to_path_buf(),
                offset: out.len() as u64,
                needed: 0,
                what: format!("gzip stream: {e}"),
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an idx array of unsigned bytes with `ndims` dimensions.
pub fn parse_idx(bytes: &[u8], ndims: u8, path: &Path) -> Result<IdxArray, DataError> {
    let magic = 0x0000_0800 | u32::from(ndims);
    if bytes.len() < 4 {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            offset: 0,
            needed: (4 - bytes.len()) as u64,
            what: "magic number".into(),
        });
    }
    let found = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if found != magic {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            offset: 0,
            found,
            expected: format!("{magic:#010x} (idx{ndims}, unsigned bytes)"),
        });
    }
    let header = 4 + 4 * usize::from(ndims);
    if bytes.len() < header {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            offset: bytes.len() as u64,
            needed: (header - bytes.len()) as u64,
            what: "dimension sizes".into(),
        });
    }
    let dims: Vec<usize> = (0..usize::from(ndims))
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let len = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| DataError::Inconsistent {
            path: path.to_path_buf(),
            message: format!("dimensions {dims:?} overflow"),
        })?;
    let body = &bytes[header..];
    if body.len() < len {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            offset: bytes.len() as u64,
            needed: (len - body.len()) as u64,
            what: format!("data of dimensions {dims:?}"),
        });
    }
    if body.len() > len {
        return Err(DataError::Inconsistent {
            path: path.to_path_buf(),
            message: format!(
                "{} trailing bytes after the data of dimensions {dims:?} (offset {})",
                body.len() - len,
                header + len
            ),
        });
    }
    Ok(IdxArray {
        dims,
        data: body.to_vec(),
    })
}

/// Reads an idx file (raw or gzip).
pub fn read_idx(path: impl AsRef<Path>, ndims: u8) -> Result<IdxArray, DataError> {
    let path = path.as_ref();
    let bytes = read_maybe_gz(path)?;
    parse_idx(&bytes, ndims, path)
}

/// Loads an idx3 image file and its idx1 label file into 1-channel images.
pub fn load_idx_images(
    images: impl AsRef<Path>,
    labels: impl AsRef<Path>,
    num_classes: usize,
) -> Result<Vec<ImageExample>, DataError> {
    let (ip, lp) = (images.as_ref(), labels.as_ref());
    let imgs = read_idx(ip, 3)?;
    let labs = read_idx(lp, 1)?;
    let (n, h, w) = (imgs.dims[0], imgs.dims[1], imgs.dims[2]);
    if labs.dims[0] != n {
        return Err(DataError::Inconsistent {
            path: lp.to_path_buf(),
            message: format!("{} labels for {n} images in {}", labs.dims[0], ip.display()),
        });
    }
    if let Some(i) = labs
        .data
        .iter()
        .position(|&l| usize::from(l) >= num_classes)
    {
        return Err(DataError::BadValue {
            path: lp.to_path_buf(),
            at: super::error::Location::Offset(8 + i as u64),
            column: "label".into(),
            value: labs.data[i].to_string(),
            reason: format!("label out of range 0..{num_classes}"),
        });
    }
    Ok(imgs
        .data
        .chunks_exact(h * w)
        .zip(&labs.data)
        .map(|(px, &l)| ImageExample {
            pixels: px.to_vec(),
            channels: 1,
            height: h,
            width: w,
            label: usize::from(l),
        })
        .collect())
}

/// The Fashion-MNIST class names.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Whether to load the training or the test split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdxSplit {
    /// `train-*` (60,000 images).
    Train,
    /// `t10k-*` (10,000 images).
    Test,
}

fn idx_set(dir: PathBuf, split: IdxSplit, classes: Vec<String>) -> Result<ImageSet, DataError> {
    super::text::require_dir(&dir)?;
    let prefix = match split {
        IdxSplit::Train => "train",
        IdxSplit::Test => "t10k",
    };
    let find = |stem: &str| {
        let gz = dir.join(format!("{prefix}-{stem}-ubyte.gz"));
        if gz.exists() {
            gz
        } else {
            dir.join(format!("{prefix}-{stem}-ubyte"))
        }
    };
    let examples = load_idx_images(find("images-idx3"), find("labels-idx1"), classes.len())?;
    Ok(ImageSet { examples, classes })
}

/// Loads Fashion-MNIST from `<assets>/data/fashion-mnist/` (`.gz` or uncompressed files).
pub fn fashion_mnist(assets: impl AsRef<Path>, split: IdxSplit) -> Result<ImageSet, DataError> {
    let classes = FASHION_MNIST_CLASSES
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    idx_set(
        assets.as_ref().join("data").join("fashion-mnist"),
        split,
        classes,
    )
}

/// Loads MNIST from `<assets>/data/mnist/` (`.gz` or uncompressed files).
pub fn mnist(assets: impl AsRef<Path>, split: IdxSplit) -> Result<ImageSet, DataError> {
    let classes = (0..10).map(|d| d.to_string()).collect();
    idx_set(assets.as_ref().join("data").join("mnist"), split, classes)
}
