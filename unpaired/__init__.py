"""unpaired: deblurring trainers for real photographs that have no sharp twin.

``python -m unpaired.train`` trains a generator (:mod:`unpaired.models`) with one readable loop
(:mod:`unpaired.train`; options in :mod:`unpaired.config`, data in :mod:`unpaired.data`, losses in
:mod:`unpaired.losses`): supervised on synthetic or written pairs, or as a CycleGAN between blurry
and unrelated sharp photos. ``python -m unpaired.deblur`` restores photos with a checkpoint, tile by
tile; ``python -m unpaired.evaluate`` scores a checkpoint or a non-blind method
(:mod:`unpaired.deconv`) with the metrics of :mod:`unpaired.metrics` on recorded benchmarks.
"""
