//! Masks round-trip through a safetensors checkpoint by name and restore exactly into a
//! freshly initialised model (whose `ParamId`s differ).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::{Device, Tensor};
use shears::sparsity::checkpoint::{
    MaskFileError, load_masks, masks_from_bytes, masks_to_bytes, save_masks,
};
use shears::sparsity::enforce::{EnforceError, MaskedOptimizer, apply_masks, verify_masked};
use shears::sparsity::mask::{
    Mask, MaskKind, MaskSet, Scope, compute_masks, compute_module_masks, read_values,
};
use shears::sparsity::params::{BurnPaths, list_params};
use shears::sparsity::selection::{ALL_PRUNABLE, ParamSelector};

#[derive(Module, Debug)]
struct Net {
    layers: Vec<Linear>,
}

impl Net {
    fn new(device: &Device) -> Self {
        Self {
            layers: vec![
                LinearConfig::new(8, 12).init(device),
                LinearConfig::new(12, 4).init(device),
            ],
        }
    }

    fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        for l in &self.layers {
            x = l.forward(x);
        }
        x
    }
}

#[test]
fn masks_and_weights_round_trip_into_a_fresh_model() {
    let device = Device::flex().autodiff();
    device.seed(1);
    let mut model = Net::new(&device);
    let names: Vec<String> = list_params(&model, &BurnPaths)
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(
        names,
        [
            "layers.0.weight",
            "layers.0.bias",
            "layers.1.weight",
            "layers.1.bias"
        ]
    );
    let selected = ParamSelector::new(&[ALL_PRUNABLE.to_string()], &[])
        .unwrap()
        .select(&list_params(&model, &BurnPaths))
        .matched;
    // 2:4 along burn Linear's input dim (dim 0 of [d_in, d_out]).
    assert_eq!(selected[0].input_dim, Some(0));
    let masks = compute_module_masks(
        &model,
        &BurnPaths,
        &selected,
        0.5,
        MaskKind::NM { n: 2, m: 4 },
        Scope::LayerWise,
    )
    .unwrap();
    let mut opt = MaskedOptimizer::new(AdamWConfig::new().build());
    model = opt.set_masks(model, masks.clone()).unwrap();
    for _ in 0..5 {
        let x = Tensor::<2>::ones([3, 8], &device);
        let l = model.forward(x).powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(l.backward(), &model);
        model = opt.step(1e-2, model, grads);
    }

    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("model.safetensors");
    let mask_file = dir.path().join("masks.safetensors");
    model
        .save_into(&mut SafetensorsStore::from_file(&weights).overwrite(true))
        .unwrap();
    save_masks(&masks, &mask_file).unwrap();

    // A fresh model with other initial values and other ParamIds.
    device.seed(2);
    let mut fresh = Net::new(&device);
    assert_ne!(fresh.layers[0].weight.id, model.layers[0].weight.id);
    fresh
        .load_from(&mut SafetensorsStore::from_file(&weights))
        .unwrap();
    let loaded = load_masks(&mask_file).unwrap();
    assert_eq!(loaded, masks);
    for (name, mask) in masks.iter() {
        assert_eq!(loaded.get(name).unwrap().keep(), mask.keep());
        assert_eq!(loaded.get(name).unwrap().shape(), mask.shape());
    }
    let fresh = apply_masks(fresh, &loaded, &BurnPaths).unwrap();
    verify_masked(&fresh, &loaded, &BurnPaths).unwrap();
    let all = list_params(&model, &BurnPaths);
    let a = read_values(&model, &BurnPaths, &all).unwrap();
    let b = read_values(&fresh, &BurnPaths, &all).unwrap();
    for (pa, pb) in a.iter().zip(&b) {
        assert_eq!(pa.values, pb.values, "{}", pa.info.name);
    }

    // Re-applied to a freshly initialised model without its weights: same zeros.
    device.seed(3);
    let other = apply_masks(Net::new(&device), &loaded, &BurnPaths).unwrap();
    verify_masked(&other, &loaded, &BurnPaths).unwrap();
    let values = read_values(&other, &BurnPaths, &selected).unwrap();
    for p in &values {
        let mask = loaded.get(&p.info.name).unwrap();
        let zeros = p.values.iter().filter(|v| **v == 0.0).count();
        assert!(zeros >= mask.pruned());
        assert_eq!(mask.pruned() * 2, mask.numel());
    }
}

#[test]
fn mask_bytes_round_trip_and_bad_files_are_named_errors() {
    let mut masks = MaskSet::new();
    masks.insert(
        "a.weight",
        Mask::new(vec![2, 3], vec![true, false, true, false, false, true]).unwrap(),
    );
    masks.insert("b", Mask::new(vec![4], vec![false; 4]).unwrap());
    masks.insert("empty", Mask::new(vec![0, 3], vec![]).unwrap());
    let bytes = masks_to_bytes(&masks);
    let back = masks_from_bytes(&bytes, "mem").unwrap();
    assert_eq!(back, masks);
    assert_eq!(back.pruned(), 7);

    // A weights file is not a mask file.
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.safetensors");
    let device = Device::flex();
    Net::new(&device)
        .save_into(&mut SafetensorsStore::from_file(&weights).overwrite(true))
        .unwrap();
    let err = load_masks(&weights).unwrap_err();
    assert!(matches!(err, MaskFileError::NotMasks { .. }), "{err}");
    assert!(err.to_string().contains("w.safetensors"), "{err}");
    let missing = dir.path().join("nope.safetensors");
    let err = load_masks(&missing).unwrap_err();
    assert!(err.to_string().contains("nope.safetensors"), "{err}");
    let err = masks_from_bytes(&bytes[..bytes.len() - 1], "truncated.safetensors").unwrap_err();
    assert!(err.to_string().contains("truncated.safetensors"), "{err}");

    // A mask naming a parameter the model lacks, or of the wrong shape.
    let mut wrong = MaskSet::new();
    wrong.insert("layers.7.weight", Mask::dense(vec![8, 12]));
    let err = apply_masks(Net::new(&device), &wrong, &BurnPaths).unwrap_err();
    assert!(matches!(err, EnforceError::Mask(_)));
    assert!(err.to_string().contains("layers.7.weight"), "{err}");
    let mut wrong = MaskSet::new();
    wrong.insert("layers.0.weight", Mask::dense(vec![12, 8]));
    let err = apply_masks(Net::new(&device), &wrong, &BurnPaths).unwrap_err();
    assert!(err.to_string().contains("layers.0.weight"), "{err}");

    // No parameters selected: no masks, and an empty mask file round-trips.
    let none = compute_masks(&[], 0.5, MaskKind::Unstructured, Scope::Global).unwrap();
    assert!(none.is_empty());
    assert!(
        masks_from_bytes(&masks_to_bytes(&none), "empty")
            .unwrap()
            .is_empty()
    );
}

