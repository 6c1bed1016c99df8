"""neuron3d: dense 3D reconstruction of neurons from serial-section EM.

The library behind the thesis-compatible command-line scripts
(``process3D.py``, ``reconstruct3D.py``, ``evaluate3D.py``, ``neuroglancer3D.py``).
All arrays are numpy arrays in (z, y, x) order.

What a user imports (each module lists its public names in ``__all__``; importing the package
imports none of them, so a script loads only what its operation needs):

* :mod:`neuron3d.io` -- stacks on disk: ``read_stack`` / ``write_stack`` (TIFF, slice folders,
  OME-Zarr), ``read_labels``, ``read_binary``, ``write_slices``, ``write_tif``.
* :mod:`neuron3d.atomic` -- atomic writes and ``check_outputs_apart``, the rule that no output
  is, contains or lies inside an input.
* :mod:`neuron3d.zarrio` -- OME-Zarr stores; :mod:`neuron3d.blockwise` -- the same operations
  blockwise on dask.
* :mod:`neuron3d.labels` -- membrane, cytoplasm, overlap, eroskele, quadrants, and the
  conventions: ``FOREGROUND`` (127), ``HALF`` (128), ``label_dtype(count)``.
* :mod:`neuron3d.reconstruct`, :mod:`neuron3d.agglomerate` -- the two reconstructions.
* :mod:`neuron3d.metrics` -- the thesis' and the field's scores.
* :mod:`neuron3d.synthetic` -- the project's synthetic EM and labels.
* :mod:`neuron3d.viewer` -- Neuroglancer; :mod:`neuron3d.cli`, :mod:`neuron3d.progress` --
  what the scripts share.
"""

__version__ = "0.1.0"

__all__ = ["agglomerate", "atomic", "blockwise", "cli", "io", "labels", "metrics", "progress",
           "reconstruct", "synthetic", "viewer", "zarrio"]
