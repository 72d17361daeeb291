"""The ``labelclean`` command: parse options, call the API, draw progress, print results.

Data goes to stdout; progress, logs and errors go to stderr. Every LabelcleanError is
turned into ``error: <message>`` and exit status 1 in one place (:func:`command`), naming the options
as the user typed them. The modules imported here import no torch, so ``--help`` is quick; a command
imports the API (and torch) when it runs.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column, Table

from .config import IMAGE_SIZE_RULE, DataOptions, FitConfig, PretrainConfig
from .errors import LabelcleanError
from .export import DEFAULT_THRESHOLD, FORMATS, SORT_KEYS, format_from_suffix, write_table

if TYPE_CHECKING:
    from .review import CleanedLabels
    from .run import Run
    from .training import EpochReport

GLOBAL_FLAGS = ("--debug", "--verbose", "-v")  # the main options; accepted after the command name too
# Options renamed so that one concept has one name on every command: the old spelling still works, with a
# warning, until the next release. Command -> {old: the new tokens}.
RENAMED = {
    "fit": {"--out": ["--output"], "--p-threshold": ["--threshold"]},
    "pretrain": {"--out": ["--output"]},
    "demo": {"--out": ["--output"]},
    "apply": {"--drop-rejected": ["--action", "drop"], "--no-drop-rejected": ["--action", "relabel"]},
}


class Commands(typer.core.TyperGroup):
    """The command group; it reads main options placed after the command name and renamed options'
    old spellings (:func:`rewrite_args`)."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, rewrite_args(args, self.commands))


def rewrite_args(args: list[str], commands: dict[str, Any]) -> list[str]:
    """``args`` with the main options (:data:`GLOBAL_FLAGS`) that follow the command name moved before it,
    and old option spellings (:data:`RENAMED`) replaced by the new ones, each with a warning on stderr.
    Option values are left alone, whatever they spell."""
    at = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
    if at is None or args[at] not in commands:
        return args
    name, tail = args[at], args[at + 1:]
    options = [p for p in commands[name].params if p.param_type_name == "option"]
    takes_value = {opt for p in options if not p.is_flag for opt in p.opts}
    own = {opt for p in options for opt in p.opts + p.secondary_opts}  # a command's own -v would stay its own
    main, rest = [], []
    i = 0
    while i < len(tail):
        flag, equals, value = tail[i].partition("=")
        if tail[i] == "--":
            rest += tail[i:]
            break
        if tail[i] in GLOBAL_FLAGS and tail[i] not in own:
            main.append(tail[i])
        elif flag in RENAMED.get(name, {}):
            new = RENAMED[name][flag]
            from . import api  # here: --help imports no torch

            if api.is_main():  # once, not in every process of a multi-process fit
                stderr.print(f"warning: {flag} is deprecated and goes in the next release; use "
                             f"{' '.join(new)}.", highlight=False, soft_wrap=True)
            rest += [new[0] + equals + value, *new[1:]]
            flag = new[0]
        else:
            rest.append(tail[i])
        if flag in takes_value and not equals and i + 1 < len(tail):
            rest.append(tail[i + 1])  # the option's value
            i += 1
        i += 1
    return args[:at] + main + [name] + rest


app = typer.Typer(
    cls=Commands,
    help="Find and fix wrong labels in an image classification dataset with DivideMix or MLNT.\n\n"
         "Typical use: labelclean fit images/ labels.csv && labelclean export --only-errors > suspects.csv\n\n"
         "Without a CSV, 'labelclean fit photos/' reads the labels from photos/CLASS/IMAGE class folders. "
         "--debug and --verbose go before or after the command.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True)
DEFAULTS = FitConfig()
PRETRAIN = PretrainConfig()
DATA = DataOptions()
MLNT = "MLNT options (--method mlnt)"  # help panel of the options only MLNT reads
state = {"debug": False}


def command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register ``fn`` as a subcommand whose user-facing errors become one line and exit code 1."""
    hint, flags = memory_hint(fn), option_flags(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LabelcleanError as e:
            if state["debug"]:
                raise
            fail(re.sub(r"The '(\w+)' option", lambda m: flags.get(m[1], m[0]), str(e)))
        except KeyboardInterrupt:
            from . import api

            if api.is_main():
                stderr.print("Interrupted.")
            raise typer.Exit(130) from None
        except Exception as e:
            if state["debug"] or not out_of_memory(e):
                raise
            fail(f"the GPU ran out of memory; {hint}.")

    return app.command()(wrapper)


def option_flags(fn: Callable[..., Any]) -> dict[str, str]:
    """Each option of ``fn`` by its parameter name, as the user types it: ``top_k`` → ``--top-k``,
    ``fmt`` → ``--format``; errors from the API name the parameter, the command line the option."""
    flags = {}
    for name, param in inspect.signature(fn, eval_str=True).parameters.items():
        for info in getattr(param.annotation, "__metadata__", ()):
            if isinstance(info, typer.models.OptionInfo):
                declared = (info.default, *(info.param_decls or ()))  # Annotated: the first name is the "default"
                typed = [d.split("/")[0] for d in declared if isinstance(d, str) and d.startswith("--")]
                flag = typed[0] if typed else "--" + name.replace("_", "-")
                flags[name] = flags[flag[2:].replace("-", "_")] = flag
    return flags


def out_of_memory(error: Exception) -> bool:
    """Whether ``error`` is PyTorch's out-of-memory error (only a command that imported torch can raise it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(error, torch.OutOfMemoryError)


def fail(message: str) -> NoReturn:
    """Print ``error: message`` and exit 1; a process of a multi-process fit leaves it to its launcher,
    which prints the distinct errors of all processes once."""
    from . import api

    if not api.record_error(message):
        print_error(message)
    raise typer.Exit(1)


def print_error(message: str) -> None:
    stderr.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def memory_hint(fn: Callable[..., Any]) -> str:
    """What to try after the GPU runs out of memory, naming only options that ``fn`` has."""
    options = [f"--{name.replace('_', '-')}" for name in ("batch_size", "image_size")
               if name in inspect.signature(fn).parameters]
    return f"try a smaller {' or '.join(options)}, or --device cpu" if options else "try --device cpu"


def typed(ctx: typer.Context, *names: str) -> list[str]:
    """The options among ``names`` (parameter names) that the user typed, as spelled in --help."""
    flags = {p.name: p.opts[0] for p in ctx.command.params}
    return [flags[n] for n in names if getattr(ctx.get_parameter_source(n), "name", None) == "COMMANDLINE"]


def refuse_typed(ctx: typer.Context, names: list[str], reason: str) -> None:
    """An error naming the options among ``names`` that the user typed, which do nothing ``reason``."""
    given = typed(ctx, *names)
    if given:
        raise LabelcleanError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} nothing {reason}; "
                              f"drop {' '.join(given)}.")


