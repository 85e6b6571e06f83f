"""The `www` command.

    www sql "SELECT ..." [--format table|csv|json]   read-only query of the DuckDB catalog
    www catalog rebuild                              recreate the catalog from the Parquet files
    www catalog tables                               list tables and their row counts
    www models [list]                                list registered models (and bad files)
    www models prune [--dry-run]                     move the warehouse files of deleted models aside
    www tables                                       the table reference as markdown
    www results [--readme README.md] [--model NAME]  the results section, printed or written into a README
    www ui [--host H] [--port P]                     the Dagster UI (dagster dev), stopped by Ctrl-C or SIGTERM
    www materialize [--model NAME ...] [--force] [--dry-run]  run what the automation policy requests, until nothing
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from www_resources import paths


def _ensure_dagster_home() -> None:
    home = os.environ.setdefault("DAGSTER_HOME", str(paths.PROJECT_ROOT / "dagster_home"))
    os.makedirs(home, exist_ok=True)


def _print_frame(df, fmt: str) -> None:
    import pandas as pd

    if fmt == "csv":
        df.to_csv(sys.stdout, index=False)
    elif fmt == "json":
        sys.stdout.write(df.to_json(orient="records", lines=False, default_handler=str) + "\n")
    else:
        with pd.option_context("display.max_rows", 200, "display.max_columns", 50, "display.width", 200,
                               "display.max_colwidth", 60):
            print(df.to_string(index=False) if len(df) else f"(no rows; columns: {', '.join(df.columns)})")


def cmd_sql(args) -> int:
    import duckdb

    from www_resources.storage import default_catalog

    try:
        df = default_catalog().query(args.query)
    except duckdb.Error as err:
        print(f"www sql: {err}", file=sys.stderr)
        return 1
    _print_frame(df, args.format)
    return 0


def cmd_catalog(args) -> int:
    from www_resources.storage import default_catalog

    catalog = default_catalog()
    if args.action == "rebuild":
        tables = catalog.rebuild()
        print(f"rebuilt {catalog.path} with {len(tables)} view(s): {', '.join(tables) or '(none)'}")
        return 0
    import pandas as pd

    rows = []
    for table in sorted(catalog.views()):
        n = catalog.query(f'select count(*) as n from "{table}"')["n"].iloc[0]
        rows.append((table, int(n)))
    _print_frame(pd.DataFrame(rows, columns=["table", "rows"]), "table")
    return 0


def cmd_tables(args) -> int:
    """The table reference of the README, written from www_resources/tables.py."""
    from www_resources.tables import TABLES

    for spec in TABLES.values():
        keys = [*spec.partition_by, *spec.grain]
        columns = ", ".join(
            f"{name} ({'float32 vector' if dtype == 'vector' else str(dtype).replace('list<item: ', 'list<')})" for name, dtype in spec.columns.items()
        )
        print(f"- **`{spec.name}`** — {spec.description}  \n  grain: {', '.join(keys) or '(one row per record)'}; "
              f"partitioned by: {', '.join(spec.partition_by) or 'nothing'}.  \n  columns: {columns}")
    return 0


def cmd_models(args) -> int:
    from www_resources.registry import scan_models

    if args.action == "prune":
        return cmd_prune(args)
    scan = scan_models()
    for name, entry in sorted(scan.entries.items()):
        print(f"{name}: {entry.model}  layers={list(entry.layers)}  probe={entry.probe_set}  "
              f"concept_sets={list(entry.concept_sets)}")
    for path, message in scan.errors.items():
        print(f"BAD {message}", file=sys.stderr)
    return 1 if scan.errors and not scan.entries else 0


def cmd_prune(args) -> int:
    """Retire the models whose registry file is gone: their partitions leave `models`, their
    warehouse folders move under data/retired/, and the cross-model tables re-run without them."""
    import time

    from www_assets.registry_sync import prune_retired, sync_partitions

    stamp = time.strftime("%Y%m%dT%H%M%S")
    plan = prune_retired(stamp, dry_run=args.dry_run)
    if not plan.moves:
        print("nothing to prune: every model with warehouse files has a registry file")
        return 0
    if args.dry_run:
        print(f"dry run: {len(plan.moves)} folder(s) of {plan.models} would move; run without --dry-run to move them")
        return 0
    print(f"moved {len(plan.moves)} folder(s) of {plan.models} under {paths.data_dir() / 'retired' / stamp}")
    _ensure_dagster_home()
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        print(f"registry: {sync_partitions(instance).summary()}")
    print("the cross-model tables re-run without them on the next `www materialize` (or by automation in `make ui`)")
    return 0


RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"


def splice_results(readme: str, results: str) -> str:
    """`readme` with the text between the results markers replaced by `results`."""
    if readme.count(RESULTS_START) != 1 or readme.count(RESULTS_END) != 1:
        raise ValueError(f"the README needs exactly one {RESULTS_START} and one {RESULTS_END} line")
    head, rest = readme.split(RESULTS_START)
    _, tail = rest.split(RESULTS_END)
    return f"{head}{RESULTS_START}\n{results.strip()}\n{RESULTS_END}{tail}"


def cmd_results(args) -> int:
    """Print the results section (from the catalog's tables), or splice it into a README."""
    import duckdb

    from www_resources.storage import default_catalog

    catalog = default_catalog()
    views = catalog.views()
    if "evaluation_summary" not in views:
        print(f"www results: no evaluation_summary table in {catalog.path} yet; materialize evaluation_summary first",
              file=sys.stderr)
        return 2
    from www_assets.evaluation import results_report

    def table(name):
        if name not in views:
            return None
        try:
            df = catalog.query(f'select * from "{name}"')
        except duckdb.Error:  # a view whose Parquet files are gone
            return None
        return df[df["model"].isin(args.model)] if args.model and "model" in df.columns else df

    from www_assets.methods.class_concepts import RESULT_TABLES

    results = results_report(table("evaluation_summary"), table("model_training"), table("world_clip"),
                             table("misprediction_detection"), localization=table("localization_eval"),
                             class_concepts={n: table(n) for n in RESULT_TABLES})
    if not args.readme:
        print(results)
        return 0
    readme = Path(args.readme)
    try:
        updated = splice_results(readme.read_text(), results)
    except ValueError as err:
        print(f"www results: {readme}: {err}", file=sys.stderr)
        return 2
    tmp = readme.with_suffix(readme.suffix + ".tmp")
    tmp.write_text(updated)
    tmp.replace(readme)
    print(f"wrote the results section of {readme} from {catalog.path}")
    return 0


def cmd_materialize(args) -> int:
    _ensure_dagster_home()
    import dagster as dg

    from www_assets.runner import materialize

    with dg.DagsterInstance.get() as instance:
        report = materialize(models=args.model or None, force=args.force, instance=instance, dry_run=args.dry_run)
    return 1 if report.failed else 0


SHUTDOWN_GRACE_S = 5.0


def cmd_ui(args) -> int:
    """`dagster dev` on this project, stopped cleanly by Ctrl-C or SIGTERM.

    `dagster dev` maps SIGTERM to its SIGINT handler, and a process started in the background of a
    non-interactive shell (`make ui &`, a CI script) inherits SIGINT *ignored*: then neither signal
    stops it. Here it runs as a child in its own process group with the default dispositions; both
    signals are passed on as SIGINT, and once it has shut its services down, whatever is left of
    its group (the code servers, which otherwise linger for their heartbeat) is stopped after a
    grace period of `SHUTDOWN_GRACE_S`.
    """
    import signal
    import subprocess
    import time

    _ensure_dagster_home()
    dagster = Path(sys.executable).parent / "dagster"
    if not dagster.exists():
        print(f"www ui: no dagster command next to {sys.executable}", file=sys.stderr)
        return 2
    command = [str(dagster), "dev", "-w", str(paths.PROJECT_ROOT / "workspace.yaml"), "-h", args.host,
               "-p", str(args.port)]
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    child = subprocess.Popen(command, cwd=paths.PROJECT_ROOT, start_new_session=True)
    stopping = []

    def stop(signum, frame):
        stopping.append(time.monotonic())
        os.killpg(child.pid, signal.SIGINT)  # as Ctrl-C in a terminal: every process of the group

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while child.poll() is None and not (stopping and time.monotonic() - stopping[0] > SHUTDOWN_GRACE_S):
        time.sleep(0.1)
    code = child.poll()
    for sig in (signal.SIGTERM, signal.SIGKILL):  # what is left of the group after the grace period
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            break
        time.sleep(1.0)
    if stopping:
        print(f"www ui: stopped in {time.monotonic() - stopping[0]:.1f} s")
    return 0 if stopping else (code or 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="www", description="Neuron explanations as Dagster assets.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sql", help="run a read-only SQL query against the catalog")
    p.add_argument("query")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(func=cmd_sql)
    p = sub.add_parser("catalog", help="manage the DuckDB catalog")
    p.add_argument("action", choices=["rebuild", "tables"])
    p.set_defaults(func=cmd_catalog)
    p = sub.add_parser("tables", help="print the table reference (markdown)")
    p.set_defaults(func=cmd_tables)
    p = sub.add_parser("models", help="list the model registry, or prune the files of deleted models")
    p.add_argument("action", nargs="?", choices=["list", "prune"], default="list")
    p.add_argument("--dry-run", action="store_true", help="prune: say what would move, move nothing")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("results", help="print the results section (from the catalog), or write it into a README")
    p.add_argument("--readme", help="README whose <!-- results:start/end --> section to replace")
    p.add_argument("--model", action="append", help="only this model (repeatable; the world CLIP is always shown)")
    p.set_defaults(func=cmd_results)
    p = sub.add_parser("materialize", help="run what the automation policy requests until nothing is left")
    p.add_argument("--model", action="append", help="only this model's partitions (repeatable)")
    p.add_argument("--force", action="store_true", help="re-run every configured partition once, even if fresh")
    p.add_argument("--dry-run", action="store_true", help="print what the first tick would run, run nothing")
    p.set_defaults(func=cmd_materialize)
    p = sub.add_parser("ui", help="the Dagster UI (dagster dev) on this project; Ctrl-C or SIGTERM stop it")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=cmd_ui)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Exception as err:  # clear one-line errors for known failure kinds
        from www_resources.registry import RegistryError
        from www_resources.storage import StorageError

        if isinstance(err, (RegistryError, StorageError)):
            print(f"www {args.command}: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
