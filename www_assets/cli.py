"""The `www` command.

    www sql "SELECT ..." [--format table|csv|json] [--limit N]   read-only query of the DuckDB catalog
    www catalog rebuild                              recreate the catalog from the Parquet files
    www catalog tables                               list tables and their row counts
    www models [list]                                list registered models (and bad files)
    www models prune [--dry-run]                     move the warehouse files of deleted models aside
    www tables                                       the table reference as markdown
    www methods                                      the concept-scoring methods as a markdown table
    www image ID [--out FILE.png] [--model M]        write the pixels of a probe image
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

#: Rows the table format prints when --limit is not given (one screen page, about).
PAGE_ROWS = 40
#: Characters of a list cell (or a long text) in the table format before it is cut.
CELL_CHARS = 48
#: Exit status after the reader of our output went away (`www sql ... | head`), as a shell
#: reports a process ended by SIGPIPE (128 + 13).
BROKEN_PIPE_STATUS = 141


def _ensure_dagster_home() -> None:
    home = os.environ.setdefault("DAGSTER_HOME", str(paths.PROJECT_ROOT / "dagster_home"))
    os.makedirs(home, exist_ok=True)


def _short_cell(value) -> object:
    """A cell as the table format shows it: lists cut after `CELL_CHARS` characters with the
    count of items left out, long texts cut with an ellipsis; other values unchanged."""
    import numpy as np

    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
        parts, used = [], 1
        for item in items:
            text = str(_short_cell(item)) if isinstance(item, (list, tuple, np.ndarray)) else (
                f"{item:.4g}" if isinstance(item, (float, np.floating)) else str(item))
            if parts and used + len(text) + 2 > CELL_CHARS:
                break
            parts.append(text)
            used += len(text) + 2
        left = len(items) - len(parts)
        return "[" + ", ".join(parts) + (f", … +{left}" if left else "") + "]"
    if isinstance(value, str) and len(value) > CELL_CHARS:
        return value[: CELL_CHARS - 1] + "…"
    return value


def _print_frame(df, fmt: str, limit: int | None = None) -> None:
    """Write `df` to stdout as an aligned table, CSV or JSON records. `limit` rows at most
    (None: all); the table format says how many rows it left out."""
    import pandas as pd

    shown = df if limit is None or limit <= 0 else df.head(limit)
    if fmt == "csv":
        shown.to_csv(sys.stdout, index=False)
    elif fmt == "json":
        text = shown.to_json(orient="records", lines=False, default_handler=str)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    elif not len(df):
        print(f"(no rows; columns: {', '.join(map(str, df.columns))})")
    else:
        table = shown.copy()
        for column in table.columns:
            if table[column].dtype == object or pd.api.types.is_string_dtype(table[column]):
                table[column] = pd.Series([_short_cell(v) for v in table[column]], index=table.index, dtype=object)
        with pd.option_context("display.max_colwidth", CELL_CHARS + 8, "display.width", 250):
            print(table.to_string(index=False))
    left = len(df) - len(shown)
    if left and fmt == "table":
        print(f"({left:,} more row(s) not shown, {len(df):,} in all: --limit N shows N, --limit 0 shows every row)")
    elif left:
        print(f"www sql: {left:,} row(s) left out by --limit", file=sys.stderr)


def _statements(sql: str) -> int:
    """How many SQL statements `sql` holds (0 for blanks and comments alone)."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        return len(con.extract_statements(sql))
    finally:
        con.close()


