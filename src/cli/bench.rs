//! `shears bench`: sparse kernels against the dense path, measured in the same run.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use shears::device::{DeviceKind, DeviceSpec};
use shears_models::sparseprop::bench::{BenchConfig, BenchRow, BenchShape, Pass, run};

/// The benchmarks `shears bench` runs.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// SparseProp linear and conv kernels (forward and backward) against the dense path.
    Sparseprop(SparsepropArgs),
    /// The global magnitude top-k selection that CrAM runs every step and GMP at every
    /// pruning step, at the parameter counts of real models.
    Topk(TopkArgs),
    /// M-FAC's sliding-window inverse Fisher: IHVP and window-update time over d × m, with
    /// the same recursion in PyTorch in the same run (`--pytorch`).
    Mfac(MfacArgs),
    /// A recipe's real training step (model, data, optimizer), dense, masked and on
    /// SparseProp, per phase, with a PyTorch reference in the same run (`--pytorch`).
    Train(super::bench_train::TrainArgs),
    /// BERT inference (the encoder forward), dense and on SparseProp, per batch size, with
    /// a PyTorch reference in the same run (`--pytorch`).
    Infer(super::bench_infer::InferArgs),
}

/// Options of `shears bench mfac`.
#[derive(Debug, Args)]
pub struct MfacArgs {
    /// Parameter counts d, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000usize, 1_000_000, 10_000_000])]
    pub dims: Vec<usize>,
    /// Window sizes m, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [32usize, 128, 512])]
    pub grads: Vec<usize>,
    /// Skip (d, m) pairs whose window (m·d f32) exceeds this many GiB.
    #[arg(long, default_value_t = 6.0)]
    pub max_gib: f64,
    /// Timed repetitions (the median is reported), after one warm-up.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Also time the same recursion in PyTorch: run this script with `python3` (CPU, as
    /// many threads as shears uses) and print the ratios. The repository's script is
    /// `benches/mfac_torch.py`.
    #[arg(long, value_name = "SCRIPT")]
    pub pytorch: Option<std::path::PathBuf>,
    /// Print rows as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
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
    /// CPU backend: `flex` (default) or `ndarray` (the same as `--device`).
    #[arg(long, default_value = "flex", conflicts_with = "device")]
    pub backend: String,
    /// Where to compute: flex, ndarray, wgpu[:N] or cuda[:N]. On a GPU the SparseProp op
    /// takes its dense masked path (there are no sparse GPU kernels), and that is what the
    /// sparse column times there.
    #[arg(long)]
    pub device: Option<DeviceSpec>,
    /// Only the layers of this kind: `linear` or `conv2d` (default: both).
    #[arg(long)]
    pub layer: Option<String>,
    /// Comma-separated sparsities in percent (default: 80,90,95,98,99).
    #[arg(long, value_delimiter = ',')]
    pub sparsity: Option<Vec<f64>>,
    /// Also time PyTorch's dense layers on the same shapes in the same run: run this script
    /// with `python3` (CPU, as many threads as shears uses) and print a PyTorch column. The
    /// repository's script is `benches/sparseprop_torch.py`.
    #[arg(long, value_name = "SCRIPT", conflicts_with = "against")]
    pub pytorch: Option<std::path::PathBuf>,
    /// Print a PyTorch column from this file: the JSON that `benches/sparseprop_torch.py`
    /// printed (measured earlier, on the same machine if the ratios are to mean anything).
    #[arg(long, value_name = "FILE")]
    pub against: Option<std::path::PathBuf>,
}

/// PyTorch's dense times for one shape, as `benches/sparseprop_torch.py` prints them.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
struct TorchLayerRow {
    /// `linear` or `conv2d`.
    layer: String,
    /// The shape text of [`BenchShape::describe`].
    shape: String,
    /// Median forward time, ms.
    fwd_ms: f64,
    /// Median backward time (dX and dW), ms.
    bwd_ms: f64,
}

