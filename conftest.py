"""Repository-wide pytest setup: the ``fabric conform`` options, so that
``pytest --pyargs specs.conform --connection-string ...`` works from the repository root."""

pytest_plugins = ("specs.conform.plugin",)
