"""The command line: Typer declarations and the command bodies behind them."""
