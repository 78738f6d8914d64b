"""``slf promote`` and ``slf bundle verify``: promotion bundles of trained runs.

A bundle holds the run's model and learned state, which are **pickles**: loading one can run arbitrary
code. ``slf live`` loads only bundles whose manifest verifies (every file's sha256); run ``slf bundle
verify`` on any bundle you receive, and load only bundles you trust. Errors (a tampered file, a missing
manifest, an existing destination) are printed as one ``error: ...`` line naming the file, exit status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["app", "promote_command", "verify_command"]

app = typer.Typer(
    help="Check promotion bundles (model + learned state + feature schema + sha256 manifest).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def promote_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory (runs/<name>/<algo>-seed<k>).")],
    to: Annotated[Path, typer.Option("--to", help="The bundle directory to write, e.g. bundles/eurusd-ppo.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing bundle directory.")] = False,
) -> None:
    """Promote a trained run to a bundle for `slf live`.

    The bundle holds the model (best_model.zip if the run kept one, else model.zip), the learned state it
    was selected with, the learning store, the feature schema with the normalization statistics, the
    resolved config, metrics, package versions, lineage and a manifest with the sha256 of every file.
    Model and learned state are pickles: `slf live` loads only bundles whose manifest verifies. No API
    keys or environment variables are written.
    """
    import json

    from agents.bundle import MANIFEST, promote
    from envs.errors import StateError

    bundle = promote(run_dir, to, force=force)
    try:
        manifest = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # pragma: no cover - just written
        raise StateError(f"cannot read the new manifest ({exc})", where=str(bundle / MANIFEST)) from None
    files = len(manifest["files"])
    typer.echo(f"promoted {run_dir} -> {bundle} ({files} files, {manifest['algo']}, {manifest['symbol']})")


@app.command("verify")
def verify_command(
    path: Annotated[Path, typer.Argument(help="The bundle directory.")],
) -> None:
    """Recompute the sha256 of every file of a bundle and compare with its manifest.

    Exit status 0 when every file matches; 2 with the file named when one is missing, changed or not
    listed, or the manifest is missing or corrupt. Bundles hold pickles: load only verified bundles you
    trust.
    """
    from agents.bundle import verify_bundle

    manifest = verify_bundle(path)
    typer.echo(
        f"ok: {path}: {len(manifest['files'])} files verified ({manifest['algo']}, {manifest['symbol']})"
    )
