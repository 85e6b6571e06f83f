"""The catalog's queries read the warehouse and nothing else: every way out is refused in one line,
and the views still answer."""

import numpy as np
import pandas as pd
import pytest

from www_assets import cli
from www_resources.storage import Catalog, QueryRefused, Warehouse


@pytest.fixture
def store(tmp_path):
    warehouse = Warehouse(tmp_path / "data" / "warehouse")
    frame = pd.DataFrame(
        {
            "image_id": ["a", "b", "c"],
            "label": np.array([0, 1, 2], np.int32),
            "pred": np.array([0, 1, 1], np.int32),
            "msp": np.array([0.9, 0.8, 0.4], np.float32),
            "top5": [[0, 1], [1, 0], [1, 2]],
            "correct": [True, True, False],
        }
    )
    warehouse.write("predictions", frame, {"model": "m"})
    catalog = Catalog(tmp_path / "data" / "www.duckdb", warehouse)
    catalog.rebuild()
    secret = tmp_path / "secret.csv"  # a readable file beside the data folder
    secret.write_text("key,value\npassword,hunter2\n")
    return catalog, secret


def test_views_and_warehouse_files_still_answer(store):
    catalog, _ = store
    df = catalog.query("select model, count(*) n, sum(label) s from predictions group by model")
    assert df.to_dict("records") == [{"model": "m", "n": 3, "s": 3}]
    # a file of the warehouse read directly, and the catalog's metadata
    path = catalog.warehouse.files("predictions")[0]
    assert catalog.query(f"select count(*) n from read_parquet('{path}')")["n"].iloc[0] == 3
    assert catalog.views() == {"predictions"}
    assert catalog.query("describe predictions")["column_name"].tolist()[:2] == ["image_id", "label"]
    assert "physical_plan" in catalog.query("explain select * from predictions")["explain_key"].tolist()


def refused(catalog, sql: str) -> str:
    with pytest.raises(QueryRefused) as err:
        catalog.query(sql)
    message = str(err.value)
    assert "\n" not in message and message.startswith("refused: ")
    return message


@pytest.mark.parametrize(
    "template, reason",
    [
        ("copy (select 1 as x) to '{out}'", "COPY statement"),
        ("copy predictions to '{part}'", "COPY statement"),  # over a partition file, inside the warehouse
        ("explain analyze copy (select 1) to '{part}'", "EXPLAIN statement"),  # EXPLAIN ANALYZE executes
        ("export database '{out_dir}'", "EXPORT statement"),
        ("select * from read_csv('{secret}')", "Cannot access file"),
        ("select * from read_text('/etc/hostname')", "Cannot access file"),
        ("select * from read_csv('{root}/../../secret.csv')", "Cannot access file"),  # climbing out by '..'
        ("select * from glob('/etc/*')", "Cannot access file"),
        ("select * from sniff_csv('{secret}')", "Cannot access file"),  # read files with access off before
        ("select * from read_blob('/etc/hostname')", "Cannot access file"),
        ("select * from read_csv('http://127.0.0.1:9/x.csv')", "Cannot access file"),  # the network
        ("install httpfs", "INSTALL statement"),
        ("load httpfs", "LOAD statement"),
        ("attach '{out_db}' as other", "ATTACH statement"),
        ("set enable_external_access = true", "SET statement"),
        ("set lock_configuration = false", "SET statement"),
        ("set allowed_directories = ['/']", "SET statement"),
        ("select 1; copy (select 1) to '{out}'", "COPY statement"),  # the second statement counts too
    ],
)
def test_every_way_out_is_refused(store, tmp_path, template, reason):
    catalog, secret = store
    part = catalog.warehouse.files("predictions")[0]
    before = part.read_bytes()
    sql = template.format(out=tmp_path / "out.csv", part=part, out_dir=tmp_path / "dump", secret=secret,
                          root=catalog.warehouse.root, out_db=tmp_path / "other.duckdb")
    assert reason in refused(catalog, sql)
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "dump").exists()
    assert not (tmp_path / "other.duckdb").exists()
    assert part.read_bytes() == before


def test_the_sandbox_itself_refuses_what_the_statement_check_lets_through(store):
    """Below the statement check: a SELECT cannot re-enable access, and settings stay locked."""
    catalog, secret = store
    con = catalog.reader()
    try:
        import duckdb

        for sql in ("set enable_external_access = true", "reset lock_configuration", "attach ':memory:' as m"):
            with pytest.raises(duckdb.Error):
                con.execute(sql)
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"select * from read_csv('{secret}')")
        with pytest.raises(duckdb.Error):
            con.execute("install httpfs")
        assert con.execute("select current_setting('lock_configuration')").fetchone()[0] is True
        assert con.execute("select count(*) from predictions").fetchone()[0] == 3
    finally:
        con.close()


def test_www_sql_reports_a_refusal_in_one_line(store, monkeypatch, capsys):
    catalog, secret = store
    monkeypatch.setenv("WWW_DATA_DIR", str(catalog.path.parent))
    code = cli.main(["sql", f"select * from read_csv('{secret}')"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("www sql: refused: ") and str(secret) in err
    assert "hunter2" not in err
    assert cli.main(["sql", "select count(*) n from predictions", "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == ["n", "3"]


def test_two_readers_open_at_once_in_one_process(store):
    """DuckDB shares one instance among a process's connections to a file: the second reader finds
    the sandbox (and its locked settings) in place and works."""
    catalog, secret = store
    first = catalog.reader()
    try:
        assert catalog.query("select count(*) n from predictions")["n"].iloc[0] == 3
        refused(catalog, f"select * from read_csv('{secret}')")
    finally:
        first.close()
