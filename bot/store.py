"""Everything the bot keeps: one SQLite file (WAL) with versioned migrations, and images under the data directory."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite

from bot.jobs import Image, Job, Kind, Options, Requester, Status, Strength

# Each entry takes the schema from version i to i + 1; never edit a released entry, append a new one.
MIGRATIONS: list[str] = [
    # 1: jobs and their images
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        platform TEXT NOT NULL, server TEXT NOT NULL, channel TEXT NOT NULL, user TEXT NOT NULL,
        is_admin INTEGER NOT NULL,
        prompt TEXT NOT NULL, count INTEGER NOT NULL, cfg REAL NOT NULL, temperature REAL NOT NULL,
        requested_seed INTEGER, seed INTEGER NOT NULL,
        kind TEXT NOT NULL, parent_id TEXT, parent_index INTEGER, strength TEXT,
        status TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
        error TEXT, grid_path TEXT
    );
    CREATE INDEX jobs_by_status ON jobs (status, created_at);
    CREATE TABLE images (
        job_id TEXT NOT NULL REFERENCES jobs (id),
        idx INTEGER NOT NULL,
        path TEXT NOT NULL,
        seed INTEGER NOT NULL,
        tokens BLOB NOT NULL,  -- row-major uint32 little-endian
        PRIMARY KEY (job_id, idx)
    );
    """,
    # 2: delivery tracking, per-server settings, bans, usage counters and the audit log
    """
    ALTER TABLE jobs ADD COLUMN delivered INTEGER NOT NULL DEFAULT 0;
    UPDATE jobs SET delivered = 1 WHERE status IN ('done', 'failed', 'cancelled');
    CREATE TABLE server_settings (
        platform TEXT NOT NULL, server TEXT NOT NULL, key TEXT NOT NULL,
        value TEXT NOT NULL,  -- JSON
        PRIMARY KEY (platform, server, key)
    );
    CREATE TABLE bans (
        platform TEXT NOT NULL, server TEXT NOT NULL, user TEXT NOT NULL,
        reason TEXT NOT NULL, banned_by TEXT NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (platform, server, user)
    );
    CREATE TABLE usage (
        platform TEXT NOT NULL, server TEXT NOT NULL, user TEXT NOT NULL, day TEXT NOT NULL,
        jobs INTEGER NOT NULL, images INTEGER NOT NULL,
        PRIMARY KEY (platform, server, user, day)
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL, platform TEXT NOT NULL, server TEXT NOT NULL, actor TEXT NOT NULL,
        action TEXT NOT NULL, detail TEXT NOT NULL  -- JSON
    );
    """,
    # 3: where an adapter shows each job, so it can edit that message in place after a restart
    """
    CREATE TABLE job_messages (
        job_id TEXT PRIMARY KEY REFERENCES jobs (id),
        place TEXT NOT NULL  -- opaque to the core, e.g. Slack's "<channel> <ts>"
    );
    """,
    # 4: the requester's name beside their id, to show
    """
    ALTER TABLE jobs ADD COLUMN user_name TEXT NOT NULL DEFAULT '';
    """,
    # 5: when a finished job's pictures were deleted (retention), so it is not swept twice
    """
    ALTER TABLE jobs ADD COLUMN removed_at REAL;
    CREATE INDEX jobs_with_pictures ON jobs (finished_at) WHERE status = 'done' AND removed_at IS NULL;
    """,
    # 6: negative prompts, deletion by people (a tombstone row), and the model that made each job
    """
    ALTER TABLE jobs ADD COLUMN negative TEXT;
    ALTER TABLE jobs ADD COLUMN deleted_by TEXT;
    ALTER TABLE jobs ADD COLUMN model TEXT;
    """,
    # 7: Vary (Region) and image prompts: the region made again, and the picture a job started from
    """
    ALTER TABLE jobs ADD COLUMN region TEXT;  -- JSON [x0, y0, x1, y1]
    ALTER TABLE jobs ADD COLUMN source TEXT;
    """,
    # 8: describe jobs' answers: the prompts as shown, and the token ids each was sampled as
    """
    ALTER TABLE jobs ADD COLUMN prompts TEXT;  -- JSON {"prompts": [...], "tokens": [[...], ...]}
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
_Statement = tuple[str, tuple[Any, ...]]

_JOB_COLUMNS = (
    "id, platform, server, channel, user, is_admin, prompt, count, cfg, temperature, requested_seed, seed, "
    "kind, parent_id, parent_index, strength, status, created_at, started_at, finished_at, error, grid_path, "
    "delivered, user_name, removed_at, negative, deleted_by, model, region, source, prompts"
)


@dataclass(frozen=True)
class Ban:
    platform: str
    server: str
    user: str
    reason: str
    banned_by: str
    at: float


@dataclass(frozen=True)
class Usage:
    user: str
    jobs: int
    images: int


@dataclass(frozen=True)
class AuditEntry:
    at: float
    platform: str
    server: str
    actor: str
    action: str
    detail: dict[str, Any]


def _pack(tokens: list[int]) -> bytes:
    packed = array("I", tokens)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def _unpack(blob: bytes) -> list[int]:
    packed = array("I")
    packed.frombytes(blob)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tolist()


def _job_row(job: Job) -> tuple[Any, ...]:
    r, o = job.requester, job.options
    return (
        job.id, r.platform, r.server, r.channel, r.user, int(r.is_admin), job.prompt, o.count, o.cfg, o.temperature,
        o.seed, job.seed, job.kind.value, job.parent_id, job.parent_index, job.strength and job.strength.value,
        job.status.value, job.created_at, job.started_at, job.finished_at, job.error, job.grid_path, int(job.delivered),
        r.name, job.removed_at, o.negative, job.deleted_by, job.model,
        json.dumps(job.region) if job.region else None, job.source, None,
    )  # fmt: skip


def _job(row: aiosqlite.Row) -> Job:
    return Job(
        id=row["id"],
        requester=Requester(row["platform"], row["server"], row["channel"], row["user"], bool(row["is_admin"]),
                            row["user_name"]),
        prompt=row["prompt"],
        options=Options(row["count"], row["cfg"], row["temperature"], row["requested_seed"], row["negative"]),
        seed=row["seed"],
        created_at=row["created_at"],
        kind=Kind(row["kind"]),
        parent_id=row["parent_id"],
        parent_index=row["parent_index"],
        strength=Strength(row["strength"]) if row["strength"] else None,
        status=Status(row["status"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
        grid_path=row["grid_path"],
        delivered=bool(row["delivered"]),
        removed_at=row["removed_at"],
        deleted_by=row["deleted_by"],
        model=row["model"],
        region=tuple(json.loads(row["region"])) if row["region"] else None,
        source=row["source"],
        prompts=tuple(json.loads(row["prompts"])["prompts"]) if row["prompts"] else None,
    )


async def migrate(db: aiosqlite.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema up to `target`, one committed step per version; the version reached."""
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"the database is at schema version {version}, newer than this bot ({SCHEMA_VERSION})")
    for step in range(version, target):
        await db.executescript(f"BEGIN;\n{MIGRATIONS[step]}\nPRAGMA user_version = {step + 1};\nCOMMIT;")
        version = step + 1
    return version


