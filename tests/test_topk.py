import pytest
import torch

from rmt_core.tracing.topk import top_k_rows


@pytest.mark.parametrize("shape,k", [((37, 4096), 5), ((3, 4096), 1), ((5, 640), 20), ((4, 100), 5), ((2, 128), 3)])
def test_top_k_rows_equals_torch_topk(shape, k):
    torch.manual_seed(0)
    scores = torch.randn(shape) * 4
    values, indices = top_k_rows(scores, k)
    expected = torch.topk(scores, k, dim=-1)
    assert torch.equal(values, expected.values)
    assert torch.equal(indices, expected.indices)  # random floats: no ties


def test_top_k_rows_when_the_best_entries_share_one_block():
    scores = torch.zeros(2, 4096)
    scores[0, 64:69] = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])  # all five in block 1
    scores[1, [0, 4095, 2000, 2001, 70]] = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    values, indices = top_k_rows(scores, 5)
    assert indices[0].tolist() == [64, 65, 66, 67, 68]
    assert indices[1].tolist() == [70, 2001, 2000, 4095, 0]
    assert values[1].tolist() == [5.0, 4.0, 3.0, 2.0, 1.0]


def test_top_k_rows_ties_give_the_right_values_and_real_positions():
    scores = torch.ones(4, 4096)
    scores[:, 100] = 2.0
    values, indices = top_k_rows(scores, 5)
    assert torch.equal(values, torch.topk(scores, 5, dim=-1).values)
    assert torch.equal(scores.gather(1, indices), values)
    assert (indices[:, 0] == 100).all() and all(len(set(row.tolist())) == 5 for row in indices)
