//! `shears bench`: sparse kernels against the dense path, measured in the same run.

use anyhow::{Context, bail};
use burn::tensor::Device;
use clap::{Args, Subcommand};
use shears_models::sparseprop::bench::{BenchConfig, BenchRow, BenchShape, Pass, run};

/// The benchmarks `shears bench` runs.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// SparseProp linear and conv kernels (forward and backward) against burn dense.
    Sparseprop(SparsepropArgs),
}

/// Options of `shears bench sparseprop`.
#[derive(Debug, Args)]
pub struct SparsepropArgs {
    /// Print rows as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Timed repetitions per measurement (medians are reported), after one warm-up.
    #[arg(long, default_value_t = 7)]
    pub reps: usize,
    /// CPU backend: `flex` (default) or `ndarray`.
    #[arg(long, default_value = "flex")]
    pub backend: String,
    /// Only the layers of this kind: `linear` or `conv2d` (default: both).
    #[arg(long)]
    pub layer: Option<String>,
    /// Comma-separated sparsities in percent (default: 80,90,95,98,99).
    #[arg(long, value_delimiter = ',')]
    pub sparsity: Option<Vec<f64>>,
}

/// Runs `shears bench`.
pub fn execute(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Sparseprop(args) => sparseprop(args),
    }
}

fn sparseprop(args: SparsepropArgs) -> anyhow::Result<()> {
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    #[allow(deprecated)]
    let device = match args.backend.as_str() {
        "flex" => Device::flex(),
        "ndarray" => Device::ndarray(),
        other => bail!("--backend {other:?}: expected `flex` or `ndarray`"),
    };
    let mut cfg = BenchConfig::standard(device, args.reps);
    if let Some(kind) = &args.layer {
        if kind != "linear" && kind != "conv2d" {
            bail!("--layer {kind:?}: expected `linear` or `conv2d`");
        }
        cfg.shapes
            .retain(|s: &BenchShape| s.layer() == kind.as_str());
    }
    if let Some(list) = &args.sparsity {
        for &p in list {
            if !(0.0..100.0).contains(&p) {
                bail!("--sparsity {p}: expected a percentage in [0, 100)");
            }
        }
        cfg.sparsities = list.iter().map(|p| p / 100.0).collect();
    }
    let threads = rayon::current_num_threads();
    if !args.json {
        println!(
            "SparseProp vs burn dense ({}, {threads} threads, median of {} reps)",
            args.backend, args.reps
        );
        println!(
            "{:<7} {:<32} {:>8} {:>4} {:>10} {:>10} {:>8}",
            "layer", "shape", "sparsity", "pass", "dense_ms", "sparse_ms", "speedup"
        );
    }
    let json = args.json;
    let rows = run(&cfg, |pair| {
        if !json {
            for r in pair {
                print_row(r);
            }
        }
    });
    if json {
        let text = serde_json::to_string_pretty(&rows).context("serialising bench rows")?;
        println!("{text}");
    }
    Ok(())
}

fn print_row(r: &BenchRow) {
    let pass = match r.pass {
        Pass::Fwd => "fwd",
        Pass::Bwd => "bwd",
    };
    println!(
        "{:<7} {:<32} {:>7.0}% {:>4} {:>10.3} {:>10.3} {:>7.2}x",
        r.layer,
        r.shape,
        r.sparsity * 100.0,
        pass,
        r.dense_ms,
        r.sparse_ms,
        r.speedup
    );
}
