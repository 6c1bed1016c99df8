"""neuron3d.learned: region-graph features, edge labels, the classifier, the merge, the CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from neuron3d import labels as L
from neuron3d import learned
from neuron3d.agglomerate import DEFAULT_THRESHOLD, agglomerate
from neuron3d.learned import classifier as C
from neuron3d.learned.__main__ import main
from neuron3d.metrics import evaluate
from neuron3d.synthetic import synthetic_labels

M = learned.MISSING  # NaN


def same(actual, expected):
    """Equal, NaN equal to NaN (numpy.testing.assert_equal), exact types aside."""
    np.testing.assert_equal(list(actual), list(expected))


# ---- a hand-made volume: regions 1 | 2 in slice 0, region 3 under both in slice 1 ----------


def tiny():
    segments = np.array([[[1, 1, 2, 2], [1, 1, 2, 2]],
                         [[3, 3, 3, 3], [3, 3, 3, 3]]], dtype=np.uint16)
    membrane = np.array([[[0, 0.25, 0.75, 0], [0, 0.5, 1.0, 0]],
                         [[0, 0, 0, 0], [0, 0, 0, 0]]], dtype=np.float32)
    overlap = np.array([[[1, 1, 0.5, 0], [1, 0.75, 0, 0]]], dtype=np.float32)
    em = np.array([[[10, 10, 30, 30], [10, 10, 50, 50]],
                   [[20, 20, 20, 20], [20, 20, 20, 20]]], dtype=np.uint8)
    return segments, membrane, overlap, em


def row(table, a, b):
    index = np.flatnonzero((table.edges[:, 0] == a) & (table.edges[:, 1] == b))
    assert len(index) == 1
    return dict(zip(table.names, table.features[index[0]]))


def test_edge_table_exact_on_a_hand_made_volume():
    segments, membrane, overlap, em = tiny()
    table = learned.edge_table(segments, membrane, overlap, em)
    assert table.edges.tolist() == [[1, 2], [1, 3], [2, 3]]
    assert table.regions == 3 and table.names == learned.feature_names(em=True)
    # 1 | 2: two in-plane faces, max(0.25, 0.75) = 0.75 and max(0.5, 1.0) = 1.0
    e = row(table, 1, 2)
    assert (e["in_faces"], e["in_mean"], e["in_q25"], e["in_q50"], e["in_q75"]) == (
        2, 0.875, 0.8125, 0.875, 0.9375)
    assert e["in_q10"] == pytest.approx(0.775, abs=1e-15)
    assert e["in_q90"] == pytest.approx(0.975, abs=1e-15)
    same([e[f"z_{s}"] for s in ("faces", "mean", "q10", "q50", "q90")], [0, M, M, M, M])
    same((e["z_speaking_share"], e["z_speaking_mean"], e["z_share"]), (M, M, 0.0))
    assert (e["size_min"], e["size_max"], e["slices_min"], e["slices_max"]) == (4, 4, 1, 1)
    assert (e["membrane_min"], e["membrane_max"], e["contact"]) == (0.1875, 0.4375, 0.5)
    assert (e["em_mean_min"], e["em_mean_max"], e["em_mean_difference"]) == (10, 40, 30)
    assert (e["em_std_min"], e["em_std_max"], e["em_boundary_mean"]) == (0, 10, 25)
    # 1 over 3: four faces, 1 - overlap = 0, 0, 0, 0.25; three speak (membrane < 0.3 in both)
    e = row(table, 1, 3)
    same((e["in_faces"], e["in_mean"], e["in_q50"]), (0, M, M))
    assert (e["z_faces"], e["z_mean"], e["z_q50"], e["z_q75"]) == (4, 0.0625, 0.0, 0.0625)
    assert (e["z_speaking_share"], e["z_speaking_mean"], e["z_share"]) == (0.75, 0.0, 1.0)
    assert (e["size_min"], e["size_max"], e["membrane_min"], e["contact"]) == (4, 8, 0.0, 1.0)
    same((e["em_mean_difference"], e["em_boundary_mean"]), (10, M))
    # 2 over 3: 1 - overlap = 0.5, 1, 1, 1; the two faces at x = 3 speak
    e = row(table, 2, 3)
    assert (e["z_faces"], e["z_mean"], e["z_q25"], e["z_q50"]) == (4, 0.875, 0.875, 1.0)
    assert (e["z_speaking_share"], e["z_speaking_mean"]) == (0.5, 1.0)


def test_edge_table_without_em_and_with_background():
    segments, membrane, overlap, _ = tiny()
    segments = segments.copy()
    segments[0, 0, 0] = 0  # no region: its faces are skipped
    table = learned.edge_table(segments, membrane, overlap)
    assert table.names == learned.FEATURES
    assert row(table, 1, 3)["z_faces"] == 3
    assert row(table, 1, 3)["size_min"] == 3


def test_edge_table_refuses_bad_input():
    segments, membrane, overlap, em = tiny()
    with pytest.raises(ValueError, match=r"segments have shape \(2, 2, 3\)"):
        learned.edge_table(segments[:, :, :3], membrane, overlap)
    with pytest.raises(ValueError, match=r"EM has shape \(1, 2, 4\)"):
        learned.edge_table(segments, membrane, overlap, em[:1])
    with pytest.raises(ValueError, match="integer"):
        learned.edge_table(segments.astype(float), membrane, overlap)


def test_quantiles_by_group_equal_numpy_bit_for_bit():
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 40, 2000)
    values = rng.random(2000).astype(np.float32)
    out = learned.quantiles_by_group(groups, values, 42)
    for g in range(42):
        v = values[groups == g].astype(np.float64)
        if not len(v):
            same(out[g].tolist(), [0] + [M] * 6)
            continue
        assert out[g, 0] == len(v)
        assert out[g, 1] == pytest.approx(v.mean(), rel=1e-12)
        np.testing.assert_array_equal(out[g, 2:], np.quantile(v, learned.QUANTILES))


def test_edge_labels_by_majority_body():
    segments = np.array([[[1, 1, 1, 2, 2, 2, 3, 3, 4, 4]]], dtype=np.uint8)
    truth = np.array([[[5, 5, 7, 5, 5, 0, 0, 0, 9, 8]]], dtype=np.uint16)
    # 1 -> 5 (2 of 3), 2 -> 5, 3 -> 0 (background), 4 -> 8 (a tie: the lower ID)
    assert learned.majority(segments, truth).tolist() == [-1, 5, 5, 0, 8]
    edges = np.array([[1, 2], [2, 3], [3, 4], [1, 4]])
    assert learned.edge_labels(segments, truth, edges).tolist() == [1, 0, 0, 0]
    # two regions whose majority is background 0 are not merged
    assert learned.edge_labels(segments, np.zeros_like(truth), [[1, 2]]).tolist() == [0]
    with pytest.raises(ValueError, match="ground truth has shape"):
        learned.majority(segments, truth[:, :, :5])


# ---- the merge ---------------------------------------------------------------------------


def test_merge_union_find_exact():
    edges = np.array([[1, 2], [2, 3], [3, 4], [5, 6], [4, 5]])
    probability = np.array([0.9, 0.4, 0.8, 0.6, 0.2])
    assert learned.merge(edges, probability, 0.5, 7).tolist() == [0, 1, 1, 2, 2, 3, 3, 4]
    assert learned.merge(edges, probability, 0.3, 7).tolist() == [0, 1, 1, 1, 1, 2, 2, 3]
    assert learned.merge(edges, probability, 0.1, 7).tolist() == [0, 1, 1, 1, 1, 1, 1, 2]
    assert learned.merge(edges, probability, 0.9, 7).tolist() == list(range(8))  # strictly above
    assert learned.merge(np.zeros((0, 2)), [], 0.5, 2).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="5 edges but 4 probabilities"):
        learned.merge(edges, probability[:4], 0.5, 7)


def test_merge_equals_connected_components_on_a_random_graph():
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(0)
    edges = rng.integers(1, 300, (600, 2))
    probability = rng.random(600)
    sets = learned.merge(edges, probability, 0.7, 300)
    keep = probability > 0.7
    graph = coo_matrix((np.ones(keep.sum()), (edges[keep, 0], edges[keep, 1])), (301, 301))
    _, components = connected_components(graph, directed=False)
    # the same partition, numbered by each set's smallest region
    _, expected = np.unique(components, return_index=True)
    assert len(expected) == len(np.unique(sets))
    for a, b in edges[keep]:
        assert sets[a] == sets[b]
    assert all(sets[r] == sets[components == components[r]].min() for r in range(301))
    assert np.array_equal(np.unique(sets), np.arange(sets.max() + 1))


def test_relabel_numbers_by_first_appearance():
    segments = np.array([[[3, 3, 1], [2, 4, 4]]], dtype=np.uint8)
    sets = np.array([0, 1, 2, 1, 3])  # regions 1 and 3 together
    labels = learned.relabel(segments, sets)
    assert labels.dtype == np.uint16
    assert labels.tolist() == [[[1, 1, 1], [2, 3, 3]]]


# ---- the classifier ----------------------------------------------------------------------


def test_saved_trees_predict_as_scikit_learn_does():
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(5)
    X = rng.random((400, 3))
    y = (X[:, 0] + 0.5 * X[:, 1] + 0.2 * rng.random(400) > 0.8).astype(int)
    X[::7, 2] = np.nan
    model = C.fit(X, y, ["a", "b", "c"], seed=1, parameters={"max_iter": 30})
    assert model["classifier"]["parameters"] == dict(C.PARAMETERS, max_iter=30,
                                                     monotonic_cst=[0, 0, 0])
    reference = HistGradientBoostingClassifier(random_state=1,
                                               **model["classifier"]["parameters"])
    with threadpool_limits(limits=1, user_api="openmp"):
        reference.fit(X, y)
    test = rng.random((300, 3))
    test[:5, 0] = [-1, 2, 0.5, 0.0, 1.0]
    test[5:9, 1] = np.nan  # a missing statistic (MISSING)
    np.testing.assert_allclose(C.predict(model, test), reference.predict_proba(test)[:, 1],
                               rtol=0, atol=1e-12)
    assert len(model["classifier"]["trees"]) == 30
    json.dumps(model)  # plain JSON
    # a statistic no training edge has is never split on, and NaN in it predicts alike
    hollow = X.copy()
    hollow[:, 2] = np.nan
    blind = C.fit(hollow, y, ["a", "b", "c"], seed=1, parameters={"max_iter": 30},
                  weights=np.ones(400))
    assert 2 not in {f for tree in blind["classifier"]["trees"]
                     for f, leaf in zip(tree["feature"], tree["leaf"]) if not leaf}
    reference = HistGradientBoostingClassifier(random_state=1, **dict(
        model["classifier"]["parameters"], monotonic_cst=[0, 0]))
    with threadpool_limits(limits=1, user_api="openmp"):
        reference.fit(X[:, :2], y, sample_weight=np.ones(400))
    np.testing.assert_allclose(C.predict(blind, test), reference.predict_proba(test[:, :2])[:, 1],
                               rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="both labels"):
        C.fit(X, np.ones(400), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"features have shape \(400, 3\), expected \(400, 2\)"):
        C.fit(X, y, ["a", "b"])
    with pytest.raises(ValueError, match="the model takes 3 columns"):
        C.predict(model, X[:, :2])


def test_check_features_names_the_difference():
    model = {"features": list(learned.feature_names(em=True))}
    with pytest.raises(ValueError, match="trained with EM features .*give --em"):
        C.check_features(model, learned.FEATURES, "--model m.json")
    model = {"features": list(learned.FEATURES)}
    with pytest.raises(ValueError, match="trained without EM features: leave out --em"):
        C.check_features(model, learned.feature_names(em=True))
    model = {"features": ["in_faces", "gala_moments"]}
    with pytest.raises(ValueError, match="another feature set .* 'gala_moments'"):
        C.check_features(model, learned.FEATURES)


# ---- training and applying ---------------------------------------------------------------


def noisy(seed, shape=(12, 96, 96)):
    """Ground truth and noisy membrane / overlap probabilities made from it."""
    truth = synthetic_labels(shape, seed=seed)
    rng = np.random.default_rng(seed)
    mask = L.membrane(truth)
    membrane = ndimage.gaussian_filter(mask.astype(np.float32), (0, 1, 1)) * 1.5
    membrane += rng.normal(0, 0.15, membrane.shape)
    overlap = ndimage.gaussian_filter(L.overlap(truth, mask).astype(np.float32), (0, 1, 1))
    overlap += rng.normal(0, 0.2, overlap.shape)
    return (truth, np.clip(membrane, 0, 1).astype(np.float32),
            np.clip(overlap, 0, 1).astype(np.float32))


def voi(truth, labels):
    s = evaluate(truth, labels)
    return s["voi_split"] + s["voi_merge"], s


def test_train_on_one_volume_apply_on_another_beats_waterz():
    truth, membrane, overlap = noisy(1)
    model = learned.train(membrane, overlap, truth, seed=0)
    assert model["threshold"] in learned.THRESHOLDS
    assert model["training"]["edges"] == model["initial"]["edges"] > 0
    assert 0 < model["training"]["positives"] < model["training"]["edges"]
    assert [r["threshold"] for r in model["sweep"]] == list(learned.THRESHOLDS)
    assert model["threshold"] == learned.choose(model["sweep"])
    again = learned.train(membrane, overlap, truth, seed=0)
    assert again == model  # seeded: the same model
    truth2, membrane2, overlap2 = noisy(2)
    (labels,) = learned.apply(model, membrane2, overlap2)
    # the baselines: waterz's median agglomeration at its default threshold, and the initial
    # segments the learned merge starts from (nothing merged)
    waterz = agglomerate(membrane2, overlap2, [DEFAULT_THRESHOLD])[0]
    initial = learned.initial_segments(membrane2, overlap2)
    ours, scores = voi(truth2, labels)
    assert ours <= voi(truth2, waterz)[0]
    assert ours <= voi(truth2, initial)[0]
    assert scores["adapted_rand_error"] <= evaluate(truth2, waterz)["adapted_rand_error"]
    # the saved model predicts the same
    loaded = json.loads(json.dumps(model))
    np.testing.assert_array_equal(learned.apply(loaded, membrane2, overlap2)[0], labels)


def test_3d_fragments_are_recorded_and_cut_again_by_apply():
    truth, membrane, overlap = noisy(1, (8, 64, 64))
    model = learned.train(membrane, overlap, truth, parameters={"max_iter": 5},
                          thresholds=[0.5], fragments="3d")
    assert model["initial"]["fragments"] == "3d"
    initial3d = learned.initial_segments(membrane, overlap, fragments="3d")
    np.testing.assert_array_equal(
        initial3d, agglomerate(membrane, overlap, [learned.INITIAL_THRESHOLD],
                               fragment_mode="3d")[0])
    assert not np.array_equal(initial3d, learned.initial_segments(membrane, overlap))
    assert model["initial"]["regions"] == int(initial3d.max())
    # nothing above a threshold of 1: apply gives back the 3-D initial segments themselves
    (kept,) = learned.apply(model, membrane, overlap, thresholds=[1.0])
    np.testing.assert_array_equal(kept, initial3d)
    # a model of before the fragments were recorded cuts per-slice fragments
    old = json.loads(json.dumps(model))
    del old["initial"]["fragments"]
    (kept2d,) = learned.apply(old, membrane, overlap, thresholds=[1.0])
    np.testing.assert_array_equal(kept2d, learned.initial_segments(membrane, overlap))


def test_choose_reads_voi_then_adapted_rand_error():
    def r(t, split, merge, are):
        return {"threshold": t, "labels": {"voi_split": split, "voi_merge": merge,
                                           "adapted_rand_error": are}}

    rows = [r(0.1, 0.5, 0.1, 0.05), r(0.2, 0.3, 0.2, 0.01), r(0.3, 0.2, 0.3, 0.02),
            r(0.4, 0.1, 0.6, 0.001)]
    assert learned.choose(rows) == 0.2  # 0.5 bits at 0.2 and 0.3: the lower error
    assert learned.choose(rows[2:]) == 0.3


# ---- the CLI -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("learned")
    paths = {}
    for quadrant, seed in (("d", 1), ("c", 2)):
        truth, membrane, overlap = noisy(seed, (8, 64, 64))
        em = (255 * (1 - membrane)).astype(np.uint8)
        for name, array in (("label", truth), ("membrane", (membrane * 255).astype(np.uint8)),
                            ("overlap", (overlap * 255).astype(np.uint8)), ("em", em)):
            path = folder / f"{name}_{quadrant}.tif"
            tifffile.imwrite(path, array)
            paths[f"{name}_{quadrant}"] = path
    return paths


def digest(paths):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def train_args(v, output, *extra):
    return ["train", "--membrane", str(v["membrane_d"]), "--overlap", str(v["overlap_d"]),
            "--labels", str(v["label_d"]), "--output", str(output), *extra]


def apply_args(v, model, output, *extra):
    return ["apply", "--model", str(model), "--membrane", str(v["membrane_c"]),
            "--overlap", str(v["overlap_c"]), "--output", str(output), *extra]


def test_cli_train_with_3d_fragments(volumes, tmp_path):
    model_path = tmp_path / "model3d.json"
    assert main(train_args(volumes, model_path, "--fragments", "3d")) == 0
    model = json.loads(model_path.read_text())
    assert model["initial"]["fragments"] == "3d"
    out = tmp_path / "seg3d.tif"
    assert main(apply_args(volumes, model_path, out)) == 0
    expected = learned.apply(model, tifffile.imread(volumes["membrane_c"]),
                             tifffile.imread(volumes["overlap_c"]))[0]
    np.testing.assert_array_equal(tifffile.imread(out), expected)


def test_cli_train_then_apply(volumes, tmp_path, capsys):
    before = digest(volumes.values())
    model_path = tmp_path / "model.json"
    assert main(train_args(volumes, model_path, "--em", str(volumes["em_d"]))) == 0
    model = json.loads(model_path.read_text())
    assert model["format"] == C.FORMAT and model["version"] == C.VERSION
    assert model["features"] == list(learned.feature_names(em=True))
    assert model["inputs"]["labels"] == str(volumes["label_d"])
    out = tmp_path / "seg.tif"
    assert main(apply_args(volumes, model_path, out, "--em", str(volumes["em_c"]))) == 0
    seg = tifffile.imread(out)
    expected = learned.apply(model, tifffile.imread(volumes["membrane_c"]),
                             tifffile.imread(volumes["overlap_c"]),
                             tifffile.imread(volumes["em_c"]))[0]
    np.testing.assert_array_equal(seg, expected)
    assert main(apply_args(volumes, model_path, tmp_path / "all.tif", "--em",
                           str(volumes["em_c"]), "--threshold", "0")) == 0
    assert "wrote" in capsys.readouterr().out
    assert digest(volumes.values()) == before


def refused(capsys, argv, match, tmp_path, keep=()):
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert match in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_cli_refuses_bad_input(volumes, tmp_path, capsys):
    v = volumes
    before = digest(v.values())
    model_path = tmp_path / "model.json"
    assert main(train_args(v, model_path)) == 0  # without EM
    capsys.readouterr()
    out = tmp_path / "seg.tif"
    # a classifier of another feature set
    refused(capsys, apply_args(v, model_path, out, "--em", str(v["em_c"])),
            "trained without EM features: leave out --em", tmp_path)
    other = tmp_path / "other.json"
    model = json.loads(model_path.read_text())
    other.write_text(json.dumps(dict(model, features=model["features"][:-1] + ["gala"])))
    refused(capsys, apply_args(v, other, out), "another feature set", tmp_path)
    old = tmp_path / "old.json"
    old.write_text(json.dumps(dict(model, version=0)))
    refused(capsys, apply_args(v, old, out), "has version 0", tmp_path)
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps(dict(model, initial=dict(model["initial"], fragments="4d"))))
    refused(capsys, apply_args(v, odd, out), "has initial fragments '4d'; expected 2d or 3d",
            tmp_path)
    for initial in ([], "3d", None):
        odd.write_text(json.dumps(dict(model, initial=initial)))
        refused(capsys, apply_args(v, odd, out), f"has initial {initial!r}; expected an object",
                tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(train_args(v, tmp_path / "m.json", "--fragments", "4d"))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--fragments: invalid choice: '4d'" in err, err
    refused(capsys, apply_args(v, v["label_c"], out), "is not a JSON model file", tmp_path)
    refused(capsys, apply_args(v, tmp_path / "none.json", out), "--model does not exist",
            tmp_path)
    # outputs that are or lie inside an input, missing files, shapes, flags
    refused(capsys, apply_args(v, model_path, v["membrane_c"]), "--output", tmp_path)
    refused(capsys, apply_args(v, model_path, model_path), "is --model", tmp_path)
    refused(capsys, train_args(v, v["label_d"]), "is --labels", tmp_path)
    refused(capsys, train_args(v, tmp_path / "model.pkl"), "must end in .json", tmp_path)
    refused(capsys, train_args(v, tmp_path / "m.json", "--em", str(v["em_c"])[:-4] + "x.tif"),
            "--em does not exist", tmp_path)
    refused(capsys, train_args(v, tmp_path / "m.json", "--thresholds", "1.5"),
            "--thresholds must be in [0, 1]", tmp_path)
    refused(capsys, apply_args(v, model_path, out, "--threshold", "-1"),
            "--threshold must be in [0, 1]", tmp_path)
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, np.zeros((8, 64, 32), np.uint16))
    refused(capsys, ["train", "--membrane", str(v["membrane_d"]), "--overlap",
                     str(v["overlap_d"]), "--labels", str(small), "--output",
                     str(tmp_path / "m.json")], "shapes differ: --labels", tmp_path)
    refused(capsys, apply_args(v, model_path, out) + ["--overlap", str(small)],
            "membrane slices are 64 x 64 but overlap slices are 64 x 32", tmp_path)
    assert digest(v.values()) == before
    assert not out.exists()


def test_a_volume_without_edges_is_one_object():
    segments = np.ones((1, 4, 5), dtype=np.uint8)
    table = learned.edge_table(segments, np.zeros((1, 4, 5), np.float32),
                               np.zeros((0, 4, 5), np.float32))
    assert table.edges.shape == (0, 2) and table.features.shape == (0, len(learned.FEATURES))
    truth, membrane, overlap = noisy(1, (4, 48, 48))
    model = learned.train(membrane, overlap, truth, parameters={"max_iter": 5},
                          thresholds=[0.5])
    assert C.predict(model, table.features).shape == (0,)
    # a blank slice: one fragment, nothing to merge
    (labels,) = learned.apply(model, np.zeros((1, 6, 6), np.float32),
                              np.zeros((0, 6, 6), np.float32))
    assert labels.tolist() == np.ones((1, 6, 6), int).tolist()


def test_training_needs_both_edge_labels(volumes, tmp_path, capsys):
    one = tmp_path / "one_body.tif"
    tifffile.imwrite(one, np.ones((8, 64, 64), np.uint16))
    argv = ["train", "--membrane", str(volumes["membrane_d"]), "--overlap",
            str(volumes["overlap_d"]), "--labels", str(one), "--output",
            str(tmp_path / "m.json")]
    assert main(argv) == 2
    assert "need both labels, merge (1) and keep apart (0); got [1]" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()
