//! Image batches for training (`shears::data::image_batch`): exact normalisation,
//! reproducible augmentation independent of threads and batch composition, the three
//! on-disk formats behind `load_images`, and the real CIFAR-10 binaries.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shears::data::DataError;
use shears::data::augment::{Augment, item_rng};
use shears::data::batch::Normalize;
use shears::data::image_batch::{
    AugmentConfig, ImageBatchConfig, ImageFormat, ImageSplit, NormalizeConfig, load_images,
};
use shears::data::images::ImageExample;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data")
}

/// The real CIFAR-10 binaries; fails (never skips) when they are missing.
fn cifar10_dir() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/data/cifar-10");
    assert!(
        p.join("data_batch_1.bin").is_file() && p.join("test_batch.bin").is_file(),
        "{} is missing the CIFAR-10 binaries: run scripts/fetch-assets.sh cifar10",
        p.display()
    );
    p
}

fn random_images(n: usize, c: usize, h: usize, w: usize, seed: u64) -> Vec<ImageExample> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| ImageExample {
            pixels: (0..c * h * w).map(|_| rng.random::<u8>()).collect(),
            channels: c,
            height: h,
            width: w,
            label: i % 10,
        })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn batch_values(
    cfg: &ImageBatchConfig,
    imgs: &[ImageExample],
    idx: &[usize],
    epoch: u64,
) -> Vec<f32> {
    let b = cfg.batch(imgs, idx, epoch, &Device::flex()).unwrap();
    b.images.into_data().iter::<f32>().collect()
}

#[test]
fn pixels_are_normalised_by_the_reference_formula_exactly() {
    let imgs = random_images(5, 3, 4, 6, 1);
    let norm = Normalize::cifar10();
    let cfg = ImageBatchConfig::eval(norm.clone());
    let idx = [4, 0, 2];
    let b = cfg.batch(&imgs, &idx, 0, &Device::flex()).unwrap();
    assert_eq!(b.images.dims(), [3, 3, 4, 6]);
    let labels: Vec<i64> = b.labels.into_data().iter::<i64>().collect();
    assert_eq!(labels, [4, 0, 2]);
    let v: Vec<f32> = b.images.into_data().iter::<f32>().collect();
    // A few pixels by hand: (b, c, y, x).
    for &(bi, c, y, x) in &[
        (0, 0, 0, 0),
        (0, 2, 3, 5),
        (1, 1, 2, 3),
        (2, 0, 1, 4),
        (2, 2, 0, 1),
    ] {
        let p = imgs[idx[bi]].at(c, y, x);
        let want = (f32::from(p) / 255.0 - norm.mean[c]) / norm.std[c];
        let got = v[((bi * 3 + c) * 4 + y) * 6 + x];
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "pixel {p} channel {c}: {got} vs {want}"
        );
    }
    // Every pixel: the formula in f64 agrees to f32 rounding.
    for (bi, &i) in idx.iter().enumerate() {
        for (k, &p) in imgs[i].pixels.iter().enumerate() {
            let c = k / 24;
            let want = (f64::from(p) / 255.0 - f64::from(norm.mean[c])) / f64::from(norm.std[c]);
            assert!((f64::from(v[bi * 72 + k]) - want).abs() < 1e-5);
        }
    }
}

