//! Listing the parameters of any burn [`Module`] with dotted path names and layouts.
//!
//! Paths are built exactly as burn-store and `ParamGroup` build them: a stack of the
//! field names (or `Vec`/array indices) pushed in `enter_module` and popped in
//! `exit_module`, joined with dots (`layers.0.fc.weight`). A model may present other,
//! user-facing names (our BERT shows the Hugging Face names) through [`ParamNaming`];
//! masks, selections and reports use the presented names.
//!
//! The input dimension of a weight (where N:M and block groups are formed) is derived
//! from the type of the module that holds it (see [`input_dim_for`]).

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;

use super::selection::ParamInfo;

/// How a model presents its parameters to users.
///
/// Both methods have defaults, so `impl ParamNaming for MyModel {}` is enough; the
/// identity naming is also available as [`BurnPaths`].
pub trait ParamNaming {
    /// The user-facing name of the parameter at the burn path `path` (default: the path).
    fn display_name(&self, path: &str) -> String {
        path.to_string()
    }

    /// The input dimension of the parameter at `path`, held by a module whose type name is
    /// `container` (e.g. `Linear`), with shape `shape`. Default: [`input_dim_for`].
    fn input_dim(&self, path: &str, container: &str, shape: &[usize]) -> Option<usize> {
        let leaf = path.rsplit('.').next().unwrap_or(path);
        input_dim_for(container, leaf, shape)
    }
}

/// The identity naming: user-facing names are burn's dotted paths.
#[derive(Debug, Clone, Copy, Default)]
pub struct BurnPaths;

impl ParamNaming for BurnPaths {}

/// The input dimension of the parameter `leaf` of a module of type `container`, for the
/// module types whose layout is known:
///
/// * burn `Linear`: weight `[d_in, d_out]`, input dim `0`;
/// * `Conv1d`/`Conv2d`/`Conv3d`/`DeformConv2d`: weight `[out, in/groups, k..]`, input dim `1`;
/// * `ConvTranspose1d/2d/3d`: weight `[in, out/groups, k..]`, input dim `0`;
/// * `PrunableLinear` (shears-models): weight in PyTorch layout `[out, in]`, input dim `1`;
/// * `PrunableConv2d` (shears-models): weight in PyTorch layout `[OC, IC, KH, KW]`, input dim `1`.
///
/// Anything else (embeddings, norms, biases, a user's raw parameters) is `None`.
pub fn input_dim_for(container: &str, leaf: &str, shape: &[usize]) -> Option<usize> {
    if leaf != "weight" || shape.len() < 2 {
        return None;
    }
    match container {
        "Linear" | "ConvTranspose1d" | "ConvTranspose2d" | "ConvTranspose3d" => Some(0),
        "Conv1d" | "Conv2d" | "Conv3d" | "DeformConv2d" | "PrunableLinear" | "PrunableConv2d" => {
            Some(1)
        }
        _ => None,
    }
}

/// A float parameter found while walking a module.
#[derive(Debug, Clone)]
pub struct ModuleParam {
    /// Name, shape and layout (with the user-facing name).
    pub info: ParamInfo,
    /// The burn path (dotted field names), which may differ from `info.name`.
    pub path: String,
    /// burn's id of the parameter (not stable across a safetensors reload).
    pub id: ParamId,
}

/// Tracks the dotted path and the type of the innermost struct while walking a module.
#[derive(Debug, Default)]
pub(crate) struct PathStack {
    names: Vec<String>,
    containers: Vec<String>,
}

impl PathStack {
    pub(crate) fn enter(&mut self, name: &str, container_type: &str) {
        self.names.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    pub(crate) fn exit(&mut self) {
        self.names.pop();
        self.containers.pop();
    }

    /// The dotted path of the current position.
    pub(crate) fn path(&self) -> String {
        self.names.join(".")
    }

    /// The type name of the struct holding the current field (`Linear` for
    /// `Struct:Linear`), or `""`.
    pub(crate) fn container(&self) -> &str {
        let raw = self.containers.last().map(String::as_str).unwrap_or("");
        raw.strip_prefix("Struct:")
            .or_else(|| raw.strip_prefix("Enum:"))
            .unwrap_or(raw)
    }
}

struct Lister<'a> {
    stack: PathStack,
    naming: &'a dyn ParamNaming,
    out: Vec<ModuleParam>,
}

impl ModuleVisitor for Lister<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.stack.path();
        let shape = param.lazy_shape().to_vec();
        let input_dim = self.naming.input_dim(&path, self.stack.container(), &shape);
        let info = ParamInfo {
            name: self.naming.display_name(&path),
            shape,
            input_dim,
            is_float: true,
        };
        self.out.push(ModuleParam {
            info,
            path,
            id: param.id,
        });
    }
}

/// Every float parameter of `module`, in visit order, with burn paths, presented names,
/// shapes and input dimensions.
pub fn module_params<M: Module>(module: &M, naming: &dyn ParamNaming) -> Vec<ModuleParam> {
    let mut lister = Lister {
        stack: PathStack::default(),
        naming,
        out: Vec::new(),
    };
    module.visit(&mut lister);
    lister.out
}

/// The [`ParamInfo`] of every float parameter of `module` (what a
/// [`ParamSelector`](super::selection::ParamSelector) selects from).
pub fn list_params<M: Module>(module: &M, naming: &dyn ParamNaming) -> Vec<ParamInfo> {
    module_params(module, naming)
        .into_iter()
        .map(|p| p.info)
        .collect()
}

/// Hugging Face names for shears' BERT models: the burn path with the one renamed field
/// (`self_attention`, since `self` is a Rust keyword) mapped back to HF's `self`, so
/// recipes, masks and reports only ever show state-dict keys.
#[derive(Debug, Clone, Copy, Default)]
pub struct HfNames;

impl ParamNaming for HfNames {
    fn display_name(&self, path: &str) -> String {
        shears_models::bert::names::to_hf(path)
    }
}
