//! Keeping pruned weights at exactly `0.0` through training.
//!
//! # Mechanism: hard masking at the optimizer, not a reparameterization
//!
//! The stored weight itself is zero at every pruned coordinate: [`apply_masks`] zeroes
//! it when masks are set, and [`MaskedOptimizer`] keeps it zero through every step:
//!
//! 1. the gradient of every masked parameter is multiplied by its mask;
//! 2. optional global-norm clipping then sees only the masked gradients (the norm of
//!    all parameters together, PyTorch's `clip_grad_norm_` formula);
//! 3. optional weight decay by parameter group ([`WeightDecay`], set with
//!    [`MaskedOptimizer::with_weight_decay`]; the wrapped optimizer is then built with
//!    weight decay 0): L2 (`grad += wd·θ`, masked again, as PyTorch's SGD and Adam) or
//!    decoupled (`θ ← θ·(1 − lr·wd)` before the step, as PyTorch's AdamW), skipping the
//!    excluded parameters (by default every parameter with at most one dimension);
//! 4. the wrapped per-tensor burn [`Optimizer`] (SGD with momentum and weight decay,
//!    Adam, AdamW, or any other) takes its step;
//! 5. the updated weight is multiplied by the mask again, so nothing the optimizer does
//!    (momentum, L2 or decoupled weight decay, Adam's `eps`) can leave a non-zero there;
//! 6. whenever the mask of a parameter changes (a new mask generation), the optimizer
//!    state of that parameter — every state tensor of the parameter's shape: momentum
//!    buffers, first and second moments — is zeroed at the pruned coordinates. With the
//!    weight, its masked gradient and its moments all zero, SGD, Adam and AdamW leave a
//!    pruned coordinate at zero on their own, and if a later mask relaxes it, it restarts
//!    from zero with fresh moments instead of being revived by stale ones.
//!
//! Because the stored value *is* the effective value, the forward pass never sees an
//! unmasked weight, and checkpoints, exports and sparse kernels (which read the stored
//! weight to build CSR structures) see the zeros with no extra step.
//!
//! burn 0.22's `Reparameterization` (`weight = base ⊙ mask`) was considered and not
//! used: it adds a mask parameter under the weight (`weight.<name>.mask` keys in every
//! record, a changed `num_params`, an extra float parameter the optimizer would train
//! unless frozen), so loading and exporting would no longer see the model's own names,
//! which users of other toolkits complained about; and it does not stop momentum or
//! weight decay from moving the hidden base at pruned coordinates, which revives weights
//! when a mask is relaxed — so an optimizer wrapper is needed anyway. Masks are keyed by
//! parameter name, so they survive a safetensors round trip (`ParamId`s do not).

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsParams, Optimizer, StateSink, StateSource};
use burn::tensor::{Device, Tensor, TensorData};
use shears_models::reduce::sum_of_squares;

use super::mask::{Mask, MaskError, MaskSet, read_values};
use super::params::{BurnPaths, ParamNaming, PathStack, list_params};
use super::selection::{ParamInfo, ParamSelector, SelectionError};
use crate::profile::{StepPhase, span};
use crate::recipe::sections::{OptimizerKind, OptimizerSection};

/// Errors of mask enforcement.
#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    /// A mask does not fit the model, or values could not be read.
    #[error(transparent)]
    Mask(#[from] MaskError),
    /// A pruned coordinate holds a non-zero value.
    #[error(
        "parameter `{param}`: pruned element {index} holds {value} instead of 0 ({count} such elements)"
    )]
    NotZero {
        /// The parameter.
        param: String,
        /// Flat index of the first offending element.
        index: usize,
        /// Its value.
        value: f32,
        /// How many pruned elements are non-zero.
        count: usize,
    },
}

/// Autodiff flags of a parameter (gradient requirement, checkpointing, distribution),
/// captured before a parameter's value is replaced and restored on the new value.
pub struct ParamFlags {
    autodiff: bool,
    require_grad: bool,
    distributed: bool,
    checkpointing: Option<burn::tensor::GradientCheckpointingStrategy>,
}

