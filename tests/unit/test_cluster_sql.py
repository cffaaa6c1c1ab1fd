"""deploy/clickhouse/cluster.sql is generated from the migrations (streamproc/store/cluster.py).

It used to be written by hand and fell behind them (no 003 audience tables). These tests hold it to the
migrations three ways: the checked-in file is what the generator writes; ClickHouse (the embedded chDB
engine, ``formatQuery``) parses every statement; and with its cluster form taken off again (ON CLUSTER,
Replicated engines, Distributed tables, ``_local`` names) it creates exactly the tables and views that
``schema apply`` creates from the migrations.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from support.helpers import ROOT

from streamproc.store.base import DDL_DIR, MIGRATIONS_TABLE_DDL, split_statements
from streamproc.store.chdb import bind
from streamproc.store.cluster import (
    CLUSTER,
    COMMAND,
    FILE,
    SHARDING,
    ClusterSchemaError,
    cluster_sql,
    cluster_statements,
)

DB = "streamproc"  # the database the checked-in file is generated for (Settings.clickhouse_database)


@pytest.fixture(scope="module")
def conn(chdb_conn: object) -> object:
    return chdb_conn


def run(conn: object, sql: str, params: dict[str, str] | None = None) -> str:
    return conn.query(sql, "TSVRaw", params=bind(params) or {}).bytes().decode()  # type: ignore[attr-defined]


def test_the_checked_in_file_is_what_the_generator_writes() -> None:
    assert (ROOT / FILE).read_text() == cluster_sql(DB), f"{FILE} is stale: run `{COMMAND}`"


def test_the_file_says_it_is_generated_and_by_which_command() -> None:
    head = (ROOT / FILE).read_text().splitlines()[:3]
    assert "GENERATED" in head[0] and COMMAND in head[0]


def test_every_migration_is_in_it_and_recorded_as_applied() -> None:
    sql = cluster_sql(DB)
    names = [p.name for p in sorted(DDL_DIR.glob("*.sql"))]
    assert "003_exact_audience.sql" in names  # the migration the hand-written file lacked
    for name in names:
        assert f"-- ==== schemas/clickhouse/{name} " in sql
    assert sql.rstrip().endswith(f"INSERT INTO {DB}.schema_migrations (name) VALUES "
                                 + ", ".join(f"('{n}')" for n in names) + ";")


def test_every_sharded_table_has_replicated_local_tables_under_a_distributed_one() -> None:
    sql = cluster_sql(DB)
    for table, key in SHARDING.items():
        if key is None:
            assert f"ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/{DB}/{table}'" in sql, table
            assert f"{table}_local" not in sql, table
        else:
            assert (f"CREATE TABLE IF NOT EXISTS {DB}.{table} ON CLUSTER {CLUSTER} AS {DB}.{table}_local\n"
                    f"ENGINE = Distributed({CLUSTER}, {DB}, {table}_local, {key})") in sql, table
    for stmt in cluster_statements(DB):
        if stmt.startswith(("CREATE", "ALTER", "DROP")):
            assert f" ON CLUSTER {CLUSTER}" in stmt, stmt[:80]
        assert not re.search(r"ENGINE = (Replacing|Aggregating|)MergeTree\b", stmt), stmt[:80]


def test_clickhouse_parses_every_generated_statement(conn: object) -> None:
    statements = cluster_statements(DB)
    assert len(statements) > 50
    failed = []
    for stmt in statements:
        try:
            formatted = run(conn, "SELECT formatQuery({q:String})", {"q": stmt})
        except Exception as exc:  # chDB raises on a syntax error
            failed.append(f"{stmt[:100]!r}: {str(exc)[:300]}")
            continue
        assert formatted.split()[:2] == stmt.split()[:2]
    assert not failed, "\n".join(failed)


def test_the_parse_check_catches_a_broken_statement(conn: object) -> None:
    with pytest.raises(Exception, match="Syntax error"):
        run(conn, "SELECT formatQuery({q:String})", {"q": "CREATE TABLE t ON CLUSTER c (a UInt8) ENGINE = ("})


def declustered(stmt: str, db: str) -> str | None:
    """A generated statement as a single server runs it: no ON CLUSTER, plain engines, no Distributed tables,
    the local tables under the worker's names, in database ``db``; None for cluster-only statements."""
    if stmt.startswith(("CREATE DATABASE", "CREATE SETTINGS PROFILE")) or "ENGINE = Distributed(" in stmt:
        return None
    stmt = stmt.replace(f" ON CLUSTER {CLUSTER}", "")
    stmt = re.sub(r"Replicated(\w*MergeTree)\('[^']*', '\{replica\}'(?:, ([^)]*))?\)",
                  lambda m: m.group(1) + (f"({m.group(2)})" if m.group(2) else ""), stmt)
    return re.sub(rf"\b{DB}\.(\w+?)(?:_local)?\b", lambda m: f"{db}.{m.group(1)}", stmt)


