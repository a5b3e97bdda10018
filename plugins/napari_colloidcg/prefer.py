"""Make colloidcg napari's preferred reader for video files.

napari asks which plugin should open a file that more than one reader claims (``.tif``:
napari's built-in reader, which loads the whole file into memory, and colloidcg's, which
reads frames lazily). Run once:

    python -m napari_colloidcg.prefer           # or: napari --plugin colloidcg video.tif

It sets napari's reader preferences (*File > Preferences > Plugins > File extension
readers*) for every video ending colloidcg reads; ``--undo`` removes them again.
"""

from __future__ import annotations

import argparse

from ._reader import VIDEO_EXTS

PLUGIN = "colloidcg"


def patterns() -> list[str]:
    return [f"*{ext}" for ext in VIDEO_EXTS]


def prefer_colloidcg(settings=None, undo: bool = False) -> dict:
    """Set (``undo``: remove) colloidcg as napari's reader for video files; returns the
    new ``extension2reader`` mapping. ``settings`` defaults to napari's saved settings."""
    if settings is None:
        from napari.settings import get_settings

        settings = get_settings()
    current = dict(settings.plugins.extension2reader)
    for pat in patterns():
        if undo:
            if current.get(pat) == PLUGIN:
                current.pop(pat)
        else:
            current[pat] = PLUGIN
    settings.plugins.extension2reader = current
    return current


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m napari_colloidcg.prefer", description=__doc__.splitlines()[0])
    ap.add_argument("--undo", action="store_true", help="remove colloidcg's reader preferences")
    args = ap.parse_args(argv)
    mapping = prefer_colloidcg(undo=args.undo)
    mine = sorted(k for k, v in mapping.items() if v == PLUGIN)
    print(f"napari opens {', '.join(mine) or 'no file endings'} with colloidcg")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