class Store:
    """The bot's database and image files; writes are serialised so each is one whole transaction."""

    def __init__(self, db: aiosqlite.Connection, data_dir: Path) -> None:
        self._db = db
        self.data_dir = data_dir
        self._write = asyncio.Lock()

    @classmethod
    async def open(cls, data_dir: Path, target: int = SCHEMA_VERSION) -> Store:
        """Open (creating and migrating) the database under `data_dir`."""
        data_dir.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(data_dir / "janus-bot.db", isolation_level=None)
        try:
            db.row_factory = aiosqlite.Row
            await db.execute("PRAGMA journal_mode = WAL")
            # WAL with NORMAL: a crash of the bot loses nothing committed; a power cut may lose the last
            # commits (those jobs run again at the next start). FULL would fsync every job event.
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA foreign_keys = ON")
            await migrate(db, target)
        except BaseException:
            await db.close()
            raise
        return cls(db, data_dir)

    async def close(self) -> None:
        """Close the database once the write in progress, if any, is committed."""
        async with self._write:
            await self._db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def version(self) -> int:
        """The schema version of the open database."""
        return int((await self._one("PRAGMA user_version"))[0])

    async def _one(self, sql: str, args: Iterable[Any] = ()) -> aiosqlite.Row:
        async with self._db.execute(sql, tuple(args)) as cursor:
            row = await cursor.fetchone()
        assert row is not None, sql
        return row

    async def _all(self, sql: str, args: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        async with self._db.execute(sql, tuple(args)) as cursor:
            return list(await cursor.fetchall())

    async def _transaction(self, statements: list[_Statement]) -> None:
        # Shielded: a caller cancelled mid-way (an adapter shutting down) must not leave the connection
        # inside an open transaction, which would break every later write.
        await asyncio.shield(self._write_all(statements))

    async def _write_all(self, statements: list[_Statement]) -> None:
        async with self._write:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    await self._db.execute(sql, args)
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    # -- jobs and images --

    async def add_job(self, job: Job) -> None:
        """Insert a new job."""
        marks = ", ".join("?" * len(_JOB_COLUMNS.split(",")))
        await self._transaction([(f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ({marks})", _job_row(job))])

    async def delete_job(self, job_id: str) -> None:
        """Remove a job that was never admitted (no images, messages or usage refer to it)."""
        await self._transaction([("DELETE FROM jobs WHERE id = ?", (job_id,))])

    async def update_job(self, job: Job) -> None:
        """Write a job's changing fields: status, times, error, grid and delivery."""
        await self._transaction([_update(job)])

    async def finish_job(self, job: Job, images: list[Image], more: list[_Statement] | None = None) -> None:
        """Record a finished job, its images and its usage in one transaction (with `more` statements)."""
        r = job.requester
        day = time.strftime("%Y-%m-%d", time.gmtime(job.finished_at or time.time()))
        statements: list[_Statement] = [
            (
                "INSERT OR REPLACE INTO images (job_id, idx, path, seed, tokens) VALUES (?, ?, ?, ?, ?)",
                (image.job_id, image.index, image.path, image.seed, _pack(image.tokens)),
            )
            for image in images
        ]
        statements.append(_update(job))
        statements.append(
            (
                "INSERT INTO usage (platform, server, user, day, jobs, images) VALUES (?, ?, ?, ?, 1, ?) "
                "ON CONFLICT DO UPDATE SET jobs = jobs + 1, images = images + excluded.images",
                (r.platform, r.server, r.user, day, len(images)),
            )
        )
        await self._transaction(statements + (more or []))

    async def job(self, job_id: str) -> Job | None:
        """The job with this id, if any."""
        rows = await self._all(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    async def jobs(self, *statuses: Status) -> list[Job]:
        """Jobs in any of these statuses, oldest first."""
        marks = ", ".join("?" * len(statuses))
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status IN ({marks}) ORDER BY created_at, rowid"
        return [_job(row) for row in await self._all(sql, [s.value for s in statuses])]

    async def recent(self, platform: str, user: str | None = None, *, before: float | None = None, limit: int = 20
                     ) -> list[Job]:
        """A platform's jobs (one user's, if given), newest first, created before a time if given."""
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE platform = ?"
        args: list[Any] = [platform]
        if user is not None:
            sql += " AND user = ?"
            args.append(user)
        if before is not None:
            sql += " AND created_at < ?"
            args.append(before)
        return [_job(row) for row in await self._all(sql + " ORDER BY created_at DESC, rowid DESC LIMIT ?",
                                                     [*args, limit])]

    async def with_pictures(self, finished_before: float | None = None) -> list[Job]:
        """Ended jobs whose pictures are still stored (a done job's, or the one a job started from), oldest first
        (finished before a time, if given)."""
        sql = (f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status IN ('done', 'failed', 'cancelled') "
               "AND (status = 'done' OR source IS NOT NULL) AND removed_at IS NULL")
        args: tuple[Any, ...] = ()
        if finished_before is not None:
            sql += " AND finished_at < ?"
            args = (finished_before,)
        return [_job(row) for row in await self._all(sql + " ORDER BY finished_at, rowid", args)]

    async def finish_described(self, job: Job, tokens: list[list[int]]) -> None:
        """Record a describe job as done with its prompts and their token ids, and its usage (no images)."""
        answer = json.dumps({"prompts": list(job.prompts or ()), "tokens": tokens})
        await self.finish_job(job, [], [("UPDATE jobs SET prompts = ? WHERE id = ?", (answer, job.id))])

    async def prompt_tokens(self, job_id: str) -> list[list[int]]:
        """The raw token ids of a describe job's prompts (empty if it has none)."""
        rows = await self._all("SELECT prompts FROM jobs WHERE id = ?", (job_id,))
        return list(json.loads(rows[0]["prompts"])["tokens"]) if rows and rows[0]["prompts"] else []

    async def delete_images(self, job: Job) -> None:
        """Forget a job's images and token grids, and record the job as it now is (its tombstone)."""
        await self._transaction([("DELETE FROM images WHERE job_id = ?", (job.id,)), _update(job)])

    async def pictures_removed(self, job_id: str, at: float) -> None:
        """Note that a job's pictures were deleted."""
        await self._transaction([("UPDATE jobs SET removed_at = ? WHERE id = ?", (at, job_id))])

    async def remove_files(self, folder: str) -> int:
        """Delete a folder of files under the data directory; the bytes they took."""
        return await asyncio.to_thread(_remove_folder, self.data_dir / folder)

    async def folder_bytes(self, folder: str) -> int:
        """The bytes the files of a folder under the data directory take (0 if it is gone)."""
        return await asyncio.to_thread(_folder_bytes, self.data_dir / folder)

    async def undelivered(self) -> list[Job]:
        """Finished jobs whose result has not reached the chat yet, oldest first."""
        sql = (
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE delivered = 0 AND status IN ('done', 'failed', 'cancelled') "
            "ORDER BY created_at, rowid"
        )
        return [_job(row) for row in await self._all(sql)]

    async def set_message(self, job_id: str, place: str) -> None:
        """Remember where an adapter shows a job (replacing what was there)."""
        sql = "INSERT OR REPLACE INTO job_messages (job_id, place) VALUES (?, ?)"
        await self._transaction([(sql, (job_id, place))])

    async def message(self, job_id: str) -> str | None:
        """Where an adapter said it shows a job, if it did."""
        rows = await self._all("SELECT place FROM job_messages WHERE job_id = ?", (job_id,))
        return str(rows[0]["place"]) if rows else None

    async def images(self, job_id: str) -> list[Image]:
        """The stored images of a job, in order."""
        rows = await self._all("SELECT * FROM images WHERE job_id = ? ORDER BY idx", (job_id,))
        return [Image(r["job_id"], r["idx"], r["path"], r["seed"], _unpack(r["tokens"])) for r in rows]

    async def save_files(self, files: dict[str, bytes]) -> None:
        """Write files (paths relative to the data directory), each replaced whole."""
        await asyncio.to_thread(_write_files, self.data_dir, files)

    async def read_file(self, path: str) -> bytes:
        """A file saved under the data directory."""
        return await asyncio.to_thread((self.data_dir / path).read_bytes)

    # -- per-server settings, bans, usage and audit --

    async def overrides(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Every server's settings overrides, by (platform, server)."""
        result: dict[tuple[str, str], dict[str, Any]] = {}
        for row in await self._all("SELECT * FROM server_settings"):
            result.setdefault((row["platform"], row["server"]), {})[row["key"]] = json.loads(row["value"])
        return result

    async def set_override(self, platform: str, server: str, key: str, value: Any, audit: AuditEntry) -> None:
        """Set (or, with None, remove) one server's override, with its audit row."""
        statement: _Statement
        if value is None:
            statement = (
                "DELETE FROM server_settings WHERE platform = ? AND server = ? AND key = ?",
                (platform, server, key),
            )
        else:
            statement = (
                "INSERT OR REPLACE INTO server_settings (platform, server, key, value) VALUES (?, ?, ?, ?)",
                (platform, server, key, json.dumps(value)),
            )
        await self._transaction([statement, _audit(audit)])

    async def bans(self) -> list[Ban]:
        """Every ban."""
        return [Ban(*row) for row in await self._all("SELECT platform, server, user, reason, banned_by, at FROM bans")]

    async def ban(self, ban: Ban, audit: AuditEntry) -> None:
        """Ban a user in a server, with its audit row."""
        sql = "INSERT OR REPLACE INTO bans (platform, server, user, reason, banned_by, at) VALUES (?, ?, ?, ?, ?, ?)"
        args = (ban.platform, ban.server, ban.user, ban.reason, ban.banned_by, ban.at)
        await self._transaction([(sql, args), _audit(audit)])

    async def unban(self, platform: str, server: str, user: str, audit: AuditEntry) -> None:
        """Lift a ban, with its audit row."""
        sql = "DELETE FROM bans WHERE platform = ? AND server = ? AND user = ?"
        await self._transaction([(sql, (platform, server, user)), _audit(audit)])

    async def audit(self, entry: AuditEntry) -> None:
        """Record an admin action that changes no table of its own."""
        await self._transaction([_audit(entry)])

    async def audit_log(self, platform: str, server: str, limit: int = 50) -> list[AuditEntry]:
        """A server's most recent admin actions, newest first."""
        sql = (
            "SELECT at, platform, server, actor, action, detail FROM audit WHERE platform = ? AND server = ? "
            "ORDER BY id DESC LIMIT ?"
        )
        rows = await self._all(sql, (platform, server, limit))
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]

    async def usage(self, platform: str, server: str, since_day: str) -> list[Usage]:
        """Jobs and images per user in a server since a UTC day (YYYY-MM-DD), busiest first."""
        sql = (
            "SELECT user, SUM(jobs), SUM(images) FROM usage WHERE platform = ? AND server = ? AND day >= ? "
            "GROUP BY user ORDER BY SUM(images) DESC, user"
        )
        return [Usage(*row) for row in await self._all(sql, (platform, server, since_day))]


def _write_files(root: Path, files: dict[str, bytes]) -> None:
    """Each file whole and on disk (fsynced, then renamed into place, the folder fsynced): the job's row,
    committed after this, never points at pictures a power cut lost."""
    folders = set()
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with partial.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        partial.replace(path)
        folders.add(path.parent)
    for folder in folders:
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _folder_bytes(folder: Path) -> int:
    try:
        return sum(entry.stat().st_size for entry in os.scandir(folder) if entry.is_file())
    except FileNotFoundError:
        return 0


def _remove_folder(folder: Path) -> int:
    size = _folder_bytes(folder)
    shutil.rmtree(folder, ignore_errors=True)
    return size


def _update(job: Job) -> _Statement:
    sql = (
        "UPDATE jobs SET status = ?, started_at = ?, finished_at = ?, error = ?, grid_path = ?, delivered = ?, "
        "removed_at = ?, deleted_by = ?, model = ? WHERE id = ?"
    )
    args = (job.status.value, job.started_at, job.finished_at, job.error, job.grid_path, int(job.delivered),
            job.removed_at, job.deleted_by, job.model, job.id)
    return sql, args


def _audit(entry: AuditEntry) -> _Statement:
    sql = "INSERT INTO audit (at, platform, server, actor, action, detail) VALUES (?, ?, ?, ?, ?, ?)"
    return sql, (entry.at, entry.platform, entry.server, entry.actor, entry.action, json.dumps(entry.detail))
