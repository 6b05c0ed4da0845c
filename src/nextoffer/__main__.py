"""``python -m nextoffer …``: the ``nextoffer`` command (also a file ``spark-submit`` can
run: docs/batch.md)."""

from nextoffer.cli import main

main()
