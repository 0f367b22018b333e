//! Image loaders (idx, CIFAR binaries, image folders), their errors, augmentation, image
//! batches, and the real Fashion-MNIST files.

use std::path::{Path, PathBuf};

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, InMemDataset};
use burn::tensor::Device;
use serde_json::Value;
use shears::data::DataError;
use shears::data::augment::{Augment, AugmentedDataset, crop_padded, hflip};
use shears::data::batch::{ImageBatcher, Normalize};
use shears::data::cifar::{CifarKind, load_cifar_bin, parse_cifar};
use shears::data::idx::{IdxSplit, fashion_mnist, load_idx_images, parse_idx, read_idx};
use shears::data::images::ImageExample;
#[cfg(feature = "image-folder")]
use shears::data::images::{ColorMode, load_image_folder};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data")
}

fn assets() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    assert!(
        p.join("data").is_dir(),
        "{} is missing: run scripts/fetch-assets.sh",
        p.join("data").display()
    );
    p
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn u8s(v: &Value) -> Vec<u8> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u8)
        .collect()
}

#[test]
fn idx_raw_and_gz_load_to_expected_pixels() {
    let dir = fixtures().join("idx");
    let want = read_json(&dir.join("expected.json"));
    let (h, w) = (
        want["h"].as_u64().unwrap() as usize,
        want["w"].as_u64().unwrap() as usize,
    );
    for images in ["images-idx3-ubyte", "images-idx3-ubyte.gz"] {
        let set = load_idx_images(dir.join(images), dir.join("labels-idx1-ubyte.gz"), 10).unwrap();
        assert_eq!(set.len(), want["n"].as_u64().unwrap() as usize);
        for (i, img) in set.iter().enumerate() {
            assert_eq!(img.shape(), [1, h, w]);
            assert_eq!(img.pixels, u8s(&want["pixels"][i]));
            assert_eq!(img.label as u64, want["labels"][i].as_u64().unwrap());
        }
    }
}

