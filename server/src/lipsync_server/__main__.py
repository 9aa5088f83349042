"""``python -m lipsync_server [serve flags]``: the same as ``lipsync serve``."""

from lipsync_server.cli import serve

if __name__ == "__main__":
    import logging

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    serve()
