"""The `corrdiff` app: train, generate, demo and version here; data, score, report and baseline from beside it."""

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from corrdiff.cli.case import case_command
from corrdiff.cli.data import app as data_app
from corrdiff.cli.errors import user_errors
from corrdiff.cli.evaluation import baseline_app, QuietOpt, report_command, score_command
from corrdiff.cli.experiment import app as experiment_app
from corrdiff.cli.interop import export_command, import_app
from corrdiff.cli.tune import tune_command
from corrdiff.errors import ConfigError

app = typer.Typer(
    help="Generative km-scale downscaling with residual corrective diffusion (CorrDiff).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
train_app = typer.Typer(help="Train the regression (mean) or the diffusion (residual) model, or distil the diffusion "
                        "model into a few-step student.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(data_app, name="data")
app.add_typer(baseline_app, name="baseline")
app.add_typer(import_app, name="import")
app.command("export")(export_command)
app.command("score")(score_command)
app.command("report")(report_command)
app.command("tune")(tune_command)
app.command("case")(case_command)
app.add_typer(experiment_app, name="experiment")

ConfigArg = Annotated[Path, typer.Argument(help="Run config (YAML): data spec, model, training, sampler, generation.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value, e.g. --set regression.lr=2e-4 (repeatable)."),
]
ResumeOpt = Annotated[bool, typer.Option(
    help="Continue from the run's latest checkpoint (settings that decide what it learns must not change).")]


class _CurrentStderr(logging.StreamHandler):
    """A handler writing to whatever sys.stderr is when a record comes (test runners swap it per command)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


@app.callback()
def _show_library_notes() -> None:
    """The library reports through the `corrdiff` logger; the command line shows its notes on stderr."""
    logger = logging.getLogger("corrdiff")
    if not any(isinstance(h, _CurrentStderr) for h in logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _train(kind: str, config: Path, overrides, resume: bool, quiet: bool) -> None:
    from corrdiff.config import load_config
    from corrdiff.training import train

    run_dir, status = train(kind, load_config(config, overrides), resume=resume, progress=not quiet)
    if status == "interrupted":
        typer.echo(f"stopped by SIGTERM; checkpoint saved in {run_dir / 'checkpoints'}; continue with --resume")
        raise typer.Exit(143)
    typer.echo(f"{kind} model trained: {run_dir / 'checkpoints'}")
    if kind == "distill":  # its sampler's levels matter, and which are best is measured (docs/sampling.md)
        typer.echo(f"choose its sampler (NFE 1, 2, 4 and where its levels end) on the validation split: corrdiff tune "
                   f"{config} --checkpoint-diffusion {run_dir} --out {run_dir.parent / 'distill-tune'}")


def _train_command(kind: str, summary: str) -> None:
    """Register `corrdiff train <kind>`: the three steps take the same options and differ in their help only."""

    def command(config: ConfigArg, set_: SetOpt = None, resume: ResumeOpt = False, quiet: QuietOpt = False) -> None:
        _train(kind, config, set_, resume, quiet)

    command.__name__, command.__qualname__, command.__doc__ = f"train_{kind}", f"train_{kind}", summary
    train_app.command(kind)(user_errors(command))


_train_command("regression", "Train the UNet that predicts the mean μ(y) of the fine fields from the coarse input.")
_train_command("diffusion", """Train the EDM diffusion model of the residual x − μ(y), against the frozen regression
    checkpoint (diffusion.regression_checkpoint, or the run's regression folder).""")
_train_command("distill", """Distil the diffusion model into a consistency student that samples in 1 to 4 network
    evaluations (Song et al. 2023), in <run_dir>/distill: teacher distill.teacher_checkpoint, or the run's diffusion
    checkpoint. Generate with it by giving it as the diffusion checkpoint (sampler.solver: consistency).""")


@app.command()
@user_errors
def generate(
    config: Annotated[Path | None, typer.Argument(help="Run config (YAML): data spec, checkpoints (run_dir), sampler, generation. Not with --model.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file: NetCDF (.nc, .nc4) or Zarr store (.zarr); the suffix sets the format.")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="A model package (`corrdiff export`) to generate with instead of a run config; needs --input.")] = None,
    checkpoint_regression: Annotated[Path | None, typer.Option(help="Regression checkpoint or run folder; default: <run_dir>/regression.")] = None,
    checkpoint_diffusion: Annotated[Path | None, typer.Option(help="Diffusion checkpoint or run folder; default: <run_dir>/diffusion.")] = None,
    times: Annotated[list[str] | None, typer.Option("--times", help="ISO time to downscale (repeatable); default: every time of generate.split.")] = None,
    members: Annotated[int | None, typer.Option(help="Ensemble members per time (default: generate.members).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed; member m of time t depends on (seed, t, m) only.")] = None,
    split: Annotated[str | None, typer.Option(help="Dataset split to downscale: train, validation, test or all.")] = None,
    format_: Annotated[str | None, typer.Option("--format", help="netcdf or zarr, for an --out without .nc/.nc4/.zarr (default: generate.format).")] = None,
    input_: Annotated[list[str] | None, typer.Option("--input", help="Coarse input file or glob to downscale instead of the spec's inputs (e.g. a new forecast; no targets needed); every time it holds, unless --times. Repeatable.")] = None,
    input_member: Annotated[str | None, typer.Option("--input-member", help="Ensemble inputs (a `number` dimension): a member's number, `mean`, or `all` (--members per input member; the output's input_member coordinate says which). Default: the spec's `member`.")] = None,
    coherence: Annotated[str | None, typer.Option("--coherence", help="Members as time series: independent, or ar1 (each member's starting noise an AR(1) series over consecutive times with a constant step; a deterministic sampler; docs/sampling.md). Default: generate.coherence.method.")] = None,
    coherence_rho: Annotated[str | None, typer.Option("--coherence-rho", help="With --coherence ar1: lag-1 correlation of the starting noise between consecutive times, 0 <= rho < 1; one value, or one per output channel separated by commas, e.g. 0.5,0.5,0.3 (default: generate.coherence.rho).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace what is at --out (once the new file is complete) instead of resuming it.")] = False,
    allow_mismatch: Annotated[bool, typer.Option("--allow-mismatch", help="Generate even if the diffusion checkpoint was trained against another regression checkpoint (recorded in the output).")] = False,
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Downscale coarse inputs into an ensemble of fine fields, written as CF NetCDF or Zarr.

    With a run config, or with --model (a model package) and --input files, nothing else. Resumable: run the
    same command again after an interruption (or a full disk) and it finishes the missing times. A file made
    with other checkpoints, settings, seed, inputs or times is never resumed: pass --overwrite to replace it,
    or choose another --out.
    """
    from corrdiff.config import load_config
    from corrdiff.inference.generate import EnsembleOutput, generate as run_generate, GenerationRequest

    if out is None:
        raise ConfigError("give --out: the ensemble file to write (.nc or .zarr)")
    if (config is None) == (model is None):
        raise ConfigError("give either a run config or --model (a model package), not both" if config else
                          "give a run config, or --model with a model package (`corrdiff export`)")
    member = _input_member(input_member)
    overrides = list(set_ or [])
    for key, value in (("members", members), ("seed", seed), ("split", split), ("format", format_),
                       ("coherence.method", coherence),
                       ("coherence.rho", f"[{coherence_rho}]" if coherence_rho and "," in coherence_rho else coherence_rho)):
        if value is not None:
            overrides.append(f"generate.{key}={value}")
    if model is not None:
        from corrdiff.inference import model_package

        given = [name for name, value in (("--checkpoint-regression", checkpoint_regression),
                                          ("--checkpoint-diffusion", checkpoint_diffusion), ("--split", split),
                                          ("--allow-mismatch", allow_mismatch)) if value]
        if given:
            raise ConfigError(f"{', '.join(given)}: not with --model (the package holds both networks; its inputs "
                              "are the --input files)")

        path = model_package.generate(model, input_, out, overrides, times=times, progress=not quiet,
                                      overwrite=overwrite, input_member=member)
        typer.echo(f"ensemble written: {path}")
        return
    cfg = load_config(config, overrides)
    run_dir = Path(cfg.run_dir)
    request = GenerationRequest(checkpoint_regression or run_dir / "regression",
                                checkpoint_diffusion or run_dir / "diffusion", allow_mismatch=allow_mismatch,
                                inputs=input_, input_member=member, times=times)
    path = run_generate(cfg, request, EnsembleOutput(out, overwrite=overwrite, progress=not quiet))
    typer.echo(f"ensemble written: {path}")


def _input_member(text: str | None):
    """--input-member as the spec's `member` takes it: a number, "mean" or "all"; a ConfigError otherwise."""
    if text is None or text in ("mean", "all"):
        return text
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--input-member {text!r}: give a member's number (e.g. 0), mean or all") from None


@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo's data, runs, ensemble and report.")] = Path("demo-out"),
    set_: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run the whole method on the embedded demo data: build it, train both models briefly, generate an ensemble for held-out times, score it against interpolation and the regression mean, write a report.

    Takes about 10 minutes on 2 CPU cores. Rerunning continues where a previous run stopped.
    """
    from corrdiff.demo import run_demo

    run_demo(out, set_ or [], progress=not quiet, echo=typer.echo)


@app.command("presets")
def show_presets(
    name: Annotated[str | None, typer.Argument(help="A preset (default: every preset).")] = None,
) -> None:
    """Print the named network presets: grid, channels and the parameter counts of their two networks."""
    from corrdiff.diffusion import diffusion_network
    from corrdiff.models import count_parameters, presets

    if name is not None and name not in presets:
        typer.secho(f"error: no preset {name!r}; choose from {sorted(presets)}", fg="red", err=True)
        raise typer.Exit(2)
    for key in [name] if name else sorted(presets):
        config = presets[key]
        height, width = config.img_shape
        typer.echo(f"preset {key!r}: {height}×{width}, {config.in_channels} inputs, {config.out_channels} outputs")
        typer.echo(f"  regression UNet: {count_parameters(config.build_regression()):,} parameters")
        typer.echo(f"  diffusion UNet:  {count_parameters(diffusion_network(config)):,} parameters")


@app.command()
def version() -> None:
    """Print the corrdiff version."""
    from corrdiff import __version__

    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
