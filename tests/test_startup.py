"""Start-up: a CLI imports what its operation needs and no more (issue 20 item 8).

Each check runs in a fresh interpreter, so the modules counted are the script's alone.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

#: Heavy packages no script needs merely to parse its flags.
HEAVY = ("scipy", "skimage", "sklearn", "dask", "distributed", "zarr", "tensorflow", "cc3d",
         "fastremap", "waterz", "neuroglancer", "selenium", "neuron3d.synthetic")


def _loaded(code):
    out = subprocess.run([sys.executable, "-c", code + "\nimport json, sys\n"
                          "print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("script", ["process3D", "reconstruct3D", "evaluate3D",
                                    "neuroglancer3D"])
def test_importing_a_script_loads_nothing_heavy(script):
    loaded = _loaded(f"import {script}\n{script}.build_parser()")
    assert not [m for m in HEAVY if m in loaded]


def test_membrane_operation_needs_no_scipy(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "l.tif", np.array([[[1, 2], [2, 2]]], np.uint16))
    loaded = _loaded("import process3D, contextlib, io\n"
                     "with contextlib.redirect_stdout(io.StringIO()):\n"
                     f"    assert process3D.main(['--operation', 'membrane', '--input_dir', "
                     f"{str(tmp_path / 'l.tif')!r}, '--output_dir', {str(tmp_path / 'm')!r}]) == 0")
    assert not [m for m in HEAVY if m in loaded]
    assert (tmp_path / "m" / "00.png").is_file()


def test_storage_layer_has_no_cycle(tmp_path):
    """atomic imports nothing of the package; zarrio writes through atomic, never io."""
    assert {m for m in _loaded("import neuron3d.atomic") if m.startswith("neuron3d.")} == {
        "neuron3d.atomic"}
    store = tmp_path / "x.zarr"
    loaded = _loaded("import numpy\nfrom neuron3d import zarrio\n"
                     f"zarrio.write_zarr({str(store)!r}, numpy.ones((1, 2, 2), numpy.uint8))\n"
                     f"assert zarrio.read_zarr({str(store)!r}).sum() == 4")
    assert "neuron3d.atomic" in loaded and "neuron3d.io" not in loaded