def warn_typed(ctx: typer.Context, names: list[str], reason: str) -> None:
    """A warning naming the options among ``names`` that the user typed, which are ignored ``reason``."""
    given = typed(ctx, *names)
    if given:
        stderr.print(f"warning: {', '.join(given)} {'is' if len(given) == 1 else 'are'} ignored {reason}.",
                     highlight=False, soft_wrap=True)


def print_version(asked: bool) -> None:
    if asked:
        print(f"labelclean {version('labelclean')}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more detail to stderr.")] = False,
    show_version: Annotated[bool, typer.Option("--version", is_eager=True, callback=print_version,
                                               help="Print labelclean's version and exit.")] = False,
) -> None:
    state["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=stderr, show_time=False, show_path=False)], force=True)


@contextmanager
def progress_bars() -> Iterator[tuple[Callable[[EpochReport], None], Callable[[str, int, int], None]]]:
    """Rich progress on stderr: a bar for image decoding, one bar over epochs with live figures."""
    bars = Progress(TextColumn("{task.description}", table_column=Column(no_wrap=True, min_width=8)),
                    BarColumn(bar_width=20), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
                    TimeRemainingColumn(), TextColumn("{task.fields[figures]}", table_column=Column(overflow="fold")),
                    console=stderr, transient=False)
    tasks: dict[str, Any] = {}

    def add_task(name: str, total: int, completed: int = 0) -> None:
        if not tasks:
            bars.start()  # lazily: a command that fails before any work prints no empty bar
        tasks[name] = bars.add_task(f"{name:>8}", total=total, completed=completed, figures="")

    def on_progress(task: str, done: int, total: int) -> None:
        if task not in tasks:
            add_task(task, total)
        bars.update(tasks[task], completed=done)

    def on_epoch(r: EpochReport) -> None:
        if "epochs" not in tasks:
            add_task("epochs", r.epochs, r.epoch - 1)
        figures = f"{r.phase:8} loss " + "/".join(f"{loss:.3f}" for loss in r.loss)
        if r.labeled is not None:
            figures += (f"  labeled {r.labeled[0]:,}/{r.labeled[1]:,}  noise≈{r.noise_estimate:.0%}"
                        f"  λu {r.lambda_u:.1f}")
        if r.round is not None:
            figures += (f"  round {r.round}  consistency {r.consistency:.4f}  weight {r.meta_weight:.2f}"
                        f"  left out {r.noise_estimate:.0%}")
        figures += f"  {r.seconds:.1f}s/epoch"
        bars.update(tasks["epochs"], total=r.epochs, completed=r.epoch, figures=figures)

    try:
        yield on_epoch, on_progress
    finally:
        if tasks:
            bars.stop()


Images = Annotated[Path | None, typer.Argument(help="Image folder: the CSV's paths are relative to it; without "
                                                  "a CSV, one folder per class, IMAGES_DIR/CLASS/IMAGE "
                                                  "(optional with --resume).", show_default=False)]
Labels = Annotated[Path | None, typer.Argument(help="CSV with one row per image: a path and a label column "
                                                    "(leave it out for class folders, and with --resume).",
                                               show_default=False)]
RunDir = Annotated[Path, typer.Argument(help="Run directory written by 'labelclean fit'.")]
# The data options of fit and pretrain, with config.DataOptions's defaults (DATA); DataOptions.from_dict collects them.
PathColumn = Annotated[str | None, typer.Option(help="CSV column with image paths \\[default: auto-detect].",
                                                show_default=False)]
LabelColumn = Annotated[str | None, typer.Option(help="CSV column with labels \\[default: auto-detect].",
                                                 show_default=False)]
SkipMissing = Annotated[bool, typer.Option(help="Leave out rows whose image file is missing.")]
SkipBad = Annotated[bool, typer.Option(help="Leave out rows whose image cannot be decoded.")]
Dedupe = Annotated[bool, typer.Option(help="Keep the first of rows that repeat an image path.")]
CacheDir = Annotated[Path | None, typer.Option(help="Folder for the decoded images (a memory-mapped file); a fit or "
                                                    "pretrain on the same, unchanged images reuses them instead of "
                                                    "decoding again \\[default: fit: --output; pretrain: the folder "
                                                    "of --output].", show_default=False)]


@command
def fit(
    ctx: typer.Context,
    images_dir: Images = None,
    labels_csv: Labels = None,
    out: Annotated[Path, typer.Option("--output", "-o", help="Run directory to write.")] = Path("labelclean-run"),
    path_column: PathColumn = DATA.path_column,
    label_column: LabelColumn = DATA.label_column,
    method: Annotated[str, typer.Option(help="'dividemix' (two networks, GMM split, semi-supervised MixMatch) "
                                             "or 'mlnt' (meta-learning on synthetic label noise with an EMA "
                                             "teacher; see the MLNT options). Both write the same outputs.")]
    = DEFAULTS.method,
    epochs: Annotated[int | None, typer.Option(
        help="Passes over the data, warm-up included \\[default: warm-up + enough epochs for 1,500 steps, "
             "30 to 290].", show_default=False)] = None,
    warmup: Annotated[int | None, typer.Option(
        help="Epochs of plain cross-entropy before the first split (MLNT: the baseline, also its frozen "
             "feature model) \\[default: until the networks stop gaining agreement with the labels; MLNT: 10].",
        show_default=False)] = None,
    auto: Annotated[bool, typer.Option("--auto/--no-auto", help="Choose --lambda-u, --loss-window and "
                                       "--selection from the noise estimated after warm-up (the paper's "
                                       "table; a class-wise quota at high noise), and recover from a locked "
                                       "or lenient split. --no-auto: the paper's 50%-noise settings (25, "
                                       "threshold 0.5, 1, gmm).")] = DEFAULTS.auto,
    batch_size: Annotated[int, typer.Option(help="Labeled (and unlabeled) samples per step.")] = DEFAULTS.batch_size,
    lr: Annotated[float | None, typer.Option(help="SGD learning rate (÷10 after half the epochs) \\[default: 0.02; "
                                                  "0.002 from ImageNet weights].", show_default=False)] = None,
    p_threshold: Annotated[float | None, typer.Option(
        "--threshold", help="Clean probability above which a sample is labeled \\[default: --auto].",
        show_default=False)] = None,
    lambda_u: Annotated[float | None, typer.Option(
        help="Weight of the unlabeled loss (paper: 0 for low or class-pair noise, 25 at ~50%, 150 at ~90% with "
             "100 classes) \\[default: --auto].", show_default=False)] = None,
    temperature: Annotated[float, typer.Option(help="Sharpening temperature of refined/guessed labels.")]
    = DEFAULTS.temperature,
    alpha: Annotated[float, typer.Option(help="Mixup Beta(alpha, alpha) parameter.")] = DEFAULTS.alpha,
    align: Annotated[bool, typer.Option("--align/--no-align", help="Align the guessed labels of the unlabeled "
                                        "set to its given labels' class distribution, so that rare classes are "
                                        "still guessed: it helped at 10:1 class imbalance and hurt under "
                                        "some noise that follows the images (docs/benchmarks.md).")]
    = DEFAULTS.align,
    noise_mode: Annotated[str, typer.Option(help="'auto' (detected after warm-up), 'sym' (any other class), or "
                                                 "'asym' for class-pair noise (adds a confidence penalty in "
                                                 "warm-up).")] = DEFAULTS.noise_mode,
    loss_window: Annotated[int | None, typer.Option(
        help="Epochs of losses averaged before the GMM (5 helps at very high noise) \\[default: --auto].",
        show_default=False)] = None,
    selection: Annotated[str | None, typer.Option(
        help="Labeled set: 'gmm' (the paper's GMM split) or 'quota' (per class, the lowest losses, as many as the "
             "network predicts the given label for; for very high noise) \\[default: --auto].",
        show_default=False)] = None,
    meta_sets: Annotated[int, typer.Option(help="M: synthetic noisy label sets per batch, each one extra "
                                                "forward/backward pass.", rich_help_panel=MLNT)] = DEFAULTS.meta_sets,
    perturb_ratio: Annotated[float, typer.Option(help="ρ: fraction of a batch relabeled in each synthetic set.",
                                                 rich_help_panel=MLNT)] = DEFAULTS.perturb_ratio,
    neighbours: Annotated[int, typer.Option(help="k: a relabeled sample takes the label of one of its k nearest "
                                                 "samples in the batch (baseline features).",
                                            rich_help_panel=MLNT)] = DEFAULTS.neighbours,
    meta_lr: Annotated[float, typer.Option(help="α: step size of the inner SGD step (fast weights).",
                                           rich_help_panel=MLNT)] = DEFAULTS.meta_lr,
    meta_weight: Annotated[float, typer.Option(help="Weight of the consistency loss KL(teacher ‖ fast model).",
                                               rich_help_panel=MLNT)] = DEFAULTS.meta_weight,
    meta_rampup: Annotated[float, typer.Option(help="Epochs at the start of each round over which the weight "
                                                    "ramps up as exp(-5(1-t)²).", rich_help_panel=MLNT)]
    = DEFAULTS.meta_rampup,
    ema_decay: Annotated[float, typer.Option(help="Per-step EMA decay of the teacher during the ramp.",
                                             rich_help_panel=MLNT)] = DEFAULTS.ema_decay,
    ema_decay_late: Annotated[float, typer.Option(help="Per-step EMA decay after the ramp.",
                                                  rich_help_panel=MLNT)] = DEFAULTS.ema_decay_late,
    rounds: Annotated[int, typer.Option(help="Training rounds after the baseline; each later round restarts "
                                             "from the previous teacher (the mentor) and leaves out the samples "
                                             "it considers mislabeled.", rich_help_panel=MLNT)] = DEFAULTS.rounds,
    mentor_filter: Annotated[str, typer.Option(help="Which samples a later round leaves out: 'disagree' (the "
                                                    "mentor predicts another class), 'gmm' (its GMM clean "
                                                    "probability ≤ --threshold; can drop whole classes under "
                                                    "class-pair noise) or 'none'.", rich_help_panel=MLNT)]
    = DEFAULTS.mentor_filter,
    first_order: Annotated[bool, typer.Option("--first-order", help="Drop the second-order terms of the "
                                              "meta-gradient: cheaper per epoch (see docs/methods.md, 'Choosing a "
                                              "method').", rich_help_panel=MLNT)] = DEFAULTS.first_order,
    arch: Annotated[str, typer.Option(help="small_cnn, preact_resnet18, resnet18/34/50, or auto (by device "
                                           "and image size).")] = DEFAULTS.arch,
    image_size: Annotated[int | None, typer.Option(help=f"Image side in pixels \\[default: {IMAGE_SIZE_RULE}].",
                                                   show_default=False)] = None,
    flip: Annotated[bool, typer.Option("--flip/--no-flip", help="Random horizontal flips (turn off when "
                                                                "mirroring changes the class).")] = DEFAULTS.flip,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = DEFAULTS.device,
    seed: Annotated[int, typer.Option(help="Random seed.")] = DEFAULTS.seed,
    compile_step: Annotated[bool, typer.Option("--compile/--no-compile", help=(
        "torch.compile DivideMix's training step (CUDA graphs on a GPU), with full-size batches (the last "
        "labeled batch of an epoch wraps around). Not yet measured to pay; see docs/speed.md."))]
    = DEFAULTS.compile_step,
    keep_model: Annotated[bool, typer.Option("--keep-model/--no-keep-model",
                                             help="Keep both networks for 'labelclean predict'.")] = True,
    pretrained: Annotated[bool, typer.Option("--pretrained", help="Start both networks from torchvision's "
                                             "ImageNet weights of --arch (resnet18 with auto; downloaded once into "
                                             "the torch hub cache); see docs/photos.md.")] = DEFAULTS.pretrained,
    init_weights: Annotated[Path | None, typer.Option(help="Local state-dict file to start both networks from "
                                                           "(matching layers): torchvision-format weights, or the "
                                                           "output of 'labelclean pretrain'.",
                                                      show_default=False)] = None,
    start_blend: Annotated[float | None, typer.Option(
        help="Share of each loaded layer's direction kept, the rest from a random start (1: the weights as "
             "they are) \\[default: 0.5 for 'labelclean pretrain' weights, 1 for ImageNet's or with --no-auto].",
        show_default=False)] = None,
    resume: Annotated[bool, typer.Option(help="Continue the unfinished run in --output from its last "
                                              "checkpoint, with its saved settings.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a run already in --output.")] = False,
    skip_missing: SkipMissing = DATA.skip_missing,
    skip_bad: SkipBad = DATA.skip_bad,
    dedupe: Dedupe = DATA.dedupe,
    cache_dir: CacheDir = DATA.cache_dir,
    max_ram_gb: Annotated[float | None, typer.Option(help="Load the decoded images into RAM only up to this "
                                                          "many GB; larger ones are read from the memory-mapped "
                                                          "file batch by batch \\[default: half of the RAM].",
                                                     show_default=False)] = None,
    nproc: Annotated[int, typer.Option("--nproc", "--gpus", min=1,
                                       help="Train DivideMix on this many processes of this machine, one per GPU "
                                            "(or CPU processes with --device cpu), with torchrun's agent; see "
                                            "docs/scaling.md.")] = 1,
) -> None:
    """Train DivideMix or MLNT on IMAGES_DIR + LABELS_CSV, or class folders; write clean probabilities to --output.

    Both methods give every sample a clean probability from a 2-component GMM on its loss under each
    of two networks (DivideMix: its two networks; MLNT: the student and its EMA teacher), and to the
    ones it flags whose given label the networks do not predict (is_error) their prediction as the
    suggested label.
    """
    from . import api

    if nproc > 1 and api.started_processes() == 1:
        launch_processes(nproc, device)
    if not api.is_main():  # under torchrun the main process reports for all
        logging.getLogger("labelclean").setLevel(logging.ERROR)
    refuse_fit_combinations(ctx, method, resume)
    config, data = FitConfig.from_dict(locals()), DataOptions.from_dict(locals())  # options named as their fields
    try:
        with progress_bars() if api.is_main() else nullcontext((None, None)) as (on_epoch, on_progress):
            run = api.fit(images_dir, labels_csv, out, config=config, data=data, keep_model=keep_model, resume=resume,
                          overwrite=overwrite, init_weights=init_weights, max_ram_gb=max_ram_gb, on_epoch=on_epoch,
                          on_progress=on_progress)
    except KeyboardInterrupt as stop:
        resume = f"continue with: labelclean fit --output {out} --resume" + (
            f" --nproc {api.local_processes()}" if api.world_size() > 1 else "")
        if isinstance(stop, api.Interrupted):
            message = f"Stopped cleanly {stop} and saved it; {resume}"
        elif (out / "checkpoint.pt").exists():
            message = f"Interrupted. Finished epochs are saved; {resume}"
        else:
            message = "Interrupted. Nothing was saved yet."
        if api.is_main():
            stderr.print(message, highlight=False, soft_wrap=True)  # a wrapped command cannot be pasted
        if isinstance(stop, api.Interrupted):
            api.barrier()  # the launcher ends the others when one exits: exit once the message is out
        raise typer.Exit(130) from None
    if api.is_main():
        summarize(run)


def refuse_fit_combinations(ctx: typer.Context, method: str, resume: bool) -> None:
    """Refuse fit options that would do nothing: one method's options with the other (the API refuses
    --start-blend without start weights); warn about settings given to --resume (the run goes on with its saved ones), so that the
    command of the interrupted fit with --resume added still works."""
    params = ctx.command.params
    if resume:
        read = {"images_dir", "labels_csv", "out", "resume", "overwrite", "cache_dir", "max_ram_gb", "nproc"}
        warn_typed(ctx, [p.name for p in params if p.name not in read],
                   "with --resume, which continues with the settings the run was started with")
        return
    if method != "mlnt":
        refuse_typed(ctx, [p.name for p in params if getattr(p, "rich_help_panel", None) == MLNT],
                     f"with --method {method}: only MLNT reads it (add --method mlnt)")
    else:
        refuse_typed(ctx, ["lambda_u", "loss_window", "selection", "alpha", "temperature", "align", "compile_step"],
                     "with --method mlnt: only DivideMix reads it")


def launch_processes(nproc: int, device: str) -> NoReturn:
    """Run this command, less --nproc, as ``nproc`` processes; exit with their status once they end."""
    from . import api

    status, errors = api.launch_processes(nproc, device, run_command, without_nproc(sys.argv[1:]))
    for message in errors:
        print_error(message)
    raise typer.Exit(status)


def without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less its --nproc/--gpus option, for the processes it starts."""
    names = ("--nproc", "--gpus")
    return [arg for k, arg in enumerate(argv) if arg.split("=")[0] not in names and (k == 0 or argv[k - 1] not in names)]


def run_command(argv: list[str]) -> None:
    """One process of ``labelclean fit --nproc N`` (module level: the processes are spawned)."""
    app(args=argv, prog_name="labelclean")


def summarize(run: Run) -> None:
    threshold = run.suggested_threshold  # the default, unless the fit warned that it flags far too few
    table = run.export(threshold)
    noisy, errors = int(table["is_noisy"].sum()), int(table["is_error"].sum())
    advice = "\n".join(run.warnings(table))
    stderr.print(f"Done in {run.config['fit_seconds']:.0f}s: {noisy:,} of {len(table):,} labels look suspect "
                 f"(clean_prob < {threshold:g}), {errors:,} of them wrong (the networks predict another class). "
                 f"Review them with:\n  labelclean export {run.directory} --only-errors --sort clean_prob"
                 + (f" --threshold {threshold:g}" if threshold != DEFAULT_THRESHOLD else "")
                 + (f"\n{advice}" if advice else ""),
                 highlight=False, soft_wrap=True)


@command
def pretrain(
    ctx: typer.Context,
    images_dir: Annotated[Path, typer.Argument(help="Image folder: the CSV's paths are relative to it; without a "
                                                    "CSV, one folder per class.")],
    labels_csv: Annotated[Path | None, typer.Argument(help="CSV listing the images (the fit's; labels are not "
                                                           "used); leave it out for class folders.",
                                                      show_default=False)] = None,
    out: Annotated[Path, typer.Option("--output", "-o", help="Weights file to write, for 'fit --init-weights'.")]
    = Path("pretrained.pt"),
    epochs: Annotated[int, typer.Option(help="Passes over the images.")] = PRETRAIN.epochs,
    batch_size: Annotated[int, typer.Option(help="Images per step; each view's negatives are the other "
                                                 "images' views.")] = PRETRAIN.batch_size,
    temperature: Annotated[float, typer.Option(help="τ of the NT-Xent loss.")] = PRETRAIN.temperature,
    lr: Annotated[float, typer.Option(help="SGD learning rate, cosine-annealed to 0.")] = PRETRAIN.lr,
    arch: Annotated[str, typer.Option(help="The network the fit will train: small_cnn, preact_resnet18, "
                                           "resnet18/34/50, or auto (as fit chooses).")] = PRETRAIN.arch,
    image_size: Annotated[int | None, typer.Option(help="Image side in pixels \\[default: as fit chooses].",
                                                   show_default=False)] = None,
    flip: Annotated[bool, typer.Option("--flip/--no-flip", help="Random horizontal flips (turn off when "
                                                                "mirroring changes the class).")] = PRETRAIN.flip,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = PRETRAIN.device,
    seed: Annotated[int, typer.Option(help="Random seed.")] = PRETRAIN.seed,
    resume: Annotated[bool, typer.Option(help="Continue the unfinished pretraining of --output.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace --output (and its unfinished checkpoint).")] = False,
    path_column: PathColumn = DATA.path_column,
    label_column: LabelColumn = DATA.label_column,
    skip_missing: SkipMissing = DATA.skip_missing,
    skip_bad: SkipBad = DATA.skip_bad,
    dedupe: Dedupe = DATA.dedupe,
    cache_dir: CacheDir = DATA.cache_dir,
) -> None:
    """Learn the fit's network from the images alone (SimCLR, as C2D does) and save it for 'fit --init-weights'."""
    from . import api

    if resume:
        warn_typed(ctx, [name for name in PretrainConfig.__dataclass_fields__ if name != "crop_scale"],
                   "with --resume, which continues with the settings the pretraining was started with")
    config = PretrainConfig(epochs=epochs, batch_size=batch_size, temperature=temperature, lr=lr, arch=arch,
                            image_size=image_size, flip=flip, device=device, seed=seed)
    data = DataOptions.from_dict(locals())
    try:
        with progress_bars() as (on_epoch, on_progress):
            weights = api.pretrain(images_dir, labels_csv, out, config=config, data=data, resume=resume,
                                   overwrite=overwrite, on_epoch=on_epoch, on_progress=on_progress)
    except KeyboardInterrupt:
        stderr.print(f"Interrupted. Finished epochs are saved; continue with: labelclean pretrain {images_dir} "
                     f"{labels_csv or ''} --output {out} --resume", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    same = (f" --arch {arch}" if arch != "auto" else "") + (f" --image-size {image_size}" if image_size else "")
    stderr.print(f"Next: labelclean fit {images_dir} {labels_csv or ''} --init-weights {weights}{same}",
                 highlight=False,
                 soft_wrap=True)


FOLDERS_HELP = ("One folder per label, each image a hard link to the original (a copy where the file system "
                "cannot link); the originals are never changed. The folder must be new or empty.")


@command
def export(
    ctx: typer.Context,
    run_dir: RunDir = Path("labelclean-run"),
    threshold: Annotated[float, typer.Option(help="Flag samples whose clean_prob is below this.")]
    = DEFAULT_THRESHOLD,
    fmt: Annotated[str | None, typer.Option("--format", "-f", help=f"One of {', '.join(FORMATS)}, label-studio "
                                            "\\[default: from the -o suffix, else csv].", show_default=False)]
    = None,
    only_noisy: Annotated[bool, typer.Option(help="Only the rows with is_noisy (clean_prob < threshold).")] = False,
    only_errors: Annotated[bool, typer.Option(help="Only the rows with is_error (is_noisy and the networks "
                                                   "predict another class): the ones to relabel.")] = False,
    sort: Annotated[str | None, typer.Option(help=f"Sort ascending by {', '.join(SORT_KEYS)} "
                                                  "(clean_prob: worst first).", show_default=False)] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write \\[default: stdout].",
                                                show_default=False)] = None,
    document_root: Annotated[Path | None, typer.Option(help="label-studio: the LABEL_STUDIO_LOCAL_FILES_DOCUMENT_"
                                                           "ROOT Label Studio will run with, a folder above the images "
                                                           "\\[default: the images folder's parent].",
                                                      show_default=False)] = None,
    image_url_prefix: Annotated[str | None, typer.Option(help="label-studio: for images served elsewhere, prepended "
                                                              "to each image path instead of a local files URL.",
                                                         show_default=False)] = None,
    ls_config: Annotated[Path | None, typer.Option(help="label-studio: also write the matching labeling "
                                                        "config XML here.", show_default=False)] = None,
    as_labels: Annotated[bool, typer.Option(help="Write a cleaned copy of the labels CSV instead: is_error rows "
                                                 "take their suggested label (see --action).")] = False,
    as_folders: Annotated[Path | None, typer.Option(help="Write the cleaned dataset as class folders in this new "
                                                         "folder (implies --as-labels; -o also writes the CSV). "
                                                         + FOLDERS_HELP, show_default=False)] = None,
    action: Annotated[str, typer.Option(help="With --as-labels or --as-folders: 'relabel' the is_error rows, or "
                                             "'drop' them.")] = "relabel",
) -> None:
    """Write the per-sample review table: the suggested label, is_error, clean probability, predictions."""
    from .review import image_urls, write_label_studio
    from .run import Run

    refuse_export_combinations(ctx, fmt, as_labels or as_folders is not None)
    run = Run.load(run_dir)
    if as_labels or as_folders is not None:
        write_cleaned(run.cleaned_labels(threshold, action=action), output, as_folders, run.config["data"])
        return
    table = run.export(threshold, only_noisy=only_noisy, only_errors=only_errors, sort=sort)
    if fmt == "label-studio":
        prefix, setup = image_urls(Path(run.config["data"]["images_dir"]), document_root, image_url_prefix)
        write_label_studio(table, run.classes, output, image_url_prefix=prefix, config_file=ls_config)
        if setup:
            stderr.print(setup, highlight=False, soft_wrap=True)
    else:
        write_table(table, format_from_suffix(output, fmt), output)


