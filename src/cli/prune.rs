//! `shears prune`: one-shot compression of a trained model.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use shears::device::DeviceSpec;
use shears::obs::ObsStructure;
use shears::recipe::Override;
use shears::recipe::modifiers::NmPattern;
use shears::sparsity::mask::{MaskKind, Scope};
use shears::train::engine::fmt_metrics;
use shears::train::obs_prune::ObsConfig;
use shears::train::oneshot::{Calibration, LevelResult, OneShot, OneShotMethod, prune_one_shot};

/// How weights are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// |w|: magnitude pruning.
    Magnitude,
    /// OBS (oBERT): scores w²/(2·[F⁻¹]ᵢᵢ) from a block-diagonal inverse empirical Fisher of
    /// `--num-grads` mini-batch gradients, with the OBS update of the remaining weights.
    Obs,
}

/// Prune a trained model once (no training) at one or several levels, optionally
/// re-calibrate BatchNorm, evaluate each level on the recipe's dev/test split, and print
/// sparsity → metric.
///
/// The first row is the model as saved. Each level starts from the saved model again.
/// Examples:
///   shears prune --recipe recipes/resnet20-cifar10-dense.yaml \
///     --model ../shared/assets/resnet_cifar10/resnet20-12fca82f.safetensors \
///     --sparsities 0.5,0.7,0.8,0.9 --bn-recalibration 100 --out runs/oneshot-r20
///   shears prune --recipe R --model M --nm 2:4 --ignore conv1.weight --json
///   shears prune --recipe R --model M --method obs --sparsities 0.5,0.7,0.8,0.9 \
///     --num-grads 64 --block-size 128 --recomputations 4 --bn-recalibration 100
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct PruneArgs {
    /// The trained model: a model directory (a run's `model/`, an HF directory) or a weights
    /// file of the recipe's architecture.
    #[arg(long)]
    pub model: PathBuf,
    /// Recipe whose model family, task and data are used.
    #[arg(long)]
    pub recipe: PathBuf,
    /// How weights are scored.
    #[arg(long, value_enum, default_value = "magnitude")]
    pub method: Method,
    /// Unstructured target sparsities, comma-separated (e.g. `0.5,0.7,0.9`).
    #[arg(long, value_delimiter = ',')]
    pub sparsities: Vec<f64>,
    /// N:M patterns, comma-separated (e.g. `2:4,4:8`), grouped along the input dimension.
    #[arg(long, value_delimiter = ',', value_parser = parse_nm)]
    pub nm: Vec<NmPattern>,
    /// One threshold per tensor instead of one over all pruned parameters.
    #[arg(long)]
    pub uniform: bool,
    /// Parameters to prune: names or `re:` patterns (repeatable; default every weight with
    /// at least two dimensions, `__ALL_PRUNABLE__`).
    #[arg(long = "params")]
    pub params: Vec<String>,
    /// Names or `re:` patterns left dense (repeatable).
    #[arg(long)]
    pub ignore: Vec<String>,
    /// OBS: mini-batch gradients per Fisher (oBERT: 1024).
    #[arg(long, default_value_t = 64)]
    pub num_grads: usize,
    /// OBS: dampening λ of the Fisher (oBERT: 1e-7 for BERT; M-FAC: 1e-5).
    #[arg(long, default_value_t = 1e-5)]
    pub damp: f64,
    /// OBS: block size of the block-diagonal Fisher (oBERT: 50; 128 in the M-FAC demo).
    #[arg(long, default_value_t = 50)]
    pub block_size: usize,
    /// OBS: sub-steps from 0 to each level, each with fresh gradients.
    #[arg(long, default_value_t = 1)]
    pub recomputations: usize,
    /// OBS: examples per gradient (oBERT: 16 for GLUE, 32 in the M-FAC demo).
    #[arg(long, default_value_t = 32)]
    pub grad_batch_size: usize,
    /// OBS: prune groups of 4 consecutive weights (oBERT's block4) instead of single weights.
    #[arg(long)]
    pub block4: bool,
    /// Re-calibrate BatchNorm with this many training-mode forward passes after pruning
    /// (0: off; the CrAM reference uses 100). Models without BatchNorm skip it.
    #[arg(long, default_value_t = 0)]
    pub bn_recalibration: usize,
    /// Examples per re-calibration pass.
    #[arg(long, default_value_t = 128)]
    pub calibration_batch_size: usize,
    /// Training examples in the calibration set (a seeded sample, cycled through).
    #[arg(long, default_value_t = 1000)]
    pub calibration_examples: usize,
    /// Running-statistics momentum during re-calibration (`0.1` as the reference), or
    /// `average` for a plain mean of the passes.
    #[arg(long, default_value = "0.1", value_parser = parse_momentum)]
    pub bn_momentum: Momentum,
    /// Seed of the calibration sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write each pruned model to `OUT/sparsity-0.90/` (`OUT/2of4/` for N:M) and the table to
    /// `OUT/oneshot.json`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Override a variable or a section key of the recipe (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<Override>,
    /// Where to compute: flex, ndarray, wgpu[:N] or cuda[:N] (overrides the recipe's `device`).
    #[arg(long)]
    pub device: Option<DeviceSpec>,
}

/// `--bn-momentum`: a momentum in (0, 1], or a plain average.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Momentum(pub Option<f64>);

