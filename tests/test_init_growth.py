"""A partial --init into a wider or deeper transformer starts from the same function: the grown
model's contextualized paths equal the start model's (model/train.py: _grow_transformer)."""
from dataclasses import replace

import torch

from anycode.model import train
from anycode.model.slm import SLM, SLMConfig

torch.set_num_threads(1)
BASE = SLMConfig(n_types=20, n_subtokens=30, d_type=24, d_index=8, d_subtoken=32, d_lstm=32, n_layers=2,
                 n_heads=2, d_ff=64, dropout=0.1, lstm_dropout=0.2, context_once=True, file_tokens=4)


def _trained_like(cfg: SLMConfig) -> SLM:
    torch.manual_seed(0)
    m = SLM(cfg)
    with torch.no_grad():       # LayerNorm affines away from (1, 0), as after training
        for layer in m.transformer.layers:
            for n in (layer.norm1, layer.norm2):
                n.weight.uniform_(0.5, 2.0)
                n.bias.uniform_(-0.5, 0.5)
    return m.eval()


def test_wider_and_deeper_transformer_starts_as_the_old_one():
    old = _trained_like(BASE)
    torch.manual_seed(1)
    grown = SLM(replace(BASE, n_layers=4, d_ff=128)).eval()
    fresh = train.init_from(grown, old.state_dict())
    assert any(k.startswith("transformer.layers.3.") for k in fresh)
    paths, mask = torch.randn(3, 7, 32), torch.rand(3, 7) > 0.3
    mask[:, 0] = True
    with torch.no_grad():
        want = old.contextualize(paths, mask)
        got = grown.contextualize(paths, mask)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    # and it still learns: the new layers' zeroed projections take gradients
    grown.train()
    grown.contextualize(paths, mask).pow(2).sum().backward()
    assert grown.transformer.layers[3].linear2.weight.grad.abs().sum() > 0


def test_same_shape_init_copies_everything():
    old = _trained_like(BASE)
    new = SLM(BASE).eval()
    assert train.init_from(new, old.state_dict()) == []
    for k, v in new.state_dict().items():
        assert torch.equal(v, old.state_dict()[k]), k
