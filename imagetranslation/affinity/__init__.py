"""NN-6: a 3D U-Net from EM to nearest-neighbour affinities.

Run as ``python -m imagetranslation.affinity`` (:mod:`.__main__`).

* :mod:`.network`: the U-Net (Keras 3) and its 3x3x3 convolution as stacked-slice Conv2D;
* :mod:`.data`: training crops, augmentations, targets and loss weights, seeded per step;
* :mod:`.train`: settings, the training loop, checkpoints, validation and the record;
* :mod:`.predict`: tiled prediction of a whole volume;
* :mod:`.__main__`: the command line.

The affinities' layout and their agglomeration are :mod:`neuron3d.affinity`'s.
"""