impl ParamFlags {
    /// The flags of `t` (none for a tensor off the autodiff device).
    pub fn capture<const D: usize>(t: &Tensor<D>) -> Self {
        if !t.is_autodiff() {
            // The autodiff queries panic on plain tensors.
            return Self {
                autodiff: false,
                require_grad: false,
                distributed: false,
                checkpointing: None,
            };
        }
        Self {
            autodiff: true,
            require_grad: t.is_require_grad(),
            distributed: t.is_distributed(),
            checkpointing: t.gradient_checkpointing_strategy(),
        }
    }

    /// `inner` (a value off the autodiff graph) as parameter `id` with the captured flags.
    pub fn restore<const D: usize>(self, inner: Tensor<D>, id: ParamId) -> Tensor<D> {
        if !self.autodiff {
            return inner;
        }
        let mut t = Tensor::from_inner(inner);
        if let Some(strategy) = self.checkpointing {
            t = t.with_gradient_checkpointing_strategy(strategy);
        }
        if self.require_grad {
            t = t.require_grad();
        }
        if self.distributed {
            t = t.set_distributed(id);
        }
        t
    }
}

/// Device copies of masks as `1.0`/`0.0` float tensors, rebuilt when a mask changes.
#[derive(Default)]
struct MaskCache {
    tensors: HashMap<String, (u64, Device, Tensor<1>)>,
}

impl MaskCache {
    fn get<const D: usize>(&mut self, name: &str, mask: &Mask, like: &Tensor<D>) -> Tensor<D> {
        let device = like.device();
        let fresh = match self.tensors.get(name) {
            Some((generation, dev, _)) => *generation != mask.generation() || *dev != device,
            None => true,
        };
        if fresh {
            let t = Tensor::<1>::from_data(TensorData::new(mask.to_f32(), [mask.numel()]), &device);
            self.tensors
                .insert(name.to_string(), (mask.generation(), device, t));
        }
        let flat = self.tensors[name].2.clone();
        flat.reshape(like.dims())
    }
}

fn check_shape<const D: usize>(name: &str, mask: &Mask, t: &Tensor<D>) -> Result<(), MaskError> {
    let dims = t.dims();
    if mask.shape() != dims.as_slice() {
        return Err(MaskError::ShapeMismatch {
            param: name.to_string(),
            mask: mask.shape().to_vec(),
            param_shape: dims.to_vec(),
        });
    }
    Ok(())
}

struct Applier<'a> {
    stack: PathStack,
    naming: &'a dyn ParamNaming,
    masks: &'a MaskSet,
    cache: MaskCache,
    error: Option<MaskError>,
}

impl ModuleMapper for Applier<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = self.naming.display_name(&self.stack.path());
        let Some(mask) = self.masks.get(&name) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        if let Err(e) = check_shape(&name, mask, &tensor) {
            self.error.get_or_insert(e);
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let flags = ParamFlags::capture(&tensor);
        let m = self.cache.get(&name, mask, &tensor);
        let masked = flags.restore(tensor.inner() * m.inner(), id);
        Param::from_mapped_value(id, masked, mapper)
    }
}

/// Zeroes the pruned coordinates of every masked parameter of `module` (weights are
/// stored sparse). Every mask must name a parameter of `module` of the same shape.
pub fn apply_masks<M: Module>(
    module: M,
    masks: &MaskSet,
    naming: &dyn ParamNaming,
) -> Result<M, EnforceError> {
    masks.check_against(&list_params(&module, naming))?;
    let mut applier = Applier {
        stack: PathStack::default(),
        naming,
        masks,
        cache: MaskCache::default(),
        error: None,
    };
    let module = module.map(&mut applier);
    match applier.error {
        Some(e) => Err(e.into()),
        None => Ok(module),
    }
}

/// Checks that every pruned coordinate of `module` holds exactly `0.0`.
pub fn verify_masked<M: Module>(
    module: &M,
    masks: &MaskSet,
    naming: &dyn ParamNaming,
) -> Result<(), EnforceError> {
    let params = list_params(module, naming);
    masks.check_against(&params)?;
    let selected: Vec<_> = params
        .into_iter()
        .filter(|p| masks.get(&p.name).is_some())
        .collect();
    for p in read_values(module, naming, &selected)? {
        let mask = masks.get(&p.info.name).expect("filtered above");
        let bad: Vec<usize> = mask
            .keep()
            .iter()
            .zip(&p.values)
            .enumerate()
            .filter(|(_, (k, v))| !**k && **v != 0.0)
            .map(|(i, _)| i)
            .collect();
        if let Some(&index) = bad.first() {
            return Err(EnforceError::NotZero {
                param: p.info.name.clone(),
                index,
                value: p.values[index],
                count: bad.len(),
            });
        }
    }
    Ok(())
}

