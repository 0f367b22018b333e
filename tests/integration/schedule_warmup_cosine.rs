//! Linear warm-up then half-cosine, written as two SparseML `!LearningRateFunctionModifier`s
//! (`lr_func: linear` then `lr_func: cosine`), gives Hugging Face's
//! `get_cosine_schedule_with_warmup` per optimizer step:
//! `peak · t / W` for `t < W`, then `peak · (1 + cos(π · (t − W) / (T − W))) / 2`, and 0 from `T` on.

use std::f64::consts::PI;
use std::path::Path;

use burn::lr_scheduler::LrScheduler;
use shears::recipe::Recipe;
use shears::recipe::plan::plan;

const RECIPE: &str = "\
num_epochs: 10
warmup_epochs: 2
peak_lr: 0.1
optimizer:
  name: sgd
  lr: 0.1
  momentum: 0.9
training_modifiers:
  - !EpochRangeModifier
    start_epoch: 0
    end_epoch: eval(num_epochs)
  - !LearningRateFunctionModifier
    lr_func: linear
    init_lr: 0.0
    final_lr: eval(peak_lr)
    start_epoch: 0
    end_epoch: eval(warmup_epochs)
  - !LearningRateFunctionModifier
    lr_func: cosine
    init_lr: eval(peak_lr)
    final_lr: 0.0
    start_epoch: eval(warmup_epochs)
    end_epoch: eval(num_epochs)
";

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-15 + 1e-12 * b.abs()
}

/// `get_cosine_schedule_with_warmup(optimizer, W, T)` of `transformers` (num_cycles 0.5).
fn hugging_face(peak: f64, w: u64, total: u64, t: u64) -> f64 {
    if t < w {
        return peak * t as f64 / w.max(1) as f64;
    }
    let progress = (t - w) as f64 / (total - w).max(1) as f64;
    peak * (0.0f64).max(0.5 * (1.0 + (PI * progress.min(1.0)).cos()))
}

#[test]
fn warmup_then_cosine_matches_the_closed_form_per_step() {
    let recipe = Recipe::from_str_at(RECIPE, Path::new("r.yaml"), &[]).unwrap();
    for steps_per_epoch in [1u64, 7, 391] {
        let p = plan(&recipe, steps_per_epoch).unwrap();
        let (w, total) = (2 * steps_per_epoch, 10 * steps_per_epoch);
        assert_eq!(p.total_steps, total);
        let lr = p.lr.clone().unwrap();
        for t in 0..total + 5 {
            let want = hugging_face(0.1, w, total, t);
            assert!(
                close(lr.lr_at(t), want),
                "steps/epoch {steps_per_epoch}, t={t}: {} vs {want}",
                lr.lr_at(t)
            );
        }
        // The first step trains at 0, the peak is reached exactly at the end of warm-up,
        // the last step is just above 0.
        assert_eq!(lr.lr_at(0), 0.0);
        assert_eq!(lr.lr_at(w), 0.1);
        assert!(lr.lr_at(total - 1) > 0.0 && lr.lr_at(total - 1) < lr.lr_at(total - 2));
        assert_eq!(lr.lr_at(total), 0.0);
        // As a burn scheduler: one value per optimizer step, in order.
        let mut sched = lr.into_scheduler();
        for t in 0..total {
            assert!(close(sched.step(), hugging_face(0.1, w, total, t)));
        }
    }
}
