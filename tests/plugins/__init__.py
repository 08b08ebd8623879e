"""Out-of-tree plugins that tests load through a spec's ``plugins:`` (never imported by collection)."""
