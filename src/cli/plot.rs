//! `shears plot`: overlay the curves of runs and one-shot sweeps in one SVG or PNG chart.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use shears::plot::{ChartFormat, write_chart};
use shears::train::curves::{load_input, plot_panels};

/// Overlay runs and one-shot sweeps in one SVG or PNG chart.
///
/// A run directory adds a line to each of four panels against the optimizer step (dev
/// metric, sparsity, learning rate, training loss; pruning steps marked). A one-shot
/// result (`oneshot.json` of `shears prune --out DIR`, or DIR) adds a line to a panel of
/// the dev metric against sparsity, where the runs' evaluations appear as points.
///
/// Examples:
///   shears plot runs/movies-80 runs/movies-90 --out gmp.svg
///   shears plot runs/oneshot-cram runs/oneshot-sgd --metric accuracy --out oneshot.png
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct PlotArgs {
    /// Run directories and one-shot results.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The dev metric to plot (default: accuracy, f1, matthews_correlation, pearson or
    /// exact_match, whichever the inputs have).
    #[arg(long)]
    pub metric: Option<String>,
    /// The chart to write: `.svg` (vector) or `.png` (raster), by its extension.
    #[arg(long, default_value = "plot.svg")]
    pub out: PathBuf,
}

/// Runs `shears plot`.
pub fn execute(args: PlotArgs) -> anyhow::Result<()> {
    let Some(format) = ChartFormat::of(&args.out) else {
        anyhow::bail!(
            "--out {}: the file must end in .svg or .png (the chart's format)",
            args.out.display()
        );
    };
    let inputs = args
        .inputs
        .iter()
        .map(|p| load_input(p).map(|i| (p.clone(), i)))
        .collect::<Result<Vec<_>, _>>()?;
    let panels = plot_panels(&inputs, args.metric.as_deref())?;
    write_chart(&args.out, format, &panels)
        .with_context(|| format!("--out {}", args.out.display()))?;
    println!(
        "{}: {} panel(s), {} input(s)",
        args.out.display(),
        panels.len(),
        inputs.len()
    );
    Ok(())
}
