//! [`ResNetFamily`]: CIFAR ResNets (20/32/44/56/110) and torchvision ResNets (18/34/50),
//! from safetensors or PyTorch files under torch's state-dict names, or freshly initialised.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use shears_models::batch_norm::{BatchNorm2dConfig, BnMode};
use shears_models::resnet::{ClassifierInit, ResNet, ResNetConfig, ResNetError, save_safetensors};
use shears_models::sparseprop::select::Execution;
use shears_models::weights::Checkpoint;

use super::{ArchError, Architecture, SparseLayer, load_burn_record, resolve_path, switch_layer};
use crate::data::image_batch::load_image_splits;
use crate::recipe::Recipe;
use crate::sparsity::params::BurnPaths;
use crate::train::engine::{EngineError, ModelAt, TaskVisitor};
use crate::train::task::image::{ImageClassificationTask, ImageClassifier};
use crate::train::task::{TaskError, config_err};
use shears_models::weights::{BURN_RECORD_FILE, is_burn_record};

impl ImageClassifier for ResNet {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }
}

/// A ResNet of one architecture with one class count; parameter names are torch's (which
/// are also the burn paths of the modules).
#[derive(Debug, Clone)]
pub struct ResNetFamily {
    config: ResNetConfig,
    source: Option<PathBuf>,
}

/// The name of the exported config file.
const CONFIG_FILE: &str = "config.json";
/// The name of the exported weights file.
const WEIGHTS_FILE: &str = "model.safetensors";

fn resnet_err(what: impl Into<String>) -> impl Fn(ResNetError) -> ArchError {
    let what = what.into();
    move |source| ArchError::ResNet {
        what: what.clone(),
        source: Box::new(source),
    }
}

/// The weights file of `spec`: the file itself, or `model.safetensors` in a directory.
fn weights_file(spec: &Path) -> PathBuf {
    if spec.is_dir() {
        let record = spec.join(BURN_RECORD_FILE);
        if !spec.join(WEIGHTS_FILE).is_file() && record.is_file() {
            return record;
        }
        spec.join(WEIGHTS_FILE)
    } else {
        spec.to_path_buf()
    }
}

impl ResNetFamily {
    /// The family of architecture `name` (`resnet20`, `resnet56-b`, `resnet18`, ...) with
    /// `num_classes` outputs, loaded from `source` (a weights file or a model directory)
    /// or freshly initialised.
    pub fn new(name: &str, num_classes: usize, source: Option<PathBuf>) -> Result<Self, ArchError> {
        let config = ResNetConfig::parse(name)
            .map_err(|e| ArchError::UnknownArchitecture(e.to_string()))?
            .with_num_classes(num_classes);
        Ok(Self { config, source })
    }

    /// Checks that a model directory's `config.json` (when there is one) names this
    /// architecture and class count.
    fn check_dir(&self, spec: &Path) -> Result<(), ArchError> {
        let file = spec.join(CONFIG_FILE);
        if !spec.is_dir() || !file.is_file() {
            return Ok(());
        }
        let bad = |message: String| ArchError::Config {
            field: "architecture",
            message,
        };
        let text = std::fs::read_to_string(&file).map_err(|source| ArchError::Io {
            path: file.clone(),
            source,
        })?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| bad(format!("{}: not JSON: {e}", file.display())))?;
        let arch = v.get("architecture").and_then(|a| a.as_str()).unwrap_or("");
        let ours = self.config.arch.name();
        if arch != ours {
            return Err(bad(format!(
                "{} is a `{arch}`, the recipe says `{ours}`",
                file.display()
            )));
        }
        Ok(())
    }
}

