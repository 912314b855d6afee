"""Built-in plugins: rproxy's own policy, registered like any other plugin.

Each has a plain-Python reference implementation; where the engine has a
compiled form of it, the reference is marked ``@native(...)`` and the engine
runs its own form in its place.
"""
