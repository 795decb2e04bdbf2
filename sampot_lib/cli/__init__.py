"""The ``sampot`` command line: the parser and ``main`` (:mod:`.main`), the shared options (:mod:`.options`), the
checks run before any work (:mod:`.checks`) and one module per group of commands."""
