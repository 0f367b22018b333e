//! [`FeatureMap`]: a conv net's activation in the layout the layer that wrote it prefers.
//!
//! burn's convs and the dense im2col path take NCHW (`[B, C, H, W]`). The SparseProp conv
//! kernels work channel-major with the batch innermost (`[C, H, W, B]`, "CHWB"), so that one
//! non-zero weight and one output row are a single contiguous FMA. Fed NCHW, every sparse
//! conv changes the layout five times per training step (input and output of the forward;
//! input, output gradient and input gradient of the backward): about a fifth of a ResNet-20
//! step at 90 % sparsity. A [`FeatureMap`] carries the layout with the tensor, so that
//! consecutive sparse convs, the batch norms, ReLUs and residual additions between them stay
//! channel-major, and the layout changes only where a dense layer (or the classifier) needs
//! NCHW (SparseProp paper, §4.6 of `docs/methods.md` in the shared notes: activations in the
//! layout the kernel wants across consecutive layers).
//!
//! Element-wise ops and per-channel statistics do not care about the order of the other
//! axes, so a batch norm over a CHWB map is the batch norm of the `[1, C, H·W·B, 1]` view (see
//! [`FeatureMap::as_one_image`]).

use burn::tensor::{Device, Tensor};

/// The memory order of a [`FeatureMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapLayout {
    /// `[B, C, H, W]`, burn's and PyTorch's order.
    Nchw,
    /// `[C, H, W, B]`: channel-major, the batch innermost (the SparseProp conv kernels' order).
    Chwb,
}

/// A 4-D activation of a conv net with its layout.
#[derive(Debug, Clone)]
pub enum FeatureMap {
    /// A `[B, C, H, W]` tensor.
    Nchw(Tensor<4>),
    /// A `[C, H, W, B]` tensor.
    Chwb(Tensor<4>),
}

impl FeatureMap {
    /// The layout of the tensor.
    pub fn layout(&self) -> MapLayout {
        match self {
            FeatureMap::Nchw(_) => MapLayout::Nchw,
            FeatureMap::Chwb(_) => MapLayout::Chwb,
        }
    }

    /// The device of the tensor.
    pub fn device(&self) -> Device {
        match self {
            FeatureMap::Nchw(t) | FeatureMap::Chwb(t) => t.device(),
        }
    }

    /// The logical sizes `[B, C, H, W]`, whatever the layout.
    pub fn dims(&self) -> [usize; 4] {
        match self {
            FeatureMap::Nchw(t) => t.dims(),
            FeatureMap::Chwb(t) => {
                let [c, h, w, b] = t.dims();
                [b, c, h, w]
            }
        }
    }

    /// The `[B, C, H, W]` tensor (a layout change for a CHWB map).
    pub fn into_nchw(self) -> Tensor<4> {
        match self {
            FeatureMap::Nchw(t) => t,
            FeatureMap::Chwb(t) => t.permute([3, 0, 1, 2]),
        }
    }

    /// The `[C, H, W, B]` tensor (a layout change for an NCHW map).
    pub fn into_chwb(self) -> Tensor<4> {
        match self {
            FeatureMap::Nchw(t) => t.permute([1, 2, 3, 0]),
            FeatureMap::Chwb(t) => t,
        }
    }

    /// The same map in `layout`.
    pub fn into_layout(self, layout: MapLayout) -> Self {
        match layout {
            MapLayout::Nchw => FeatureMap::Nchw(self.into_nchw()),
            MapLayout::Chwb => FeatureMap::Chwb(self.into_chwb()),
        }
    }

    /// The map as one `[N, C, S, 1]` batch of images for per-channel ops (batch norm): the
    /// tensor itself for NCHW, the `[1, C, H·W·B, 1]` view of a CHWB map (no copy). Undo with
    /// [`from_one_image`](Self::from_one_image).
    pub fn as_one_image(self) -> (Tensor<4>, MapShape) {
        match self {
            FeatureMap::Nchw(t) => {
                let dims = t.dims();
                (t, MapShape(MapLayout::Nchw, dims))
            }
            FeatureMap::Chwb(t) => {
                let dims = t.dims();
                let [c, h, w, b] = dims;
                (
                    t.reshape([1, c, h * w * b, 1]),
                    MapShape(MapLayout::Chwb, dims),
                )
            }
        }
    }

    /// The map that [`as_one_image`](Self::as_one_image) viewed as `t`.
    pub fn from_one_image(t: Tensor<4>, shape: MapShape) -> Self {
        match shape.0 {
            MapLayout::Nchw => FeatureMap::Nchw(t.reshape(shape.1)),
            MapLayout::Chwb => FeatureMap::Chwb(t.reshape(shape.1)),
        }
    }

    /// The per-image channel means `[B, C]` (global average pooling).
    pub fn mean_pool(self) -> Tensor<2> {
        let [b, c, _, _] = self.dims();
        match self {
            FeatureMap::Nchw(t) => t.mean_dim(3).mean_dim(2).reshape([b, c]),
            FeatureMap::Chwb(t) => t.mean_dim(2).mean_dim(1).reshape([c, b]).transpose(),
        }
    }
}

/// The layout and tensor sizes that [`FeatureMap::as_one_image`] flattened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapShape(MapLayout, [usize; 4]);

impl From<Tensor<4>> for FeatureMap {
    /// An NCHW tensor.
    fn from(t: Tensor<4>) -> Self {
        FeatureMap::Nchw(t)
    }
}
