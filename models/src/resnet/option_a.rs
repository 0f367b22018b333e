//! The CIFAR option-A shortcut, `F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad))`: keep every
//! second row and column, zero-pad the channels on both sides. Parameter-free, in either
//! layout of a [`FeatureMap`].
//!
//! On the CPU backends it is one gather each way, a burn backend extension with its own
//! backward. burn's ops spell it as a reshape, two `narrow`s and a `cat`, whose backward
//! writes the gradient element by element into a zeroed tensor through `slice_assign`: on a
//! 2-core AVX2 EPYC that was 16 ms (16-channel stage) + 7 ms (32-channel stage) of a
//! ≈ 350 ms ResNet-20 training step, against well under a millisecond for the gathers. Other
//! devices (GPUs) run burn's ops ([`subsample_pad_burn`]), against which the extension is
//! tested value for value.

#![allow(deprecated)] // NdArray is deprecated in burn 0.22 but still supported.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, Backend, Dispatch, Flex, NdArray, TensorMetadata, backend_extension,
};
use burn::tensor::Tensor;

use crate::feature_map::FeatureMap;
use crate::output;
use crate::sparseprop::backend::{with_values, write};
use crate::sparseprop::ops::is_sparse_cpu_device;

/// The option-A shortcut of `x` with `pad` zero channels on each side, in the map's own
/// layout.
pub fn option_a(x: FeatureMap, pad: usize) -> FeatureMap {
    match x {
        FeatureMap::Nchw(t) => FeatureMap::Nchw(subsample_pad(t, [1, 2, 3], pad)),
        FeatureMap::Chwb(t) => FeatureMap::Chwb(subsample_pad(t, [0, 1, 2], pad)),
    }
}

/// Keeps every second entry (`::2`, so `⌈n/2⌉` of `n`) of axes `h` and `w` of `x` and
/// zero-pads axis `c` with `pad` entries on each side; `[c, h, w]` are the axes of the
/// channels, rows and columns (`[1, 2, 3]` for NCHW, `[0, 1, 2]` for CHWB). Shears' gather on
/// the CPU backends, [`subsample_pad_burn`] elsewhere; differentiable on every device.
///
/// # Panics
/// If the axes are not three distinct axes below 4.
pub fn subsample_pad(x: Tensor<4>, axes: [usize; 3], pad: usize) -> Tensor<4> {
    check_axes(axes);
    if is_sparse_cpu_device(&x.device()) {
        Tensor::from_dispatch(<Dispatch as ShortcutBackend>::subsample_pad(
            x.into_dispatch(),
            axes,
            pad,
        ))
    } else {
        subsample_pad_burn(x, axes, pad)
    }
}

fn check_axes([c, h, w]: [usize; 3]) {
    assert!(
        c < 4 && h < 4 && w < 4 && c != h && c != w && h != w,
        "option A: axes {:?} are not three distinct axes of a 4-d tensor",
        [c, h, w]
    );
}

/// [`subsample_pad`] with burn's tensor ops (the path on GPUs).
pub fn subsample_pad_burn(x: Tensor<4>, [c, h, w]: [usize; 3], pad: usize) -> Tensor<4> {
    check_axes([c, h, w]);
    let device = x.device();
    // `::2` keeps ceil(n / 2) entries: pad odd sides by one zero row/column, then keep the
    // first of every pair.
    let pad_odd = |x: Tensor<4>, axis: usize| {
        let mut dims = x.dims();
        if dims[axis].is_multiple_of(2) {
            return x;
        }
        dims[axis] = 1;
        Tensor::cat(vec![x, Tensor::zeros(dims, &device)], axis)
    };
    let x = pad_odd(pad_odd(x, h), w);
    let dims = x.dims();
    // Split h and w into (n / 2, 2) pairs and keep the first of each.
    let mut split = Vec::with_capacity(6);
    for (axis, &n) in dims.iter().enumerate() {
        if axis == h || axis == w {
            split.extend([n / 2, 2]);
        } else {
            split.push(n);
        }
    }
    let split: [usize; 6] = split.try_into().expect("4 axes, two of them split");
    // Positions of the pair axes after the split: each split axis shifts the later ones.
    let pair_h = h + 1 + usize::from(w < h);
    let pair_w = w + 1 + usize::from(h < w);
    let mut out = dims;
    out[h] /= 2;
    out[w] /= 2;
    let sub: Tensor<4> = x
        .reshape(split)
        .narrow(pair_h, 0, 1)
        .narrow(pair_w, 0, 1)
        .reshape(out);
    if pad == 0 {
        return sub;
    }
    let mut zeros = out;
    zeros[c] = pad;
    let zeros = || Tensor::zeros(zeros, &device);
    Tensor::cat(vec![zeros(), sub, zeros()], c)
}

/// Row-major strides of `dims`.
fn strides(dims: [usize; 4]) -> [usize; 4] {
    [dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1]
}

/// The result's shape for an input of shape `dims`.
fn out_dims(dims: [usize; 4], [c, h, w]: [usize; 3], pad: usize) -> [usize; 4] {
    let mut out = dims;
    out[c] += 2 * pad;
    out[h] = dims[h].div_ceil(2);
    out[w] = dims[w].div_ceil(2);
    out
}

