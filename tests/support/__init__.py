"""What tests share besides pytest fixtures: the world every HTTP test starts from, database
helpers, and factories for the setup several tests repeat.

Fixtures stay in ``tests/conftest.py`` (pytest finds them there); everything a test imports
by name lives here, so no test imports ``conftest`` as a module.
"""
