import pytest
import torch

from mtssad.model import MultiHeadNet, count_parameters


@pytest.mark.parametrize("backbone,chans", [("wrn-10-1", 1), ("wrn-10-2", 3), ("wrn-16-1", 4)])
def test_heads_shapes_finite_and_gradients_reach_every_parameter(backbone, chans):
    torch.manual_seed(0)
    net = MultiHeadNet(backbone, chans, {"vertical": 3, "rotation": 4, "jigsaw": 5})
    x = torch.randn(6, chans, 32, 32)
    out = net(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"vertical": (6, 3), "rotation": (6, 4), "jigsaw": (6, 5)}
    assert all(torch.isfinite(v).all() for v in out.values())
    sum(v.sum() for v in out.values()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_paper_parameter_counts():
    assert abs(count_parameters(MultiHeadNet("wrn-16-4", 3, {"h": 10})) - 2.75e6) < 0.01e6
    assert abs(count_parameters(MultiHeadNet("wrn-16-8", 3, {"h": 10})) - 10.96e6) < 0.01e6


def test_bad_backbone_names():
    with pytest.raises(ValueError, match="6n\\+4"):
        MultiHeadNet("wrn-12-1", 1, {"h": 2})
    with pytest.raises(ValueError, match="wrn-<depth>-<width>"):
        MultiHeadNet("resnet18", 1, {"h": 2})


def test_channels_last_changes_layout_not_outputs():
    torch.manual_seed(0)
    nchw = MultiHeadNet("wrn-10-1", 3, {"rotation": 4}, dropout=0.0)
    nhwc = MultiHeadNet("wrn-10-1", 3, {"rotation": 4}, dropout=0.0, channels_last=True)
    nhwc.load_state_dict(nchw.state_dict())
    assert nhwc.backbone.stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert nhwc.backbone.stem.weight.stride() != nchw.backbone.stem.weight.stride()
    x = torch.randn(8, 3, 32, 32)
    for train in (True, False):
        nchw.train(train), nhwc.train(train)
        torch.testing.assert_close(nhwc(x)["rotation"], nchw(x)["rotation"], rtol=1e-4, atol=1e-4)