/// Resume: weights + masks + optimizer state saved at step 10 and loaded into a fresh
/// model give exactly the weights of an uninterrupted run at step 20.
#[test]
fn optimizer_state_resume_is_exact() {
    let device = Device::flex().autodiff();
    device.seed(11);
    let batches: Vec<Tensor<2>> = (0..20)
        .map(|i| Tensor::<2>::ones([2, 8], &device).mul_scalar(0.1 * (i as f64 + 1.0)))
        .collect();
    let train = |mut model: Net, opt: &mut MaskedOptimizer<_>, range: std::ops::Range<usize>| {
        for x in &batches[range] {
            let l = (model.forward(x.clone()) - 1.0).powi_scalar(2).mean();
            let grads = GradientsParams::from_grads(l.backward(), &model);
            model = opt.step(1e-2, model, grads);
        }
        model
    };
    let mut model = Net::new(&device);
    let selected: Vec<_> = list_params(&model, &BurnPaths)
        .into_iter()
        .filter(|p| p.shape.len() == 2)
        .collect();
    let masks = compute_module_masks(
        &model,
        &BurnPaths,
        &selected,
        0.5,
        MaskKind::Unstructured,
        Scope::Global,
    )
    .unwrap();
    let mut opt = MaskedOptimizer::new(AdamWConfig::new().with_weight_decay(0.01).build());
    model = opt.set_masks(model, masks.clone()).unwrap();
    model = train(model, &mut opt, 0..10);

    let dir = tempfile::tempdir().unwrap();
    let (wf, mf, sf) = (
        dir.path().join("model.safetensors"),
        dir.path().join("masks.safetensors"),
        dir.path().join("optim.safetensors"),
    );
    model
        .save_into(&mut SafetensorsStore::from_file(&wf).overwrite(true))
        .unwrap();
    save_masks(opt.masks(), &mf).unwrap();
    opt.save_state(&sf).unwrap();
    let straight = train(model, &mut opt, 10..20);

    device.seed(12);
    let mut fresh = Net::new(&device);
    fresh
        .load_from(&mut SafetensorsStore::from_file(&wf))
        .unwrap();
    let mut opt2 = MaskedOptimizer::new(AdamWConfig::new().with_weight_decay(0.01).build());
    let fresh = opt2.set_masks(fresh, load_masks(&mf).unwrap()).unwrap();
    opt2.load_state(&fresh, &sf).unwrap();
    let resumed = train(fresh, &mut opt2, 10..20);

    let all = list_params(&straight, &BurnPaths);
    let a = read_values(&straight, &BurnPaths, &all).unwrap();
    let b = read_values(&resumed, &BurnPaths, &all).unwrap();
    for (pa, pb) in a.iter().zip(&b) {
        assert_eq!(pa.values, pb.values, "{}", pa.info.name);
    }
    verify_masked(&resumed, &masks, &BurnPaths).unwrap();

    // Without the optimizer state the run differs (the test can tell).
    device.seed(12);
    let mut bare = Net::new(&device);
    bare.load_from(&mut SafetensorsStore::from_file(&wf))
        .unwrap();
    let mut opt3 = MaskedOptimizer::new(AdamWConfig::new().with_weight_decay(0.01).build());
    let bare = opt3.set_masks(bare, masks.clone()).unwrap();
    let bare = train(bare, &mut opt3, 10..20);
    let c = read_values(&bare, &BurnPaths, &all).unwrap();
    assert_ne!(a[0].values, c[0].values);

    // Bad state files are errors naming the file.
    let err = opt3.load_state(&bare, &mf).unwrap_err();
    assert!(err.to_string().contains("masks.safetensors"), "{err}");
    #[derive(Module, Debug)]
    struct Other {
        head: Linear,
    }
    let other = Other {
        head: LinearConfig::new(8, 12).init(&device),
    };
    let err = opt3.load_state(&other, &sf).unwrap_err();
    assert!(err.to_string().contains("layers."), "{err}");
    // Same names and ranks, other shapes (8→16→4 against the saved 8→12→4): refused, not
    // read out of bounds at the next step.
    let wide = Net {
        layers: vec![
            LinearConfig::new(8, 16).init(&device),
            LinearConfig::new(16, 4).init(&device),
        ],
    };
    let err = opt3.load_state(&wide, &sf).unwrap_err().to_string();
    assert!(
        err.contains("optim.safetensors") && err.contains("layers.") && err.contains("shape"),
        "{err}"
    );
}