def refuse_export_combinations(ctx: typer.Context, fmt: str | None, cleaned: bool) -> None:
    """Refuse export options that would do nothing with the others given."""
    if cleaned:
        refuse_typed(ctx, ["fmt", "only_noisy", "only_errors", "sort", "document_root", "image_url_prefix",
                      "ls_config"], "with --as-labels or --as-folders, which write the cleaned labels")
        return
    refuse_typed(ctx, ["action"], "without --as-labels or --as-folders")
    if fmt != "label-studio":
        refuse_typed(ctx, ["document_root", "image_url_prefix", "ls_config"], "without --format label-studio")
    if typed(ctx, "only_errors"):
        refuse_typed(ctx, ["only_noisy"], "with --only-errors (its rows are a subset of --only-noisy's)")


def write_cleaned(cleaned: CleanedLabels, output: Path | None, folders: Path | None, data: dict[str, Any]) -> None:
    """Write the cleaned labels as a CSV to ``output`` (stdout when neither it nor ``folders`` is given) and/or as
    class folders (``data``: how the labels were read, see :func:`write_cleaned_folders`), with a change log
    next to the first, and say on stderr what changed."""
    from .folders import write_cleaned_folders

    wrote = []
    if folders is not None:  # first: it is refused more often (a non-empty folder), and then nothing is written
        placed, log = write_cleaned_folders(cleaned, data, folders, changes=output is None)
        wrote.append(f"the class folders {folders} (images as {placed})")
    if output is not None or folders is None:
        log = cleaned.write(output)
        wrote += [str(output)] if output is not None else []
    actions = cleaned.changes["action"].value_counts()
    where = f"; wrote {' and '.join(wrote)} and the change log {log}" if log else ""
    stderr.print(f"Relabeled {actions.get('relabel', 0):,} and dropped {actions.get('drop', 0):,} row(s) "
                 f"of {len(cleaned.table) + actions.get('drop', 0):,}{where}.", highlight=False, soft_wrap=True)