#[test]
fn augmentation_depends_only_on_seed_epoch_and_index() {
    let imgs = random_images(40, 3, 8, 8, 2);
    let cfg = ImageBatchConfig::train(Normalize::cifar10(), Some(Augment::cifar()), 99);
    let all: Vec<usize> = (0..40).collect();
    let chw = 3 * 8 * 8;
    let whole = batch_values(&cfg, &imgs, &all, 3);
    // Reference: the per-image augmentation of `augment.rs` with item_rng(seed, epoch, i),
    // then the per-image normalisation.
    for i in 0..40 {
        let aug = Augment::cifar().apply(&imgs[i], &mut item_rng(99, 3, i as u64));
        assert_eq!(
            bits(&whole[i * chw..(i + 1) * chw]),
            bits(&Normalize::cifar10().apply(&aug)),
            "image {i}"
        );
    }
    // Other batch compositions and one thread only: the same pixels per index.
    let order: Vec<usize> = (0..40).rev().step_by(3).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let single = pool.install(|| batch_values(&cfg, &imgs, &order, 3));
    for (k, &i) in order.iter().enumerate() {
        assert_eq!(
            bits(&single[k * chw..(k + 1) * chw]),
            bits(&whole[i * chw..(i + 1) * chw])
        );
    }
    for chunk in all.chunks(7) {
        let part = batch_values(&cfg, &imgs, chunk, 3);
        for (k, &i) in chunk.iter().enumerate() {
            assert_eq!(
                bits(&part[k * chw..(k + 1) * chw]),
                bits(&whole[i * chw..(i + 1) * chw])
            );
        }
    }
    // Another epoch draws other crops/flips; another seed too.
    let next = batch_values(&cfg, &imgs, &all, 4);
    let changed = (0..40)
        .filter(|&i| whole[i * chw..(i + 1) * chw] != next[i * chw..(i + 1) * chw])
        .count();
    assert!(
        changed >= 30,
        "only {changed} of 40 images changed between epochs"
    );
    let choices: std::collections::HashSet<_> = (0..40)
        .map(|i| {
            let c = cfg.choice(3, i);
            (c.dy, c.dx, c.flip)
        })
        .collect();
    assert!(choices.len() > 20, "{choices:?}");
    assert!(cfg.choice(3, 5).dy <= 8 && cfg.choice(3, 5).pad == 4);
    // Without augmentation, epochs do not matter.
    let eval = ImageBatchConfig::eval(Normalize::cifar10());
    assert_eq!(
        bits(&batch_values(&eval, &imgs, &all, 0)),
        bits(&batch_values(&eval, &imgs, &all, 9))
    );
}

#[test]
fn padding_pixels_are_zero_before_normalisation() {
    // A constant image of 200s: a crop shifted by the full padding has a 4-pixel border of
    // zeros, normalised to -mean/std.
    let img = ImageExample {
        pixels: vec![200; 3 * 8 * 8],
        channels: 3,
        height: 8,
        width: 8,
        label: 1,
    };
    let imgs = vec![img; 64];
    let norm = Normalize::cifar10();
    let cfg = ImageBatchConfig::train(
        norm.clone(),
        Some(Augment {
            crop_padding: Some(4),
            horizontal_flip: false,
        }),
        5,
    );
    let all: Vec<usize> = (0..64).collect();
    let v = batch_values(&cfg, &imgs, &all, 0);
    for i in 0..64 {
        let ch = cfg.choice(0, i);
        for c in 0..3 {
            for y in 0..8 {
                for x in 0..8 {
                    let sy = (y + ch.dy) as i64 - 4;
                    let sx = (x + ch.dx) as i64 - 4;
                    let inside = (0..8).contains(&sy) && (0..8).contains(&sx);
                    let p = if inside { 200.0f32 } else { 0.0 };
                    let want = (p / 255.0 - norm.mean[c]) / norm.std[c];
                    assert_eq!(v[((i * 3 + c) * 8 + y) * 8 + x].to_bits(), want.to_bits());
                }
            }
        }
    }
}

#[test]
fn bad_batches_are_errors() {
    let mut imgs = random_images(3, 3, 4, 4, 3);
    let cfg = ImageBatchConfig::eval(Normalize::mnist());
    let e = cfg.batch(&imgs, &[0, 1], 0, &Device::flex()).unwrap_err();
    assert!(e.to_string().contains("data.normalize has 1 means"), "{e}");
    let cfg = ImageBatchConfig::eval(Normalize::cifar10());
    let e = cfg.batch(&imgs, &[0, 7], 0, &Device::flex()).unwrap_err();
    assert!(e.to_string().contains("example 7 of a set of 3"), "{e}");
    imgs[2].height = 2;
    imgs[2].pixels.truncate(3 * 2 * 4);
    let e = cfg.batch(&imgs, &[0, 2], 0, &Device::flex()).unwrap_err();
    assert!(e.to_string().contains("image 2 has shape [3, 2, 4]"), "{e}");
    let mut buf = vec![0f32; 10];
    assert!(cfg.fill(&imgs, &[0], 0, &mut buf).is_err());
    // Empty batches are fine.
    let b = cfg.batch(&imgs, &[], 0, &Device::flex()).unwrap();
    assert_eq!(b.labels.dims(), [0]);
}

