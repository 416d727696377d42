"""facefill: evaluate GAN-based face inpainting.

Conventions, stated once and referred to everywhere else:

* Images: ``torch.float32``, shape ``(N, C, H, W)``, ``C = 3``, 64x64. Range **[-1, 1]** in
  models, losses and latent search (the generator's tanh output). Metrics take **[0, 1]**.
  Convert only with :mod:`facefill_core.imaging` (``to_unit_range``, ``to_signed_range``,
  ``uint8_to_signed``, ``to_uint8_nhwc``; the first three re-exported by ``data``).
* Masks: ``(N, 1, H, W)`` float, **1 = hole** (missing), named ``hole``; the known region is
  ``1 - hole``.
* Landmarks: ``np.float32 (N, 68, 2)``, ``(x, y)`` in pixels. The C++ extension receives
  ``uint8 (N, H, W, 3)`` RGB, C-contiguous (see :func:`facefill_core.imaging.to_uint8_nhwc`).
* Face boxes: ``(left, top, right, bottom)`` inclusive pixel corners, as ``dlib.rectangle``.
* Latent ``z``: ``(N, z_dim)``, clipped to [-1, 1] during latent search.
* Methods: declared once in :mod:`facefill_core.methods` (family, weights kind, defaults, how
  to build); :mod:`facefill_core.inpainters` builds them by name.
"""

__version__ = "0.1.0"
