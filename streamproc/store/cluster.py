"""The schema on a ClickHouse cluster, generated from the numbered migrations.

``deploy/clickhouse/cluster.sql`` used to be written by hand beside ``schemas/clickhouse/*.sql`` and fell
behind them (it never got 003's exact-audience tables). Now the migrations are the one source and this
module rewrites each of their statements into its cluster form, in order:

* a table becomes ``<name>_local`` on every shard (``ON CLUSTER``, the ``Replicated*`` form of its engine
  with a Keeper path per shard and the ``{shard}``/``{replica}`` macros) plus a ``Distributed`` table
  under the name the worker uses, sharded as ``SHARDING`` says; a small table (``SHARDING`` value None)
  is kept whole on every node instead, under one Keeper path for the whole cluster;
* a materialized view reads and writes the ``_local`` tables, so it fires where the rows land;
* ``ALTER`` goes to the local tables, and also to the Distributed table when it changes columns (a
  Distributed table must keep its local table's columns);
* ``DROP`` and the data back-fills (``INSERT ... SELECT``) run on the whole cluster (Distributed names).

Every migration statement is idempotent and so is every generated one, so the file can be run again on
a cluster that ran an earlier version of it. A statement this module cannot translate (a new kind, or
a table ``SHARDING`` does not place) raises ``ClusterSchemaError``: how a new table is sharded is a
decision, not something to guess. ``streamproc schema cluster-sql`` prints the result; a test keeps the
checked-in file equal to it and parses every statement with the embedded ClickHouse.
"""

from __future__ import annotations

import re
from pathlib import Path

from streamproc.settings import Settings
from streamproc.store.base import DDL_DIR, MIGRATIONS_TABLE_DDL, split_statements

CLUSTER = "streamproc"  # the cluster name in the servers' remote_servers
FILE = "deploy/clickhouse/cluster.sql"  # where the checkout keeps the generated file
COMMAND = f"streamproc schema cluster-sql --out {FILE}"

BY_SOURCE_PARTITION = "cityHash64(src_topic, src_partition)"
BY_STREAMER = "cityHash64(streamer_id)"

# How every table of the migrations lives on a cluster: its Distributed sharding key, or None for a
# table kept whole on every node. Everything the worker restores from is sharded by SOURCE PARTITION:
# every snapshot version of a window row, its checkpoint and its order ids then sit on one shard, so
# ReplacingMergeTree / FINAL deduplicate per shard and a restore reads one shard. Tables read by
# streamer are sharded by streamer; aggregate states merge across shards in a Distributed query.
SHARDING: dict[str, str | None] = {
    "tallies_10s": BY_SOURCE_PARTITION,
    "orders": BY_SOURCE_PARTITION,
    "checkpoints": BY_SOURCE_PARTITION,
    "viewers_in": BY_STREAMER,
    "viewer_sets_in": BY_STREAMER,
    "unique_viewers_10s": BY_STREAMER,
    "unique_viewers_1m": BY_STREAMER,
    "unique_viewers_1h": BY_STREAMER,
    "audience_10s": BY_STREAMER,
    "audience_1m": BY_STREAMER,
    "audience_1h": BY_STREAMER,
    "tallies_1m": BY_STREAMER,
    "tallies_1h": BY_STREAMER,
    "rollup_marks": BY_STREAMER,  # written by a view on the shard that got the tallies; read whole
    "tallies_clock": "rand()",  # readers take max() over it: one row per shard is fine
    "rollup_state": None,
    "streamers": None,
    "schema_migrations": None,
}

_HEADER = """\
-- GENERATED FILE, do not edit: `{command}` writes it from the migrations
-- schemas/clickhouse/*.sql (streamproc/store/cluster.py says how each statement is translated, and a test
-- fails when this file and the migrations disagree). Change a migration, then run the command again.
--
-- streamproc on a ClickHouse cluster: replicated local tables on every shard, Distributed tables over them
-- under the names the worker uses. Run it once with clickhouse-client before the first worker starts:
--     clickhouse-client --host <any node> --multiquery < {file}
-- It records every migration it contains as applied, so a worker's `schema apply` skips them; it is
-- idempotent, so after a new migration the regenerated file can be run again on the same cluster.
--
-- Assumes a cluster named `{cluster}` in remote_servers, Keeper, and the macros {{shard}} and {{replica}}
-- ({{replica}} unique per node, e.g. its host name). docs/SCALING.md says how many shards and why.
--
-- Sharding is by SOURCE PARTITION (src_topic, src_partition) for everything the worker restores from:
-- every snapshot version of a window row, its checkpoint and its order ids then live on one shard, so
-- ReplacingMergeTree / FINAL deduplicate correctly per shard and a restore reads one shard's data.
-- Leaderboards sum a streamer's rows over source partitions, which a Distributed query does across
-- shards. Audience states are sharded by streamer; uniqExactMerge combines states from any shards.

CREATE DATABASE IF NOT EXISTS {db} ON CLUSTER {cluster};

-- What the worker's user needs from a cluster (attach with: ALTER USER <user> SETTINGS PROFILE
-- 'streamproc_writer'):
--  * distributed_foreground_insert: an acknowledged flush is on its shard, and the window rows of a flush
--    land before its checkpoint (the order the exactness argument relies on).
--  * insert_quorum 'auto': ... on a majority of the shard's replicas, so losing a replica loses nothing
--    that was checkpointed; select_sequential_consistency makes the restore read only such data.
--  * distributed_product_mode 'global': the rollup job's IN (SELECT … FROM rollup_marks) over
--    Distributed tables runs once, not once per shard (the default, 'deny', refuses it).
CREATE SETTINGS PROFILE IF NOT EXISTS streamproc_writer ON CLUSTER {cluster} SETTINGS
    distributed_foreground_insert = 1,
    insert_quorum = 'auto',
    insert_quorum_parallel = 1,
    select_sequential_consistency = 1,
    distributed_product_mode = 'global';

-- ---- the ledger of applied migrations (store/base.py) ---------------------------------------------

"""

