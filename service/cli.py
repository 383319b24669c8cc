import typer

app = typer.Typer(help="regtune: tune the regularization of deep-learning models.")


@app.callback()
def main() -> None:
    """regtune command line."""