/// A `shears bench sparseprop` row with PyTorch's dense time for the same shape and pass.
#[derive(Debug, serde::Serialize)]
struct RowWithTorch<'a> {
    #[serde(flatten)]
    row: &'a BenchRow,
    /// PyTorch's dense time (ms), when measured.
    torch_ms: Option<f64>,
    /// `torch_ms / sparse_ms`: above 1 SparseProp is faster than PyTorch dense.
    vs_torch: Option<f64>,
}

/// Runs `shears bench`.
pub fn execute(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Sparseprop(args) => sparseprop(args),
        BenchCommand::Topk(args) => topk(args),
        BenchCommand::Mfac(args) => mfac(args),
        BenchCommand::Train(args) => super::bench_train::train(args),
        BenchCommand::Infer(args) => super::bench_infer::infer(args),
    }
}

/// Runs `python3 SCRIPT ARGS...` (a `--pytorch` reference) and returns its stdout.
pub(super) fn run_python(
    script: &std::path::Path,
    args: &[&std::ffi::OsStr],
) -> anyhow::Result<String> {
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("--pytorch {}: cannot run python3", script.display()))?;
    if !out.status.success() {
        bail!(
            "--pytorch {}: the script failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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

/// Seeded values in [-0.5, 0.5) (a 64-bit LCG; the benchmark needs no statistics).
fn lcg_values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// Median of timed repetitions of `f`, after one warm-up.
fn median_secs(reps: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(reps);
    for r in 0..=reps {
        let t0 = std::time::Instant::now();
        f()?;
        if r > 0 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// One (d, m) measurement of `shears bench mfac`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct MfacRow {
    d: usize,
    m: usize,
    /// Median IHVP time, ms.
    ihvp_ms: f64,
    /// Median window-update time (replace the oldest gradient, rebuild), ms.
    update_ms: f64,
}

/// Times `DynamicInverse::{ihvp, push}` on a full window of seeded values.
fn mfac(args: MfacArgs) -> anyhow::Result<()> {
    use shears::fisher::DynamicInverse;
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    if let Some(bad) = args.dims.iter().chain(&args.grads).find(|&&v| v == 0) {
        bail!("--dims and --grads take positive integers, got {bad}");
    }
    let fits = |d: usize, m: usize| (d * m * 4) as f64 <= args.max_gib * (1u64 << 30) as f64;
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for &d in &args.dims {
        for &m in &args.grads {
            if !fits(d, m) {
                skipped.push((d, m));
                continue;
            }
            let mut inv = DynamicInverse::<f32>::new(d, m, 1e-5)?;
            inv.restore(lcg_values(m * d, (d ^ m) as u64), 0)?;
            let x = lcg_values(d, 7);
            let ihvp = median_secs(args.reps, || {
                std::hint::black_box(inv.ihvp(&x)?);
                Ok(())
            })?;
            let grads: Vec<Vec<f32>> = (0..=args.reps)
                .map(|i| lcg_values(d, 100 + i as u64))
                .collect();
            let mut next = grads.iter().cycle();
            let update = median_secs(args.reps, || {
                inv.push(next.next().expect("cycle"))?;
                Ok(())
            })?;
            rows.push(MfacRow {
                d,
                m,
                ihvp_ms: ihvp * 1e3,
                update_ms: update * 1e3,
            });
        }
    }
    let torch: Option<Vec<MfacRow>> = match &args.pytorch {
        None => None,
        Some(script) => {
            let pairs: Vec<String> = rows.iter().map(|r| format!("{}x{}", r.d, r.m)).collect();
            let (pairs, reps, threads) = (
                pairs.join(","),
                args.reps.to_string(),
                rayon::current_num_threads().to_string(),
            );
            let text = run_python(
                script,
                &[
                    "--pairs".as_ref(),
                    pairs.as_ref(),
                    "--reps".as_ref(),
                    reps.as_ref(),
                    "--threads".as_ref(),
                    threads.as_ref(),
                ],
            )?;
            Some(serde_json::from_str(text.trim()).with_context(|| {
                format!(
                    "--pytorch {}: expected a JSON list of rows, got {text}",
                    script.display()
                )
            })?)
        }
    };
    if args.json {
        let v = serde_json::json!({ "shears": rows, "pytorch": torch, "skipped": skipped });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "M-FAC sliding-window inverse (f32, {} threads), median of {} reps",
        rayon::current_num_threads(),
        args.reps
    );
    print!(
        "{:>10} {:>5} {:>10} {:>12} {:>11} {:>13}",
        "d", "m", "ihvp ms", "ns/(d·m)", "update ms", "ns/(d·m)"
    );
    if torch.is_some() {
        print!(" {:>14} {:>16}", "torch ihvp ms", "torch update ms");
    }
    println!();
    for (i, r) in rows.iter().enumerate() {
        let dm = (r.d * r.m) as f64;
        print!(
            "{:>10} {:>5} {:>10.2} {:>12.3} {:>11.2} {:>13.3}",
            r.d,
            r.m,
            r.ihvp_ms,
            r.ihvp_ms * 1e6 / dm,
            r.update_ms,
            r.update_ms * 1e6 / dm
        );
        if let Some(t) = torch.as_ref().and_then(|t| t.get(i)) {
            print!(
                " {:>7.2} ({:.2}×) {:>8.2} ({:.2}×)",
                t.ihvp_ms,
                t.ihvp_ms / r.ihvp_ms,
                t.update_ms,
                t.update_ms / r.update_ms
            );
        }
        println!();
    }
    for (d, m) in skipped {
        println!(
            "{d:>10} {m:>5}  skipped: the window needs more than --max-gib {}",
            args.max_gib
        );
    }
    if torch.is_some() {
        println!("(×: PyTorch's time / shears' time; above 1 shears is faster)");
    }
    Ok(())
}

fn sparseprop(args: SparsepropArgs) -> anyhow::Result<()> {
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let spec = match args.device {
        Some(d) => d,
        None => match args.backend.as_str() {
            "flex" => DeviceSpec::FLEX,
            "ndarray" => DeviceSpec {
                kind: DeviceKind::Ndarray,
                index: None,
            },
            other => bail!("--backend {other:?}: expected `flex` or `ndarray`"),
        },
    };
    let device = spec.device().with_context(|| format!("--device {spec}"))?;
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
    let torch = torch_layer_rows(&args, &cfg.shapes, threads)?;
    let torch_ms = |r: &BenchRow| {
        let t = torch
            .as_ref()?
            .iter()
            .find(|t| t.layer == r.layer && t.shape == r.shape)?;
        Some(match r.pass {
            Pass::Fwd => t.fwd_ms,
            Pass::Bwd => t.bwd_ms,
        })
    };
    if !args.json {
        println!(
            "SparseProp vs dense ({spec}, {threads} threads, median of {} reps)",
            args.reps
        );
        if !spec.is_cpu() {
            println!(
                "(on {spec} the SparseProp op takes the dense masked path: no sparse GPU kernels; sparse_ms times that path)"
            );
        }
        print!(
            "{:<7} {:<32} {:>8} {:>4} {:>10} {:>10} {:>8}",
            "layer", "shape", "sparsity", "pass", "dense_ms", "sparse_ms", "speedup"
        );
        if torch.is_some() {
            print!(" {:>9} {:>9}", "torch_ms", "vs_torch");
        }
        println!();
    }
    let json = args.json;
    let rows = run(&cfg, |pair| {
        if !json {
            for r in pair {
                print_row(r, torch.as_ref().map(|_| torch_ms(r)));
            }
        }
    });
    if json {
        let out: Vec<RowWithTorch> = rows
            .iter()
            .map(|row| {
                let t = torch_ms(row);
                RowWithTorch {
                    row,
                    torch_ms: t,
                    vs_torch: t.map(|t| t / row.sparse_ms),
                }
            })
            .collect();
        let text = serde_json::to_string_pretty(&out).context("serialising bench rows")?;
        println!("{text}");
    } else if torch.is_some() {
        println!("(vs_torch: PyTorch dense time / SparseProp time; above 1 SparseProp is faster)");
        for line in torch_summary(&rows, torch_ms) {
            println!("{line}");
        }
    }
    Ok(())
}

/// PyTorch's rows: from `--pytorch SCRIPT` (run now, on `shapes`) or `--against FILE`.
fn torch_layer_rows(
    args: &SparsepropArgs,
    shapes: &[BenchShape],
    threads: usize,
) -> anyhow::Result<Option<Vec<TorchLayerRow>>> {
    let (text, source) = if let Some(script) = &args.pytorch {
        let (shapes, reps, threads) = (
            serde_json::to_string(shapes)?,
            args.reps.to_string(),
            threads.to_string(),
        );
        let out = run_python(
            script,
            &[
                "--shapes".as_ref(),
                shapes.as_ref(),
                "--reps".as_ref(),
                reps.as_ref(),
                "--threads".as_ref(),
                threads.as_ref(),
            ],
        )?;
        (out, format!("--pytorch {}", script.display()))
    } else if let Some(file) = &args.against {
        let out = std::fs::read_to_string(file)
            .with_context(|| format!("--against {}: cannot read the file", file.display()))?;
        (out, format!("--against {}", file.display()))
    } else {
        return Ok(None);
    };
    let rows: Vec<TorchLayerRow> = serde_json::from_str(text.trim()).map_err(|e| {
        anyhow::anyhow!(
            "{source}: line {}, column {}: expected the JSON list that benches/sparseprop_torch.py prints: {e}",
            e.line(),
            e.column()
        )
    })?;
    let missing: Vec<String> = shapes
        .iter()
        .filter(|s| {
            !rows
                .iter()
                .any(|t| t.layer == s.layer() && t.shape == s.describe())
        })
        .map(|s| format!("{} {}", s.layer(), s.describe()))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{source}: no PyTorch time for {} (rerun the script on these shapes)",
            missing.join(", ")
        );
    }
    Ok(Some(rows))
}

/// One line per sparsity ≥ 95 %: on how many shapes SparseProp's forward + backward beats
/// PyTorch's dense forward + backward (the goal of issue 15), naming the shapes that miss.
fn torch_summary(rows: &[BenchRow], torch_ms: impl Fn(&BenchRow) -> Option<f64>) -> Vec<String> {
    let mut levels: Vec<f64> = rows
        .iter()
        .map(|r| r.sparsity)
        .filter(|&s| s >= 0.95 - 1e-9)
        .collect();
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    levels
        .into_iter()
        .map(|level| {
            let (mut beats, mut total, mut misses) = (0, 0, Vec::new());
            for fwd in rows
                .iter()
                .filter(|r| r.sparsity == level && r.pass == Pass::Fwd)
            {
                let Some(bwd) = rows.iter().find(|r| {
                    r.sparsity == level && r.pass == Pass::Bwd && r.shape == fwd.shape
                }) else {
                    continue;
                };
                let (Some(tf), Some(tb)) = (torch_ms(fwd), torch_ms(bwd)) else {
                    continue;
                };
                total += 1;
                let ratio = (tf + tb) / (fwd.sparse_ms + bwd.sparse_ms);
                if ratio > 1.0 {
                    beats += 1;
                } else {
                    misses.push(format!("{} {} ({ratio:.2}×)", fwd.layer, fwd.shape));
                }
            }
            let mut line = format!(
                "at {:.0}%: SparseProp fwd+bwd beats PyTorch dense fwd+bwd on {beats} of {total} shapes",
                level * 100.0
            );
            if !misses.is_empty() {
                line += &format!("; misses: {}", misses.join(", "));
            }
            line
        })
        .collect()
}

fn print_row(r: &BenchRow, torch_ms: Option<Option<f64>>) {
    let pass = match r.pass {
        Pass::Fwd => "fwd",
        Pass::Bwd => "bwd",
    };
    print!(
        "{:<7} {:<32} {:>7.0}% {:>4} {:>10.3} {:>10.3} {:>7.2}x",
        r.layer,
        r.shape,
        r.sparsity * 100.0,
        pass,
        r.dense_ms,
        r.sparse_ms,
        r.speedup
    );
    match torch_ms {
        Some(Some(t)) => print!(" {:>9.3} {:>8.2}x", t, t / r.sparse_ms),
        Some(None) => print!(" {:>9} {:>9}", "-", "-"),
        None => {}
    }
    println!();
}
