//! `shears bench train`: a recipe's real training step, dense / masked / SparseProp, per
//! phase, beside a PyTorch reference script in the same run.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use shears::device::DeviceSpec;
use shears::recipe::Override;
use shears::train::bench::{BenchRow, ReferenceSpec, StepMode, bench_mode};
use shears::train::engine::EngineOptions;

/// Options of `shears bench train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The recipe whose step is timed (its model, data, batch size, optimizer, clipping).
    pub recipe: PathBuf,
    /// Sparsity of the masked and SparseProp modes (of the recipe's pruned parameters).
    #[arg(long, default_value_t = 0.9)]
    pub sparsity: f64,
    /// Timed steps per mode.
    #[arg(long, default_value_t = 10)]
    pub steps: u64,
    /// Untimed steps before them (allocator and caches warm up).
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// The modes, comma-separated: `dense`, `masked`, `sparseprop`, and `base` (dense without
    /// the recipe's CrAM modifier: `--modes base,dense` on a CrAM recipe times a CrAM step
    /// against its base optimizer's step on the same batches).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [StepMode::Dense, StepMode::Masked, StepMode::Sparseprop])]
    pub modes: Vec<StepMode>,
    /// Where to compute: flex, ndarray, wgpu[:N] or cuda[:N] (overrides the recipe's `device`).
    #[arg(long)]
    pub device: Option<DeviceSpec>,
    /// Override a variable or a section key, as `shears run --set` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<Override>,
    /// Also time the same step in PyTorch: run this script with `python3` on the same batch
    /// shapes, optimizer and threads, and print the ratios. The repository's script is
    /// `benches/train_step_torch.py` (needs `torch`, and `transformers` for BERT).
    #[arg(long, value_name = "SCRIPT")]
    pub pytorch: Option<PathBuf>,
    /// Print the rows as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Ops listed per mode under the table, slowest first (0: none): shears' own CPU
    /// kernels, and burn's ops as one remainder (JSON rows always hold them all).
    #[arg(long, default_value_t = 8)]
    pub top_ops: usize,
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `shears bench train`.
pub fn train(args: TrainArgs) -> anyhow::Result<()> {
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if args.modes.is_empty() {
        bail!("--modes: name at least one of dense, masked, sparseprop, base");
    }
    let recipe = super::load_recipe(&args.recipe, &args.overrides)?;
    let device = args.device.or(recipe.device).unwrap_or_default();
    device
        .device()
        .with_context(|| format!("--device {device}"))?;
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "shears-bench-train-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )));
    let reference_dir = scratch.0.join("reference-model");
    let threads = rayon::current_num_threads();
    let mut rows = Vec::new();
    let mut spec = None;
    for (i, &mode) in args.modes.iter().enumerate() {
        let run_dir = scratch.0.join(mode.name());
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        let opts = EngineOptions {
            run_dir,
            device,
            resume: false,
            base_dir: PathBuf::from("."),
            stop_after: None,
            interrupt: None,
        };
        let export = (i == 0 && args.pytorch.is_some()).then_some(reference_dir.as_path());
        if !args.json {
            eprintln!(
                "bench train: {} ({} warm-up + {} timed steps)",
                mode.name(),
                args.warmup,
                args.steps
            );
        }
        let b = bench_mode(
            &recipe,
            &opts,
            mode,
            args.sparsity,
            args.warmup,
            args.steps,
            export,
        )
        .with_context(|| format!("bench of {} ({})", args.recipe.display(), mode.name()))?;
        if spec.is_none() {
            let training = recipe.training.as_ref();
            spec = Some(ReferenceSpec {
                family: b.family.clone(),
                model_dir: reference_dir.display().to_string(),
                task: recipe
                    .data
                    .as_ref()
                    .map_or_else(String::new, |d| d.task.to_string()),
                optimizer: recipe
                    .optimizer
                    .clone()
                    .context("the recipe has no optimizer section")?,
                max_grad_norm: training.and_then(|t| t.max_grad_norm),
                label_smoothing: training.map_or(0.0, |t| t.label_smoothing),
                threads,
                warmup: args.warmup,
                batch_shapes: b.batch_shapes.clone(),
            });
        }
        rows.push(BenchRow::from_bench(mode, &b));
    }
    let spec = spec.expect("at least one mode ran");
    let torch = match &args.pytorch {
        Some(script) => Some(run_reference(script, &spec, &scratch.0)?),
        None => None,
    };
    let mut table = rows;
    if args.json {
        let v = serde_json::json!({
            "recipe": args.recipe.display().to_string(),
            "family": spec.family,
            "device": device.to_string(),
            "threads": threads,
            "warmup": args.warmup,
            "batch_shapes": spec.batch_shapes,
            "rows": table,
            "pytorch": torch,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let (min_len, max_len) = shape_range(&spec.batch_shapes);
    println!(
        "train step of {} ({}, {device}, {threads} threads): {} timed steps after {} warm-up; batches {}",
        args.recipe.display(),
        spec.family,
        args.steps,
        args.warmup,
        if min_len == max_len {
            min_len.to_string()
        } else {
            format!("{min_len} .. {max_len}")
        }
    );
    if let Some(t) = torch {
        table.push(t);
    }
    print_table(&table);
    if let Some(line) = step_rule_cost(&table) {
        println!("{line}");
    }
    print_ops(&table, args.top_ops);
    Ok(())
}

/// "a dense step costs k× the base step" when both modes ran and differ by a step rule.
fn step_rule_cost(rows: &[BenchRow]) -> Option<String> {
    let find = |m: &str| rows.iter().find(|r| r.engine == "shears" && r.mode == m);
    let (base, dense) = (find("base")?, find("dense")?);
    Some(format!(
        "step rule: a dense step (the recipe's rule) takes {:.1} ms, the base optimizer's step {:.1} ms on the same batches: {:.2}×",
        dense.step_ms,
        base.step_ms,
        dense.step_ms / base.step_ms.max(1e-12)
    ))
}

/// The top ops by time of each shears row: mean ms and calls per step, share of the step.
fn print_ops(rows: &[BenchRow], top: usize) {
    if top == 0 {
        return;
    }
    for r in rows.iter().filter(|r| !r.ops.is_empty()) {
        println!(
            "top ops, {} (ms per step, calls per step, share of the step):",
            r.mode
        );
        for o in r.ops.iter().take(top) {
            let calls = o.calls.map_or_else(String::new, |c| format!("{c:.0}"));
            println!(
                "  {:<64} {:>8.1} {:>6} {:>5.1}%",
                o.op,
                o.ms,
                calls,
                100.0 * o.ms / r.step_ms.max(1e-12)
            );
        }
    }
}

/// The smallest and largest micro-batch shape, as `32×27`.
fn shape_range(shapes: &[Vec<Vec<usize>>]) -> (String, String) {
    let all: Vec<&Vec<usize>> = shapes.iter().flatten().collect();
    let show = |s: &Vec<usize>| {
        s.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("×")
    };
    let size = |s: &&Vec<usize>| s.iter().product::<usize>();
    (
        all.iter()
            .copied()
            .min_by_key(size)
            .map_or_else(String::new, show),
        all.iter()
            .copied()
            .max_by_key(size)
            .map_or_else(String::new, show),
    )
}

fn print_table(rows: &[BenchRow]) {
    let phases = ["data", "forward", "backward", "clip", "optimizer", "other"];
    print!(
        "{:<8} {:<10} {:>8} {:>6} {:>9} {:>8}",
        "engine", "mode", "sparsity", "sp.lay", "ex/s", "step ms"
    );
    for p in phases {
        print!(" {p:>9}");
    }
    println!(" {:>9} {:>10}", "vs dense", "vs pytorch");
    let dense = rows
        .iter()
        .find(|r| r.engine == "shears" && r.mode == "dense")
        .map(|r| r.examples_per_sec);
    let torch = rows
        .iter()
        .find(|r| r.engine == "pytorch")
        .map(|r| r.examples_per_sec);
    for r in rows {
        print!(
            "{:<8} {:<10} {:>7.1}% {:>6} {:>9.2} {:>8.1}",
            r.engine,
            r.mode,
            r.sparsity * 100.0,
            r.sparse_layers,
            r.examples_per_sec,
            r.step_ms
        );
        for p in phases {
            print!(" {:>9.1}", r.phase_ms(p));
        }
        let ratio = |base: Option<f64>| {
            base.map_or_else(
                || "-".to_string(),
                |b| format!("{:.2}×", r.examples_per_sec / b),
            )
        };
        println!(" {:>9} {:>10}", ratio(dense), ratio(torch));
    }
    println!(
        "(phases: mean ms per step; ratios: examples/s over the dense shears row and over PyTorch dense)"
    );
}

/// Runs the reference script on `spec` and reads its row.
fn run_reference(script: &Path, spec: &ReferenceSpec, scratch: &Path) -> anyhow::Result<BenchRow> {
    let file = scratch.join("reference.json");
    std::fs::write(&file, serde_json::to_vec_pretty(spec)?)
        .with_context(|| format!("writing {}", file.display()))?;
    eprintln!("bench train: pytorch ({})", script.display());
    let text =
        super::bench::run_python(script, &[std::ffi::OsStr::new("--spec"), file.as_os_str()])?;
    let v: serde_json::Value = serde_json::from_str(text.trim()).with_context(|| {
        format!(
            "--pytorch {}: expected a JSON object, got {text}",
            script.display()
        )
    })?;
    let num = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_f64)
            .with_context(|| {
                format!(
                    "--pytorch {}: the output has no number `{k}`",
                    script.display()
                )
            })
    };
    let phases = v
        .get("phases_ms")
        .and_then(serde_json::Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, x)| Some((k.clone(), x.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    Ok(BenchRow {
        engine: "pytorch".into(),
        mode: "dense".into(),
        sparsity: 0.0,
        sparse_layers: 0,
        steps: num("steps")? as usize,
        step_ms: num("step_ms")?,
        examples_per_sec: num("examples_per_sec")?,
        phases_ms: phases,
        ops: Vec::new(),
    })
}