fn parse_momentum(s: &str) -> Result<Momentum, String> {
    if s == "average" {
        return Ok(Momentum(None));
    }
    match s.parse::<f64>() {
        Ok(m) if m > 0.0 && m <= 1.0 => Ok(Momentum(Some(m))),
        _ => Err(format!(
            "`{s}` is not a momentum: expected a number in (0, 1] or `average`"
        )),
    }
}

fn parse_nm(s: &str) -> Result<NmPattern, String> {
    let bad = || format!("`{s}` is not an N:M pattern: expected e.g. `2:4` with 0 < N <= M");
    let (n, m) = s.split_once(':').ok_or_else(bad)?;
    let n: usize = n.trim().parse().map_err(|_| bad())?;
    let m: usize = m.trim().parse().map_err(|_| bad())?;
    if n == 0 || n > m {
        return Err(bad());
    }
    Ok(NmPattern { n, m })
}

/// Runs `shears prune`.
pub fn execute(args: PruneArgs) -> anyhow::Result<()> {
    let recipe = super::load_recipe(&args.recipe, &args.overrides)?;
    if args.sparsities.is_empty() && args.nm.is_empty() {
        bail!("--sparsities or --nm: say at which levels to prune (e.g. --sparsities 0.5,0.7,0.9)");
    }
    if let Some(s) = args.sparsities.iter().find(|s| !(0.0..1.0).contains(*s)) {
        bail!("--sparsities: {s} is not a sparsity in [0, 1)");
    }
    let mut levels: Vec<(f64, MaskKind)> = args
        .sparsities
        .iter()
        .map(|&s| (s, MaskKind::Unstructured))
        .collect();
    levels.extend(args.nm.iter().map(|p| {
        (
            1.0 - p.n as f64 / p.m as f64,
            MaskKind::NM { n: p.n, m: p.m },
        )
    }));
    let method = match args.method {
        Method::Magnitude => {
            if args.block4 {
                bail!("--block4 is an OBS option: add --method obs");
            }
            OneShotMethod::Magnitude
        }
        Method::Obs => {
            if !args.nm.is_empty() {
                bail!(
                    "--nm: OBS prunes single weights or groups of 4 (--block4), not N:M patterns"
                );
            }
            if args.uniform {
                bail!("--uniform: OBS ranks globally (oBERT); drop --uniform");
            }
            if args.num_grads == 0 || args.block_size == 0 || args.recomputations == 0 {
                bail!("--num-grads, --block-size and --recomputations must be at least 1");
            }
            if !(args.damp.is_finite() && args.damp > 0.0) {
                bail!(
                    "--damp {}: the dampening must be a positive number",
                    args.damp
                );
            }
            OneShotMethod::Obs(ObsConfig {
                num_grads: args.num_grads,
                damp: args.damp,
                block_size: args.block_size,
                recomputations: args.recomputations,
                batch_size: args.grad_batch_size.max(1),
                structure: if args.block4 {
                    ObsStructure::Block4
                } else {
                    ObsStructure::Unstructured
                },
                seed: args.seed,
            })
        }
    };
    let job = OneShot {
        method,
        levels,
        params: if args.params.is_empty() {
            vec!["__ALL_PRUNABLE__".into()]
        } else {
            args.params.clone()
        },
        ignore: args.ignore.clone(),
        scope: if args.uniform {
            Scope::LayerWise
        } else {
            Scope::Global
        },
        calibration: (args.bn_recalibration > 0).then_some(Calibration {
            batches: args.bn_recalibration,
            batch_size: args.calibration_batch_size,
            examples: args.calibration_examples,
            momentum: args.bn_momentum.0,
            seed: args.seed,
        }),
        out: args.out.clone(),
    };
    let device = args.device.or(recipe.device).unwrap_or_default();
    let results = prune_one_shot(
        &recipe,
        &args.model,
        &job,
        device,
        std::path::Path::new("."),
    )
    .with_context(|| format!("cannot prune {}", args.model.display()))?;
    let json = serde_json::json!({
        "model": args.model.display().to_string(),
        "method": match args.method {
            Method::Magnitude => serde_json::json!("magnitude"),
            Method::Obs => serde_json::json!({
                "name": "obs",
                "num_grads": args.num_grads,
                "damp": args.damp,
                "block_size": args.block_size,
                "recomputations": args.recomputations,
                "grad_batch_size": args.grad_batch_size,
                "block4": args.block4,
            }),
        },
        "scope": if args.uniform { "uniform" } else { "global" },
        "bn_recalibration": args.bn_recalibration,
        "levels": results,
    });
    if let Some(out) = &args.out {
        let file = out.join("oneshot.json");
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        std::fs::write(&file, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", table(&results));
    }
    Ok(())
}

fn table(rows: &[LevelResult]) -> String {
    let mut s = format!(
        "{:<14} {:>9} {:>6}  {}\n",
        "level", "realised", "BN", "metrics"
    );
    for r in rows {
        let level = match r.target {
            None => "dense".to_string(),
            Some(t) if r.structure == "unstructured" => format!("{:.1}%", t * 100.0),
            Some(_) => r.structure.clone(),
        };
        s.push_str(&format!(
            "{:<14} {:>8.2}% {:>6}  {}\n",
            level,
            r.realised * 100.0,
            if r.recalibrated { "recal" } else { "-" },
            fmt_metrics(&r.metrics)
        ));
    }
    s
}