/// Masks the gradients of every masked parameter; returns the sum of squares of all
/// gradients afterwards (masked or not) when `norm` is set.
struct GradMasker<'a> {
    stack: PathStack,
    naming: &'a dyn ParamNaming,
    masks: &'a MaskSet,
    cache: &'a mut MaskCache,
    grads: &'a mut GradientsParams,
    squares: Option<Vec<Tensor<1>>>,
}

impl ModuleVisitor for GradMasker<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some(mut grad) = self.grads.remove::<D>(param.id) else {
            return;
        };
        let name = self.naming.display_name(&self.stack.path());
        if let Some(mask) = self.masks.get(&name)
            && mask.shape() == grad.dims().as_slice()
        {
            grad = grad.clone() * self.cache.get(&name, mask, &grad);
        }
        if let Some(squares) = self.squares.as_mut() {
            squares.push(sum_of_squares(grad.clone()));
        }
        self.grads.register::<D>(param.id, grad);
    }
}

/// Multiplies the gradient of every masked parameter by its mask, for training loops
/// that use burn's `ModuleOptimizer` directly. Prefer [`MaskedOptimizer`], which also
/// re-masks weights after the step and resets moments at pruned coordinates.
pub fn mask_gradients<M: Module>(
    module: &M,
    mut grads: GradientsParams,
    masks: &MaskSet,
    naming: &dyn ParamNaming,
) -> GradientsParams {
    let mut cache = MaskCache::default();
    let mut masker = GradMasker {
        stack: PathStack::default(),
        naming,
        masks,
        cache: &mut cache,
        grads: &mut grads,
        squares: None,
    };
    module.visit(&mut masker);
    grads
}

/// The `format` header value of optimizer state files.
pub const OPTIM_STATE_FORMAT: &str = "shears-optimizer-state";

/// An optimizer state file that cannot be read or does not fit the model.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct OptimStateError {
    /// The file (or the name given for bytes).
    pub source_name: String,
    /// What is wrong.
    pub message: String,
}

type Scalar = burn::store::burn_pack::Scalar;

fn encode_scalar(s: Scalar) -> String {
    match s {
        Scalar::Int(v) => format!("i:{v}"),
        Scalar::UInt(v) => format!("u:{v}"),
        Scalar::Float(v) => format!("f:{v:e}"),
        Scalar::Bool(v) => format!("b:{v}"),
    }
}

fn decode_scalar(text: &str) -> Option<Scalar> {
    let (kind, value) = text.split_once(':')?;
    match kind {
        "i" => value.parse().ok().map(Scalar::Int),
        "u" => value.parse().ok().map(Scalar::UInt),
        "f" => value.parse().ok().map(Scalar::Float),
        "b" => value.parse().ok().map(Scalar::Bool),
        _ => None,
    }
}

struct F32View {
    shape: Vec<usize>,
    values: Vec<f32>,
}

impl safetensors::View for F32View {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Owned(self.values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.values.len() * 4
    }
}

/// The stored leaves of one parameter's state.
#[derive(Default)]
struct FlatState {
    tensors: Vec<(String, TensorData)>,
    scalars: BTreeMap<String, Scalar>,
}

/// Rebuilds each parameter's state with its rank and device.
struct StateLoader<'a, O: Optimizer> {
    stack: PathStack,
    naming: &'a dyn ParamNaming,
    flat: &'a mut BTreeMap<String, FlatState>,
    states: HashMap<String, Slot>,
    failed: Vec<String>,
    _optim: std::marker::PhantomData<O>,
}

