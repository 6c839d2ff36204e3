"""The merchant API's routes, one module per resource; each exposes ``router(deps)``."""
