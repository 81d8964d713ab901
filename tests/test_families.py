"""subnetify on torchvision's classification families: every mask used, nothing trainable that the
artifact does not store, forward+backward, and save -> load with identical logits (small inputs)."""

import pytest
import torch
import torch.nn as nn

import popcli
from popcli.errors import ArtifactError, ModelError
from popcli.models import masked_layers
from popcli.nn import SubnetMultiheadAttention

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


FAMILIES = [  # (arch, create_model options): every policy value appears somewhere
    pytest.param("tv_resnet18", {}, id="resnet", marks=pytest.mark.slow),
    pytest.param("tv_mobilenet_v3_small", {"biases": "frozen"}, id="mobilenetv3"),
    pytest.param("tv_efficientnet_b0", {"biases": "train"}, id="efficientnet", marks=pytest.mark.slow),
    pytest.param("tv_convnext_tiny", {"biases": "train", "norms": "train"}, id="convnext", marks=pytest.mark.slow),
    pytest.param("tv_regnet_y_400mf", {"biases": "frozen"}, id="regnet", marks=pytest.mark.slow),
    pytest.param("tv_vit_tiny", {"biases": "train", "params": "frozen"}, id="vit_tiny"),
    pytest.param("tv_vit_b_16", {"biases": "frozen", "norms": "train"}, id="vit_b_16", marks=pytest.mark.slow),
]


def _only_scores_and_stored_train(model):
    report = model.popcli_report
    stored, frozen = set(report.stored), set(report.frozen)
    for name, p in model.named_parameters():
        if name.endswith(".scores"):
            assert p.requires_grad, name
        elif p.requires_grad:
            assert name in stored, f"{name} trains but the artifact would not store it"
        else:
            assert name in frozen or name.rpartition(".")[0] in report.masked, f"{name} is frozen but not regenerated"
    assert not (stored & frozen)


def _every_mask_is_used(model, x):
    """For each masked layer, dropping its most influential kept weight changes the output."""
    model.eval()
    model.zero_grad()
    model(x).square().sum().backward()  # eval with gradients: straight-through grads of every score
    with torch.no_grad():
        base = model(x)
    for name, layer in masked_layers(model):
        mask = layer.mask().clone()
        grad = layer.scores.grad
        assert grad is not None and grad.abs().max() > 0, f"{name}: its mask does not reach the output"
        index = torch.where(mask, grad.abs(), torch.zeros_like(grad)).argmax()
        flipped = mask.clone()
        flipped.view(-1)[index] = False
        layer.mask_override = flipped
        with torch.no_grad():
            changed = not torch.equal(model(x), base)
        layer.mask_override = None
        assert changed, f"{name}: flipping a kept weight's mask changes nothing"


@pytest.mark.parametrize("arch, options", FAMILIES)
def test_family(arch, options, tmp_path):
    model = popcli.create_model(arch, density=0.5, num_classes=5, in_chans=3, image_size=32, seed=1, **options)
    report = model.popcli_report
    assert report.masked and not report.unhandled
    _only_scores_and_stored_train(model)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model.train()
    model(x).logsumexp(1).sum().backward()  # forward + backward; batch-norm statistics move
    assert all(layer.scores.grad is not None for _, layer in masked_layers(model))
    _every_mask_is_used(model, x)
    model.eval()
    path = tmp_path / "m.safetensors"
    art = popcli.save(model, path)  # no recipe: the model describes itself
    assert not [k for k in art.tensors if k.endswith(".scores")]
    assert sorted(k[len("state."):] for k in art.tensors if k.startswith("state.")) == sorted(report.stored)
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(popcli.load(path, mode="search")(x), expected)
        assert torch.equal(popcli.load(path, fold_bn=False)(x), expected)
        torch.testing.assert_close(popcli.load(path)(x), expected, rtol=1e-4, atol=1e-4)


def test_attention_masks_both_projections_and_encoder_layer_runs_in_eval():
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True, dropout=0.0)
    model = popcli.subnetify(nn.Sequential(layer), 0.5, biases="train", norms="train")
    attention = model[0].self_attn
    assert isinstance(attention, SubnetMultiheadAttention)
    assert {n for n, _ in masked_layers(model)} >= {"0.self_attn.in_proj", "0.self_attn.out_proj"}
    _only_scores_and_stored_train(model)
    x = torch.randn(2, 5, 16)
    _every_mask_is_used(model, x)  # eval: also off TransformerEncoderLayer's fused fast path
    reference = nn.MultiheadAttention(16, 4, batch_first=True)  # same math as torch's attention
    with torch.no_grad():
        reference.in_proj_weight.copy_(attention.in_proj.effective_weight())
        reference.in_proj_bias.copy_(attention.in_proj.bias)
        reference.out_proj.weight.copy_(attention.out_proj.effective_weight())
        reference.out_proj.bias.copy_(attention.out_proj.bias)
        torch.testing.assert_close(attention(x, x, x)[0], reference(x, x, x)[0], rtol=1e-5, atol=1e-6)


def test_torchvision_instance_converts_and_reports():
    import torchvision

    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=32,
                                               mlp_dim=64, num_classes=3)  # vit_b_16's layout, small
    model = popcli.subnetify(vit, 0.3, biases="drop")
    report = model.popcli_report
    assert "heads.head" in report.masked and "encoder.layers.encoder_layer_0.self_attention.in_proj" in report.masked
    assert set(report.stored) == {"class_token", "encoder.pos_embedding"} and not report.frozen
    trainable = [n for n, p in model.named_parameters() if p.requires_grad and not n.endswith(".scores")]
    assert trainable == ["class_token", "encoder.pos_embedding"]  # no dense weights left trainable


def test_unhandled_modules_are_an_error_unless_allowed():
    def make():
        return nn.Sequential(nn.Conv1d(2, 4, 3), nn.Flatten(), nn.Linear(8, 3))

    with pytest.raises(ModelError, match="allow_unhandled=True"):
        popcli.subnetify(make(), 0.5)
    model = popcli.subnetify(make(), 0.5, allow_unhandled=True, params="frozen")
    assert model.popcli_report.unhandled == ["0"] and set(model.popcli_report.frozen) == {"0.weight", "0.bias"}
    assert not model[0].weight.requires_grad


def test_policies_are_checked():
    with pytest.raises(ModelError, match="biases="):
        popcli.subnetify(nn.Linear(3, 2), 0.5, biases="keep")


def test_save_refuses_a_recipe_that_does_not_describe_the_model(tmp_path):
    model = popcli.create_model("fc", density=0.5, num_classes=4, in_chans=1, image_size=8, hidden=[16])
    other = popcli.create_model("fc", density=0.5, num_classes=4, in_chans=1, image_size=8, hidden=[16, 8])
    desc = other.popcli_description
    with pytest.raises(ArtifactError, match="does not describe this model"):
        popcli.save(model, tmp_path / "a.safetensors", recipe=desc["recipe"], data_info=desc["data_info"])
    assert not (tmp_path / "a.safetensors").exists()
    with pytest.raises(ArtifactError, match="does not describe itself"):
        popcli.save(popcli.subnetify(nn.Sequential(nn.Linear(4, 2)), 0.5), tmp_path / "b.safetensors")