impl<O: Optimizer> ModuleVisitor for StateLoader<'_, O> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let name = self.naming.display_name(&self.stack.path());
        let Some(flat) = self.flat.remove(&name) else {
            return;
        };
        // A state tensor of the parameter's rank is shaped like it (moments, velocities): one
        // that is not comes from another model and would be read out of bounds by the step.
        let dims = param.lazy_shape();
        if flat
            .tensors
            .iter()
            .any(|(_, data)| data.shape().len() == D && data.shape().as_slice() != dims.as_slice())
        {
            self.failed.push(name);
            return;
        }
        let mut source = StateSource::new(flat.scalars);
        for (leaf, data) in flat.tensors {
            source.insert_tensor(leaf, data);
        }
        let device = param.lazy_device().inner();
        match <O::State<D> as burn::optim::RecordState>::state_unflatten("s", &mut source, &device)
        {
            Some(state) => {
                self.states.insert(
                    name,
                    Slot {
                        state: Box::new(state),
                        generation: None,
                        flatten: flatten_slot::<O::State<D>>,
                    },
                );
            }
            None => self.failed.push(name),
        }
    }
}

/// Optimizer state of one parameter, with the mask generation it was last cleaned for.
struct Slot {
    state: Box<dyn Any + Send + Sync>,
    generation: Option<u64>,
    /// Flattens `state` (monomorphised for its concrete type when the slot is made).
    flatten: fn(&(dyn Any + Send + Sync), &mut StateSink),
}

fn flatten_slot<S: burn::optim::RecordState>(state: &(dyn Any + Send + Sync), out: &mut StateSink) {
    state
        .downcast_ref::<S>()
        .expect("a slot's flatten function matches its state type")
        .state_flatten("s", out);
}

/// Zeroes, in every state tensor shaped like the parameter, the pruned coordinates.
fn clean_state<S: burn::optim::RecordState>(state: S, mask: &Mask, device: &Device) -> S {
    let mut sink = StateSink::default();
    state.state_flatten("s", &mut sink);
    let mut source = StateSource::new(sink.scalars.into_iter().collect::<BTreeMap<_, _>>());
    for (name, data) in sink.tensors {
        let data = if data.shape().as_slice() == mask.shape() {
            let dtype = data.dtype();
            let mut values: Vec<f32> = data
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("converted to f32 above");
            for (v, keep) in values.iter_mut().zip(mask.keep()) {
                if !keep {
                    *v = 0.0;
                }
            }
            TensorData::new(values, mask.shape().to_vec()).convert_dtype(dtype)
        } else {
            data
        };
        source.insert_tensor(name, data);
    }
    S::state_unflatten("s", &mut source, device)
        .expect("a state rebuilt from its own flattening is complete")
}

/// The `no_decay` keyword for every parameter with at most one dimension (biases,
/// LayerNorm/BatchNorm weights and biases, scalars).
pub const NO_DECAY_1D: &str = "__1D__";

/// How weight decay enters the update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecayKind {
    /// L2 regularisation: `grad ← grad + wd·θ` after masking and clipping, before the
    /// wrapped optimizer's step (so before SGD's momentum and Adam's moments), as PyTorch's
    /// `SGD` and `Adam` with `weight_decay`.
    L2,
    /// Decoupled: `θ ← θ·(1 − lr·wd)` just before the wrapped optimizer's step, as
    /// PyTorch's `AdamW`.
    Decoupled,
}

impl DecayKind {
    /// The kind PyTorch uses for an optimizer: decoupled for AdamW, L2 for Adam and SGD.
    pub fn for_optimizer(kind: OptimizerKind) -> Self {
        match kind {
            OptimizerKind::Adamw => DecayKind::Decoupled,
            OptimizerKind::Adam | OptimizerKind::Sgd | OptimizerKind::Mfac => DecayKind::L2,
        }
    }
}

/// A rule on `(name, shape)` that says whether a parameter is excluded from weight decay.
pub type NoDecayFn = Arc<dyn Fn(&str, &[usize]) -> bool + Send + Sync>;

/// Which parameters get no weight decay.
#[derive(Clone)]
pub enum NoDecay {
    /// The parameters matched by patterns (exact names and `re:` patterns, as in
    /// [`selection`](super::selection)), plus, when `one_dimensional` is set, every
    /// parameter with at most one dimension.
    Rules {
        /// Exclude every parameter of at most one dimension (`__1D__`).
        one_dimensional: bool,
        /// Exclude the parameters these patterns select.
        patterns: ParamSelector,
    },
    /// The parameters for which the function of `(name, shape)` returns true.
    Predicate(NoDecayFn),
}

impl fmt::Debug for NoDecay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoDecay::Rules {
                one_dimensional,
                patterns,
            } => f
                .debug_struct("Rules")
                .field("one_dimensional", one_dimensional)
                .field("patterns", patterns)
                .finish(),
            NoDecay::Predicate(_) => f.write_str("Predicate(..)"),
        }
    }
}

