"""The `www` command.

    www sql "SELECT ..." [--format table|csv|json]   read-only query of the DuckDB catalog
    www catalog rebuild                              recreate the catalog from the Parquet files
    www catalog tables                               list tables and their row counts
    www models                                       list registered models (and bad files)
    www tables                                       the table reference as markdown
    www results [--readme README.md] [--model NAME]  the results section, printed or written into a README
    www materialize [--model NAME ...] [--force]     bring every asset partition up to date
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
    from www_resources.storage import default_catalog

    import duckdb

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

    scan = scan_models()
    for name, entry in sorted(scan.entries.items()):
        print(f"{name}: {entry.model}  layers={list(entry.layers)}  probe={entry.probe_set}  "
              f"concept_sets={list(entry.concept_sets)}")
    for path, message in scan.errors.items():
        print(f"BAD {message}", file=sys.stderr)
    return 1 if scan.errors and not scan.entries else 0


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
                             table("misprediction_detection"), class_concepts={n: table(n) for n in RESULT_TABLES})
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
    from www_assets.runner import materialize_stale

    report = materialize_stale(models=args.model or None, force=args.force)
    return 1 if report.failed else 0


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
    p = sub.add_parser("models", help="list the model registry")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("results", help="print the results section (from the catalog), or write it into a README")
    p.add_argument("--readme", help="README whose <!-- results:start/end --> section to replace")
    p.add_argument("--model", action="append", help="only this model (repeatable; the world CLIP is always shown)")
    p.set_defaults(func=cmd_results)
    p = sub.add_parser("materialize", help="materialize everything missing or stale")
    p.add_argument("--model", action="append", help="only this model (repeatable)")
    p.add_argument("--force", action="store_true", help="re-run even what is fresh")
    p.set_defaults(func=cmd_materialize)
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
