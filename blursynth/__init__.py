"""blursynth: physics-based camera-shake blur synthesis.

The data flow (see README): a trajectory model samples camera motion over the exposure
(:mod:`blursynth.trajectory`), a pinhole camera projects it to image-plane paths
(:mod:`blursynth.camera`), and the paths are rasterised into blur kernels (:mod:`blursynth.kernel`).
Images are blurred uniformly (:mod:`blursynth.blur`) or by the exposure integral of per-time
homographies (:mod:`blursynth.nonuniform`), in linear light through a sensor model
(:mod:`blursynth.sensor`); sharp images come from photographs or procedural dead-leaves scenes
(:mod:`blursynth.scenes`). :mod:`blursynth.pairs` makes (blurry, sharp) pairs from a recipe
(:mod:`blursynth.recipe`), which :mod:`blursynth.dataset` writes to disk and :mod:`blursynth.data`
serves as torch Datasets. Every draw is a pure function of (seed, index) (:mod:`blursynth.rng`).
"""

__version__ = "0.2.0"
