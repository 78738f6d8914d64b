"""``slf data``: commands on market data (being written)."""

import typer

app = typer.Typer(no_args_is_help=True)
