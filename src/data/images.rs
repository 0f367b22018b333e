//! Labelled images as plain structs, and image folders (one subfolder per class, PNG/JPEG).

#[cfg(feature = "image-folder")]
use std::path::{Path, PathBuf};

#[cfg(feature = "image-folder")]
use super::error::DataError;

/// One image with its class: 8-bit pixels in `[C, H, W]` (channel-major) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageExample {
    /// Pixels, `channels * height * width` values, channel planes one after the other.
    pub pixels: Vec<u8>,
    /// Number of channels (1 = grey, 3 = RGB).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// The class index.
    pub label: usize,
}

impl ImageExample {
    /// The pixel of channel `c` at row `y`, column `x`.
    pub fn at(&self, c: usize, y: usize, x: usize) -> u8 {
        self.pixels[(c * self.height + y) * self.width + x]
    }

    /// The shape `[C, H, W]`.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }
}

/// A labelled image set with its class names.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// The images.
    pub examples: Vec<ImageExample>,
    /// Class names, index = label.
    pub classes: Vec<String>,
}

/// Colour handling for [`load_image_folder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorMode {
    /// Convert every image to 1 grey channel.
    Gray,
    /// Convert every image to 3 RGB channels (torchvision's `ImageFolder` default).
    Rgb,
}

/// Decodes one PNG or JPEG file into `[C, H, W]` pixels (cargo feature `image-folder`).
#[cfg(feature = "image-folder")]
pub fn load_image_file(
    path: impl AsRef<Path>,
    mode: ColorMode,
    label: usize,
) -> Result<ImageExample, DataError> {
    let path = path.as_ref();
    let bytes = super::error::read_file(path)?;
    let img = image::load_from_memory(&bytes).map_err(|e| DataError::Image {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let (channels, interleaved) = match mode {
        ColorMode::Gray => (1, img.into_luma8().into_raw()),
        ColorMode::Rgb => (3, img.into_rgb8().into_raw()),
    };
    let mut pixels = vec![0u8; interleaved.len()];
    for (i, px) in interleaved.chunks_exact(channels).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            pixels[c * height * width + i] = v;
        }
    }
    Ok(ImageExample {
        pixels,
        channels,
        height,
        width,
        label,
    })
}

#[cfg(feature = "image-folder")]
fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .is_some_and(|e| matches!(e.as_str(), "png" | "jpg" | "jpeg"))
}

#[cfg(feature = "image-folder")]
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|err| DataError::io(dir, err)))
        .collect::<Result<Vec<_>, _>>()?;
    entries.sort();
    Ok(entries)
}

/// Loads an image folder: each subfolder of `root` is a class (classes sorted by name, as
/// torchvision's `ImageFolder`), holding `.png`/`.jpg`/`.jpeg` files (sorted by name; other
/// files are ignored). Decoding runs on all cores. Needs the cargo feature `image-folder`.
#[cfg(feature = "image-folder")]
pub fn load_image_folder(root: impl AsRef<Path>, mode: ColorMode) -> Result<ImageSet, DataError> {
    use rayon::prelude::*;
    let root = root.as_ref();
    let mut classes = Vec::new();
    let mut files = Vec::new();
    for dir in sorted_entries(root)? {
        if !dir.is_dir() {
            continue;
        }
        let label = classes.len();
        classes.push(
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        for file in sorted_entries(&dir)? {
            if file.is_file() && is_image(&file) {
                files.push((file, label));
            }
        }
    }
    if classes.is_empty() {
        return Err(DataError::Inconsistent {
            path: root.to_path_buf(),
            message: "no class subfolders".into(),
        });
    }
    let examples = files
        .par_iter()
        .map(|(f, label)| load_image_file(f, mode, *label))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ImageSet { examples, classes })
}