impl NoDecay {
    /// Hugging Face's rule: no decay for parameters with at most one dimension.
    pub fn one_dimensional() -> Self {
        Self::Rules {
            one_dimensional: true,
            patterns: ParamSelector::new(&[], &[]).expect("no patterns always compile"),
        }
    }

    /// Every parameter is decayed.
    pub fn nothing() -> Self {
        Self::Rules {
            one_dimensional: false,
            patterns: ParamSelector::new(&[], &[]).expect("no patterns always compile"),
        }
    }

    /// From a recipe's `no_decay` list: exact names, `re:` patterns and [`NO_DECAY_1D`].
    pub fn from_patterns(patterns: &[String]) -> Result<Self, SelectionError> {
        let (one_d, rest): (Vec<&String>, Vec<&String>) =
            patterns.iter().partition(|p| p.as_str() == NO_DECAY_1D);
        let rest: Vec<String> = rest.into_iter().cloned().collect();
        Ok(Self::Rules {
            one_dimensional: !one_d.is_empty(),
            patterns: ParamSelector::new(&rest, &[])?,
        })
    }

    /// Excludes the parameters for which `f(name, shape)` is true.
    pub fn predicate(f: impl Fn(&str, &[usize]) -> bool + Send + Sync + 'static) -> Self {
        Self::Predicate(Arc::new(f))
    }

    /// Whether the parameter `name` of shape `shape` is excluded from decay.
    pub fn excludes(&self, name: &str, shape: &[usize]) -> bool {
        match self {
            NoDecay::Rules {
                one_dimensional,
                patterns,
            } => {
                (*one_dimensional && shape.len() <= 1)
                    || patterns.is_selected(&ParamInfo::new(name, shape.to_vec()))
            }
            NoDecay::Predicate(f) => f(name, shape),
        }
    }
}

/// Weight decay applied by [`MaskedOptimizer`] itself, by parameter group: every
/// parameter except the excluded ones is decayed with `value`; the wrapped optimizer must
/// be built with weight decay 0. This is PyTorch's two parameter groups
/// `[{'params': decay, 'weight_decay': wd}, {'params': no_decay, 'weight_decay': 0}]`.
#[derive(Debug, Clone)]
pub struct WeightDecay {
    /// L2 (SGD, Adam) or decoupled (AdamW).
    pub kind: DecayKind,
    /// The decay coefficient `wd` (finite, >= 0).
    pub value: f64,
    /// The parameters that get no decay.
    pub exclude: NoDecay,
}

/// A weight-decay setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WeightDecayError {
    /// `optimizer.weight_decay` is negative or not finite.
    #[error("optimizer.weight_decay = {0} is not a valid weight decay (finite, >= 0)")]
    Value(f64),
    /// A pattern of `optimizer.no_decay` does not compile.
    #[error("optimizer.no_decay: {0}")]
    Pattern(#[from] SelectionError),
}

impl WeightDecay {
    /// Decay of kind `kind` and coefficient `value`, excluding the parameters with at most
    /// one dimension (Hugging Face's rule; change it with [`with_exclude`](Self::with_exclude)).
    pub fn new(kind: DecayKind, value: f64) -> Result<Self, WeightDecayError> {
        if !(value.is_finite() && value >= 0.0) {
            return Err(WeightDecayError::Value(value));
        }
        Ok(Self {
            kind,
            value,
            exclude: NoDecay::one_dimensional(),
        })
    }

    /// The same decay with another exclusion rule.
    pub fn with_exclude(mut self, exclude: NoDecay) -> Self {
        self.exclude = exclude;
        self
    }

    /// The decay an `optimizer:` section asks for (`weight_decay`, `no_decay`, the kind from
    /// `name`), or `None` when `weight_decay` is 0.
    pub fn from_optimizer_section(o: &OptimizerSection) -> Result<Option<Self>, WeightDecayError> {
        if o.weight_decay == 0.0 {
            return Ok(None);
        }
        Ok(Some(
            Self::new(DecayKind::for_optimizer(o.name), o.weight_decay)?
                .with_exclude(NoDecay::from_patterns(&o.no_decay)?),
        ))
    }

