"""neuron3d.sweep: the chosen threshold read back, and the command's checks of its files."""

import json

import pytest

from neuron3d.sweep import chosen_threshold


def test_chosen_threshold_reads_the_sweeps_choice(tmp_path):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"rows": [], "chosen": 0.35, "scoring": "median"}))
    assert chosen_threshold(path) == 0.35
    assert chosen_threshold(str(path)) == 0.35
    path.write_text(json.dumps({"chosen": 1}))
    assert chosen_threshold(path) == 1.0 and isinstance(chosen_threshold(path), float)
    # six significant digits, as the value's text '%g' (what the step passed before)
    path.write_text(json.dumps({"chosen": 0.123456789}))
    assert chosen_threshold(path) == 0.123457


@pytest.mark.parametrize("text, fragment", [
    ("{", "is not a sweep file of python -m neuron3d.sweep"),
    ("{}", "has no 'chosen' threshold"),
    ("[0.5]", "is not a sweep file"),
    ('{"chosen": "0.5"}', "'chosen' is '0.5', not a number"),
    ('{"chosen": null}', "'chosen' is None, not a number"),
    ('{"chosen": true}', "'chosen' is True, not a number"),
    ('{"chosen": 1.5}', r"the chosen threshold must be in \[0, 1\], got 1.5"),
    ('{"chosen": NaN}', r"must be in \[0, 1\], got nan"),
])
def test_chosen_threshold_refuses_a_malformed_file_naming_it(tmp_path, text, fragment):
    path = tmp_path / "sweep.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=fragment) as info:
        chosen_threshold(path)
    assert str(path) in str(info.value)


def test_chosen_threshold_refuses_a_missing_file_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"cannot read the sweep file .*nope\.json"):
        chosen_threshold(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="cannot read the sweep file"):
        chosen_threshold(tmp_path)  # a folder