#[test]
fn normalisation_settings_are_checked() {
    assert!(Normalize::new(vec![0.5], vec![0.0]).is_err());
    assert!(Normalize::new(vec![0.5, 0.5], vec![0.2]).is_err());
    assert!(Normalize::new(vec![f32::NAN], vec![0.2]).is_err());
    let n = NormalizeConfig {
        mean: vec![0.5, 0.4, 0.3],
        std: vec![0.2, 0.2, 0.2],
    };
    assert_eq!(n.to_normalize(3).unwrap().mean, vec![0.5, 0.4, 0.3]);
    let e = n.to_normalize(1).unwrap_err();
    assert!(e.to_string().contains("data.normalize"), "{e}");
    assert_eq!(AugmentConfig::default().to_augment(), None);
    // Statistics of a set: exact mean and population std of two pixels 0 and 255.
    let imgs = vec![
        ImageExample {
            pixels: vec![0, 255],
            channels: 1,
            height: 1,
            width: 2,
            label: 0,
        },
        ImageExample {
            pixels: vec![51, 51],
            channels: 1,
            height: 1,
            width: 2,
            label: 0,
        },
    ];
    let n = Normalize::from_images(&imgs).unwrap();
    // Pixels /255: 0, 1, 0.2, 0.2 → mean 0.35, var = (0.1225+0.4225+0.0225+0.0225)/4.
    assert!((n.mean[0] - 0.35).abs() < 1e-7);
    assert!((n.std[0] - (0.59f32 / 4.0).sqrt()).abs() < 1e-6);
}

#[test]
fn the_three_formats_load_behind_one_function() {
    let f = fixtures();
    // idx: an explicit images file, its labels file found by name.
    let idx_images = f.join("idx/images-idx3-ubyte.gz");
    assert_eq!(ImageFormat::detect(&idx_images).unwrap(), ImageFormat::Idx);
    let set = load_images(None, &idx_images, ImageSplit::Train).unwrap();
    let want =
        shears::data::idx::load_idx_images(&idx_images, f.join("idx/labels-idx1-ubyte.gz"), 10)
            .unwrap();
    assert_eq!(set.examples, want);
    assert_eq!(set.classes.len(), 10);
    // CIFAR-10: one .bin file.
    let bin = f.join("cifar/data_batch_1.bin");
    assert_eq!(ImageFormat::detect(&bin).unwrap(), ImageFormat::Cifar10);
    let set = load_images(Some(ImageFormat::Cifar10), &bin, ImageSplit::Test).unwrap();
    assert_eq!(
        set.examples,
        shears::data::cifar::load_cifar_bin(&bin, shears::data::cifar::CifarKind::Cifar10).unwrap()
    );
    assert_eq!(set.classes[0], "airplane");
    // An image folder.
    #[cfg(feature = "image-folder")]
    {
        let dir = f.join("folder");
        assert_eq!(ImageFormat::detect(&dir).unwrap(), ImageFormat::ImageFolder);
        let set = load_images(None, &dir, ImageSplit::Train).unwrap();
        assert_eq!(set.classes, ["cat", "dog", "emu"]);
        assert_eq!(set.examples.len(), 4);
    }
    // Missing paths are missing assets.
    let e = load_images(None, "/nonexistent/cifar-10", ImageSplit::Train).unwrap_err();
    assert!(matches!(e, DataError::MissingAsset { .. }), "{e}");
    assert!(e.to_string().contains("scripts/fetch-assets.sh"), "{e}");
    // A CIFAR directory without training batches names the problem.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(&bin, tmp.path().join("test_batch.bin")).unwrap();
    assert_eq!(
        ImageFormat::detect(tmp.path()).unwrap(),
        ImageFormat::Cifar10
    );
    let e = load_images(None, tmp.path(), ImageSplit::Train).unwrap_err();
    assert!(e.to_string().contains("no data_batch_*.bin"), "{e}");
    assert_eq!(
        load_images(None, tmp.path(), ImageSplit::Test)
            .unwrap()
            .examples
            .len(),
        4
    );
}

#[test]
fn real_cifar10_counts_first_labels_and_statistics() {
    let dir = cifar10_dir();
    assert_eq!(ImageFormat::detect(&dir).unwrap(), ImageFormat::Cifar10);
    let train = load_images(None, &dir, ImageSplit::Train).unwrap();
    let test = load_images(Some(ImageFormat::Cifar10), &dir, ImageSplit::Test).unwrap();
    assert_eq!(train.examples.len(), 50_000);
    assert_eq!(test.examples.len(), 10_000);
    let mut per_class = [0usize; 10];
    for e in &train.examples {
        per_class[e.label] += 1;
        assert_eq!(e.shape(), [3, 32, 32]);
    }
    assert_eq!(per_class, [5_000; 10]);
    let first = |s: &[ImageExample]| s[..10].iter().map(|e| e.label).collect::<Vec<_>>();
    assert_eq!(first(&train.examples), [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]);
    assert_eq!(first(&test.examples), [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]);
    // The usual CIFAR-10 constants are the training set's own statistics.
    let n = Normalize::from_images(&train.examples).unwrap();
    let usual = Normalize::cifar10();
    for c in 0..3 {
        assert!((n.mean[c] - usual.mean[c]).abs() < 1e-4, "{:?}", n);
        assert!((n.std[c] - usual.std[c]).abs() < 1e-4, "{:?}", n);
    }
    // One file of the directory.
    let one = load_images(None, dir.join("data_batch_1.bin"), ImageSplit::Train).unwrap();
    assert_eq!(one.examples[..], train.examples[..10_000]);
    // A training batch of real images.
    let cfg = ImageBatchConfig::train(
        n,
        AugmentConfig {
            random_crop_padding: 4,
            horizontal_flip: true,
        }
        .to_augment(),
        0,
    );
    let idx: Vec<usize> = (0..256).collect();
    let b = cfg
        .batch(&train.examples, &idx, 0, &Device::flex())
        .unwrap();
    assert_eq!(b.images.dims(), [256, 3, 32, 32]);
}