def cmd_sql(args) -> int:
    import duckdb

    from www_resources.storage import default_catalog

    try:
        if not _statements(args.query):
            print("www sql: the query is empty (blanks or comments only); give a SELECT, e.g. "
                  "www sql \"select * from predictions limit 5\"", file=sys.stderr)
            return 2
        df = default_catalog().query(args.query)
    except duckdb.Error as err:
        print(f"www sql: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    limit = args.limit if args.limit is not None else (PAGE_ROWS if args.format == "table" else None)
    _print_frame(df, args.format, limit)
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


def cmd_methods(args) -> int:
    """The README's method table, written from the METHODS table of methods/concept_scoring.py."""
    from www_assets.methods.tables import methods_markdown

    print(methods_markdown())
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


def _image_rows(catalog, image_id: str, model: str | None):
    """The probe_images rows of `image_id` (of `model` only, if given)."""
    quoted = image_id.replace("'", "''")
    where = f"image_id = '{quoted}'" + (f" and model = '{model.replace(chr(39), chr(39) * 2)}'" if model else "")
    return catalog.query(f"select model, probe_set, path, label_name, readable, error from probe_images where {where} "
                         "order by model")


def cmd_image(args) -> int:
    """Write the pixels of one probe image (an `image_id` of probe_images, neuron_examples...)."""
    import numpy as np
    from PIL import Image

    from www_resources.probes import ProbeSetError, open_probe_set, open_rgb
    from www_resources.storage import default_catalog

    catalog = default_catalog()
    if "probe_images" not in catalog.views():
        print(f"www image: no probe_images table in {catalog.path} yet; materialize probe_images first", file=sys.stderr)
        return 2
    rows = _image_rows(catalog, args.image_id, args.model)
    if rows.empty:
        where = f"the probe set of model {args.model!r}" if args.model else "any model's probe set"
        print(f"www image: {args.image_id!r} is not in {where} (table probe_images); ids look like probe/000884 "
              "(the world: split/index) or <class folder>/<file> (an image folder); list some with "
              "www sql \"select model, image_id, path from probe_images limit 5\"", file=sys.stderr)
        return 2
    sources = rows.drop_duplicates(["probe_set", "path"])
    if len(sources) > 1:
        print(f"www image: {args.image_id!r} names different files in the probe sets of "
              f"{', '.join(rows['model'])}; pick one with --model", file=sys.stderr)
        return 2
    row = rows.iloc[0]
    if not bool(row["readable"]):
        print(f"www image: {args.image_id!r} ({row['path']}) is not used by the pipeline: {row['error']}", file=sys.stderr)
        return 2
    try:
        probe = open_probe_set(row["probe_set"])
        if args.framed:
            from www_resources.registry import get_model
            from www_resources.target import preprocessing_for

            pre = preprocessing_for(get_model(row["model"]))
            pixels, _, errors = probe.load(rows.head(1)[["path"]].assign(image_id=args.image_id), pre.size, pre.resize)
            if errors:
                raise ProbeSetError(errors[args.image_id])
            pixels = pixels[0]
        elif probe.kind == "world":
            from www_resources.probes import world_images_path

            split, index = row["path"].removeprefix("world:").rsplit("#", 1)
            pixels = np.asarray(np.load(world_images_path(split), mmap_mode="r")[int(index)])
        else:
            pixels = np.asarray(open_rgb(Path(row["path"]))[0])
    except (ProbeSetError, OSError, ValueError) as err:
        print(f"www image: {args.image_id!r} ({row['path']}): {err}", file=sys.stderr)
        return 2
    picture = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))
    if args.scale > 1:
        picture = picture.resize((picture.width * args.scale, picture.height * args.scale), Image.NEAREST)
    out = Path(args.out or (args.image_id.replace("/", "_").rsplit(".", 1)[0] + ".png"))
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out, format="PNG")
    framing = f", framed as {row['model']} sees it" if args.framed else ""
    print(f"wrote {out} ({picture.width} x {picture.height} px{framing}; {row['path']}, class {row['label_name']})")
    return 0


SQL_HELP = """\
The query language is DuckDB's SQL (https://duckdb.org/docs/sql/introduction), read-only:
SELECT statements (with WITH, UNION, window functions, list functions such as list_contains,
unnest), DESCRIBE, SUMMARIZE and EXPLAIN of a SELECT. Several statements separated by ';' run
in turn and the last one's rows are printed.

Every table is a view named like its asset, with its partition columns (model, concept_set, ...)
as ordinary columns: `www catalog tables` lists the tables with their row counts, `www tables`
prints each table's columns, grain and meaning, `www methods` the concept-scoring methods.

Sandbox: the catalog is opened read-only and DuckDB may read the files under data/warehouse/
only; other files, URLs, extensions, ATTACH, COPY, INSERT and SET are refused with one line.

Output: --format table (default) prints an aligned page of --limit rows (default {page}, 0: all)
and says how many it left out, with long lists and texts cut; csv and json print every row in
full (unless --limit is given). Exit status: 0 answered, 1 DuckDB error (syntax, unknown
column), 2 refused, empty query or no catalog.

examples:
  www sql "select model, layer, count(*) as n from activations group by all order by all"
  www sql "describe neuron_concepts"
  www sql "select neuron, concept from neuron_concepts where model = 'world-cnn' and concept_set = 'world'
           and layer = 'layer4' and method = 'www' and kind = 'major' and concept = 'wheel'"
"""


