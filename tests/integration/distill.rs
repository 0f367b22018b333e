//! The distillation loss against PyTorch (tests/fixtures/distill/gen_kd_reference.py),
//! and its gradient against a central finite difference.

use burn::tensor::{Device, Tensor, TensorData};
use shears::distill::{combine, kd_loss};

#[derive(serde::Deserialize)]
struct Case {
    shape: Vec<usize>,
    temperature: f64,
    student: Vec<f32>,
    teacher: Vec<f32>,
    kd_loss: f64,
}

fn cases() -> Vec<Case> {
    let text = include_str!("../fixtures/distill/kd_reference.json");
    #[derive(serde::Deserialize)]
    struct File {
        cases: Vec<Case>,
    }
    serde_json::from_str::<File>(text).unwrap().cases
}

fn loss_of(c: &Case, student: Vec<f32>, device: &Device) -> f64 {
    let s = TensorData::new(student, c.shape.clone());
    let t = TensorData::new(c.teacher.clone(), c.shape.clone());
    match c.shape.len() {
        2 => kd_loss(
            Tensor::<2>::from_data(s, device),
            Tensor::<2>::from_data(t, device),
            c.temperature,
        ),
        3 => kd_loss(
            Tensor::<3>::from_data(s, device),
            Tensor::<3>::from_data(t, device),
            c.temperature,
        ),
        n => panic!("rank {n} not in the fixture"),
    }
    .into_scalar::<f64>()
}

#[test]
fn kd_loss_matches_pytorch() {
    for device in [Device::flex(), {
        #[allow(deprecated)]
        Device::ndarray()
    }] {
        for c in cases() {
            let got = loss_of(&c, c.student.clone(), &device);
            assert!(
                (got - c.kd_loss).abs() <= 1e-4 * c.kd_loss.abs().max(1.0),
                "{:?}: {got} vs {}",
                c.shape,
                c.kd_loss
            );
        }
    }
}

#[test]
fn kd_loss_is_zero_for_identical_logits_and_its_gradient_is_right() {
    let device = Device::flex();
    let c = &cases()[0];
    let same = Case {
        shape: c.shape.clone(),
        temperature: c.temperature,
        student: c.teacher.clone(),
        teacher: c.teacher.clone(),
        kd_loss: 0.0,
    };
    assert!(loss_of(&same, same.student.clone(), &device).abs() < 1e-6);

    // d kd / d student = T · (softmax(s/T) − softmax(t/T)) / n_items, checked by finite differences.
    let ad = device.clone().autodiff();
    let s = Tensor::<2>::from_data(TensorData::new(c.student.clone(), c.shape.clone()), &ad)
        .require_grad();
    let t = Tensor::<2>::from_data(TensorData::new(c.teacher.clone(), c.shape.clone()), &ad);
    let grads = kd_loss(s.clone(), t, c.temperature).backward();
    let g = s
        .grad(&grads)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let h = 1e-2f32;
    for i in 0..c.student.len() {
        let mut plus = c.student.clone();
        plus[i] += h;
        let mut minus = c.student.clone();
        minus[i] -= h;
        let fd = (loss_of(c, plus, &device) - loss_of(c, minus, &device)) / (2.0 * h as f64);
        assert!(
            (g[i] as f64 - fd).abs() < 2e-3,
            "element {i}: autodiff {} vs finite difference {fd}",
            g[i]
        );
    }
}

#[test]
fn hardness_weights_task_and_distillation() {
    let device = Device::flex();
    let t = |v: f32| Tensor::<1>::from_data(TensorData::new(vec![v], [1]), &device);
    let v = |x: Tensor<1>| x.into_scalar::<f64>();
    assert_eq!(v(combine(t(2.0), vec![t(4.0), t(6.0)], 1.0)), 5.0);
    assert_eq!(v(combine(t(2.0), vec![t(4.0), t(6.0)], 0.5)), 3.5);
    assert_eq!(v(combine(t(2.0), vec![t(4.0)], 0.0)), 2.0);
    assert_eq!(v(combine(t(2.0), vec![], 1.0)), 2.0);
}
