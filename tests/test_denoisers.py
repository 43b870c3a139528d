"""Denoisers: architectures, objectives, checkpoints, the load_denoiser API and the data rule."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apiwrap.denoisers import (
    ARCHITECTURES,
    Denoiser,
    available_denoisers,
    create_architecture,
    load_denoiser,
    save_checkpoint,
)
from apiwrap.denoisers.classifiers import load_classifier
from apiwrap.denoisers.data import RandomCropSampler, ensure_not_evaluation_set, load_images
from apiwrap.denoisers.evaluation import classifier_agreement, evaluate_folder, psnr, square_crop, ssim
from apiwrap.denoisers.training import TrainingConfig, build_loss, train_denoiser

# small configurations keep the suite fast; the defaults are exercised by shape only
TINY_KWARGS = {
    "fast": {"channels": 8, "half_res_layers": 2, "quarter_res_layers": 1},
    "dncnn": {"depth": 4, "channels": 8},
    "dncnn-wide": {"depth": 4},
    "memnet": {"channels": 8, "num_memblocks": 2, "num_resblocks": 2},
    "ffdnet": {"channels": 8, "depth": 4},
}


@pytest.fixture(autouse=True)
def _seeded_single_thread() -> Iterator[None]:
    # one thread: these workloads are tiny, and on a busy shared machine OpenMP threads
    # spin-waiting for cores slowed the suite by minutes
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Six smooth synthetic 48x40 colour images (gradients and blobs), as PNG."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows, columns = np.mgrid[0:40, 0:48]
    for index in range(6):
        channels = [
            0.5 + 0.4 * np.sin(rows / rng.uniform(3, 9) + columns / rng.uniform(3, 9) + phase)
            for phase in rng.uniform(0, 6, size=3)
        ]
        image = (np.stack(channels, axis=-1).clip(0, 1) * 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"image{index}.png")
    return folder


def _config(tmp_path: Path, image_folder: Path, **overrides: object) -> TrainingConfig:
    settings: dict = {
        "output": tmp_path / "run" / "tiny",
        "data": image_folder,
        "architecture": "fast",
        "architecture_kwargs": TINY_KWARGS["fast"],
        "crop_size": 32,
        "batch_size": 4,
        "steps": 4,
        "checkpoint_every": 2,
        "eval_data": None,
        "device": "cpu",
    }
    settings.update(overrides)
    return TrainingConfig(**settings)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_architecture_keeps_shape_and_is_deterministic(name: str) -> None:
    network = create_architecture(name, **TINY_KWARGS[name]).eval()
    noisy = torch.rand(2, 3, 30, 22) + 0.25 * torch.randn(2, 3, 30, 22)  # sizes not multiples of 4
    with torch.no_grad():
        first, second = network(noisy), network(noisy)
    assert first.shape == noisy.shape
    assert torch.equal(first, second)


def test_default_dncnn_matches_the_seed() -> None:
    dncnn = create_architecture("dncnn")
    assert sum(parameter.numel() for parameter in dncnn.parameters()) == pytest.approx(0.56e6, rel=0.01)
    assert sum(isinstance(module, torch.nn.Conv2d) for module in dncnn.modules()) == 17
    wide = create_architecture("dncnn-wide")
    assert wide.body[0].out_channels == 128


def test_unknown_architecture_is_refused() -> None:
    with pytest.raises(ValueError, match="fast"):
        create_architecture("unet-9000")


@pytest.mark.parametrize(
    ("objective", "confidence_weighting", "surrogate_rescale"),
    [
        ("mse", False, 0.0),
        ("stab", False, 0.0),
        ("stab", True, 0.0),
        ("stab", False, 0.2),
        ("stab+mse", False, 0.0),
    ],
)
def test_a_few_steps_lower_the_loss(
    objective: str, confidence_weighting: bool, surrogate_rescale: float, tmp_path: Path, image_folder: Path
) -> None:
    init_from = None
    if objective == "stab+mse":
        parent = create_architecture("fast", **TINY_KWARGS["fast"])
        init_from = str(
            save_checkpoint(
                parent,
                tmp_path / "parent",
                {"architecture": "fast", "architecture_kwargs": TINY_KWARGS["fast"], "sigma": 0.25},
            )
        )
    config = _config(
        tmp_path,
        image_folder,
        objective=objective,
        init_from=init_from,
        mse_weight=1.0,
        confidence_weighting=confidence_weighting,
        surrogate_rescale=surrogate_rescale,
    )
    classifiers = [load_classifier("efficientnet-lite0")] if objective != "mse" else []
    loss_function = build_loss(config, classifiers)
    network = create_architecture("fast", **TINY_KWARGS["fast"]).train()
    # 40 px: the smallest rescaled crop (32 px) still fits EfficientNet's downsampling
    clean = RandomCropSampler(load_images(image_folder), 40, seed=1).sample(2)
    noisy = clean + 0.25 * torch.randn(clean.shape)
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    # compared at one step index: the step picks the surrogate and its rescale factor
    before = loss_function(network, clean, noisy, 0)[0].item()
    for step in range(12):
        loss, _ = loss_function(network, clean, noisy, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss_function(network, clean, noisy, 0)[0].item() < before


def test_surrogate_rescale_is_seeded_per_step_and_bounded(tmp_path: Path, image_folder: Path) -> None:
    with pytest.raises(ValueError, match="surrogate_rescale"):
        _config(tmp_path, image_folder, objective="stab", surrogate_rescale=1.0)
    config = _config(tmp_path, image_folder, objective="stab", surrogate_rescale=0.3)
    seen_sizes = []

    def classifier(images: torch.Tensor) -> torch.Tensor:
        seen_sizes.append(images.shape[-1])
        return images.mean((2, 3)).repeat(1, 4)  # 12 "logits", differentiable

    loss_function = build_loss(config, [classifier])
    network = create_architecture("fast", **TINY_KWARGS["fast"])
    clean = RandomCropSampler(load_images(image_folder), 32, seed=1).sample(2)
    for step in (0, 1, 2, 0):
        loss_function(network, clean, clean, step)
    # each call classifies the clean crop (32 px) and then the rescaled output
    rescaled = seen_sizes[1::2]
    assert rescaled[0] == rescaled[3]  # a resumed step draws the same scale
    assert len(set(rescaled)) > 1 and all(22 <= size <= 42 for size in rescaled)


def test_resumed_training_equals_an_uninterrupted_run(tmp_path: Path, image_folder: Path) -> None:
    # a constant learning rate, so that the 2-step run's schedule is the 4-step run's first half
    def run(folder: str, steps: int) -> dict:
        config = _config(tmp_path / folder, image_folder, steps=steps, cosine_schedule=False)
        return train_denoiser(config, show_progress=False)

    straight = run("straight", 4)
    interrupted = run("resumed", 2)
    resumed = run("resumed", 4)
    assert interrupted["steps"] == 2 and resumed["steps"] == straight["steps"] == 4
    weights = torch.load(tmp_path / "straight" / "run" / "tiny.pt")
    resumed_weights = torch.load(tmp_path / "resumed" / "run" / "tiny.pt")
    assert all(torch.equal(weights[key], resumed_weights[key]) for key in weights)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    network = create_architecture("fast", **TINY_KWARGS["fast"]).eval()
    metadata = {
        "name": "tiny",
        "architecture": "fast",
        "architecture_kwargs": TINY_KWARGS["fast"],
        "sigma": 0.25,
    }
    path = save_checkpoint(network, tmp_path / "tiny", metadata)
    denoiser = load_denoiser(str(path), 0.25, device="cpu")
    noisy = torch.rand(3, 3, 24, 24) + 0.25 * torch.randn(3, 3, 24, 24)
    with torch.no_grad():
        expected = network(noisy).clamp(0, 1)
    assert torch.allclose(denoiser(noisy), expected, atol=1e-6)
    assert denoiser.sigma == 0.25 and denoiser.name == "tiny" and denoiser.metadata["architecture"] == "fast"
    assert load_denoiser(str(tmp_path / "tiny"), 0.25, device="cpu").name == "tiny"  # path without suffix


def test_a_checkpoints_weights_digest_is_a_function_of_its_files_bytes(tmp_path: Path) -> None:
    network = create_architecture("fast", **TINY_KWARGS["fast"])
    metadata = {"architecture": "fast", "architecture_kwargs": TINY_KWARGS["fast"], "sigma": 0.25}
    path = save_checkpoint(network, tmp_path / "tiny", metadata)
    loaded = load_denoiser(str(path), 0.25, device="cpu").provenance
    assert loaded.weights_sha256 is not None
    assert (loaded.runtime, loaded.device, loaded.precision) == ("torch", "cpu", "float32")
    assert load_denoiser(str(path), 0.25, device="cpu").provenance == loaded
    # the same files under another name are the same weights
    for suffix in (".pt", ".json"):
        (tmp_path / f"renamed{suffix}").write_bytes(path.with_suffix(suffix).read_bytes())
    assert load_denoiser(str(tmp_path / "renamed"), 0.25).provenance.weights_sha256 == loaded.weights_sha256

    # the same tensors with another metadata file: other files, another digest
    noted = save_checkpoint(network, tmp_path / "noted", metadata | {"notes": "trained again"})
    assert load_denoiser(str(noted), 0.25).provenance.weights_sha256 != loaded.weights_sha256
    with torch.no_grad():
        next(network.parameters()).add_(1e-3)
    save_checkpoint(network, tmp_path / "tiny", metadata)
    assert load_denoiser(str(path), 0.25).provenance.weights_sha256 != loaded.weights_sha256


def test_the_identity_has_one_record_on_every_machine() -> None:
    on_cpu = load_denoiser("none", 0.25, device="cpu").provenance
    assert load_denoiser("none", 0.5, device="cuda").provenance == on_cpu  # clipping rounds nothing
    assert on_cpu.weights_sha256 is None and on_cpu.runtime == "none"


def test_batching_does_not_change_the_output(tmp_path: Path) -> None:
    network = create_architecture("fast", **TINY_KWARGS["fast"])
    noisy = torch.rand(5, 3, 16, 16)
    whole = Denoiser(network, name="tiny", sigma=0.25, device="cpu", max_batch=16)(noisy)
    chunked = Denoiser(network, name="tiny", sigma=0.25, device="cpu", max_batch=2)(noisy)
    assert torch.allclose(whole, chunked, atol=1e-6)
    assert whole.min() >= 0 and whole.max() <= 1


def test_sigma_mismatch_is_refused_unless_forced(tmp_path: Path) -> None:
    network = create_architecture("fast", **TINY_KWARGS["fast"])
    path = save_checkpoint(
        network,
        tmp_path / "tiny",
        {"architecture": "fast", "architecture_kwargs": TINY_KWARGS["fast"], "sigma": 0.5},
    )
    with pytest.raises(ValueError, match=r"sigma=0\.5"):
        load_denoiser(str(path), 0.25)
    assert load_denoiser(str(path), 0.25, force=True).sigma == 0.5


def test_identity_and_unknown_names() -> None:
    identity = load_denoiser("none", 0.25)
    assert identity.sigma is None and "none" in available_denoisers()
    noisy = torch.tensor([-0.5, 0.5, 1.5]).expand(1, 3, 2, 3).contiguous()
    assert torch.equal(identity(noisy), noisy.clamp(0, 1))
    with pytest.raises(ValueError, match="available: none"):
        load_denoiser("no-such-denoiser", 0.25)


def test_shipped_denoisers_load_at_their_sigma() -> None:
    for name in available_denoisers()[1:]:
        denoiser = load_denoiser(name, load_denoiser(name, 0.0, force=True).sigma)
        assert denoiser(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_evaluation_set_is_refused_for_training(tmp_path: Path, image_folder: Path) -> None:
    evaluation_set = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-api-dev"
    with pytest.raises(ValueError, match="imagenet-api-dev"):
        _config(tmp_path, evaluation_set)
    lookalike = tmp_path / "imagenet-api-dev"
    lookalike.mkdir()
    with pytest.raises(ValueError, match="evaluation set"):
        ensure_not_evaluation_set(lookalike)
    (image_folder / "sneaky").symlink_to(lookalike, target_is_directory=True)
    with pytest.raises(ValueError, match="evaluation set"):
        _config(tmp_path, image_folder)


def test_quality_metrics(image_folder: Path) -> None:
    image = torch.rand(1, 3, 32, 32)
    assert float(ssim(image, image)) == pytest.approx(1.0, abs=1e-5)
    assert float(psnr(image * 0 + 0.5, image * 0 + 0.6)) == pytest.approx(20.0, abs=1e-3)
    scores = evaluate_folder(load_denoiser("none", 0.25), image_folder, 0.25, seed=3)
    again = evaluate_folder(load_denoiser("none", 0.25), image_folder, 0.25, seed=3)
    assert scores.images == 6 and scores.psnr == again.psnr == scores.noisy_psnr


def test_square_crop_takes_the_centre_square_at_the_requested_size() -> None:
    columns = torch.arange(60.0).expand(3, 40, 60) / 60  # brightness grows left to right
    crop = square_crop(columns, 20)
    assert crop.shape == (3, 20, 20)
    # the centre 40x40 of a 60-wide image spans columns 10..49
    assert float(crop[0, 0, 0]) == pytest.approx(11 / 60, abs=0.02)
    assert float(crop[0, 0, -1]) == pytest.approx(48 / 60, abs=0.02)


def test_agreement_counts_copies_that_keep_the_clean_label(image_folder: Path) -> None:
    classifier = load_classifier("efficientnet-lite0")
    identity = load_denoiser("none", None)
    faint = classifier_agreement(identity, classifier, image_folder, 1e-4, noises_per_image=2, image_size=64)
    assert faint.images == 6 and faint.agreement == faint.majority == 1.0

    def grey(noisy: torch.Tensor) -> torch.Tensor:
        return torch.full_like(noisy, 0.5)

    # every copy becomes the same grey image, so each image either keeps its label on all
    # copies or on none: the per-image shares are 0 or 1 and majority equals agreement
    erased = classifier_agreement(grey, classifier, image_folder, 0.25, noises_per_image=2, image_size=64)
    assert set(erased.per_image_agreement) <= {0.0, 1.0}
    assert erased.majority == erased.agreement < 1.0
