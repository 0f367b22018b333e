//! The recipe fields of image tasks (`data.format`, `data.normalize`, `data.augment`),
//! `training.label_smoothing` and `optimizer.no_decay`: a good recipe parses to the exact
//! values, and bad values are errors naming file, line, column and key.

use std::path::Path;

use shears::data::image_batch::{AugmentConfig, ImageFormat, NormalizeConfig};
use shears::recipe::Recipe;
use shears::recipe::sections::OptimizerKind;
use shears::sparsity::enforce::{DecayKind, WeightDecay};

fn load(text: &str) -> Result<Recipe, String> {
    Recipe::from_str_at(text, Path::new("r.yaml"), &[]).map_err(|e| e.to_string())
}

fn err(text: &str) -> String {
    load(text).expect_err("the recipe must be rejected")
}

const GOOD: &str = "\
num_epochs: 200
data:
  task: image-classification
  format: cifar10
  train: assets/data/cifar-10
  dev: assets/data/cifar-10
  normalize:
    mean: [0.4914, 0.4822, 0.4465]
    std: [0.2470, 0.2435, 0.2616]
  augment: {random_crop_padding: 4, horizontal_flip: true}
training:
  batch_size: 128
  label_smoothing: 0.1
optimizer:
  name: sgd
  lr: 0.1
  momentum: 0.9
  nesterov: true
  weight_decay: 5e-4
  no_decay: [__1D__, \"re:.*downsample\"]
";

#[test]
fn an_image_recipe_parses_exactly() {
    let r = load(GOOD).unwrap();
    let d = r.data.as_ref().unwrap();
    assert_eq!(d.format, Some(ImageFormat::Cifar10));
    assert_eq!(
        d.normalize,
        Some(NormalizeConfig {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2470, 0.2435, 0.2616],
        })
    );
    assert_eq!(
        d.augment,
        Some(AugmentConfig {
            random_crop_padding: 4,
            horizontal_flip: true
        })
    );
    let a = d.augment.unwrap().to_augment().unwrap();
    assert_eq!((a.crop_padding, a.horizontal_flip), (Some(4), true));
    assert_eq!(r.training.as_ref().unwrap().label_smoothing, 0.1);
    let o = r.optimizer.as_ref().unwrap();
    assert_eq!(o.name, OptimizerKind::Sgd);
    assert_eq!(o.no_decay, ["__1D__", "re:.*downsample"]);
    let wd = WeightDecay::from_optimizer_section(o).unwrap().unwrap();
    assert_eq!((wd.kind, wd.value), (DecayKind::L2, 5e-4));
    assert!(!wd.applies_to("layer1.0.bn1.weight", &[64]));
    assert!(!wd.applies_to("layer2.0.downsample.0.weight", &[128, 64, 1, 1]));
    assert!(wd.applies_to("layer2.0.conv1.weight", &[128, 64, 3, 3]));
}

#[test]
fn image_fields_have_defaults() {
    let text = GOOD
        .replace("  format: cifar10\n", "")
        .replace(
            "  normalize:\n    mean: [0.4914, 0.4822, 0.4465]\n    std: [0.2470, 0.2435, 0.2616]\n",
            "",
        )
        .replace(
            "  augment: {random_crop_padding: 4, horizontal_flip: true}\n",
            "",
        )
        .replace("  label_smoothing: 0.1\n", "")
        .replace("  no_decay: [__1D__, \"re:.*downsample\"]\n", "");
    let r = load(&text).unwrap();
    let d = r.data.as_ref().unwrap();
    assert_eq!((d.format, &d.normalize, d.augment), (None, &None, None));
    assert_eq!(r.training.as_ref().unwrap().label_smoothing, 0.0);
    let o = r.optimizer.as_ref().unwrap();
    assert_eq!(o.no_decay, ["__1D__"]);
    // AdamW decays decoupled; weight_decay 0 means no decay at all.
    let adamw = load(&text.replace("name: sgd", "name: adamw")).unwrap();
    let wd = WeightDecay::from_optimizer_section(adamw.optimizer.as_ref().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(wd.kind, DecayKind::Decoupled);
    let none = load(&text.replace("weight_decay: 5e-4", "weight_decay: 0")).unwrap();
    assert!(
        WeightDecay::from_optimizer_section(none.optimizer.as_ref().unwrap())
            .unwrap()
            .is_none()
    );
    let partial = load(&GOOD.replace(
        "{random_crop_padding: 4, horizontal_flip: true}",
        "{horizontal_flip: true}",
    ))
    .unwrap();
    let aug = partial.data.unwrap().augment.unwrap();
    assert_eq!(aug.random_crop_padding, 0);
    assert_eq!(aug.to_augment().unwrap().crop_padding, None);
}

#[test]
fn misspelled_fields_name_line_column_and_key() {
    let e = err(&GOOD.replace("horizontal_flip: true", "horizontal_flipp: true"));
    assert!(
        e.starts_with("r.yaml:10:37: data.augment: unknown field `horizontal_flipp`"),
        "{e}"
    );
    assert!(e.contains("`horizontal_flip`"), "{e}");
    let e = err(&GOOD.replace("    std: [", "    sdt: ["));
    assert!(
        e.starts_with("r.yaml:9:5: data.normalize: unknown field `sdt`"),
        "{e}"
    );
    let e = err(&GOOD.replace("format: cifar10", "format: cifar100"));
    assert!(
        e.starts_with("r.yaml:4:11: data.format: unknown variant `cifar100`"),
        "{e}"
    );
    assert!(e.contains("`image_folder`"), "{e}");
    let e = err(&GOOD.replace("label_smoothing: 0.1", "label_smothing: 0.1"));
    assert!(
        e.starts_with("r.yaml:13:3: training: unknown field `label_smothing`"),
        "{e}"
    );
}

#[test]
fn bad_values_name_their_position() {
    let e = err(&GOOD.replace(
        "std: [0.2470, 0.2435, 0.2616]",
        "std: [0.2470, -0.2435, 0.2616]",
    ));
    assert!(
        e.starts_with(
            "r.yaml:9:19: data.normalize.std[1]: -0.2435 is not a valid standard deviation (finite, > 0)"
        ),
        "{e}"
    );
    let e = err(&GOOD.replace("std: [0.2470, 0.2435, 0.2616]", "std: [0.2470, 0, 0.2616]"));
    assert!(e.starts_with("r.yaml:9:19: data.normalize.std[1]:"), "{e}");
    let e = err(&GOOD.replace("std: [0.2470, 0.2435, 0.2616]", "std: [0.2470, 0.2435]"));
    assert!(
        e.starts_with("r.yaml:8:5: data.normalize: `mean` has 3 values but `std` has 2"),
        "{e}"
    );
    let e = err(&GOOD.replace("label_smoothing: 0.1", "label_smoothing: 1.5"));
    assert!(
        e.starts_with("r.yaml:13:20: training.label_smoothing: 1.5 is out of range"),
        "{e}"
    );
    let e = err(&GOOD.replace("re:.*downsample", "re:(downsample"));
    assert!(e.starts_with("r.yaml:20:22: optimizer.no_decay[1]:"), "{e}");
    assert!(e.contains("re:(downsample"), "{e}");
    let e = err(&GOOD.replace("random_crop_padding: 4", "random_crop_padding: -4"));
    assert!(
        e.starts_with("r.yaml:10:34: data.augment.random_crop_padding:"),
        "{e}"
    );
}
