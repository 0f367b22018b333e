//! Fuzzing every reader of user files: recipes, safetensors (plain and compressed),
//! PyTorch `.bin`/`.pth`, idx (raw and gzip), CIFAR binaries, parquet, TSV/CSV, JSON lines
//! and SQuAD JSON. Valid fixture files are mutated (bit flips, special bytes, inserted,
//! deleted and duplicated ranges, truncation, splices of two inputs) by a seeded generator,
//! so a failure is reproducible from its iteration number. The property: no reader panics,
//! and every error names the file.
//!
//! Bounded for CI: `SHEARS_FUZZ_ITERS` mutations per reader (default 500); set it higher
//! to fuzz longer locally. An input that once failed is kept under
//! `tests/fixtures/fuzz/<reader>/` and replayed first on every run: a failing input is
//! written to `$CARGO_TARGET_TMPDIR/fuzz-failures/` and the failure message says where.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shears::data::cifar::{CifarKind, load_cifar_bin};
use shears::data::glue::{GlueTask, load_glue_file};
use shears::data::idx::read_idx;
use shears::data::squad::load_squad_file;
use shears::data::text::{Header, LabelSpec, TextColumns, TextFileConfig, TextFormat, load_text};
use shears::recipe::Recipe;
use shears::sparsity::report::SparsityReport;
use shears_models::weights::Checkpoint;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One reader under test.
struct Reader {
    /// Name of the corpus folder and of the failure files.
    name: &'static str,
    /// The extension the reader dispatches on (with the dot), `""` for none.
    ext: &'static str,
    /// Valid inputs to mutate.
    seeds: Vec<PathBuf>,
    /// Reads the file; `Err` carries the error's message.
    read: fn(&Path) -> Result<(), String>,
}

/// A reader's result as the test sees it: `Err` carries the message.
fn msg<T, E: ToString>(r: Result<T, E>) -> Result<(), String> {
    r.map(drop).map_err(|e| e.to_string())
}

fn text(format: TextFormat, columns: TextColumns, label: LabelSpec) -> TextFileConfig {
    TextFileConfig {
        format,
        header: Header::FirstRow,
        columns,
        label,
        drop_unlabeled: false,
    }
}

/// A small burn record (a linear layer with a pruned row) written by burn-store.
fn burnpack_seed(dir: &Path) -> PathBuf {
    use burn::module::Param;
    use burn::store::{BurnpackStore, ModuleSnapshot};
    let device = burn::tensor::Device::flex();
    let linear = burn::nn::LinearConfig::new(4, 3).init(&device);
    let w = burn::tensor::Tensor::<2>::from_floats(
        [
            [0.0, 0.0, 0.0],
            [1.0, -2.0, 3.0],
            [0.5, 0.0, 6.0],
            [7.0, 8.0, -9.0],
        ],
        &device,
    );
    let linear = burn::nn::Linear {
        weight: Param::from_tensor(w),
        ..linear
    };
    let path = dir.join("linear.bpk");
    linear
        .save_into(&mut BurnpackStore::from_file(&path))
        .unwrap();
    path
}

