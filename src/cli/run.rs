//! `shears run`: run a recipe end to end.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::Args;
use shears::device::DeviceSpec;
use shears::recipe::Override;
use shears::run_dir::RunDir;
use shears::train::engine::{EngineOptions, RunEnd, fmt_metrics, run};
use shears::train::progress::format_duration;

/// Run a recipe end to end: train, prune, evaluate, export.
///
/// The run directory (default: the recipe's `output.dir`, else
/// `runs/<recipe-name>-<timestamp>`) receives the resolved recipe, `train.log`,
/// `history.json` (every evaluation), checkpoints, `report.json`, `sparsity.txt` and the
/// exported model (`model/`, Hugging Face layout with the tokenizer).
///
/// Examples:
///   shears run recipes/quickstart.yaml
///   shears run recipes/minilm-movies-gmp.yaml --set final_sparsity=0.9 --out runs/movies-90
///   shears run recipes/minilm-movies-gmp.yaml --out runs/movies-90 --resume
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct RunArgs {
    /// The recipe file (YAML).
    pub recipe: PathBuf,
    /// Output directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where to compute: flex, ndarray, wgpu[:N] or cuda[:N] (overrides the recipe's `device`).
    #[arg(long)]
    pub device: Option<DeviceSpec>,
    /// Data parallel over these devices, the first being the main one, e.g.
    /// `--devices cuda:0,cuda:1` (overrides the recipe's `training.devices` and `device`).
    #[arg(long, value_delimiter = ',', conflicts_with = "device")]
    pub devices: Option<Vec<DeviceSpec>>,
    /// Override a variable or a section key, e.g. `--set final_sparsity=0.9` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<Override>,
    /// Continue the run in `--out` (or the recipe's `output.dir`) from its latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many optimizer steps (with a checkpoint); continue later with `--resume`.
    #[arg(long, value_name = "STEPS")]
    pub stop_after: Option<u64>,
}

/// The exit status of a run stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
const INTERRUPTED: u8 = 130;

/// The message printed once the first Ctrl-C (or SIGTERM) is seen.
const ACKNOWLEDGED: &str =
    "interrupt: stopping after this step with a checkpoint (press Ctrl-C again to quit now)";

/// Ctrl-C (SIGINT) and SIGTERM as the run sees them: the first sets `flag`, which the
/// engine reads at every step boundary (it then writes a checkpoint and stops); a second
/// one exits at once with status 130.
struct Interrupt {
    /// Set by the first signal.
    flag: Arc<AtomicBool>,
    /// Set by whoever printed [`ACKNOWLEDGED`] (the watcher thread or the main thread).
    announced: Arc<AtomicBool>,
}

impl Interrupt {
    /// Prints [`ACKNOWLEDGED`] unless it was printed already.
    fn acknowledge(announced: &AtomicBool) {
        if !announced.swap(true, Ordering::SeqCst) {
            eprintln!("{ACKNOWLEDGED}");
        }
    }

    /// Installs the handlers and a thread that says at once that the signal was seen (the
    /// step in flight still has to end).
    #[cfg(unix)]
    fn install() -> anyhow::Result<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let flag = Arc::new(AtomicBool::new(false));
        for signal in [SIGINT, SIGTERM] {
            // Registered first, so it sees the flag as the previous signal left it.
            signal_hook::flag::register_conditional_shutdown(
                signal,
                i32::from(INTERRUPTED),
                Arc::clone(&flag),
            )
            .context("installing the Ctrl-C handler")?;
            signal_hook::flag::register(signal, Arc::clone(&flag))
                .context("installing the Ctrl-C handler")?;
        }
        let announced = Arc::new(AtomicBool::new(false));
        let (seen, said) = (Arc::clone(&flag), Arc::clone(&announced));
        std::thread::spawn(move || {
            while !seen.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Self::acknowledge(&said);
        });
        Ok(Self { flag, announced })
    }

    /// Elsewhere Ctrl-C keeps its default (the run stops; `--resume` restarts from the
    /// latest periodic checkpoint).
    #[cfg(not(unix))]
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            flag: Arc::new(AtomicBool::new(false)),
            announced: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// Runs `shears run`.
