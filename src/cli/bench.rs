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
    /// The global magnitude top-k selection that CrAM runs every step and GMP at every
    /// pruning step, at the parameter counts of real models.
    Topk(TopkArgs),
}

/// Options of `shears bench topk`.
#[derive(Debug, Args)]
pub struct TopkArgs {
    /// Numbers of weights ranked together, comma-separated (default: ResNet-20's convs and
    /// linear, 269,722; MiniLM-L6's 36 encoder linears, 10,616,832; BERT-base's 72,
    /// 84,934,656).
    #[arg(long, value_delimiter = ',', default_values_t = [269_722usize, 10_616_832, 84_934_656])]
    pub weights: Vec<usize>,
    /// Target sparsity.
    #[arg(long, default_value_t = 0.7)]
    pub sparsity: f64,
    /// Timed repetitions (the median is reported), after one warm-up.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
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
        BenchCommand::Topk(args) => topk(args),
    }
}

/// Times `compute_masks` (global, unstructured) over tensors of 4,096 weights holding
/// seeded normal-like values.
fn topk(args: TopkArgs) -> anyhow::Result<()> {
    use shears::sparsity::mask::{MaskKind, ParamValues, Scope, compute_masks};
    use shears::sparsity::selection::ParamInfo;
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    if !(0.0..1.0).contains(&args.sparsity) {
        bail!(
            "--sparsity {}: expected a fraction in [0, 1)",
            args.sparsity
        );
    }
    println!(
        "global magnitude top-k at {:.0}% (read values excluded), median of {} reps",
        args.sparsity * 100.0,
        args.reps
    );
    println!(
        "{:>12} {:>8} {:>10} {:>12}",
        "weights", "tensors", "ms", "ns/weight"
    );
    for &n in &args.weights {
        let chunk = 4096usize;
        let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ n as u64;
        let params: Vec<ParamValues> = (0..n.div_ceil(chunk))
            .map(|i| {
                let len = chunk.min(n - i * chunk);
                let values = (0..len)
                    .map(|_| {
                        state = state
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        // Sum of uniforms: a bell-shaped weight distribution.
                        let u = |s: u64| (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                        u(state) + u(state.rotate_left(21)) + u(state.rotate_left(42))
                    })
                    .collect();
                ParamValues {
                    info: ParamInfo::new(format!("p{i}"), vec![len]),
                    values,
                }
            })
            .collect();
        let mut times = Vec::with_capacity(args.reps);
        for r in 0..=args.reps {
            let t0 = std::time::Instant::now();
            let masks = compute_masks(
                &params,
                args.sparsity,
                MaskKind::Unstructured,
                Scope::Global,
            )?;
            let dt = t0.elapsed().as_secs_f64();
            std::hint::black_box(&masks);
            if r > 0 {
                times.push(dt);
            }
        }
        times.sort_by(f64::total_cmp);
        let ms = times[times.len() / 2] * 1e3;
        println!(
            "{:>12} {:>8} {:>10.2} {:>12.2}",
            n,
            params.len(),
            ms,
            ms * 1e6 / n as f64
        );
    }
    Ok(())
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
