"""detnas.workflows: the whole road in one call (the demo's main job), above export and search, below the CLI."""