    /// Whether the parameter `name` of shape `shape` is decayed.
    pub fn applies_to(&self, name: &str, shape: &[usize]) -> bool {
        self.value != 0.0 && !self.exclude.excludes(name, shape)
    }
}

/// The default of `optimizer.no_decay`: `[__1D__]`.
pub fn default_no_decay() -> Vec<String> {
    vec![NO_DECAY_1D.to_string()]
}

/// One `no_decay` entry, checked when read (a bad regex is an error at its position).
struct NoDecayPattern(String);

impl<'de> serde::Deserialize<'de> for NoDecayPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s != NO_DECAY_1D {
            ParamSelector::new(std::slice::from_ref(&s), &[]).map_err(serde::de::Error::custom)?;
        }
        Ok(NoDecayPattern(s))
    }
}

/// Deserialises `optimizer.no_decay`, checking every pattern.
pub fn deserialize_no_decay<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<String>, D::Error> {
    use serde::Deserialize;
    Ok(Vec::<NoDecayPattern>::deserialize(d)?
        .into_iter()
        .map(|p| p.0)
        .collect())
}

/// A burn per-tensor [`Optimizer`] (SGD, Adam, AdamW, ...) that enforces masks; see the
/// module documentation for the mechanism.
///
/// ```text
/// let mut optim = MaskedOptimizer::new(AdamWConfig::new().build());
/// model = optim.set_masks(model, masks)?;           // zeroes pruned weights
/// let grads = GradientsParams::from_grads(loss.backward(), &model);
/// model = optim.step(lr, model, grads);             // pruned weights stay exactly 0
/// ```
///
/// The optimizer state is keyed by parameter name. Unlike `ModuleOptimizer` it uses one
/// optimizer and one learning rate for all parameters.
pub struct MaskedOptimizer<O: Optimizer> {
    optim: O,
    naming: Box<dyn ParamNaming + Send + Sync>,
    masks: MaskSet,
    max_grad_norm: Option<f64>,
    last_grad_norm: Option<f64>,
    weight_decay: Option<WeightDecay>,
    states: HashMap<String, Slot>,
    cache: MaskCache,
}

impl<O: Optimizer> MaskedOptimizer<O> {
    /// Wraps `optim` (e.g. `SgdConfig::new().build()`), with no masks yet and parameter
    /// names equal to burn paths.
    pub fn new(optim: O) -> Self {
        Self {
            optim,
            naming: Box::new(BurnPaths),
            masks: MaskSet::new(),
            max_grad_norm: None,
            last_grad_norm: None,
            weight_decay: None,
            states: HashMap::new(),
            cache: MaskCache::default(),
        }
    }

    /// Uses `naming` to turn burn paths into the names masks are keyed by.
    pub fn with_naming(mut self, naming: impl ParamNaming + Send + Sync + 'static) -> Self {
        self.naming = Box::new(naming);
        self
    }

    /// Clips the global gradient norm (all parameters together, after masking) to
    /// `max_norm` before each step.
    pub fn with_max_grad_norm(mut self, max_norm: f64) -> Self {
        self.max_grad_norm = Some(max_norm);
        self
    }

    /// Applies `decay` by parameter group at every step (see [`WeightDecay`]); build the
    /// wrapped optimizer with weight decay 0, or parameters are decayed twice.
    pub fn with_weight_decay(mut self, decay: WeightDecay) -> Self {
        self.weight_decay = Some(decay);
        self
    }

    /// The weight decay applied by this wrapper, if any.
    pub fn weight_decay(&self) -> Option<&WeightDecay> {
        self.weight_decay.as_ref()
    }

    /// The naming that keys masks and optimizer state.
    pub fn naming(&self) -> &dyn ParamNaming {
        self.naming.as_ref()
    }

    /// The masks being enforced.
    pub fn masks(&self) -> &MaskSet {
        &self.masks
    }

    /// Replaces the masks and zeroes the pruned weights of `module`. Moments at newly
    /// pruned coordinates are zeroed at the next step.
    pub fn set_masks<M: Module>(&mut self, module: M, masks: MaskSet) -> Result<M, EnforceError> {
        let module = apply_masks(module, &masks, self.naming.as_ref())?;
        self.masks = masks;
        Ok(module)
    }

    /// Stops enforcing masks (SparseML's `leave_enabled: false` after the end).
    pub fn clear_masks(&mut self) {
        self.masks = MaskSet::new();
    }