#[test]
fn idx_errors_name_file_and_offset() {
    let dir = fixtures().join("idx");
    let bytes = std::fs::read(dir.join("images-idx3-ubyte")).unwrap();
    let p = Path::new("images.idx");
    // Wrong magic: a labels file read as images.
    let mut bad = bytes.clone();
    bad[3] = 0x01;
    let e = parse_idx(&bad, 3, p).unwrap_err();
    assert!(
        matches!(
            &e,
            DataError::BadMagic {
                offset: 0,
                found: 0x801,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("images.idx"));
    // Truncated: 5 bytes missing from the end of the data.
    let e = parse_idx(&bytes[..bytes.len() - 5], 3, p).unwrap_err();
    assert!(
        matches!(&e, DataError::Truncated { needed: 5, offset, .. } if *offset == (bytes.len() - 5) as u64),
        "{e}"
    );
    // Truncated inside the header.
    let e = parse_idx(&bytes[..9], 3, p).unwrap_err();
    assert!(matches!(&e, DataError::Truncated { needed: 7, .. }), "{e}");
    // Truncated gzip stream.
    let tmp = tempfile::tempdir().unwrap();
    let gz = std::fs::read(dir.join("images-idx3-ubyte.gz")).unwrap();
    let cut = tmp.path().join("cut.gz");
    std::fs::write(&cut, &gz[..gz.len() / 2]).unwrap();
    let e = read_idx(&cut, 3).unwrap_err();
    assert!(
        matches!(&e, DataError::Truncated { .. }) && e.to_string().contains("cut.gz"),
        "{e}"
    );
    // Label count differs from image count.
    let labels = tmp.path().join("labels");
    let mut lb = vec![0, 0, 8, 1, 0, 0, 0, 2];
    lb.extend([1, 2]);
    std::fs::write(&labels, lb).unwrap();
    let e = load_idx_images(dir.join("images-idx3-ubyte"), &labels, 10).unwrap_err();
    assert!(matches!(&e, DataError::Inconsistent { .. }), "{e}");
}

#[test]
fn cifar_binaries_load_to_expected_records() {
    let dir = fixtures().join("cifar");
    let want = read_json(&dir.join("expected.json"));
    let c10 = load_cifar_bin(dir.join("data_batch_1.bin"), CifarKind::Cifar10).unwrap();
    let fine = load_cifar_bin(dir.join("train.bin"), CifarKind::Cifar100Fine).unwrap();
    let coarse = load_cifar_bin(dir.join("train.bin"), CifarKind::Cifar100Coarse).unwrap();
    assert_eq!(c10.len(), 4);
    assert_eq!(fine.len(), 3);
    let check = |img: &ImageExample, w: &Value| {
        assert_eq!(img.shape(), [3, 32, 32]);
        assert_eq!(u64::from(img.at(0, 0, 0)), w["r00"].as_u64().unwrap());
        assert_eq!(u64::from(img.at(1, 0, 0)), w["g00"].as_u64().unwrap());
        assert_eq!(u64::from(img.at(2, 31, 31)), w["b31_31"].as_u64().unwrap());
        let row5: Vec<u8> = (0..32).map(|x| img.at(0, 5, x)).collect();
        assert_eq!(row5, u8s(&w["r_row5"]));
        let sum: u64 = img.pixels.iter().map(|&p| u64::from(p)).sum();
        assert_eq!(sum, w["sum"].as_u64().unwrap());
    };
    for (img, w) in c10.iter().zip(want["cifar10"].as_array().unwrap()) {
        check(img, w);
        assert_eq!(img.label as u64, w["label10"].as_u64().unwrap());
    }
    for ((f, c), w) in fine
        .iter()
        .zip(&coarse)
        .zip(want["cifar100"].as_array().unwrap())
    {
        check(f, w);
        assert_eq!(f.label as u64, w["fine"].as_u64().unwrap());
        assert_eq!(c.label as u64, w["coarse"].as_u64().unwrap());
    }
    // A file that is not a whole number of records.
    let bytes = std::fs::read(dir.join("data_batch_1.bin")).unwrap();
    let e = parse_cifar(
        &bytes[..3073 * 2 + 100],
        CifarKind::Cifar10,
        Path::new("b.bin"),
    )
    .unwrap_err();
    assert!(
        matches!(
            &e,
            DataError::Truncated {
                offset: 6146,
                needed: 2973,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("b.bin"));
    // A label byte out of range in record 2.
    let mut bad = bytes.clone();
    bad[3073] = 10;
    let e = parse_cifar(&bad, CifarKind::Cifar10, Path::new("b.bin")).unwrap_err();
    assert!(
        matches!(&e, DataError::BadValue { at, .. } if at.to_string() == "offset 3073"),
        "{e}"
    );
}

#[cfg(feature = "image-folder")]
#[test]
fn image_folder_loads_png_exactly_and_jpeg_closely() {
    let dir = fixtures().join("folder");
    let want = read_json(&dir.join("expected.json"));
    let set = load_image_folder(&dir, ColorMode::Rgb).unwrap();
    let classes: Vec<&str> = want["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(set.classes, classes);
    let images = want["images"].as_array().unwrap();
    assert_eq!(set.examples.len(), images.len());
    for (img, w) in set.examples.iter().zip(images) {
        let label = classes
            .iter()
            .position(|c| *c == w["class"].as_str().unwrap())
            .unwrap();
        assert_eq!(img.label, label);
        assert_eq!(
            img.shape(),
            [
                3,
                w["h"].as_u64().unwrap() as usize,
                w["w"].as_u64().unwrap() as usize
            ]
        );
        let expected = u8s(&w["chw"]);
        if w["file"].as_str().unwrap().ends_with(".png") {
            assert_eq!(img.pixels, expected, "{}", w["file"]);
        } else {
            // JPEG decoders may differ by rounding in the inverse DCT.
            let max = img
                .pixels
                .iter()
                .zip(&expected)
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            assert!(max <= 3, "jpeg differs by {max}");
        }
    }
    // Grey mode on the grey PNG keeps its single channel values.
    let gray = load_image_folder(&dir, ColorMode::Gray).unwrap();
    let emu = gray.examples.last().unwrap();
    assert_eq!(emu.channels, 1);
    let rgb = set.examples.last().unwrap();
    assert_eq!(emu.pixels, rgb.pixels[..emu.pixels.len()]);
    // A corrupt image names its file.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("a")).unwrap();
    std::fs::write(tmp.path().join("a/broken.png"), b"\x89PNG\r\n\x1a\nnope").unwrap();
    let e = load_image_folder(tmp.path(), ColorMode::Rgb).unwrap_err();
    assert!(
        matches!(&e, DataError::Image { .. }) && e.to_string().contains("broken.png"),
        "{e}"
    );
}

fn ramp(c: usize, h: usize, w: usize) -> ImageExample {
    ImageExample {
        pixels: (0..c * h * w).map(|i| (i % 251) as u8 + 1).collect(),
        channels: c,
        height: h,
        width: w,
        label: 3,
    }
}

#[test]
fn crop_and_flip_are_exact() {
    let img = ramp(3, 6, 5);
    // Centre crop of the padded image is the identity.
    assert_eq!(crop_padded(&img, 2, 2, 2), img);
    // Shifting by (dy, dx) = (pad + 1, pad - 2): pixel (y, x) comes from (y + 1, x - 2).
    let c = crop_padded(&img, 2, 3, 0);
    for ch in 0..3 {
        for y in 0..6 {
            for x in 0..5 {
                let want = if y + 1 < 6 && x >= 2 {
                    img.at(ch, y + 1, x - 2)
                } else {
                    0
                };
                assert_eq!(c.at(ch, y, x), want);
            }
        }
    }
    let f = hflip(&img);
    assert_eq!(f.at(1, 2, 0), img.at(1, 2, 4));
    assert_eq!(hflip(&f), img);
}

#[test]
fn augmentation_is_reproducible_across_threads_and_epochs() {
    let items: Vec<ImageExample> = (0..64)
        .map(|i| {
            let mut im = ramp(3, 8, 8);
            im.label = i % 10;
            im
        })
        .collect();
    let aug = AugmentedDataset::new(InMemDataset::new(items.clone()), Augment::cifar(), 42);
    let first: Vec<ImageExample> = (0..64).map(|i| aug.get(i).unwrap()).collect();
    let again: Vec<ImageExample> = (0..64).rev().map(|i| aug.get(i).unwrap()).collect();
    assert!(first.iter().eq(again.iter().rev()));
    // Some images were changed, labels never.
    assert!(first.iter().zip(&items).any(|(a, b)| a != b));
    assert!(first.iter().zip(&items).all(|(a, b)| a.label == b.label));
    aug.set_epoch(1);
    let next: Vec<ImageExample> = (0..64).map(|i| aug.get(i).unwrap()).collect();
    assert_ne!(first, next);
    // Through a multi-threaded loader the batches hold the same images.
    aug.set_epoch(0);
    let loader = DataLoaderBuilder::new(ImageBatcher {
        normalize: Normalize::unit(3),
    })
    .batch_size(16)
    .num_workers(3)
    .build(aug);
    // Workers deliver batches in any order: compare the images as a multiset.
    let mut seen: Vec<Vec<u32>> = Vec::new();
    for batch in loader.iter() {
        let batch = batch.unwrap();
        let v: Vec<f32> = batch.images.into_data().iter::<f32>().collect();
        seen.extend(
            v.chunks(3 * 8 * 8)
                .map(|c| c.iter().map(|x| x.to_bits()).collect()),
        );
    }
    let mut expected: Vec<Vec<u32>> = first
        .iter()
        .map(|i| {
            i.pixels
                .iter()
                .map(|&p| (f32::from(p) / 255.0).to_bits())
                .collect()
        })
        .collect();
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected);
}

#[test]
fn image_batches_are_normalised_per_channel() {
    let imgs = vec![ramp(3, 2, 2), ramp(3, 2, 2)];
    let norm = Normalize::cifar10();
    let batch = ImageBatcher {
        normalize: norm.clone(),
    }
    .batch(imgs.clone(), &Device::default());
    assert_eq!(batch.images.dims(), [2, 3, 2, 2]);
    let v: Vec<f32> = batch.images.into_data().iter::<f32>().collect();
    for (i, &p) in imgs[0].pixels.iter().enumerate() {
        let c = i / 4;
        let want = (f32::from(p) / 255.0 - norm.mean[c]) / norm.std[c];
        assert!((v[i] - want).abs() < 1e-6);
    }
    let labels: Vec<i64> = batch.labels.into_data().iter::<i64>().collect();
    assert_eq!(labels, vec![3, 3]);
}

#[test]
fn real_fashion_mnist_has_the_expected_counts() {
    let train = fashion_mnist(assets(), IdxSplit::Train).unwrap();
    let test = fashion_mnist(assets(), IdxSplit::Test).unwrap();
    assert_eq!(train.examples.len(), 60_000);
    assert_eq!(test.examples.len(), 10_000);
    let mut per_class = [0usize; 10];
    for e in &train.examples {
        per_class[e.label] += 1;
    }
    assert_eq!(per_class, [6_000; 10]);
    let mut per_class = [0usize; 10];
    for e in &test.examples {
        per_class[e.label] += 1;
    }
    assert_eq!(per_class, [1_000; 10]);
    let first: Vec<usize> = train.examples[..10].iter().map(|e| e.label).collect();
    assert_eq!(first, [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);
    assert_eq!(train.examples[0].shape(), [1, 28, 28]);
}

#[test]
fn a_missing_assets_folder_says_how_to_fetch_it() {
    let e = fashion_mnist("/nonexistent-assets", IdxSplit::Train).unwrap_err();
    assert!(e.to_string().contains("run scripts/fetch-assets.sh"), "{e}");
}

#[test]
fn real_mnist_has_the_official_counts_and_first_labels() {
    use shears::data::idx::mnist;
    let train = mnist(assets(), IdxSplit::Train).unwrap();
    let test = mnist(assets(), IdxSplit::Test).unwrap();
    // The official MNIST label statistics (LeCun et al.; e.g. torchvision's MNIST targets).
    let count = |set: &shears::data::images::ImageSet| {
        let mut c = [0usize; 10];
        for e in &set.examples {
            c[e.label] += 1;
        }
        c
    };
    assert_eq!(
        count(&train),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        count(&test),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    let first = |set: &shears::data::images::ImageSet| {
        set.examples[..10]
            .iter()
            .map(|e| e.label)
            .collect::<Vec<_>>()
    };
    assert_eq!(first(&train), [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    assert_eq!(first(&test), [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
}
