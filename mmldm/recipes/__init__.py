"""Training recipes: a shipped model reproduced end to end with the project's own commands.

``sounding_shapes``: the built-in model; ``real_video``: the real-data model of Big Buck
Bunny. Each module defines ``SCALES`` (``default``, ``smoke``) and ``RECIPE`` (a
:class:`~mmldm.recipes.base.Recipe`); ``mmldm recipe NAME`` runs it.
"""
