"""Helpers shared by test folders (import them as ``helpers.<module>``).

``tests/`` is on ``sys.path`` while the suite runs (pytest puts the folder of
the root ``conftest.py`` there), so any test can import this package.
"""