@command
def report(
    run_dir: RunDir = Path("labelclean-run"),
    output: Annotated[Path | None, typer.Option("--output", "-o", help="HTML file to write "
                                                "\\[default: RUN_DIR/report.html].", show_default=False)] = None,
    threshold: Annotated[float, typer.Option(help="Flag samples whose clean_prob is below this; the suspects are the "
                                                 "flagged ones the networks predict another class for (is_error).")]
    = DEFAULT_THRESHOLD,
    max_items: Annotated[int, typer.Option(help="Thumbnails for at most this many suspects, each class's worst "
                                                "first.")] = 1000,
    suspects: Annotated[str, typer.Option(help="'errors': the is_error rows, the ones a review relabels; 'noisy': "
                                               "every flagged row.")] = "errors",
) -> None:
    """Write one self-contained HTML page (thumbnails, tables, charts) to review a run in a browser."""
    from .report import write_report
    from .run import Run

    output = output or run_dir / "report.html"
    size = write_report(Run.load(run_dir), output, threshold=threshold, max_items=max_items, suspects=suspects)
    stderr.print(f"Wrote {output} ({size / 1e6:.1f} MB); open it in a browser.", highlight=False)


@command
def apply(
    ctx: typer.Context,
    reviewed: Annotated[Path, typer.Argument(help="Reviewed export CSV with an accepted_label column, or a "
                                                  "Label Studio JSON export of the reviewed tasks.")],
    labels_csv: Annotated[Path, typer.Argument(help="The labels CSV the run was fitted on, or its image folder of "
                                                    "class folders.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Cleaned labels CSV to write; the change log "
                                                                       "goes next to it (NAME.changes.csv).",
                                                show_default=False)] = None,
    as_folders: Annotated[Path | None, typer.Option(help="Write the cleaned dataset as class folders in this new "
                                                         "folder. " + FOLDERS_HELP, show_default=False)] = None,
    images_dir: Annotated[Path | None, typer.Option(help="With --as-folders and a labels CSV: the folder its paths "
                                                         "are relative to \\[default: the CSV's folder].",
                                                    show_default=False)] = None,
    action: Annotated[str, typer.Option(help="What to do with a row whose label the review changes: 'relabel' it, "
                                             "or 'drop' it.")] = "relabel",
    path_column: Annotated[str | None, typer.Option(help="LABELS_CSV column with image paths "
                                                         "\\[default: auto-detect].", show_default=False)] = None,
    label_column: Annotated[str | None, typer.Option(help="LABELS_CSV column with labels "
                                                          "\\[default: auto-detect].", show_default=False)] = None,
) -> None:
    """Write LABELS_CSV with the reviewed labels applied (every other column as it was), or cleaned class folders."""
    from .review import apply_decisions, read_decisions

    if output is None and as_folders is None:
        raise LabelcleanError("Say where to write the cleaned labels: -o FILE for a labels CSV, --as-folders DIR "
                              "for class folders, or both.")
    if output is not None and output.resolve() == labels_csv.resolve():
        raise LabelcleanError(f"-o {output} would overwrite the original labels; write the cleaned labels to "
                              f"a new file.")
    if action not in ("relabel", "drop"):
        raise LabelcleanError(f"--action must be relabel or drop. Got {action!r}.")
    if as_folders is None or labels_csv.is_dir():
        refuse_typed(ctx, ["images_dir"], "without --as-folders and a labels CSV")
    cleaned = apply_decisions(labels_csv, read_decisions(reviewed), drop_rejected=action == "drop",
                              path_column=path_column, label_column=label_column)
    tree = labels_csv.is_dir()
    data = {"images_dir": labels_csv if tree else images_dir or labels_csv.parent, "path_column": path_column,
            "label_column": label_column, "labels": "class folders" if tree else "csv"}
    write_cleaned(cleaned, output, as_folders, data)