impl ResNetFamily {
    /// The student from `model.source` (a fresh initialisation without one); the caller
    /// holds the device generator.
    fn load_student_unguarded(&self, device: &Device) -> Result<ResNet, ArchError> {
        let Some(source) = &self.source else {
            return Ok(self.config.init(device));
        };
        self.check_dir(source)?;
        let file = weights_file(source);
        let what = format!("model.source {}", file.display());
        let (model, report) = ResNet::load_file(
            &self.config,
            &file,
            ClassifierInit::FreshIfShapeDiffers,
            device,
        )
        .map_err(resnet_err(&what))?;
        let fresh: Vec<&String> = report
            .skipped_buffers
            .iter()
            .filter(|k| !k.ends_with("num_batches_tracked"))
            .collect();
        if !fresh.is_empty() {
            eprintln!(
                "warning: {what}: the classifier has another class count; it is initialised afresh ({})",
                fresh
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(model)
    }
}

impl Architecture for ResNetFamily {
    type Model = ResNet;
    type Naming = BurnPaths;

    fn name(&self) -> String {
        self.config.arch.name()
    }

    fn naming(&self) -> BurnPaths {
        BurnPaths
    }

    fn load_student(&self, device: &Device) -> Result<ResNet, ArchError> {
        let _rng = crate::rng::exclusive();
        let model = self.load_student_unguarded(device)?;
        crate::rng::materialize(&model);
        Ok(model)
    }

    fn load(&self, spec: &str, device: &Device) -> Result<ResNet, ArchError> {
        let spec = Path::new(spec);
        self.check_dir(spec)?;
        let file = weights_file(spec);
        let _rng = crate::rng::exclusive();
        let model = if is_burn_record(&file) {
            load_burn_record(ResNet::new(&self.config, device), &file)?
        } else {
            ResNet::load_file(&self.config, &file, ClassifierInit::Load, device)
                .map(|(m, _)| m)
                .map_err(resnet_err(file.display().to_string()))?
        };
        crate::rng::materialize(&model);
        Ok(model)
    }

    fn save_weights(&self, model: &ResNet, file: &Path) -> Result<(), ArchError> {
        save_safetensors(model, file)
            .map(|_| ())
            .map_err(|e| resnet_err("checkpoint")(e.into()))
    }

    fn load_weights(&self, model: ResNet, file: &Path) -> Result<ResNet, ArchError> {
        let what = format!("checkpoint {}", file.display());
        let ckpt = Checkpoint::read(file).map_err(|e| resnet_err(&what)(e.into()))?;
        model
            .load_checkpoint(&ckpt, ClassifierInit::Load)
            .map(|(m, _)| m)
            .map_err(resnet_err(&what))
    }

    fn export(&self, model: &ResNet, dir: &Path) -> Result<(), ArchError> {
        std::fs::create_dir_all(dir).map_err(|source| ArchError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        save_safetensors(&model.valid(), dir.join(WEIGHTS_FILE))
            .map_err(|e| resnet_err("export")(e.into()))?;
        let config = serde_json::json!({
            "architecture": self.config.arch.name(),
            "num_classes": model.num_classes(),
            "library": "shears",
            "weights": WEIGHTS_FILE,
            "names": "torch state_dict",
        });
        let file = dir.join(CONFIG_FILE);
        std::fs::write(
            &file,
            serde_json::to_vec_pretty(&config).expect("a JSON value serialises"),
        )
        .map_err(|source| ArchError::Io { path: file, source })
    }

    fn begin_recalibration(&self, model: &mut ResNet, momentum: Option<f64>) -> bool {
        // Switching to `Recalibrate` resets the statistics (and averages plainly).
        model.set_bn_mode(BnMode::Recalibrate);
        if let Some(m) = momentum {
            for (_, bn) in model.bn_layers_mut() {
                bn.momentum = m;
                bn.set_mode(BnMode::Train);
            }
        }
        true
    }

    fn end_recalibration(&self, model: &mut ResNet) {
        for (_, bn) in model.bn_layers_mut() {
            bn.momentum = BatchNorm2dConfig::new(bn.num_features()).momentum;
        }
        model.set_bn_mode(BnMode::Auto);
    }

    fn norm_in_eval(model: &mut ResNet) {
        model.set_bn_mode(BnMode::Eval);
    }

    fn freeze_batch_stats(model: &mut ResNet, frozen: bool) {
        model.set_bn_mode(if frozen {
            BnMode::TrainFrozenStats
        } else {
            BnMode::Auto
        });
    }

    fn set_sparse(
        &self,
        model: &mut ResNet,
        threshold: f64,
        execution: Execution,
    ) -> Vec<SparseLayer> {
        let mut out = Vec::new();
        for (name, mut layer) in model.prunable_layers_mut() {
            let name = format!("{name}.weight");
            out.extend(switch_layer(name, &mut layer, threshold, execution));
        }
        out
    }
}

/// Builds the ResNet family and the image task of `recipe` and hands them to `visitor`.
pub(crate) fn dispatch_image<V: TaskVisitor>(
    recipe: &Recipe,
    base: &Path,
    at: ModelAt<'_>,
    eval_batch: usize,
    visitor: V,
) -> Result<V::Output, EngineError> {
    let model_sec = recipe
        .model
        .as_ref()
        .ok_or(EngineError::MissingSection("model"))?;
    let mut data = recipe
        .data
        .clone()
        .ok_or(EngineError::MissingSection("data"))?;
    let arch_name = model_sec.architecture.as_deref().ok_or_else(|| {
        EngineError::Model(ArchError::Config {
            field: "architecture",
            message: "image tasks need the model family, e.g. `architecture: resnet20`".into(),
        })
    })?;
    let resolve = |p: &str| resolve_path(base, p);
    data.train = data.train.as_deref().map(resolve);
    data.dev = data.dev.map(|d| d.map_paths(resolve));
    let training = recipe.training.as_ref();
    let splits =
        load_image_splits(&data, training.map_or(42, |t| t.seed)).map_err(TaskError::from)?;
    let num_classes = model_sec
        .num_labels
        .unwrap_or_else(|| splits.train.classes.len().max(1));
    let task = ImageClassificationTask::<ResNet>::new(
        splits.train.examples,
        splits.dev.examples,
        splits.train_batches,
        training.map_or(0.0, |t| t.label_smoothing),
        eval_batch,
    )?;
    if task.num_classes() > num_classes {
        return Err(EngineError::Task(config_err(
            "train",
            format!(
                "the data have {} classes, the model {num_classes} (set model.num_labels)",
                task.num_classes()
            ),
        )));
    }
    let source = match at {
        ModelAt::Recipe => model_sec
            .source
            .as_deref()
            .map(|s| PathBuf::from(resolve(s))),
        ModelAt::Export(p) => Some(p.to_path_buf()),
    };
    let arch = ResNetFamily::new(arch_name, num_classes, source)?;
    visitor.visit(arch, task)
}
