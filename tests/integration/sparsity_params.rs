//! Listing parameters of any module: dotted paths, user-facing names, input dimensions.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::Device;
use shears::sparsity::enforce::{apply_masks, verify_masked};
use shears::sparsity::mask::{MaskKind, Scope, compute_module_masks, read_values};
use shears::sparsity::params::{BurnPaths, ParamNaming, list_params, module_params};
use shears::sparsity::selection::{ALL_PRUNABLE, ParamSelector};

#[derive(Module, Debug)]
struct Attention {
    self_: Linear,
}

#[derive(Module, Debug)]
struct Model {
    emb: Embedding,
    conv: Conv2d,
    attention: Attention,
    heads: Vec<Linear>,
}

/// Presents `self_` (a Rust keyword workaround) as `self`, as our BERT does.
struct HfNames;

impl ParamNaming for HfNames {
    fn display_name(&self, path: &str) -> String {
        path.replace(".self_.", ".self.")
    }
}

fn model(device: &Device) -> Model {
    Model {
        emb: EmbeddingConfig::new(10, 8).init(device),
        conv: Conv2dConfig::new([8, 4], [3, 3]).init(device),
        attention: Attention {
            self_: LinearConfig::new(8, 8).init(device),
        },
        heads: vec![
            LinearConfig::new(8, 2).init(device),
            LinearConfig::new(8, 3).init(device),
        ],
    }
}

#[test]
fn paths_shapes_and_input_dims() {
    let device = Device::flex();
    let m = model(&device);
    let got: Vec<(String, Vec<usize>, Option<usize>)> = list_params(&m, &HfNames)
        .into_iter()
        .map(|p| (p.name, p.shape, p.input_dim))
        .collect();
    let want: Vec<(String, Vec<usize>, Option<usize>)> = vec![
        ("emb.weight".into(), vec![10, 8], None),
        ("conv.weight".into(), vec![4, 8, 3, 3], Some(1)),
        ("conv.bias".into(), vec![4], None),
        ("attention.self.weight".into(), vec![8, 8], Some(0)),
        ("attention.self.bias".into(), vec![8], None),
        ("heads.0.weight".into(), vec![8, 2], Some(0)),
        ("heads.0.bias".into(), vec![2], None),
        ("heads.1.weight".into(), vec![8, 3], Some(0)),
        ("heads.1.bias".into(), vec![3], None),
    ];
    assert_eq!(got, want);
    // The burn path is kept beside the presented name.
    let raw = module_params(&m, &HfNames);
    assert_eq!(raw[3].path, "attention.self_.weight");
    assert_eq!(raw[3].info.name, "attention.self.weight");
    assert_eq!(raw[3].id, m.attention.self_.weight.id);
    assert_eq!(
        list_params(&m, &BurnPaths)[3].name,
        "attention.self_.weight"
    );
}

/// Selection, masks and enforcement all work on presented names; 2:4 on the conv weight
/// groups input channels (dim 1).
#[test]
fn presented_names_drive_masks_and_conv_nm_groups_input_channels() {
    let device = Device::flex();
    device.seed(8);
    let m = model(&device);
    let selected = ParamSelector::new(&[ALL_PRUNABLE.into()], &["emb.weight".into()])
        .unwrap()
        .select(&list_params(&m, &HfNames))
        .matched;
    let names: Vec<&str> = selected.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "conv.weight",
            "attention.self.weight",
            "heads.0.weight",
            "heads.1.weight"
        ]
    );
    let masks = compute_module_masks(
        &m,
        &HfNames,
        &selected,
        0.5,
        MaskKind::NM { n: 2, m: 4 },
        Scope::LayerWise,
    )
    .unwrap();
    assert!(masks.get("attention.self.weight").is_some());
    let m = apply_masks(m, &masks, &HfNames).unwrap();
    verify_masked(&m, &masks, &HfNames).unwrap();
    // Conv weight [out=4, in=8, 3, 3]: for every (out, kh, kw) and each group of 4 input
    // channels, exactly 2 are zero.
    let conv = read_values(&m, &HfNames, &selected[..1])
        .unwrap()
        .remove(0)
        .values;
    for o in 0..4 {
        for g in 0..2 {
            for k in 0..9 {
                let zeros = (0..4)
                    .filter(|j| conv[(o * 8 + g * 4 + j) * 9 + k] == 0.0)
                    .count();
                assert_eq!(zeros, 2, "out {o} group {g} tap {k}");
            }
        }
    }
    // The raw burn name is not a mask key.
    assert!(masks.get("attention.self_.weight").is_none());
}
