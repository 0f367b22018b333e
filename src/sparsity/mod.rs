//! Sparsity core: selecting parameters, computing masks, enforcing them through
//! training, saving them, and reporting sparsity — for any burn [`Module`](burn::module::Module).
//!
//! * [`selection`]: which parameters (exact names, `re:` regexes, `__ALL_PRUNABLE__`, `ignore`).
//! * [`params`]: listing a module's parameters with dotted paths, user-facing names
//!   ([`params::ParamNaming`]) and input dimensions.
//! * [`mask`]: masks keyed by name; magnitude masks, global or layer-wise, unstructured,
//!   N:M along the input dimension and `block4`, with exact counts and deterministic ties.
//! * [`enforce`]: pruned weights stay exactly `0.0` through every optimizer step
//!   ([`enforce::MaskedOptimizer`]); the module documentation explains the mechanism
//!   (hard masking at the optimizer, chosen over burn's reparameterization).
//! * [`checkpoint`]: masks saved to and loaded from a safetensors sidecar, by name.
//! * [`report`]: per-parameter and overall sparsity as a struct, a table and JSON.
//!
//! Typical use in a training loop:
//!
//! ```text
//! use shears::sparsity::{enforce::MaskedOptimizer, mask::*, params::*, selection::*};
//! let selector = ParamSelector::new(&["re:.*dense.weight".into()], &[])?;
//! let selected = selector.select(&list_params(&model, &BurnPaths)).matched;
//! let mut optim = MaskedOptimizer::new(AdamWConfig::new().build());
//! // at every update step of the pruning schedule:
//! let masks = compute_module_masks(&model, &BurnPaths, &selected, target, MaskKind::Unstructured, Scope::Global)?;
//! model = optim.set_masks(model, masks)?;
//! // every step:
//! model = optim.step(lr, model, GradientsParams::from_grads(loss.backward(), &model));
//! ```

pub mod checkpoint;
pub mod enforce;
pub mod mask;
pub mod params;
pub mod report;
pub mod selection;
