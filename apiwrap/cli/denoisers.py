"""Command functions `train-denoiser` and `eval-denoiser`, registered on the main typer app."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from apiwrap.denoisers import Denoiser

__all__ = ["eval_denoiser", "train_denoiser"]

_console = Console()


def train_denoiser(
    output: Annotated[
        Path,
        typer.Argument(
            help="Checkpoint path without suffix; writes OUTPUT.pt, OUTPUT.json and a resume state."
        ),
    ],
    objective: Annotated[str, typer.Option(help="mse, stab or stab+mse (fine-tunes --init-from).")] = "mse",
    sigma: Annotated[float, typer.Option(help="Noise level in [0,1] pixel units.")] = 0.25,
    architecture: Annotated[str, typer.Option(help="fast, dncnn, dncnn-wide or memnet.")] = "fast",
    data: Annotated[
        Path | None, typer.Option(help="Training image folder (recursive); default ../shared/data/natural.")
    ] = None,
    crop_size: Annotated[int, typer.Option(help="Side of the square training crops.")] = 128,
    min_scale: Annotated[
        float,
        typer.Option(help="< 1: random-resized crops spanning this fraction of the shorter side and up."),
    ] = 1.0,
    batch_size: Annotated[int, typer.Option()] = 16,
    steps: Annotated[
        int, typer.Option(help="Total optimisation steps (a resumed run continues up to it).")
    ] = 2000,
    learning_rate: Annotated[
        float | None, typer.Option(help="Adam learning rate; default 1e-3 (mse, stab), 1e-5 (stab+mse).")
    ] = None,
    surrogate: Annotated[
        list[str] | None,
        typer.Option(help="Black-box surrogate classifier, repeatable (cycled per batch); default lite0."),
    ] = None,
    white_box_target: Annotated[
        str | None, typer.Option(help="Train through the target classifier itself (white-box mode).")
    ] = None,
    init_from: Annotated[str | None, typer.Option(help="Checkpoint name or path to start from.")] = None,
    mse_weight: Annotated[float, typer.Option(help="Weight of an extra MSE term for stab objectives.")] = 0.0,
    confidence_weighting: Annotated[
        bool, typer.Option(help="Weight each crop's stab loss by the surrogate's clean confidence.")
    ] = False,
    surrogate_rescale: Annotated[
        float,
        typer.Option(
            help="Stab: show the classifier the denoised crop rescaled by a random factor in "
            "[1 - r, 1 + r] (one per step), for better transfer to an unseen target."
        ),
    ] = 0.0,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 100,
    resume: Annotated[bool, typer.Option(help="Continue from OUTPUT.train-state.pt when present.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of crops and noise.")] = 0,
    eval_data: Annotated[
        Path | None,
        typer.Option(help="Folder for the final PSNR/SSIM; default ../shared/data/natural/CBSD68."),
    ] = None,
    device: Annotated[str | None, typer.Option(help="cuda or cpu; default CUDA when available.")] = None,
) -> None:
    """Train a denoiser (MSE, Stab or Stab+MSE) on random crops of an image folder."""
    from apiwrap.denoisers.training import DEFAULT_EVAL_DATA, DEFAULT_TRAINING_DATA, TrainingConfig
    from apiwrap.denoisers.training import train_denoiser as run_training

    try:
        config = TrainingConfig(
            output=output,
            sigma=sigma,
            objective=objective,
            architecture=architecture,
            data=data or DEFAULT_TRAINING_DATA,
            crop_size=crop_size,
            min_scale=min_scale,
            batch_size=batch_size,
            steps=steps,
            learning_rate=learning_rate,
            surrogates=tuple(surrogate or ("efficientnet-lite0",)),
            white_box_target=white_box_target,
            init_from=init_from,
            mse_weight=mse_weight,
            confidence_weighting=confidence_weighting,
            surrogate_rescale=surrogate_rescale,
            checkpoint_every=checkpoint_every,
            resume=resume,
            seed=seed,
            eval_data=eval_data or DEFAULT_EVAL_DATA,
            device=device,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    metadata = run_training(config)
    _console.print(
        f"wrote {output.with_suffix('.pt')}: {metadata['objective']}, sigma={metadata['sigma']:g}, "
        f"{metadata['steps']} steps, PSNR {metadata.get('psnr_eval', float('nan')):.2f} dB "
        f"on {metadata.get('eval_data')}"
    )


def eval_denoiser(
    denoiser: Annotated[str, typer.Argument(help="Shipped denoiser name, checkpoint path, or 'none'.")],
    sigma: Annotated[float, typer.Option(help="Noise level in [0,1] pixel units.")] = 0.25,
    data: Annotated[
        Path | None, typer.Option(help="Image folder (recursive); default ../shared/data/natural/CBSD68.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Noise seed.")] = 0,
    max_images: Annotated[int | None, typer.Option(help="Evaluate only the first N images.")] = None,
    force_denoiser: Annotated[bool, typer.Option(help="Use a denoiser trained for another sigma.")] = False,
    agreement: Annotated[
        list[str] | None,
        typer.Option(
            help="Also measure how often this classifier (efficientnet-lite0/1/2) keeps its clean "
            "top-1 on denoised noisy copies; repeat for several."
        ),
    ] = None,
    noises: Annotated[int, typer.Option(min=1, help="Noisy copies per image for --agreement.")] = 10,
    image_size: Annotated[
        int | None,
        typer.Option(
            min=32, help="For --agreement: classify each image's centre square resized to this side."
        ),
    ] = None,
) -> None:
    """PSNR and SSIM of a denoiser on an image folder at a given sigma (seeded noise), and
    optionally classifier agreement, the quantity Stab training raises."""
    from apiwrap.denoisers import load_denoiser
    from apiwrap.denoisers.classifiers import CLASSIFIERS
    from apiwrap.denoisers.evaluation import evaluate_folder
    from apiwrap.denoisers.training import DEFAULT_EVAL_DATA

    unknown = sorted(set(agreement or ()) - set(CLASSIFIERS))
    if unknown:
        raise typer.BadParameter(
            f"unknown classifier {', '.join(unknown)}; choose from {', '.join(CLASSIFIERS)}",
            param_hint="--agreement",
        )
    try:
        model = load_denoiser(denoiser, sigma, force=force_denoiser)
    except (ValueError, FileNotFoundError) as error:
        raise typer.BadParameter(str(error)) from error
    scores = evaluate_folder(model, data or DEFAULT_EVAL_DATA, sigma, seed=seed, max_images=max_images)
    table = Table(title=f"{model.name} at sigma={sigma:g} on {scores.folder} ({scores.images} images)")
    for column in ("", "PSNR (dB)", "SSIM"):
        table.add_column(column)
    table.add_row("noisy (clipped)", f"{scores.noisy_psnr:.2f}", f"{scores.noisy_ssim:.4f}")
    table.add_row("denoised", f"{scores.psnr:.2f}", f"{scores.ssim:.4f}")
    _console.print(table)
    if agreement:
        _print_agreement(
            model, agreement, data or DEFAULT_EVAL_DATA, sigma, seed, max_images, noises, image_size
        )


def _print_agreement(
    model: Denoiser,
    classifier_names: list[str],
    folder: Path,
    sigma: float,
    seed: int,
    max_images: int | None,
    noises: int,
    image_size: int | None,
) -> None:
    from apiwrap.denoisers.classifiers import load_classifier
    from apiwrap.denoisers.evaluation import classifier_agreement

    framing = f"centre squares at {image_size}px" if image_size else "full images"
    table = Table(title=f"Classifier agreement, {noises} noisy copies per image, {framing}")
    for column in ("classifier", "copies keeping the clean top-1", "images kept by majority"):
        table.add_column(column)
    for name in classifier_names:
        scores = classifier_agreement(
            model,
            load_classifier(name),
            folder,
            sigma,
            noises_per_image=noises,
            max_images=max_images,
            seed=seed,
            image_size=image_size,
        )
        table.add_row(name, f"{scores.agreement:.1%}", f"{scores.majority:.1%}")
    _console.print(table)