_ENGINE = re.compile(r"\bENGINE\s*=\s*(\w+)(?:\(([^)]*)\))?")
_CREATE_TABLE = re.compile(r"CREATE TABLE (IF NOT EXISTS )?(\w+)\b")
_CREATE_MV = re.compile(r"CREATE MATERIALIZED VIEW (IF NOT EXISTS )?(\w+)\s+TO\s+(\w+)(\s+AS\b)", re.S)
_ALTER = re.compile(r"ALTER TABLE (\w+)\s+(.*)", re.S)
_DROP = re.compile(r"DROP (VIEW|TABLE) (IF EXISTS )?(\w+)\s*$")
_INSERT = re.compile(r"INSERT INTO (\w+)\b")
_SOURCE = re.compile(r"\b(FROM|JOIN)(\s+)([A-Za-z_]\w*)\b")
_COLUMN_CHANGE = re.compile(r"\b(ADD|DROP|MODIFY|RENAME|CLEAR|COMMENT)\s+COLUMN\b")
_LOCAL_CHANGE = re.compile(r"\b(TTL|INDEX|PROJECTION|SETTING|ORDER\s+BY|CONSTRAINT|STATISTICS)\b")


class ClusterSchemaError(ValueError):
    """A migration statement with no cluster translation; the message says what to teach this module."""


class _Translator:
    """Rewrites the statements of the migrations, in order, into their cluster form."""

    def __init__(self, database: str, cluster: str) -> None:
        self.db = database
        self.cluster = cluster
        self.on = f"ON CLUSTER {cluster}"

    def sharded(self, table: str) -> bool:
        if table not in SHARDING:
            raise ClusterSchemaError(f"table {table!r} is not placed on the cluster: say in SHARDING "
                                     "(streamproc/store/cluster.py) how it is sharded, or None to keep it whole")
        return SHARDING[table] is not None

    def local(self, table: str) -> str:
        """Where rows of ``table`` physically are on a node (what views and local ALTERs name)."""
        return f"{self.db}.{table}_local" if self.sharded(table) else f"{self.db}.{table}"

    def sources(self, sql: str, local: bool) -> str:
        """Qualify the tables a SELECT reads: the local tables in a view, the cluster-wide ones elsewhere."""

        def one(m: re.Match[str]) -> str:
            name = m.group(3)
            if name not in SHARDING:
                return m.group(0)
            return m.group(1) + m.group(2) + (self.local(name) if local else f"{self.db}.{name}")

        return _SOURCE.sub(one, sql)

    def statement(self, sql: str) -> list[str]:
        """The cluster statements of one migration statement."""
        if m := _CREATE_TABLE.match(sql):
            return self.create_table(sql, m)
        if m := _CREATE_MV.match(sql):
            name, target = m.group(2), m.group(3)
            head = f"CREATE MATERIALIZED VIEW {m.group(1) or ''}{self.db}.{name} {self.on}\nTO {self.local(target)}"
            return [head + m.group(4) + self.sources(sql[m.end():], local=True)]
        if m := _ALTER.match(sql):
            return self.alter(m.group(1), m.group(2))
        if m := _DROP.match(sql):
            kind, if_exists, name = m.group(1), m.group(2) or "", m.group(3)
            if kind == "TABLE" and self.sharded(name):
                return [f"DROP TABLE {if_exists}{self.db}.{name} {self.on}",
                        f"DROP TABLE {if_exists}{self.db}.{name}_local {self.on}"]
            return [f"DROP {kind} {if_exists}{self.db}.{name} {self.on}"]
        if m := _INSERT.match(sql):
            self.sharded(m.group(1))  # a table the cluster knows
            return [f"INSERT INTO {self.db}.{m.group(1)}" + self.sources(sql[m.end():], local=False)]
        raise ClusterSchemaError(f"no cluster form for this statement; teach streamproc/store/cluster.py:\n{sql}")

    def create_table(self, sql: str, m: re.Match[str]) -> list[str]:
        name, rest = m.group(2), sql[m.end():]
        sharded = self.sharded(name)
        engine = _ENGINE.search(rest)
        if engine is None:
            raise ClusterSchemaError(f"CREATE TABLE {name}: no ENGINE clause to make replicated")
        family, args = engine.group(1), engine.group(2)
        if family.endswith("MergeTree") and not family.startswith("Replicated"):
            path = f"/clickhouse/tables/{{shard}}/{self.db}/{name}" if sharded else f"/clickhouse/tables/all/{self.db}/{name}"
            replicated = ", ".join([f"'{path}'", "'{replica}'", *([args.strip()] if args and args.strip() else [])])
            rest = rest[:engine.start()] + f"ENGINE = Replicated{family}({replicated})" + rest[engine.end():]
        elif family != "Null":
            raise ClusterSchemaError(f"CREATE TABLE {name}: no replicated form known for ENGINE = {family}")
        out = [f"CREATE TABLE {m.group(1) or ''}{self.local(name)} {self.on}{rest}"]
        if sharded:
            out.append(f"CREATE TABLE {m.group(1) or ''}{self.db}.{name} {self.on} AS {self.local(name)}\n"
                       f"ENGINE = Distributed({self.cluster}, {self.db}, {name}_local, {SHARDING[name]})")
        return out

    def alter(self, name: str, commands: str) -> list[str]:
        columns, local_only = bool(_COLUMN_CHANGE.search(commands)), bool(_LOCAL_CHANGE.search(commands))
        if columns and local_only:
            raise ClusterSchemaError(f"ALTER TABLE {name}: split column changes from other changes (a "
                                     "Distributed table takes the first, not the second)")
        if not columns and not local_only:
            raise ClusterSchemaError(f"ALTER TABLE {name}: unknown change, teach streamproc/store/cluster.py: {commands}")
        out = [f"ALTER TABLE {self.local(name)} {self.on} {commands}"]
        if columns and self.sharded(name):
            out.append(f"ALTER TABLE {self.db}.{name} {self.on} {commands}")
        return out


