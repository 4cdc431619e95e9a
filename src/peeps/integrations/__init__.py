"""Opt-in integrations with third-party libraries.

Each lives in its own module and is the only place peeps imports that library:
``import peeps.integrations.aiohttp`` needs aiohttp; ``import peeps`` never does.
"""
