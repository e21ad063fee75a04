"""The `bluegreen` command: one click group assembled from the engine's and the operator's commands.

Engine commands (worker, plan) live in `worker.cli_engine`; operator commands that
go through the HTTP API (status, releases, show, promote, ...) in `worker.cli_ops`.
"""

from __future__ import annotations

import click

from worker import cli_engine, cli_ops


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bluegreen")
def main() -> None:
    """Blue-green releases on Kubernetes + Istio, driven by Git tags."""


for _command in (*cli_engine.COMMANDS, *cli_ops.COMMANDS):
    main.add_command(_command)