    /// The optimizer state of every parameter (momentum buffers, moments, step counts),
    /// keyed by parameter name, as safetensors bytes: tensor `NAME/LEAF` (as `F32`) and
    /// scalar header entries `NAME/LEAF` (`i:`, `u:`, `f:` or `b:` followed by the value).
    /// Masks are saved separately ([`save_masks`](super::checkpoint::save_masks)).
    pub fn state_to_bytes(&self) -> Vec<u8> {
        let mut views = Vec::new();
        let mut meta = HashMap::from([("format".to_string(), OPTIM_STATE_FORMAT.to_string())]);
        let mut names: Vec<&String> = self.states.keys().collect();
        names.sort();
        for name in names {
            let slot = &self.states[name];
            let mut sink = StateSink::default();
            (slot.flatten)(slot.state.as_ref(), &mut sink);
            for (leaf, data) in sink.tensors {
                let shape = data.shape().to_vec();
                let values = data
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .expect("converted to f32 above");
                views.push((format!("{name}/{leaf}"), F32View { shape, values }));
            }
            for (leaf, scalar) in sink.scalars {
                meta.insert(format!("{name}/{leaf}"), encode_scalar(scalar));
            }
        }
        safetensors::serialize(views, Some(meta)).expect("f32 views always serialise")
    }

    /// Restores the state written by [`state_to_bytes`](Self::state_to_bytes) for the
    /// parameters of `module` (matched by name, so a freshly initialised model works).
    /// `source_name` names the origin in errors. Every stored state must belong to a
    /// parameter of `module` and rebuild for this optimizer type.
    pub fn load_state_bytes<M: Module>(
        &mut self,
        module: &M,
        bytes: &[u8],
        source_name: &str,
    ) -> Result<(), OptimStateError> {
        let bad = |message: String| OptimStateError {
            source_name: source_name.to_string(),
            message,
        };
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let (_, meta) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(OPTIM_STATE_FORMAT) {
            return Err(bad(format!(
                "not a shears optimizer state (format {:?})",
                meta.get("format")
            )));
        }
        let mut flat: BTreeMap<String, FlatState> = BTreeMap::new();
        for (key, view) in st.iter() {
            let (name, leaf) = key
                .rsplit_once('/')
                .ok_or_else(|| bad(format!("tensor `{key}` is not NAME/LEAF")))?;
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(bad(format!(
                    "tensor `{key}` is {:?}, expected F32",
                    view.dtype()
                )));
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            flat.entry(name.to_string()).or_default().tensors.push((
                leaf.to_string(),
                TensorData::new(values, view.shape().to_vec()),
            ));
        }
        for (key, value) in &meta {
            if key == "format" {
                continue;
            }
            let (name, leaf) = key
                .rsplit_once('/')
                .ok_or_else(|| bad(format!("header entry `{key}` is not NAME/LEAF")))?;
            let scalar = decode_scalar(value)
                .ok_or_else(|| bad(format!("header entry `{key}` has a bad value `{value}`")))?;
            flat.entry(name.to_string())
                .or_default()
                .scalars
                .insert(leaf.to_string(), scalar);
        }
        let mut loader = StateLoader::<O> {
            stack: PathStack::default(),
            naming: self.naming.as_ref(),
            flat: &mut flat,
            states: HashMap::new(),
            failed: Vec::new(),
            _optim: std::marker::PhantomData,
        };
        module.visit(&mut loader);
        let (states, failed) = (loader.states, loader.failed);
        if let Some(name) = failed.first() {
            return Err(bad(format!(
                "the state of `{name}` does not fit this optimizer or the parameter's rank or shape"
            )));
        }
        if let Some(name) = flat.keys().next() {
            return Err(bad(format!(
                "state for `{name}`, which the model does not have"
            )));
        }
        self.states = states;
        Ok(())
    }