def _chunks(text: str) -> list[tuple[list[str], str]]:
    """The statements of a migration with the comment lines above each, split where ``split_statements``
    splits (on ';'), so that what is translated is exactly what ``schema apply`` runs."""
    out: list[tuple[list[str], str]] = []
    comments: list[str] = []
    body: list[str] = []
    for line in text.splitlines():
        if line.strip().startswith("--"):
            comments.append(line.rstrip())
            continue
        if not line.strip() and not "".join(body).strip():  # between statements: keeps comment blocks apart
            if comments and comments[-1]:
                comments.append("")
            continue
        parts = line.split(";")
        for i, part in enumerate(parts):
            body.append(part)
            if i < len(parts) - 1:  # a ';' ended the statement
                stmt = "\n".join(body).strip()
                if stmt:
                    out.append((_trimmed(comments), stmt))
                    comments = []
                body = []
    stmt = "\n".join(body).strip()
    if stmt:
        out.append((_trimmed(comments), stmt))
    if [s for _, s in out] != split_statements(text):
        raise ClusterSchemaError("the migration splits differently here and in store/base.py")
    return out


def _trimmed(lines: list[str]) -> list[str]:
    while lines and not lines[-1]:
        lines = lines[:-1]
    return lines


def migrations(ddl_dir: Path = DDL_DIR) -> list[Path]:
    """The numbered migrations, in the order ``schema apply`` runs them."""
    return sorted(ddl_dir.glob("*.sql"))


def cluster_statements(database: str = Settings.clickhouse_database, cluster: str = CLUSTER,
                       ddl_dir: Path = DDL_DIR) -> list[str]:
    """Every statement of the cluster schema, without comments (what a parser check takes)."""
    return split_statements(cluster_sql(database, cluster, ddl_dir))


def cluster_sql(database: str = Settings.clickhouse_database, cluster: str = CLUSTER,
                ddl_dir: Path = DDL_DIR) -> str:
    """The whole cluster schema as one clickhouse-client script: the preamble, the migrations-ledger
    table, every migration translated in order, and the ledger rows that mark them applied."""
    t = _Translator(database, cluster)
    parts = [_HEADER.format(command=COMMAND, file=FILE, cluster=cluster, db=database)]
    parts.append(";\n\n".join(t.statement(MIGRATIONS_TABLE_DDL)) + ";\n")
    names = []
    for path in migrations(ddl_dir):
        names.append(path.name)
        parts.append(f"\n-- ==== schemas/clickhouse/{path.name} {'=' * max(4, 80 - len(path.name))}\n")
        for comments, stmt in _chunks(path.read_text()):
            block = "\n".join(comments)
            parts.append(("\n" + block if block else "") + "\n" + ";\n\n".join(t.statement(stmt)) + ";\n")
    values = ", ".join(f"('{n}')" for n in names)
    parts.append("\n-- This file holds the migrations above: record them, so that workers do not apply them again.\n"
                 f"INSERT INTO {database}.schema_migrations (name) VALUES {values};\n")
    return "".join(parts)