fn readers(scratch: &Path) -> Vec<Reader> {
    let fx = root().join("tests/fixtures");
    let data = fx.join("data");
    let recipes = std::fs::read_dir(root().join("recipes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    vec![
        Reader {
            name: "recipe",
            ext: ".yaml",
            seeds: recipes,
            read: |p| msg(Recipe::load(p, &[])),
        },
        Reader {
            name: "safetensors",
            ext: ".safetensors",
            seeds: vec![
                fx.join("compressed_tensors/dense.safetensors"),
                fx.join("compressed_tensors/compressed.safetensors"),
            ],
            read: |p| {
                Checkpoint::read(p).map_err(|e| e.to_string())?;
                msg(SparsityReport::from_safetensors(p))
            },
        },
        Reader {
            name: "burnpack",
            ext: ".bpk",
            seeds: vec![burnpack_seed(scratch)],
            read: |p| msg(SparsityReport::from_burnpack(p)),
        },
        Reader {
            name: "pytorch",
            ext: ".bin",
            seeds: vec![
                root().join("models/tests/fixtures/bert/tiny_cls/pytorch_model.bin"),
                root().join("models/tests/fixtures/resnet/resnet20b_det.pth"),
            ],
            read: |p| msg(Checkpoint::read(p)),
        },
        Reader {
            name: "idx",
            ext: "",
            seeds: vec![
                data.join("idx/images-idx3-ubyte"),
                data.join("idx/images-idx3-ubyte.gz"),
            ],
            read: |p| msg(read_idx(p, 3)),
        },
        Reader {
            name: "cifar",
            ext: ".bin",
            seeds: vec![data.join("cifar/data_batch_1.bin")],
            read: |p| msg(load_cifar_bin(p, CifarKind::Cifar10)),
        },
        Reader {
            name: "parquet",
            ext: ".parquet",
            seeds: vec![
                data.join("parquet/glue-sst2-train.parquet"),
                data.join("parquet/glue-sst2-test.parquet"),
            ],
            read: |p| msg(load_glue_file(p, GlueTask::Sst2)),
        },
        Reader {
            name: "squad-parquet",
            ext: ".parquet",
            seeds: vec![data.join("parquet/squad-train.parquet")],
            read: |p| msg(load_squad_file(p)),
        },
        Reader {
            name: "tsv",
            ext: ".tsv",
            seeds: vec![data.join("text/scores.tsv")],
            read: |p| {
                let columns = TextColumns {
                    id: None,
                    text: "text".into(),
                    text_pair: None,
                    label: Some("score".into()),
                };
                let config = text(TextFormat::Tsv { quoting: true }, columns, LabelSpec::Score);
                msg(load_text(p, &config))
            },
        },
        Reader {
            name: "csv",
            ext: ".csv",
            seeds: vec![data.join("text/pairs.csv")],
            read: |p| {
                let columns = TextColumns {
                    id: Some("review_id".into()),
                    text: "sentence".into(),
                    text_pair: Some("other".into()),
                    label: Some("sentiment".into()),
                };
                let names = ["negative", "neutral", "positive"].map(String::from);
                let config = text(
                    TextFormat::Csv,
                    columns,
                    LabelSpec::ClassNames(names.into()),
                );
                msg(load_text(p, &config))
            },
        },
        Reader {
            name: "jsonl",
            ext: ".jsonl",
            seeds: vec![data.join("parquet/glue-sst2-train.jsonl")],
            read: |p| msg(load_glue_file(p, GlueTask::Sst2)),
        },
        Reader {
            name: "squad-json",
            ext: ".json",
            seeds: vec![data.join("squad/squad_v2.json")],
            read: |p| msg(load_squad_file(p)),
        },
    ]
}

/// One random mutation of `input` (`other` is another seed, for splices).
fn mutate(rng: &mut StdRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    let rounds = 1 + rng.random_range(0..4);
    for _ in 0..rounds {
        let n = out.len();
        match rng.random_range(0..8) {
            0 if n > 0 => {
                // Flip a few bits.
                for _ in 0..rng.random_range(1..8) {
                    let i = rng.random_range(0..n);
                    out[i] ^= 1 << rng.random_range(0..8);
                }
            }
            1 if n > 0 => {
                // Bytes that break lengths and signs.
                let special = [0u8, 0xff, 0x7f, 0x80, b'"', b'\n', b'\t', b':'];
                let i = rng.random_range(0..n);
                out[i] = special[rng.random_range(0..special.len())];
            }
            2 => {
                let i = rng.random_range(0..=n);
                let len = rng.random_range(1..16);
                let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                out.splice(i..i, bytes);
            }
            3 if n > 0 => {
                let i = rng.random_range(0..n);
                let j = (i + rng.random_range(1..64)).min(n);
                out.drain(i..j);
            }
            4 => out.truncate(rng.random_range(0..=n)),
            5 if n > 0 => {
                let i = rng.random_range(0..n);
                let j = (i + rng.random_range(1..64)).min(n);
                let chunk = out[i..j].to_vec();
                let at = rng.random_range(0..=n);
                out.splice(at..at, chunk);
            }
            6 if !other.is_empty() => {
                let cut = rng.random_range(0..=n);
                let from = rng.random_range(0..other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            7 if n >= 8 => {
                // A little-endian length field set to something huge.
                let i = rng.random_range(0..n - 7);
                let v: u64 = [u64::MAX, u32::MAX as u64, 1 << 40, 1 << 31][rng.random_range(0..4)];
                out[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            _ => {}
        }
    }
    out
}

/// What a reader made of one input.
enum Outcome {
    /// Read fine (a mutation that kept the file valid).
    Read,
    /// Refused with an error naming the file.
    Refused,
    /// A panic, or an error that does not name the file.
    Failed(String),
}

/// Runs `reader` on `bytes` written to `dir/name`.
fn check(reader: &Reader, dir: &Path, name: &str, bytes: &[u8]) -> Outcome {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    match catch_unwind(AssertUnwindSafe(|| (reader.read)(&path))) {
        Ok(Ok(())) => Outcome::Read,
        Ok(Err(msg)) if msg.contains(name) => Outcome::Refused,
        Ok(Err(msg)) => Outcome::Failed(format!("the error does not name the file: {msg}")),
        Err(panic) => Outcome::Failed(format!(
            "panic: {}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)")
        )),
    }
}

#[test]
fn readers_never_panic_and_errors_name_the_file() {
    let iters: usize = std::env::var("SHEARS_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let tmp = tempfile::tempdir().unwrap();
    let failures_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    let mut failures = Vec::new();
    for reader in readers(tmp.path()) {
        let dir = tmp.path().join(reader.name);
        std::fs::create_dir_all(&dir).unwrap();
        let seeds: Vec<Vec<u8>> = reader
            .seeds
            .iter()
            .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .collect();
        // The seeds themselves are valid, and each reader is really exercised.
        for (i, s) in seeds.iter().enumerate() {
            let name = format!("seed-{i}{}", reader.ext);
            let path = dir.join(&name);
            std::fs::write(&path, s).unwrap();
            if let Err(e) = (reader.read)(&path) {
                panic!(
                    "{}: seed {} does not load: {e}",
                    reader.name,
                    reader.seeds[i].display()
                );
            }
        }
        // The corpus of inputs that once failed, then fresh mutations.
        let corpus_dir = root().join("tests/fixtures/fuzz").join(reader.name);
        let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&corpus_dir)
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().path())
            .map(|p| {
                let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
                (format!("corpus-{stem}"), std::fs::read(&p).unwrap())
            })
            .collect();
        inputs.sort();
        let mut rng = StdRng::seed_from_u64(0x5eed ^ reader.name.len() as u64);
        for i in 0..iters {
            let a = &seeds[rng.random_range(0..seeds.len())];
            let b = &seeds[rng.random_range(0..seeds.len())];
            inputs.push((format!("mutant-{i}"), mutate(&mut rng, a, b)));
        }
        let (mut read, mut refused) = (0, 0);
        for (name, bytes) in inputs {
            let file = format!("{name}{}", reader.ext);
            let what = match check(&reader, &dir, &file, &bytes) {
                Outcome::Read => {
                    read += 1;
                    continue;
                }
                Outcome::Refused => {
                    refused += 1;
                    continue;
                }
                Outcome::Failed(what) => what,
            };
            {
                std::fs::create_dir_all(&failures_dir).unwrap();
                let kept = failures_dir.join(format!("{}-{file}", reader.name));
                std::fs::write(&kept, &bytes).unwrap();
                failures.push(format!(
                    "{}: {file}: {what}\n    input kept at {} (copy it into tests/fixtures/fuzz/{}/)",
                    reader.name,
                    kept.display(),
                    reader.name
                ));
            }
        }
        eprintln!("{}: {read} inputs read, {refused} refused", reader.name);
        // The mutations reach the reader: most mutants of a structured file are refused.
        assert!(
            refused > 0 || iters == 0,
            "{}: no mutant was refused ({read} read)",
            reader.name
        );
    }
    assert!(
        failures.is_empty(),
        "{} failing inputs:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
