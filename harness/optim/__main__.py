"""`python -m harness.optim`: print the README's optimizer and schedule tables from the registries (plugins
included)."""

from harness import plugins
from harness.optim import registry, schedulers

plugins.load()
print(registry.markdown_table())
print()
print(schedulers.markdown_table())