@command
def predict(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="Run directory of a fit with a kept model.")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files, folders, or CSVs with a path column.",
                                                 show_default=False)],
    images_dir: Annotated[Path | None, typer.Option(help="Folder that CSV paths are relative to "
                                                         "\\[default: the CSV's folder].", show_default=False)]
    = None,
    top_k: Annotated[int, typer.Option(help="Classes to report per image.")] = 1,
    fmt: Annotated[str | None, typer.Option("--format", "-f", help="csv or jsonl \\[default: from -o, else csv].",
                                            show_default=False)] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write \\[default: stdout].",
                                                show_default=False)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 512,
    convert_channels: Annotated[bool, typer.Option("--convert-channels", help="Convert colour images to "
                                                   "grayscale for a run trained on grayscale instead of refusing "
                                                   "them (gray images for a colour run are always converted).")]
    = False,
) -> None:
    """Predict classes of new images with the run's two-network ensemble.

    Images must have the run's channels. Grayscale images given to a run trained on colour are
    converted (nothing is lost); colour images given to a run trained on grayscale are refused,
    since the model never saw colour and they are often from the wrong folder: pass
    --convert-channels to convert them to grayscale anyway.
    """
    from .run import Run

    if not any(p.suffix.lower() == ".csv" for p in inputs):
        refuse_typed(ctx, ["images_dir"], "without a CSV among the inputs")
    run = Run.load(run_dir)
    with progress_bars() as (_, on_progress):
        table = run.predict(inputs, top_k=top_k, images_dir=images_dir, device=device, batch_size=batch_size,
                            convert_channels=convert_channels, on_progress=on_progress)
    write_table(table, format_from_suffix(output, fmt), output)