    /// [`state_to_bytes`](Self::state_to_bytes) written to `path`.
    pub fn save_state(&self, path: &std::path::Path) -> Result<(), OptimStateError> {
        std::fs::write(path, self.state_to_bytes()).map_err(|e| OptimStateError {
            source_name: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// [`load_state_bytes`](Self::load_state_bytes) from `path`.
    pub fn load_state<M: Module>(
        &mut self,
        module: &M,
        path: &std::path::Path,
    ) -> Result<(), OptimStateError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| OptimStateError {
            source_name: name.clone(),
            message: e.to_string(),
        })?;
        self.load_state_bytes(module, &bytes, &name)
    }

    /// Forgets all optimizer state (moments restart from zero).
    pub fn reset_state(&mut self) {
        self.states.clear();
    }

    /// The clipping threshold, if clipping is enabled.
    pub fn max_grad_norm(&self) -> Option<f64> {
        self.max_grad_norm
    }

    /// The global gradient norm (after masking, before clipping) of the last step, when
    /// clipping is enabled.
    pub fn last_grad_norm(&self) -> Option<f64> {
        self.last_grad_norm
    }

    /// One optimizer step with learning rate `lr`: masks gradients, clips, steps, masks
    /// weights.
    pub fn step<M: Module>(&mut self, lr: f64, module: M, mut grads: GradientsParams) -> M {
        let clip = span(StepPhase::Clip);
        let mut masker = GradMasker {
            stack: PathStack::default(),
            naming: self.naming.as_ref(),
            masks: &self.masks,
            cache: &mut self.cache,
            grads: &mut grads,
            squares: self.max_grad_norm.map(|_| Vec::new()),
        };
        module.visit(&mut masker);
        let squares = masker.squares.take();
        let scale = match (self.max_grad_norm, squares) {
            (Some(max_norm), Some(squares)) if !squares.is_empty() => {
                let total: f64 = Tensor::cat(squares, 0).sum().into_scalar::<f64>().sqrt();
                self.last_grad_norm = Some(total);
                let coef = max_norm / (total + 1e-6);
                (coef < 1.0).then_some(coef)
            }
            _ => None,
        };
        drop(clip);
        let _optimizer = span(StepPhase::Optimizer);
        let mut stepper = Stepper {
            stack: PathStack::default(),
            opt: self,
            grads: &mut grads,
            lr,
            scale,
        };
        module.map(&mut stepper)
    }
}

struct Stepper<'a, O: Optimizer> {
    stack: PathStack,
    opt: &'a mut MaskedOptimizer<O>,
    grads: &'a mut GradientsParams,
    lr: f64,
    scale: Option<f64>,
}

impl<O: Optimizer> ModuleMapper for Stepper<'_, O> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let name = self.opt.naming.display_name(&self.stack.path());
        let device = tensor.device();
        let flags = ParamFlags::capture(&tensor);
        let grad = match self.scale {
            Some(s) => grad.mul_scalar(s),
            None => grad,
        };
        let mask = self
            .opt
            .masks
            .get(&name)
            .filter(|m| m.shape() == tensor.dims().as_slice());
        let slot = self.opt.states.remove(&name);
        let mut generation = slot.as_ref().and_then(|s| s.generation);
        let mut state: Option<O::State<D>> =
            slot.and_then(|s| s.state.downcast::<O::State<D>>().ok().map(|b| *b));
        if let Some(mask) = mask
            && generation != Some(mask.generation())
        {
            state = state.map(|s| clean_state(s, mask, &device));
            generation = Some(mask.generation());
        }
        let mut tensor = tensor.inner();
        let mut grad = grad;
        if let Some(decay) = self
            .opt
            .weight_decay
            .as_ref()
            .filter(|d| d.applies_to(&name, &tensor.dims()))
        {
            match decay.kind {
                DecayKind::L2 => {
                    grad = tensor.clone().mul_scalar(decay.value) + grad;
                    if let Some(mask) = mask {
                        grad = grad.clone() * self.opt.cache.get(&name, mask, &grad);
                    }
                }
                DecayKind::Decoupled => {
                    tensor = tensor.mul_scalar(1.0 - self.lr * decay.value);
                }
            }
        }
        let (mut updated, state) = self.opt.optim.step(self.lr, tensor, grad, state);
        if let Some(mask) = mask {
            let m = self.opt.cache.get(&name, mask, &updated);
            updated = updated * m;
        }
        if let Some(state) = state {
            self.opt.states.insert(
                name,
                Slot {
                    state: Box::new(state),
                    generation: if mask.is_some() { generation } else { None },
                    flatten: flatten_slot::<O::State<D>>,
                },
            );
        }
        Param::from_mapped_value(id, flags.restore(updated, id), mapper)
    }
}