def schema_of(conn: object, db: str) -> list[str]:
    rows = run(conn, "SELECT name, engine, create_table_query FROM system.tables WHERE database = {d:String} "
                     "ORDER BY name", {"d": db})
    return rows.replace(db + ".", "").splitlines()


def test_without_its_cluster_form_it_creates_what_the_migrations_create(conn: object) -> None:
    tag = uuid.uuid4().hex[:8]
    from_cluster, from_migrations = f"cluster_{tag}", f"migrated_{tag}"
    run(conn, f"CREATE DATABASE {from_cluster}")
    run(conn, f"CREATE DATABASE {from_migrations}")
    try:
        for stmt in cluster_statements(DB):
            single = declustered(stmt, from_cluster)
            if single:
                run(conn, single)
        run(conn, MIGRATIONS_TABLE_DDL.replace("schema_migrations", f"{from_migrations}.schema_migrations", 1))
        for path in sorted(DDL_DIR.glob("*.sql")):  # as `schema apply` runs them, in their own database
            for stmt in split_statements(path.read_text()):
                run(conn, f"USE {from_migrations}")
                run(conn, stmt)
        got, want = schema_of(conn, from_cluster), schema_of(conn, from_migrations)
        assert len(want) > 20 and any(line.startswith("audience_1h\t") for line in want)
        assert got == want
    finally:
        run(conn, "USE default")
        run(conn, f"DROP DATABASE IF EXISTS {from_cluster}")
        run(conn, f"DROP DATABASE IF EXISTS {from_migrations}")


def test_a_table_nobody_placed_on_the_cluster_is_refused(tmp_path: Path) -> None:
    (tmp_path / "001_new.sql").write_text("CREATE TABLE IF NOT EXISTS novel (a UInt8) ENGINE = MergeTree ORDER BY a;\n")
    with pytest.raises(ClusterSchemaError, match="novel.*SHARDING"):
        cluster_sql(DB, ddl_dir=tmp_path)


def test_a_statement_with_no_cluster_form_is_refused(tmp_path: Path) -> None:
    (tmp_path / "001_view.sql").write_text("CREATE VIEW IF NOT EXISTS v AS SELECT 1;\n")
    with pytest.raises(ClusterSchemaError, match="no cluster form"):
        cluster_sql(DB, ddl_dir=tmp_path)


def test_a_column_change_also_reaches_the_distributed_table(tmp_path: Path) -> None:
    (tmp_path / "001_col.sql").write_text("ALTER TABLE orders ADD COLUMN IF NOT EXISTS note String;\n"
                                          "ALTER TABLE orders MODIFY TTL toDateTime(ts) + INTERVAL 1 DAY;\n")
    stmts = cluster_statements(DB, ddl_dir=tmp_path)
    assert f"ALTER TABLE {DB}.orders_local ON CLUSTER {CLUSTER} ADD COLUMN IF NOT EXISTS note String" in stmts
    assert f"ALTER TABLE {DB}.orders ON CLUSTER {CLUSTER} ADD COLUMN IF NOT EXISTS note String" in stmts
    assert not any(s.startswith(f"ALTER TABLE {DB}.orders ON CLUSTER {CLUSTER} MODIFY TTL") for s in stmts)
