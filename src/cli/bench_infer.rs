//! `shears bench infer`: BERT inference (the encoder forward `shears infer` runs), dense and
//! on the SparseProp kernels, beside a PyTorch reference script in the same run.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::module::Param;
use burn::tensor::{Device, Tensor};
use clap::Args;
use serde::Deserialize;
use shears::arch::bert::sparsify_encoder;
use shears::device::DeviceSpec;
use shears::train::bench::median;
use shears::train::sparse::DEFAULT_MIN_SPARSITY;
use shears_models::bert::{BertInput, BertModel, ModelSource, load_pretrained};
use shears_models::sparseprop::select::Execution;

/// Options of `shears bench infer`.
#[derive(Debug, Args)]
pub struct InferArgs {
    /// Model directory (Hugging Face layout: a run's `model/`, `shears prune` output) or
    /// `hf:org/name`. Any BERT checkpoint; its encoder is timed.
    #[arg(long)]
    pub model: String,
    /// First prune every encoder linear in memory to this sparsity (layer-wise magnitude),
    /// to time a dense checkpoint as if pruned; omit for an already pruned model.
    #[arg(long)]
    pub sparsity: Option<f64>,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 32])]
    pub batch: Vec<usize>,
    /// Tokens per sentence (all attended, random ids).
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Timed forward passes per mode and batch size (the median is reported), after two
    /// warm-up passes.
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// Weight sparsity from which an encoder linear runs SparseProp.
    #[arg(long, default_value_t = DEFAULT_MIN_SPARSITY)]
    pub min_sparsity: f64,
    /// Where to compute: flex, ndarray, wgpu[:N] or cuda[:N].
    #[arg(long, default_value_t = DeviceSpec::FLEX)]
    pub device: DeviceSpec,
    /// Also time the same forward passes in PyTorch: run this script with `python3` (CPU,
    /// as many threads as shears uses). The repository's script is `benches/infer_torch.py`
    /// (needs `torch` and `transformers`).
    #[arg(long, value_name = "SCRIPT")]
    pub pytorch: Option<PathBuf>,
    /// Print the rows as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One measured batch size.
#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    batch: usize,
    dense_ms: f64,
    sparse_ms: f64,
    pytorch_ms: Option<f64>,
}

/// What `benches/infer_torch.py` prints.
#[derive(Debug, Deserialize)]
struct TorchOut {
    torch: String,
    threads: usize,
    rows: Vec<TorchRow>,
}

#[derive(Debug, Deserialize)]
struct TorchRow {
    batch: usize,
    ms: f64,
}

/// Zeroes the `round(s·n)` smallest-magnitude weights of every encoder linear.
fn prune_layerwise(model: &mut BertModel, s: f64) -> anyhow::Result<()> {
    for layer in model.encoder.layer.iter_mut() {
        for linear in layer.linears_mut() {
            let w = linear.weight.val();
            let mut mags: Vec<f32> = w
                .clone()
                .abs()
                .try_into_vec_as::<f32>()
                .map_err(|e| anyhow::anyhow!("reading a weight: {e:?}"))?;
            let k = (s * mags.len() as f64).round() as usize;
            if k == 0 {
                continue;
            }
            let (_, tau, _) = mags.select_nth_unstable_by(k - 1, |a, b| a.total_cmp(b));
            let tau = *tau;
            let id = linear.weight.id;
            let pruned = w.clone().mask_fill(w.abs().lower_equal_elem(tau), 0.0);
            linear.weight = Param::initialized(id, pruned);
        }
    }
    Ok(())
}

/// Random token ids in `[1000, vocab)`, all attended, segment 0.
fn input(
    batch: usize,
    seq: usize,
    vocab: usize,
    seed: u64,
    device: &Device,
) -> anyhow::Result<BertInput> {
    let mut s = seed | 1;
    let span = vocab.saturating_sub(1000).max(1) as u64;
    let ids: Vec<Vec<u32>> = (0..batch)
        .map(|_| {
            (0..seq)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (1000 + (s % span)).min(vocab as u64 - 1) as u32
                })
                .collect()
        })
        .collect();
    let zeros = vec![vec![0u32; seq]; batch];
    let ones = vec![vec![1u32; seq]; batch];
    Ok(BertInput::from_rows(&ids, &zeros, &ones, device)?)
}

/// Median milliseconds of `reps` forward passes (after two warm-up), output read back.
fn time_forward(model: &BertModel, x: &BertInput, reps: usize) -> f64 {
    let run = || {
        let h: Tensor<3> = model.forward(x).last_hidden_state;
        drop(h.into_data());
    };
    run();
    run();
    let times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median(&times)
}

