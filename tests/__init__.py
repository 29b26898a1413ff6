"""The test suite; its folders mirror the packages (tests/core tests fabric/core, ...).

A package, so that a helper shared between folders imports as ``tests.<folder>.<module>``
(``tests.fabric_support``, ``tests.webpubsub.client_support``). A folder with an
``__init__.py`` is a package below this one; a folder without (tests/transport,
tests/interop, ...) is imported by pytest under its modules' basenames, which must then be
unique across those folders.
"""
