"""Root command: registers the command groups, turns `DetnasError` into one line and exit code 2, and prints
`DetnasWarning`s as one line each."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import Any

import typer
from typer._click.exceptions import ClickException

from detnas.cli import arch as arch_cli
from detnas.cli import bench as bench_cli
from detnas.cli import data as data_cli
from detnas.cli import demo as demo_cli
from detnas.cli import eval as eval_cli
from detnas.cli import export as export_cli
from detnas.cli import search as search_cli
from detnas.cli import train as train_cli
from detnas.console import command_logging, labelled, plain_console
from detnas.errors import DetnasError, DetnasWarning

app = typer.Typer(
    name="detnas",
    help="Search DetNAS detection backbones under a latency target and ship the winner as ONNX / TensorRT.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"detnas {version('detnas')}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress: no bars on a terminal, no plain progress "
                               "lines on a pipe or in a log."),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the installed detnas version and exit."),
) -> None:
    """Progress (with an ETA) for the long steps of the command unless --quiet: bars on a terminal, plain lines on
    stderr otherwise."""
    from detnas.progress import lines_wanted, progress_display, wanted

    ctx.with_resource(progress_display(wanted(quiet), lines=lines_wanted(quiet)))


app.add_typer(arch_cli.app, name="arch")
app.add_typer(data_cli.app, name="data")
app.command("eval")(eval_cli.eval_cmd)
app.add_typer(train_cli.app, name="train")
app.add_typer(search_cli.app, name="search")
app.add_typer(bench_cli.app, name="bench")
export_cli.register(app)
app.command("demo")(demo_cli.demo_cmd)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; user errors never show a traceback.

    Usage errors (a bad choice, size, device or path; a missing option) and the `DetnasError`s raised by the
    commands print as one line naming the option or file, with exit code 2.
    """
    with warnings.catch_warnings():
        warnings.showwarning = _warning_line(warnings.showwarning)
        try:
            with command_logging():
                code = app(args=argv, prog_name="detnas", standalone_mode=False)
        except (DetnasError, ClickException) as exc:
            message = str(exc)
            if isinstance(exc, ClickException):
                where = getattr(exc, "ctx", None)
                message = exc.format_message() + (f" (see `{where.command_path} --help`)" if where else "")
            plain_console(stderr=True).print(labelled("error:", "bold red", message), highlight=False, soft_wrap=True)
            return exc.exit_code
        except typer.Abort:
            return 1
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code if isinstance(code, int) else 0


def _warning_line(fallback: Callable[..., None]) -> Callable[..., None]:
    """`DetnasWarning`s print as one plain 'warning:' line; other warnings keep Python's format."""

    def show(message: Warning | str, category: type[Warning], *rest: Any, **kwargs: Any) -> None:
        if issubclass(category, DetnasWarning):
            plain_console(stderr=True).print(labelled("warning:", "bold yellow", message), highlight=False,
                                             soft_wrap=True)
        else:
            fallback(message, category, *rest, **kwargs)

    return show


if __name__ == "__main__":
    sys.exit(main())
