//! Learning-rate schedules against their closed forms.

use burn::lr_scheduler::LrScheduler;
use shears::schedule::lr::{LrFunction, LrSchedule, LrSegment};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-15 + 1e-12 * b.abs()
}

/// methods.md §1.3: `init − ((t − start) mod C) / (C − 1) · (init − final)`, with the last,
/// incomplete cycle shortened to the remaining steps.
#[test]
fn cyclic_linear_rewinds_every_cycle() {
    let (init, fin) = (8e-5, 8e-6);
    let s = LrSchedule::cyclic_linear(init, fin, 5, 10, 32).unwrap();
    for t in 10..32u64 {
        let offset = t - 10;
        let expected = if offset < 20 {
            init - (offset % 5) as f64 / 4.0 * (init - fin)
        } else {
            // Last cycle: steps 30 and 31 only, so it falls from init to final in 2 steps.
            init - (offset - 20) as f64 / 1.0 * (init - fin)
        };
        assert!(
            close(s.lr_at(t), expected),
            "t={t}: {} vs {expected}",
            s.lr_at(t)
        );
    }
    assert!(close(s.lr_at(10), init));
    assert!(close(s.lr_at(14), fin));
    assert!(close(s.lr_at(15), init));
    // After the window the final LR holds; before it the base LR (= init) applies.
    assert!(close(s.lr_at(100), fin));
    assert!(close(s.lr_at(3), init));
}

/// Hugging Face's linear schedule with warm-up: `peak · t / w` during warm-up, then
/// `peak · (T − t) / (T − w)`.
#[test]
fn linear_with_warmup_matches_hugging_face() {
    let (peak, w, total) = (3e-4, 10u64, 50u64);
    let s = LrSchedule::linear_with_warmup(peak, w, total, 0.0).unwrap();
    for t in 0..60u64 {
        let expected = if t < w {
            peak * t as f64 / w as f64
        } else {
            peak * (total.saturating_sub(t)) as f64 / (total - w) as f64
        };
        assert!(
            close(s.lr_at(t), expected),
            "t={t}: {} vs {expected}",
            s.lr_at(t)
        );
    }
}

#[test]
fn cosine_matches_closed_form() {
    let s = LrSchedule::cosine(1e-3, 1e-5, 40).unwrap();
    for t in 0..45u64 {
        let x = (t.min(40)) as f64 / 40.0;
        let expected = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1.0 + (std::f64::consts::PI * x).cos());
        assert!(close(s.lr_at(t), expected), "t={t}");
    }
}

/// Segments compose like a recipe's LR modifiers: warm-up, then cyclic rewinding.
#[test]
fn segments_compose_and_the_later_one_wins() {
    let s = LrSchedule::new(1.0)
        .unwrap()
        .with_segment(
            LrSegment::new(
                0,
                4,
                LrFunction::Linear {
                    init_lr: 0.0,
                    final_lr: 1.0,
                },
            )
            .unwrap(),
        )
        .with_segment(
            LrSegment::new(
                4,
                12,
                LrFunction::CyclicLinear {
                    init_lr: 1.0,
                    final_lr: 0.25,
                    cycle_steps: 4,
                },
            )
            .unwrap(),
        )
        .with_segment(LrSegment::new(6, 7, LrFunction::Constant { lr: 0.9 }).unwrap());
    let want = [
        0.0, 0.25, 0.5, 0.75, 1.0, 0.75, 0.9, 0.25, 1.0, 0.75, 0.5, 0.25, 0.25, 0.25,
    ];
    for (t, w) in want.iter().enumerate() {
        assert!(
            close(s.lr_at(t as u64), *w),
            "t={t}: {} vs {w}",
            s.lr_at(t as u64)
        );
    }
}

#[test]
fn as_burn_scheduler_with_record_round_trip() {
    let schedule = LrSchedule::cosine(1e-3, 0.0, 20).unwrap();
    let mut a = schedule.clone().into_scheduler();
    let mut seen = Vec::new();
    for _ in 0..7 {
        seen.push(a.step());
    }
    for (t, lr) in seen.iter().enumerate() {
        assert!(close(*lr, schedule.lr_at(t as u64)));
    }
    let record = a.to_record();
    let mut b = schedule.clone().into_scheduler();
    b.load_record(record);
    assert_eq!(b.next_step(), 7);
    for t in 7..20u64 {
        let (x, y) = (a.step(), b.step());
        assert_eq!(x, y);
        assert!(close(x, schedule.lr_at(t)));
    }
}

#[test]
fn invalid_segments_are_errors() {
    assert!(LrSegment::new(5, 5, LrFunction::Constant { lr: 1.0 }).is_err());
    assert!(LrSegment::new(0, 5, LrFunction::Constant { lr: -1.0 }).is_err());
    assert!(
        LrSegment::new(
            0,
            5,
            LrFunction::CyclicLinear {
                init_lr: 1.0,
                final_lr: 0.0,
                cycle_steps: 0
            }
        )
        .is_err()
    );
    assert!(LrSchedule::new(f64::NAN).is_err());
    assert!(
        "cyclic_linear"
            .parse::<shears::schedule::lr::LrFunctionName>()
            .is_ok()
    );
    assert!(
        "triangle"
            .parse::<shears::schedule::lr::LrFunctionName>()
            .is_err()
    );
}
