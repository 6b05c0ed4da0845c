"""``python -m nextoffer …``: the ``nextoffer`` command (also a file ``spark-submit`` can
run: docs/batch.md)."""

from nextoffer.cli import main

if __name__ == "__main__":  # importing it (to find its file, say) runs nothing
    main()
