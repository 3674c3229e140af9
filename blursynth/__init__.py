"""blursynth: physics-based camera-shake blur synthesis.

The data flow (see README): a trajectory model samples camera motion over the exposure
(:mod:`blursynth.trajectory`), a pinhole camera projects it to image-plane paths
(:mod:`blursynth.camera`), and the paths are rasterised into blur kernels (:mod:`blursynth.kernel`).
"""

__version__ = "0.1.0"
