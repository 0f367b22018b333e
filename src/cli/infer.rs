//! `shears infer`: run a model on JSONL inputs.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// What `shears infer` computes for each input line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum InferTask {
    /// Mean-pooled sentence embedding.
    Embed,
    /// Sequence-classification logits.
    Classify,
    /// Extractive question answering: start and end logits.
    Qa,
}

/// Run a model on JSONL inputs and write one JSON line per input.
///
/// Example: `shears infer --model assets/models/all-MiniLM-L6-v2 --task embed --input in.jsonl`
#[derive(Debug, Args)]
pub struct InferArgs {
    /// Model directory (config.json, model.safetensors, tokenizer.json) or `hf:org/name[@rev]`.
    #[arg(long)]
    pub model: String,
    /// What to compute.
    #[arg(long, value_enum)]
    pub task: InferTask,
    /// Input file: one `{"text": ..., "text_pair"?: ...}` object per line.
    #[arg(long)]
    pub input: PathBuf,
}

/// Runs `shears infer`.
pub fn execute(_args: InferArgs) -> anyhow::Result<()> {
    Err(super::not_implemented("infer", "BERT"))
}
