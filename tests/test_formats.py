"""Skeleton-format registry: topology checks, SMPL maps, custom formats, errors."""

import numpy as np
import pytest
import torch

from posrft.body.formats import (
    NTU25,
    SMPL24,
    SMPL24_PARENTS,
    SkeletonFormat,
    custom_format,
    get_format,
    list_formats,
)

BUILTINS = ["coco17", "h36m17", "ntu25", "smpl22", "smpl24"]


def test_registry_lists_the_builtins():
    assert set(BUILTINS) <= set(list_formats())


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_bones_are_connected(name):
    fmt = get_format(name)
    # Union-find over the bone list: every built-in skeleton is one connected body.
    root = list(range(fmt.num_joints))

    def find(i):
        while root[i] != i:
            i = root[i]
        return i

    for a, b in fmt.bones:
        root[find(a)] = find(b)
    assert len({find(i) for i in range(fmt.num_joints)}) == 1


@pytest.mark.parametrize("name", BUILTINS)
def test_from_smpl_is_affine(name):
    """Rows sum to one, so translating SMPL joints translates the converted joints."""
    fmt = get_format(name)
    x = torch.randn(3, 24, 3, dtype=torch.float64)
    shift = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    torch.testing.assert_close(fmt.from_smpl(x + shift), fmt.from_smpl(x) + shift)
    np.testing.assert_allclose(fmt.smpl_matrix().sum(1), 1.0)


def test_smpl24_map_is_identity_and_parents_match():
    x = torch.randn(2, 24, 3)
    torch.testing.assert_close(SMPL24.from_smpl(x), x)
    assert SMPL24.parents == SMPL24_PARENTS
    assert get_format("smpl22").num_joints == 22


def test_exact_correspondences_pick_the_named_smpl_joint():
    x = torch.randn(24, 3)
    h36m = get_format("h36m17")
    out = h36m.from_smpl(x)
    smpl_index = {n: i for i, n in enumerate(SMPL24.joint_names)}
    for i, name in enumerate(h36m.joint_names):
        if name in smpl_index and name not in h36m.approximate:
            torch.testing.assert_close(out[i], x[smpl_index[name]])


def test_ntu25_has_24_bones_and_mirror_pairs():
    assert NTU25.num_joints == 25 and len(NTU25.bones) == 24
    names = NTU25.joint_names
    for left, right in NTU25.flip_pairs:
        assert names[left].replace("left_", "") == names[right].replace("right_", "")
    assert len(NTU25.flip_pairs) == 10


def test_custom_chain_and_bad_topologies():
    chain = custom_format([(0, 1), (1, 2), (2, 3), (3, 4)])
    assert chain.num_joints == 5 and chain.smpl_map is None
    with pytest.raises(ValueError, match=r"bone 1 = \(1, 7\).*out of range \[0, 5\)"):
        custom_format([(0, 1), (1, 7)], num_joints=5)
    with pytest.raises(ValueError, match="itself"):
        custom_format([(2, 2)], num_joints=3)
    with pytest.raises(ValueError, match="no mapping from SMPL"):
        chain.from_smpl(torch.zeros(24, 3))
    with pytest.raises(ValueError, match="parents must precede"):
        SkeletonFormat("bad", ("a", "b"), ((0, 1),), parents=(1, -1))


def test_unknown_format_lists_available():
    with pytest.raises(KeyError, match="available: .*ntu25"):
        get_format("kinect99")


def test_check_joints_names_expected_shape():
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 25, 3\)"):
        NTU25.check_joints(torch.zeros(4, 24, 3), what="clip")
    NTU25.check_joints(torch.zeros(2, 4, 25, 3))