/// `out[o] = src[Σₐ maps[a][oₐ]]` where all four maps are defined at `o`, 0 elsewhere; `out`
/// has the shape of the maps' lengths. Parallel over the first axis.
fn gather(src: &[f32], maps: &[Vec<Option<usize>>; 4]) -> Vec<f32> {
    let dims: [usize; 4] = std::array::from_fn(|a| maps[a].len());
    let slab = dims[1] * dims[2] * dims[3];
    output::build(
        dims.iter().product(),
        slab.max(1),
        || (),
        |_, i0, out| {
            let Some(base0) = maps[0][i0] else {
                return; // handed over zeroed
            };
            let mut rows = out.chunks_exact_mut(dims[3].max(1));
            for m1 in &maps[1] {
                for m2 in &maps[2] {
                    let row = rows.next().unwrap_or_default();
                    if let (Some(a), Some(b)) = (m1, m2) {
                        let base = base0 + a + b;
                        for (o, m3) in row.iter_mut().zip(&maps[3]) {
                            if let Some(d) = m3 {
                                *o = src[base + d];
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The forward on values: `x` of shape `dims` → the result, of shape [`out_dims`].
fn forward_values(x: &[f32], dims: [usize; 4], [c, h, w]: [usize; 3], pad: usize) -> Vec<f32> {
    assert_eq!(
        x.len(),
        dims.iter().product::<usize>(),
        "option A: x length"
    );
    let (st, od) = (strides(dims), out_dims(dims, [c, h, w], pad));
    let maps = std::array::from_fn(|a| {
        (0..od[a])
            .map(|o| {
                if a == c {
                    (o >= pad && o < pad + dims[c]).then(|| (o - pad) * st[a])
                } else if a == h || a == w {
                    Some(2 * o * st[a])
                } else {
                    Some(o * st[a])
                }
            })
            .collect()
    });
    gather(x, &maps)
}

/// The backward on values: the gradient `g` of the result → that of `x` (shape `dims`): each
/// kept entry receives its output's gradient, every other entry 0.
fn backward_values(g: &[f32], dims: [usize; 4], [c, h, w]: [usize; 3], pad: usize) -> Vec<f32> {
    let od = out_dims(dims, [c, h, w], pad);
    assert_eq!(g.len(), od.iter().product::<usize>(), "option A: dY length");
    let ost = strides(od);
    let maps = std::array::from_fn(|a| {
        (0..dims[a])
            .map(|i| {
                if a == c {
                    Some((i + pad) * ost[a])
                } else if a == h || a == w {
                    i.is_multiple_of(2).then(|| i / 2 * ost[a])
                } else {
                    Some(i * ost[a])
                }
            })
            .collect()
    });
    gather(g, &maps)
}

/// The shortcut as a burn backend extension.
#[backend_extension(Autodiff, NdArray, Flex)]
pub trait ShortcutBackend: Backend {
    /// [`subsample_pad`] of `x` (see there); differentiable in `x`.
    fn subsample_pad(x: FloatTensor<Self>, axes: [usize; 3], pad: usize) -> FloatTensor<Self>;
}

fn dims4(shape: &[usize]) -> [usize; 4] {
    shape
        .try_into()
        .expect("option A: the feature map has 4 axes")
}

fn forward_on<B: Backend>(x: FloatTensor<B>, axes: [usize; 3], pad: usize) -> FloatTensor<B> {
    let device = x.device();
    let dims = dims4(x.shape().as_slice());
    let y = with_values::<B, _>(&x, |v| {
        crate::op_timing::time("option-A shortcut fwd", || {
            forward_values(v, dims, axes, pad)
        })
    });
    write::<B>(y, out_dims(dims, axes, pad).to_vec(), &device)
}

impl ShortcutBackend for Flex {
    fn subsample_pad(x: FloatTensor<Self>, axes: [usize; 3], pad: usize) -> FloatTensor<Self> {
        forward_on::<Self>(x, axes, pad)
    }
}

impl ShortcutBackend for NdArray {
    fn subsample_pad(x: FloatTensor<Self>, axes: [usize; 3], pad: usize) -> FloatTensor<Self> {
        forward_on::<Self>(x, axes, pad)
    }
}

/// Backward of [`ShortcutBackend::subsample_pad`]; its state is the input's shape, the axes
/// and the padding.
#[derive(Debug)]
struct SubsamplePadBackward;

impl<B: Backend> Backward<B, 1> for SubsamplePadBackward {
    type State = ([usize; 4], [usize; 3], usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _c: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            let (dims, axes, pad) = ops.state;
            let device = grad.device();
            let dx = with_values::<B, _>(&grad, |g| {
                crate::op_timing::time("option-A shortcut bwd", || {
                    backward_values(g, dims, axes, pad)
                })
            });
            grads.register::<B>(node.id, write::<B>(dx, dims.to_vec(), &device));
        }
    }
}

impl<B: ShortcutBackend, C: CheckpointStrategy> ShortcutBackend for Autodiff<B, C> {
    fn subsample_pad(x: FloatTensor<Self>, axes: [usize; 3], pad: usize) -> FloatTensor<Self> {
        let dims = dims4(x.shape().as_slice());
        match SubsamplePadBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::subsample_pad(x.primitive().clone(), axes, pad);
                prep.finish((dims, axes, pad), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::subsample_pad(x.into_primitive(), axes, pad))
            }
        }
    }
}
