"""Dense CRF post-processing (Krähenbühl & Koltun 2011, as DeepLab v1/v2 used it): `infer.crf=true`.

A fully connected CRF over the pixels of one image: the unary term is -log of the network's probabilities; two
pairwise terms pull pixels towards the labels of their neighbours: a Gaussian one on position alone (smoothness)
and a bilateral one on position and colour (pixels alike in colour take alike labels, so label borders move onto
image edges). Mean-field inference runs on the CPU with the `pydensecrf2` package (a maintained build of
`pydensecrf`); without it, asking for the CRF stops with a message and everything else works.
"""

from __future__ import annotations

import numpy as np

from src.errors import UserError

INSTALL_HINT = "pip install pydensecrf2 (or pip install -e '.[inference]'), or run without infer.crf=true."


def check_crf_available() -> None:
    """A UserError saying how to install the CRF library when it is missing."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError as err:
        raise UserError(f"infer.crf=true needs the dense CRF library, which is not installed: {INSTALL_HINT}") from err


def dense_crf(
    probs: np.ndarray,
    image: np.ndarray,
    iterations: int = 10,
    gaussian_sxy: float = 3.0,
    gaussian_compat: float = 3.0,
    bilateral_sxy: float = 80.0,
    bilateral_srgb: float = 13.0,
    bilateral_compat: float = 10.0,
) -> np.ndarray:
    """Refined probabilities (C, H, W) float32 from the network's `probs` (C, H, W) and the RGB uint8 `image`
    (H, W, 3). `*_sxy` are the kernels' widths in pixels, `bilateral_srgb` the colour width (0..255 units), `*_compat`
    the weights of the pairwise terms (0: the unary term alone, i.e. the input's argmax)."""
    check_crf_available()
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    c, h, w = probs.shape
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs.astype(np.float32), clip=1e-8)))
    if gaussian_compat > 0:
        crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=gaussian_compat)
    if bilateral_compat > 0:
        rgb = np.ascontiguousarray(image, dtype=np.uint8)
        crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=rgb, compat=bilateral_compat)
    q = crf.inference(int(iterations))
    return np.asarray(q, dtype=np.float32).reshape(c, h, w)
