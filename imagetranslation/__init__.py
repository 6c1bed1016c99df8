"""imagetranslation: a TensorFlow 2 / Keras 3 pix2pix trainer (Isola et al. 2017).

Reimplements the image-to-image translation trainer the thesis used
(imagetranslation-tensorflow, TF 1) with today's TensorFlow: ResNet and U-Net
generators, a PatchGAN discriminator, L1/L2 ("hinge"/"square") regression
losses and optional adversarial loss.  ``translate.py`` is the command line.
"""

import os as _os

# TensorFlow's C++ start-up chatter (CUDA probing, CPU features) hides real messages.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