#[test]
fn real_mnist_loads_from_its_directory() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/data/mnist");
    assert!(
        dir.is_dir(),
        "{} is missing: run scripts/fetch-assets.sh mnist",
        dir.display()
    );
    assert_eq!(ImageFormat::detect(&dir).unwrap(), ImageFormat::Idx);
    let train = load_images(None, &dir, ImageSplit::Train).unwrap();
    let test = load_images(None, &dir, ImageSplit::Test).unwrap();
    assert_eq!(
        (train.examples.len(), test.examples.len()),
        (60_000, 10_000)
    );
    assert_eq!(train.examples[0].shape(), [1, 28, 28]);
    let file = load_images(
        None,
        dir.join("t10k-images-idx3-ubyte.gz"),
        ImageSplit::Train,
    )
    .unwrap();
    assert_eq!(file.examples, test.examples);
}

fn data_section(yaml: &str) -> shears::recipe::sections::DataSection {
    shears::recipe::Recipe::from_str_at(yaml, Path::new("r.yaml"), &[])
        .unwrap()
        .data
        .unwrap()
}

#[test]
fn a_recipe_data_section_loads_both_splits_and_batch_settings() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/data/mnist");
    assert!(
        dir.is_dir(),
        "{} is missing: run scripts/fetch-assets.sh mnist",
        dir.display()
    );
    let d = data_section(&format!(
        "data:\n  task: image-classification\n  train: {}\n  max_train_examples: 1000\n  \
         augment: {{random_crop_padding: 2}}\n",
        dir.display()
    ));
    let s = shears::data::image_batch::load_image_splits(&d, 7).unwrap();
    assert_eq!(
        (s.train.examples.len(), s.dev.examples.len()),
        (1000, 10_000)
    );
    // No `normalize`: the statistics of the (truncated) training set.
    assert_eq!(
        s.train_batches.normalize,
        Normalize::from_images(&s.train.examples).unwrap()
    );
    assert_eq!(s.eval_batches.normalize, s.train_batches.normalize);
    assert_eq!(s.train_batches.seed, 7);
    assert_eq!(
        s.train_batches.augment,
        Some(Augment {
            crop_padding: Some(2),
            horizontal_flip: false
        })
    );
    assert_eq!(s.eval_batches.augment, None);
    // Given statistics must fit the channels.
    let d = data_section(&format!(
        "data:\n  task: image-classification\n  format: idx\n  train: {}\n  \
         normalize: {{mean: [0.5, 0.5, 0.5], std: [0.2, 0.2, 0.2]}}\n",
        dir.display()
    ));
    let e = shears::data::image_batch::load_image_splits(&d, 0).unwrap_err();
    assert!(e.to_string().contains("data.normalize has 3 means"), "{e}");
    // A single file needs an explicit dev set.
    let bin = fixtures().join("cifar/data_batch_1.bin");
    let d = data_section(&format!(
        "data:\n  task: image-classification\n  train: {}\n",
        bin.display()
    ));
    let e = shears::data::image_batch::load_image_splits(&d, 0).unwrap_err();
    assert!(e.to_string().contains("data.dev: required"), "{e}");
    let d = data_section(&format!(
        "data:\n  task: image-classification\n  train: {}\n  dev: {}\n  \
         normalize: {{mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}\n",
        bin.display(),
        bin.display()
    ));
    let s = shears::data::image_batch::load_image_splits(&d, 0).unwrap();
    assert_eq!(s.train.examples, s.dev.examples);
    assert_eq!(s.train_batches.normalize.std, vec![0.25; 3]);
}