@command
def demo(
    out: Annotated[Path, typer.Option("--output", "-o", help="Folder for the digits images, CSVs and run.")]
    = Path("labelclean-demo"),
    noise: Annotated[float, typer.Option(help="Fraction of labels to flip.")] = 0.4,
    noise_mode: Annotated[str, typer.Option(help="'sym' (any other class) or 'asym' (2→7, 3→8, 5↔6, 7→1).")]
    = "sym",
    seed: Annotated[int, typer.Option(help="Seed of the label noise and of training.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    method: Annotated[str, typer.Option(help="dividemix or mlnt (MLNT takes ~10× longer per epoch on a CPU).")]
    = DEFAULTS.method,
) -> None:
    """Flip labels of scikit-learn's bundled digits, clean them, and score against the truth."""
    from . import api

    with progress_bars() as (on_epoch, on_progress):
        result = api.demo(out, noise=noise, noise_mode=noise_mode, seed=seed, device=device, method=method,
                          on_epoch=on_epoch, on_progress=on_progress)
    figures, errors = result.figures, result.errors
    shown = Table(title=f"labelclean demo ({method}): digits, {noise:.0%} {noise_mode} noise")
    shown.add_column("figure")
    shown.add_column("value", justify="right")
    for name, value in [
        ("samples", f"{figures['n_samples']:,}"),
        ("labels flipped", f"{figures['noise_rate']:.1%}"),
        ("detection AUROC", f"{figures['auroc']:.3f}"),
        ("average precision", f"{figures['average_precision']:.3f}"),
        (f"precision @{DEFAULT_THRESHOLD:g}", f"{figures['precision']:.3f}"),
        (f"recall @{DEFAULT_THRESHOLD:g}", f"{figures['recall']:.3f}"),
        (f"F1 @{DEFAULT_THRESHOLD:g}", f"{figures['f1']:.3f}"),
        ("accuracy of given labels", f"{figures['given_accuracy']:.3f}"),
        ("accuracy of refined labels", f"{figures['refined_accuracy']:.3f}"),
        ("F1 of is_error", f"{errors['f1']:.3f}"),
        ("accuracy of suggested labels", f"{errors['refined_accuracy']:.3f}"),
        ("wall time", f"{result.seconds:.0f} s"),
    ]:
        shown.add_row(name, value)
    Console().print(shown)
    stderr.print(f"Next: labelclean export {result.run.directory} --only-errors --sort clean_prob | head",
                 highlight=False, soft_wrap=True)


def main() -> None:
    app()
