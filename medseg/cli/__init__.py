"""The ``medseg`` command line: thin typer commands over the Python API (see ``app.py`` for the list)."""
