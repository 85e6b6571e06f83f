"""`www materialize` on the first stage of the real graph, for the kill and concurrency tests.

    python -m tests.materialize_cut [www materialize arguments]

runs the `www` command line's `materialize` with the project's definitions cut to what
`activations` needs (the registry sources, model_training, probe_images, probe_forward ->
activations + predictions, the world, and their checks): the real assets, IO manager, instance,
pools and engine, a minute less of work than the whole graph on the tiny data.

With WWW_TEST_HOLD_AT set (a substring of a warehouse path), the writer stops just before it
renames a temporary file whose final path contains it into place: it touches the file named by
WWW_TEST_HOLD_FILE and waits (at most 10 minutes), so that a test can SIGKILL the process while
the temporary files of that partition are on disk and its run holds the `gpu` slot.
"""

import os
import sys
import time
from pathlib import Path

import dagster as dg

TARGET = "activations"


def cut_definitions() -> dg.Definitions:
    from www_assets.definitions import defs
    from www_assets.sources import SOURCE_ASSETS

    graph = defs.resolve_asset_graph()
    keys = dg.AssetSelection.assets(TARGET).upstream().resolve(graph)
    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and set(a.keys) & keys]
    kept = {k for a in assets for k in a.keys}
    checks = [c for c in defs.asset_checks or [] if all(s.asset_key in kept for s in c.check_specs)]
    return dg.Definitions(assets=[*SOURCE_ASSETS, *assets], asset_checks=checks, resources=defs.resources,
                          executor=dg.in_process_executor)


def hold_before_rename() -> None:
    from www_resources import storage

    where, marker = os.environ["WWW_TEST_HOLD_AT"], os.environ["WWW_TEST_HOLD_FILE"]
    put_in_place = storage._put_in_place

    def holding(tmp: Path, path: Path) -> None:
        if where in str(path):
            Path(marker).write_text(f"{os.getpid()}\n{tmp}\n")
            end = time.monotonic() + 600
            while time.monotonic() < end:
                time.sleep(0.5)
        put_in_place(tmp, path)

    storage._put_in_place = holding


def main(argv: list[str]) -> int:
    from www_assets import cli, runner

    runner.project_defs = cut_definitions()
    if os.environ.get("WWW_TEST_HOLD_AT"):
        hold_before_rename()
    return cli.main(["materialize", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
