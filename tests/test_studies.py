"""Helpers of the benchmarks/ studies whose numbers the documentation quotes."""

import numpy as np

from benchmarks.study_agglomeration import dust_merge


def test_dust_merge_takes_the_neighbour_with_the_lowest_membrane_or_the_longest_contact():
    labels = np.array([1, 1, 1, 2, 3, 3]).reshape(1, 1, 6)
    membrane = np.array([0, 0, 0.9, 0.1, 0.2, 0]).reshape(1, 1, 6)
    # the faces 1|2 and 2|3 score max(0.9, 0.1) and max(0.1, 0.2): 2 joins 3
    np.testing.assert_array_equal(dust_merge(labels, membrane, 2).ravel(), [1, 1, 1, 3, 3, 3])
    # one face each: the tie goes to the lower ID
    np.testing.assert_array_equal(dust_merge(labels, membrane, 2, "contact").ravel(),
                                  [1, 1, 1, 1, 3, 3])
    assert dust_merge(labels, membrane, 1).tolist() == labels.tolist()  # nothing under 1 voxel


def test_a_merged_segment_still_small_merges_on_with_its_inherited_faces():
    labels = np.array([5, 5, 5, 5, 2, 3, 4, 4, 4]).reshape(1, 1, 9)
    membrane = np.array([0, 0, 0, 0.8, 0.1, 0.1, 0.3, 0, 0]).reshape(1, 1, 9)
    # 2 (1 voxel) joins 3 (face 0.1 against 5's 0.8); 2 + 3 (2 voxels) still small: it joins 4
    # (0.3) rather than 5 (0.8, the face it inherited from 2)
    np.testing.assert_array_equal(dust_merge(labels, membrane, 3).ravel(),
                                  [5, 5, 5, 5, 4, 4, 4, 4, 4])
    # contact: 2 has one face with 5 and one with 3; the tie goes to the lower ID, 3
    np.testing.assert_array_equal(dust_merge(labels, membrane, 2, "contact").ravel(),
                                  [5, 5, 5, 5, 3, 3, 4, 4, 4])


def test_dust_merge_counts_faces_along_every_axis():
    labels = np.ones((2, 2, 2), int)
    labels[1, 1, 1] = 7  # one voxel with three faces to 1, and nothing else to join
    assert (dust_merge(labels, np.zeros(labels.shape), 2) == 1).all()