def build_parser() -> argparse.ArgumentParser:
    """The `www` argument parser (every subcommand, with its help)."""
    parser = argparse.ArgumentParser(
        prog="www", description="Neuron explanations as Dagster assets: query, inspect and run the warehouse.",
        epilog="`www COMMAND --help` describes each command.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, func, description: str | None = None, **kwargs) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=description or help[0].upper() + help[1:] + ".", **kwargs)
        p.set_defaults(func=func)
        return p

    p = command("sql", "run a read-only DuckDB SQL query against the catalog", cmd_sql,
                description=SQL_HELP.format(page=PAGE_ROWS), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("query", help="the SQL text (quote it for the shell); see above")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="table: an aligned page for reading (default); csv: every row as CSV; "
                        "json: every row as a JSON array of records")
    p.add_argument("--limit", type=int, metavar="N",
                   help=f"print at most N rows (default: {PAGE_ROWS} in the table format, every row in csv and json; "
                        "0: every row)")

    p = sub.add_parser("catalog", help="manage the DuckDB catalog (data/www.duckdb)",
                       description="Manage the DuckDB catalog (data/www.duckdb): one view per warehouse table.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, help in (("rebuild", "recreate the catalog's views from the Parquet files of data/warehouse/ alone"),
                       ("tables", "list every table of the catalog with its row count")):
        a = actions.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        a.set_defaults(func=cmd_catalog)

    command("tables", "print the table reference (markdown): every table's meaning, grain and columns", cmd_tables)
    command("methods", "print the concept-scoring methods (markdown): key, display name, score, selection rule",
            cmd_methods)

    p = command("models", "list the model registry (the default), or prune the files of deleted models", cmd_models)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    p.set_defaults(action="list", dry_run=False)
    a = actions.add_parser("list", help="list the registered models and the registry files that do not parse (default)",
                           description="List the registered models and the registry files that do not parse.")
    a.set_defaults(func=cmd_models)
    a = actions.add_parser("prune", help="move the warehouse files of models whose registry file is gone under data/retired/",
                           description="Move the warehouse files of models whose registry file is gone under "
                                       "data/retired/<time>/; the cross-model tables re-run without them.")
    a.add_argument("--dry-run", action="store_true", help="say what would move, move nothing")
    a.set_defaults(func=cmd_models)

    p = command("image", "write the pixels of a probe image, by its image_id, as a PNG", cmd_image,
                description="Write the pixels of a probe image as a PNG. IMAGE_ID is an image_id of probe_images "
                            "(the ids neuron_examples, crop_examples, predictions... carry): probe/000884 for the "
                            "world's probe split (split/index), <class folder>/<file> for an image folder. Ids of no "
                            "model's probe set are refused.")
    p.add_argument("image_id", metavar="IMAGE_ID", help="e.g. probe/000884")
    p.add_argument("--out", metavar="FILE.png", help="where to write it (default: the id with / as _, .png, here)")
    p.add_argument("--model", help="the model whose probe set to read (needed when the id names different files "
                                   "in two models' probe sets)")
    p.add_argument("--framed", action="store_true",
                   help="the pixels as the model sees them (shorter side resized, centre crop to its input): the "
                        "frame the box columns of neuron_examples and crop_examples are measured in")
    p.add_argument("--scale", type=int, default=1, metavar="K", help="enlarge K times, nearest neighbour (default 1)")

    p = command("results", "print the results section (from the catalog), or write it into a README", cmd_results)
    p.add_argument("--readme", metavar="FILE", help="README whose <!-- results:start/end --> section to replace")
    p.add_argument("--model", action="append", help="only this model (repeatable; the world CLIP is always shown)")

    p = command("materialize", "run what the automation policy requests until nothing is left", cmd_materialize)
    p.add_argument("--model", action="append", help="only this model's partitions (repeatable)")
    p.add_argument("--force", action="store_true", help="re-run every configured partition once, even if fresh")
    p.add_argument("--dry-run", action="store_true", help="print what the first tick would run, run nothing")

    p = command("ui", "the Dagster UI (dagster dev) on this project; Ctrl-C or SIGTERM stop it", cmd_ui)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=3000, help="port to listen on (default 3000)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here rather than at exit
        return code
    except BrokenPipeError:  # `www sql ... | head`: the reader has gone; stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
        return BROKEN_PIPE_STATUS
    except Exception as err:  # clear one-line errors for known failure kinds
        from www_resources.registry import RegistryError
        from www_resources.storage import StorageError

        if isinstance(err, (RegistryError, StorageError)):
            print(f"www {args.command}: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
