import torch

from referdino_demo.model.outputs import FrameQueries
from referdino_demo.model.tracker import QueryTracker, match_to_memory


def test_matching_recovers_a_permutation():
    torch.manual_seed(0)
    memory = torch.randn(6, 16)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    shuffled = memory[perm] + 0.01 * torch.randn(6, 16)
    found = match_to_memory(memory, shuffled)
    assert torch.equal(perm[found], torch.arange(6))  # slot i receives the row that holds object i


def _frames(hs, text):
    t, q, _ = hs.shape
    return FrameQueries(hs=hs, reference=torch.rand(t, q, 4), text=text, token_ids=torch.arange(q).repeat(t, 1))


def test_tracker_puts_each_object_in_its_slot_across_chunks():
    torch.manual_seed(1)
    objects = torch.randn(5, 8)
    orders = [torch.randperm(5) for _ in range(4)]
    hs = torch.stack([objects[o] + 0.01 * torch.randn(5, 8) for o in orders])
    text, mask = torch.randn(4, 3, 8), torch.ones(1, 3, dtype=torch.bool)
    whole, _ = QueryTracker(0.1)(_frames(hs, text), mask)
    tracker = QueryTracker(0.1)
    first, _ = tracker(_frames(hs[:2], text[:2]), mask)
    second, _ = tracker(_frames(hs[2:], text[2:]), mask)
    for t in range(4):  # slot i always holds the object frame 0 put there
        assert torch.equal(whole.hs[t].argmax(1), whole.hs[0].argmax(1))
    assert torch.equal(torch.cat([first.hs, second.hs]), whole.hs)


def test_equal_scores_do_not_poison_the_memory():
    hs = torch.ones(2, 3, 4) + torch.eye(3, 4)[None]
    text, mask = torch.zeros(2, 2, 4), torch.ones(1, 2, dtype=torch.bool)  # every score is 0
    tracker = QueryTracker(0.1)
    tracker(_frames(hs, text), mask)
    assert torch.isfinite(tracker.memory).all()
