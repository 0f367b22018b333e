//! Pruning schedules against their closed forms.

use shears::schedule::sparsity::{Interpolation, SparsitySchedule};
use shears::schedule::{ScheduleError, steps_for_epochs};

/// The oBERT/GMP★ 30-epoch recipe: 70 % → 90 %, cubic, epochs 2–26, every 4 epochs.
/// methods.md §1.2 lists 70.0 / 78.4 / 84.1 / 87.5 / 89.3 / 89.9 / 90.0 %.
#[test]
fn cubic_70_to_90_matches_closed_form_at_every_update() {
    for steps_per_epoch in [1u64, 37, 250, 1013] {
        let s = SparsitySchedule::from_epochs(
            0.7,
            0.9,
            2.0,
            26.0,
            4.0,
            Interpolation::Cubic,
            true,
            steps_per_epoch,
        )
        .unwrap();
        let updates = s.update_steps();
        let expected_steps: Vec<u64> = [2u64, 6, 10, 14, 18, 22, 26]
            .iter()
            .map(|e| e * steps_per_epoch)
            .collect();
        assert_eq!(updates, expected_steps);
        let published = [70.0, 78.4, 84.1, 87.5, 89.3, 89.9, 90.0];
        for (k, (&t, &pct)) in updates.iter().zip(&published).enumerate() {
            let x = k as f64 / 6.0;
            let closed = 0.7 + 0.2 * (1.0 - (1.0 - x).powi(3));
            let got = s.target_at(t).unwrap();
            assert!(
                (got - closed).abs() < 1e-12,
                "update {k}: {got} vs {closed}"
            );
            assert_eq!(format!("{:.1}", 100.0 * got), format!("{pct:.1}"));
            assert!(s.is_update_step(t));
            // Between updates the target holds.
            if k + 1 < updates.len() {
                assert_eq!(s.target_at(updates[k + 1] - 1), Some(got));
                if updates[k + 1] - t > 1 {
                    assert!(!s.is_update_step(t + 1));
                }
            }
        }
        assert_eq!(s.target_at(2 * steps_per_epoch - 1), None);
        assert_eq!(s.target_at(1_000_000), Some(0.9));
    }
}

#[test]
fn linear_and_inverse_cubic_closed_forms() {
    let lin = SparsitySchedule::new(0.0, 0.8, 100, 200, 10, Interpolation::Linear, true).unwrap();
    let inv =
        SparsitySchedule::new(0.0, 0.8, 100, 200, 10, Interpolation::InverseCubic, true).unwrap();
    assert_eq!(
        lin.update_steps(),
        (0..=10).map(|k| 100 + 10 * k).collect::<Vec<u64>>()
    );
    for k in 0..=10u64 {
        let x = k as f64 / 10.0;
        let t = 100 + 10 * k;
        assert!((lin.target_at(t).unwrap() - 0.8 * x).abs() < 1e-12);
        let y = 1.0 - (1.0 - x).powf(1.0 / 3.0);
        assert!((inv.target_at(t).unwrap() - 0.8 * y).abs() < 1e-12);
    }
}

#[test]
fn window_not_a_multiple_of_the_period_still_ends_at_end() {
    let s = SparsitySchedule::new(0.5, 0.9, 10, 25, 4, Interpolation::Cubic, true).unwrap();
    assert_eq!(s.update_steps(), [10, 14, 18, 22, 25]);
    assert_eq!(s.target_at(24), s.target_at(22));
    assert_eq!(s.target_at(25), Some(0.9));
    assert!(s.is_update_step(25));
    assert!(!s.is_update_step(26));
}

#[test]
fn one_shot_and_leave_enabled() {
    let s = SparsitySchedule::one_shot(0.6, 40).unwrap();
    assert_eq!(s.update_steps(), [40]);
    assert_eq!(s.target_at(39), None);
    assert_eq!(s.target_at(40), Some(0.6));
    assert!(s.is_enforced(10_000));
    let s = SparsitySchedule::new(0.1, 0.5, 0, 10, 5, Interpolation::Linear, false).unwrap();
    assert!(s.is_enforced(10));
    assert!(!s.is_enforced(11));
}

#[test]
fn epochs_convert_with_the_real_steps_per_epoch() {
    assert_eq!(steps_for_epochs("e", 2.5, 37), Ok(93)); // 92.5 rounds away from zero
    assert_eq!(steps_for_epochs("e", 0.0, 37), Ok(0));
    assert_eq!(
        steps_for_epochs("e", 1.0, 0),
        Err(ScheduleError::NoStepsPerEpoch)
    );
    assert!(steps_for_epochs("e", -1.0, 10).is_err());
    assert!(steps_for_epochs("e", f64::NAN, 10).is_err());
    let s = SparsitySchedule::from_epochs(0.0, 0.5, 0.5, 3.5, 1.0, Interpolation::Linear, true, 10)
        .unwrap();
    assert_eq!(s.update_steps(), [5, 15, 25, 35]);
}

#[test]
fn invalid_schedules_are_errors() {
    assert!(SparsitySchedule::new(0.0, 1.2, 0, 10, 1, Interpolation::Cubic, true).is_err());
    assert!(SparsitySchedule::new(-0.1, 0.5, 0, 10, 1, Interpolation::Cubic, true).is_err());
    assert!(SparsitySchedule::new(0.0, 0.5, 10, 5, 1, Interpolation::Cubic, true).is_err());
    assert!(SparsitySchedule::new(0.0, 0.5, 0, 10, 0, Interpolation::Cubic, true).is_err());
    assert_eq!(
        "inverse_cubic".parse::<Interpolation>(),
        Ok(Interpolation::InverseCubic)
    );
    let err = "cubical".parse::<Interpolation>().unwrap_err();
    assert!(err.to_string().contains("cubical"));
}
