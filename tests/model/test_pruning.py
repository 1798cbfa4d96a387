import math

import torch

from referdino_demo.model import ReferDinoConfig
from referdino_demo.model.pruning import gather_rows, pruning_gate, select_queries


def test_query_counts_follow_ceil():
    assert ReferDinoConfig.swin_b().query_counts() == [900, 450, 225, 113, 57, 29, 15]
    assert ReferDinoConfig.swin_b(query_decay=1.0).query_counts() == [900] * 7
    assert ReferDinoConfig.tiny().query_counts()[-1] == math.ceil(300 / 2**6)


def test_gate_is_the_mean_of_two_softmaxes():
    torch.manual_seed(0)
    b, n, l, d = 2, 5, 3, 4
    output, text = torch.randn(b, n, d), torch.randn(b, l, d)
    attention = torch.rand(b, n, n).softmax(-1)
    text_mask = torch.tensor([[True, True, False], [True, True, True]])
    gate = pruning_gate(output, attention, text, text_mask)
    for i in range(b):
        grounding = torch.tensor([max(float(output[i, q] @ text[i, k]) for k in range(l) if text_mask[i, k])
                                 for q in range(n)]).softmax(0)
        received = torch.tensor([sum(float(attention[i, r, c]) for r in range(n) if r != c) for c in range(n)])
        assert torch.allclose(gate[i], (grounding + received.softmax(0)) / 2, atol=1e-6)


def test_selection_keeps_the_highest_gates_in_descending_order():
    gate = torch.tensor([[0.1, 0.4, 0.3, 0.2]])
    values, indices = select_queries(gate, 2)
    assert indices.tolist() == [[1, 2]] and torch.allclose(values, torch.tensor([[0.4, 0.3]]))
    rows = gather_rows(torch.arange(8.0).view(1, 4, 2), indices)
    assert rows.tolist() == [[[2.0, 3.0], [4.0, 5.0]]]