/// Runs `shears bench infer`.
pub fn infer(args: InferArgs) -> anyhow::Result<()> {
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    if args.batch.is_empty() || args.batch.contains(&0) {
        bail!("--batch: give batch sizes of at least 1");
    }
    if let Some(s) = args.sparsity
        && !(0.0..1.0).contains(&s)
    {
        bail!("--sparsity {s}: expected a fraction in [0, 1)");
    }
    if !(0.0..=1.0).contains(&args.min_sparsity) {
        bail!(
            "--min-sparsity {}: expected a fraction in [0, 1]",
            args.min_sparsity
        );
    }
    let device = args
        .device
        .device()
        .with_context(|| format!("--device {}", args.device))?;
    let files = ModelSource::parse(&args.model)?.resolve()?;
    let mut p = load_pretrained::<BertModel>(&files, &device)
        .with_context(|| format!("--model {}", args.model))?;
    let (vocab, max_len) = (p.config.vocab_size, p.config.max_position_embeddings);
    if vocab == 0 {
        bail!("--model {}: the config's vocab_size is 0", args.model);
    }
    if args.seq == 0 || args.seq > max_len {
        bail!(
            "--seq {}: expected 1 to {max_len} (the model's max_position_embeddings)",
            args.seq
        );
    }
    if let Some(s) = args.sparsity {
        prune_layerwise(&mut p.model, s)?;
    }
    let threads = rayon::current_num_threads();
    let mut rows: Vec<Row> = Vec::new();
    let mut sparse_layers = 0;
    let mut total_layers = 0;
    for &b in &args.batch {
        let x = input(b, args.seq, vocab, 42 + b as u64, &device)?;
        sparsify_encoder(&mut p.model, f64::INFINITY, Execution::Dense);
        let dense_ms = time_forward(&p.model, &x, args.reps);
        let layers = sparsify_encoder(&mut p.model, args.min_sparsity, Execution::Sparse);
        sparse_layers = layers.iter().filter(|l| l.sparse).count();
        total_layers = layers.len();
        let sparse_ms = time_forward(&p.model, &x, args.reps);
        rows.push(Row {
            batch: b,
            dense_ms,
            sparse_ms,
            pytorch_ms: None,
        });
    }
    let mut torch_version = None;
    if let Some(script) = &args.pytorch {
        let batches = args
            .batch
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let (seq, reps, threads_s) = (
            args.seq.to_string(),
            args.reps.to_string(),
            threads.to_string(),
        );
        let model_dir = files
            .config
            .parent()
            .map(|d| d.as_os_str().to_owned())
            .unwrap_or_default();
        let out = super::bench::run_python(
            script,
            &[
                "--model".as_ref(),
                &model_dir,
                "--batch".as_ref(),
                batches.as_ref(),
                "--seq".as_ref(),
                seq.as_ref(),
                "--reps".as_ref(),
                reps.as_ref(),
                "--threads".as_ref(),
                threads_s.as_ref(),
            ],
        )?;
        let t: TorchOut = serde_json::from_str(out.trim())
            .with_context(|| format!("--pytorch {}: unexpected output: {out}", script.display()))?;
        for r in &mut rows {
            r.pytorch_ms = t.rows.iter().find(|x| x.batch == r.batch).map(|x| x.ms);
        }
        torch_version = Some(format!("PyTorch {} ({} threads)", t.torch, t.threads));
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "model": args.model,
                "seq": args.seq,
                "threads": threads,
                "sparse_layers": sparse_layers,
                "layers": total_layers,
                "pytorch": torch_version,
                "rows": rows,
            }))?
        );
        return Ok(());
    }
    println!(
        "BERT encoder forward of {} ({}, {threads} threads), {} tokens per sentence, median of {} reps; \
         SparseProp on {sparse_layers} of {total_layers} encoder linears (≥ {:.0}% sparse){}",
        args.model,
        args.device,
        args.seq,
        args.reps,
        args.min_sparsity * 100.0,
        torch_version.map(|v| format!("; {v}")).unwrap_or_default()
    );
    println!(
        "{:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "batch",
        "dense ms",
        "sparse ms",
        "torch ms",
        "dense s/s",
        "sparse s/s",
        "torch s/s",
        "vs dense",
        "vs torch"
    );
    for r in &rows {
        let per_s = |ms: f64| r.batch as f64 * 1e3 / ms;
        let torch = |f: &dyn Fn(f64) -> String| r.pytorch_ms.map(f).unwrap_or_else(|| "-".into());
        println!(
            "{:>6} {:>10.2} {:>10.2} {:>10} {:>10.1} {:>10.1} {:>10} {:>9.2}× {:>10}",
            r.batch,
            r.dense_ms,
            r.sparse_ms,
            torch(&|ms| format!("{ms:.2}")),
            per_s(r.dense_ms),
            per_s(r.sparse_ms),
            torch(&|ms| format!("{:.1}", per_s(ms))),
            r.dense_ms / r.sparse_ms,
            torch(&|ms| format!("{:.2}×", ms / r.sparse_ms)),
        );
    }
    println!(
        "(s/s: sentences per second; ratios: SparseProp over shears dense and over PyTorch dense)"
    );
    Ok(())
}
