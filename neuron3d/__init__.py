"""neuron3d: dense 3D reconstruction of neurons from serial-section EM.

The library behind the thesis-compatible command-line scripts
(``process3D.py``, ``reconstruct3D.py``, ``evaluate3D.py``, ``neuroglancer3D.py``).
All arrays are numpy arrays in (z, y, x) order.
"""

__version__ = "0.1.0"
