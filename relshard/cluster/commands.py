"""CLI commands that talk to a Ray cluster: ``submit`` and ``jobs status|logs|stop``.

Every command takes ``--address`` (the dashboard, ``http://HEAD:8265``) and honours
``RAY_ADDRESS``. User errors print one sentence and exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from relshard.cli_support import err, fail, out
from relshard.errors import RelshardError

jobs_app = typer.Typer(help="Watch and stop pipeline jobs on a Ray cluster.",
                       no_args_is_help=True)

Address = Annotated[str | None, typer.Option(
    envvar="RAY_ADDRESS", help="Ray dashboard address, e.g. http://HEAD:8265.")]


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise RelshardError(f"--env takes NAME=VALUE, not {pair!r}.")
        env[name] = value
    return env


def submit(
    spec: Annotated[Path, typer.Argument(help="Pipeline spec (YAML).")],
    address: Address = None,
    output: Annotated[str | None, typer.Option(help="Output URL (overrides the spec).")] = None,
    relshard_from: Annotated[str, typer.Option(
        help="local: ship this relshard; pypi: pip-install the same version; "
             "installed: use the cluster's.")] = "local",
    job_id: Annotated[str | None, typer.Option(
        help="Submission id (default relshard-...).")] = None,
    env: Annotated[list[str] | None, typer.Option(
        help="NAME=VALUE for the job (repeatable); never put secrets here, set them "
             "on the cluster.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the job and stream its logs.")] = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="With --wait: print the job id and its end, not its logs.")
    ] = False,
) -> None:
    """Submit a pipeline spec to a Ray cluster as a Ray Job; print the job id."""
    from relshard import api
    from relshard.cluster import jobs

    try:
        jid = api.submit(spec, address=address, output=output, relshard_from=relshard_from,
                         job_id=job_id, env=_parse_env(env or []))
        out.print(jid)
        if wait:
            for chunk in jobs.follow_logs(jid, address):
                if not quiet:
                    out.print(chunk, end="", markup=False, highlight=False)
            info = jobs.status(jid, address)
            if info.status != "SUCCEEDED":
                err.print(f"job {jid} ended {info.status}: {info.message}")
                raise typer.Exit(1)
    except RelshardError as exc:
        fail(exc)


@jobs_app.command("status")
def status_cmd(job_id: str, address: Address = None,
               as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show a job's status."""
    from relshard.cluster import jobs

    try:
        info = jobs.status(job_id, address)
    except RelshardError as exc:
        fail(exc)
    if as_json:
        out.print_json(json.dumps(info.__dict__))
    else:
        out.print(f"{info.job_id}: {info.status} {info.message}".rstrip())


@jobs_app.command("logs")
def logs_cmd(job_id: str, address: Address = None,
             follow: Annotated[bool, typer.Option("--follow", "-f")] = False) -> None:
    """Print a job's logs (--follow streams them until it ends)."""
    from relshard.cluster import jobs

    try:
        if follow:
            for chunk in jobs.follow_logs(job_id, address):
                out.print(chunk, end="", markup=False, highlight=False)
        else:
            out.print(jobs.logs(job_id, address), end="", markup=False, highlight=False)
    except RelshardError as exc:
        fail(exc)


@jobs_app.command("stop")
def stop_cmd(job_id: str, address: Address = None) -> None:
    """Stop a running job (its committed shards stay; re-submitting resumes)."""
    from relshard.cluster import jobs

    try:
        stopped = jobs.stop(job_id, address)
    except RelshardError as exc:
        fail(exc)
    out.print(f"{job_id}: {'stopping' if stopped else 'already finished'}")