pub fn execute(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut recipe = super::load_recipe(&args.recipe, &args.overrides)?;
    if let (Some(list), Some(training)) = (&args.devices, recipe.training.as_mut()) {
        training.devices = Some(list.clone());
    }
    let listed = recipe
        .training
        .as_ref()
        .and_then(|t| t.devices.as_ref())
        .and_then(|d| d.first().copied());
    let device = match (args.device, &args.devices) {
        (Some(d), _) => d,
        (None, Some(_)) => listed.unwrap_or_default(),
        (None, None) => listed.or(recipe.device).unwrap_or_default(),
    };
    device
        .device()
        .with_context(|| format!("--device {device}"))?;
    // A bad device list fails before the run directory is created.
    if let Some(training) = &recipe.training {
        shears::train::engine::data_parallel_replicas(device, training)
            .with_context(|| format!("cannot run {}", args.recipe.display()))?;
    }
    if args.resume
        && args.out.is_none()
        && recipe
            .output
            .as_ref()
            .and_then(|o| o.dir.as_ref())
            .is_none()
    {
        anyhow::bail!(
            "--resume needs --out DIR (or the recipe's output.dir) to know which run to continue"
        );
    }
    let dir = RunDir::choose(&recipe, args.out.as_deref());
    let dir = RunDir::prepare(dir, &recipe, args.resume)?;
    eprintln!("run directory: {}", dir.path.display());
    let interrupt = Interrupt::install()?;
    let opts = EngineOptions {
        run_dir: dir.path.clone(),
        device,
        resume: args.resume,
        base_dir: PathBuf::from("."),
        stop_after: args.stop_after,
        interrupt: Some(Arc::clone(&interrupt.flag)),
    };
    let out = match run(&recipe, &opts)
        .with_context(|| format!("run of {} failed", args.recipe.display()))?
    {
        RunEnd::Finished(out) => out,
        RunEnd::Stopped {
            step,
            total,
            interrupted,
            ..
        } => {
            if interrupted {
                // The run may stop before the watcher thread wakes: the message comes first.
                Interrupt::acknowledge(&interrupt.announced);
            }
            println!(
                "{} at step {step}/{total}, checkpoint saved; continue with: shears run {} --out {} --resume",
                if interrupted {
                    "interrupted"
                } else {
                    "stopped"
                },
                args.recipe.display(),
                dir.path.display()
            );
            return Ok(if interrupted {
                ExitCode::from(INTERRUPTED)
            } else {
                ExitCode::SUCCESS
            });
        }
    };
    let main = &out.main_metric;
    let pick = |m: &shears::train::task::Metrics| m.get(main).copied().unwrap_or(f64::NAN);
    println!("{}", out.sparsity_table.trim_end());
    println!();
    if let Some(dense) = &out.dense {
        println!(
            "dense  (step {:>6}): {main} {:.4}   [{}]",
            dense.step,
            pick(&dense.metrics),
            fmt_metrics(&dense.metrics)
        );
        println!(
            "sparse (step {:>6}): {main} {:.4}   [{}] at {:.1}% sparsity (target {:.1}%)",
            out.last.step,
            pick(&out.last.metrics),
            fmt_metrics(&out.last.metrics),
            out.report.sparsity.global * 100.0,
            out.report.sparsity.target * 100.0
        );
        println!(
            "change: {:+.2} points",
            (pick(&out.last.metrics) - pick(&dense.metrics)) * 100.0
        );
    } else {
        println!(
            "final (step {}): {}",
            out.last.step,
            fmt_metrics(&out.last.metrics)
        );
    }
    println!(
        "{} steps in {}; report: {}",
        out.report.steps,
        format_duration(out.report.wall_seconds),
        dir.path.join("report.json").display()
    );
    if let Some(m) = &out.model_dir {
        println!("model: {}", m.display());
    }
    Ok(ExitCode::SUCCESS)
}
