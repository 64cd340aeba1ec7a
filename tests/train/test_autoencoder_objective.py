import torch
from omegaconf import OmegaConf

from reel.autoencoders import build_autoencoder
from reel.config import load_config
from reel.train.autoencoder_objective import AutoencoderObjective, shape_weights, silhouette_loss, soft_object_mask


def tiny(*overrides):
    cfg, _ = load_config(["autoencoder=dc-ae-v-tiny", *overrides])
    torch.manual_seed(0)
    return cfg, build_autoencoder(cfg.autoencoder)


def clip():
    torch.manual_seed(1)
    return torch.rand(1, 3, 5, 32, 32) * 2 - 1


def test_weights_rise_on_edges_and_saturated_objects():
    video = torch.full((1, 3, 1, 16, 16), -0.7)
    video[:, 0, :, 4:12, 4:12] = 0.8  # a red square on a dark background
    video[:, 1:, :, 4:12, 4:12] = -0.7
    w = shape_weights(video, edge=2.0, obj=2.0)[0, 0, 0]
    assert w[0, 0] == 1.0  # flat background
    assert w[8, 8] == 3.0  # inside the object
    assert w[4, 8] > w[8, 8]  # its edge gets both


def red_triangle(apex_rows: int) -> torch.Tensor:
    """A red triangle on a dark background, (1, 3, 1, 16, 16) in [-1, 1]; its top rows faded to grey."""
    video = torch.full((1, 3, 1, 16, 16), -0.75)
    for row in range(2, 14):
        half = (row - 2) // 2
        video[0, :, 0, row, 8 - half:9 + half] = torch.tensor([0.8, -0.69, -0.69])[:, None]
    video[0, :, 0, 2:2 + apex_rows] = -0.75
    return video


def test_the_soft_object_mask_follows_the_oracle_rule_and_the_silhouette_loss_sees_a_lost_apex():
    sharp, blunt = red_triangle(0), red_triangle(3)
    mask = soft_object_mask(sharp)[0, 0, 0]
    assert mask[8, 8] > 0.99 and mask[0, 0] < 0.01  # object vs background
    assert silhouette_loss(sharp, sharp) == 0
    blunt.requires_grad_(True)
    loss = silhouette_loss(blunt, sharp)
    loss.backward()
    assert loss > 0.05 and blunt.grad[0, 0, 0, 2:5].abs().sum() > 0  # pushes the missing apex back
    assert blunt.grad[0, 0, 0, 10:].abs().sum() == 0  # the intact base is left alone


def test_silhouette_weight_adds_the_loss_and_reports_it():
    cfg, model = tiny("train.ae.silhouette=2.0")
    _, metrics = AutoencoderObjective(cfg.train.ae)(model, {"video": clip()}, step=0)
    assert metrics["silhouette"] > 0
    _, plain = AutoencoderObjective(tiny()[0].train.ae)(model, {"video": clip()}, step=0)
    assert "silhouette" not in plain


def test_discriminator_turns_on_at_its_start_step_and_round_trips_its_state():
    cfg, model = tiny("train.ae.disc_weight=0.5", "train.ae.disc_start=2", "train.ae.disc_width=8")
    objective = AutoencoderObjective(cfg.train.ae)
    loss0, metrics0 = objective(model, {"video": clip()}, step=0)
    assert "gan_g" not in metrics0 and torch.isfinite(loss0)
    before = [p.clone() for p in objective.disc.parameters()]
    loss, metrics = objective(model, {"video": clip()}, step=2)
    loss.backward()
    assert {"gan_g", "gan_d", "gan_weight"} <= set(metrics) and torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, objective.disc.parameters()))  # D trained
    assert all(p.grad is None for p in objective.disc.parameters())  # G's loss did not train D
    other = AutoencoderObjective(cfg.train.ae)
    other.load_state_dict(objective.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(other.disc.parameters(), objective.disc.parameters()))


def test_without_discriminator_state_is_empty():
    cfg, model = tiny()
    objective = AutoencoderObjective(cfg.train.ae)
    assert objective.state_dict() == {} and objective.disc is None
