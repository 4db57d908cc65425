"""Finished jobs' pictures: the grid and image files under the data directory, their rows, reading them back."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from bot import images
from bot.config import BotSettings, ImageSettings
from bot.jobs import Cancelled, Described, Done, Event, Failed, Image, Job, Kind, Refused, Requester, Status, Strength
from bot.store import Store

log = logging.getLogger(__name__)

GENERATOR_GONE = "The image generator stopped before finishing this job; please try again."
IMAGES_GONE = "The images of this job are no longer stored; start a new one with /imagine."
PICTURE_GONE = "That image is no longer stored; start a new job with /imagine."
DELETED = "This job was deleted."


class Results:
    """Writes a finished job's pictures and reads them back for buttons, upscales and late listeners."""

    def __init__(self, store: Store, settings: ImageSettings) -> None:
        self._store = store
        self._settings = settings

    async def save(self, job: Job, pngs: list[bytes], tokens: list[list[int]]) -> tuple[Job, Done]:
        """Write the images and their grid (a lone image is its own grid), then record the job as done with its
        images and usage."""
        folder = folder_of(job.id)
        files = {f"{folder}/{i}.png": png for i, png in enumerate(pngs)}
        grid, grid_path = pngs[0], f"{folder}/0.png"
        if len(pngs) > 1:
            grid, grid_path = await asyncio.to_thread(images.grid, pngs), f"{folder}/grid.png"
            files[grid_path] = grid
        await self._store.save_files(files)
        stored = [Image(job.id, i, f"{folder}/{i}.png", job.seed, grid_tokens) for i, grid_tokens in enumerate(tokens)]
        done = replace(job, status=Status.DONE, finished_at=time.time(), grid_path=grid_path)
        await self._store.finish_job(done, stored)
        return done, Done(job.id, job.seed, grid, pngs)

    async def save_described(self, job: Job, prompts: list[str], tokens: list[list[int]]) -> tuple[Job, Described]:
        """Record a describe job as done with its prompts (and their token ids)."""
        done = replace(job, status=Status.DONE, finished_at=time.time(), prompts=tuple(prompts))
        await self._store.finish_described(done, tokens)
        return done, Described(job.id, job.seed, list(prompts))

    async def final_event(self, job: Job) -> Event:
        """A finished job's final event as stored (Failed if its images have gone from the data directory)."""
        if job.deleted:
            return Failed(job.id, DELETED)
        if job.kind is Kind.DESCRIBE and job.status is Status.DONE:
            return Described(job.id, job.seed, list(job.prompts or ()))
        if job.status is Status.DONE:
            try:
                stored = await self._store.images(job.id)
                pngs = [await self._store.read_file(image.path) for image in stored]
                grid = await self._store.read_file(job.grid_path) if job.grid_path else pngs[0]
            except (OSError, IndexError):
                log.warning("the images of job %s are missing from the data directory", job.id)
                return Failed(job.id, IMAGES_GONE)
            return Done(job.id, job.seed, grid, pngs)
        if job.status is Status.FAILED:
            return Failed(job.id, job.error or GENERATOR_GONE)
        return Cancelled(job.id)

    async def image(self, job_id: str, index: int) -> Image:
        """Stored image `index` of a job, or Refused."""
        for image in await self._store.images(job_id):
            if image.index == index:
                return image
        raise Refused(PICTURE_GONE)

    async def keep_source(self, job_id: str, png: bytes) -> str:
        """Store the picture an image prompt starts from (a checked PNG) with its job; its path."""
        path = f"{folder_of(job_id)}/source.png"
        await self._store.save_files({path: png})
        return path

    async def source(self, job: Job) -> bytes:
        """The picture a job starts from, or Refused when it is no longer stored."""
        try:
            return await self._store.read_file(job.source or "")
        except (FileNotFoundError, IsADirectoryError):
            raise Refused("The picture this job started from is no longer stored; start again from another.") from None

    async def forget(self, job: Job) -> None:
        """Remove what was stored for a job that never got in (its source picture)."""
        await self._store.remove_files(folder_of(job.id))

    async def kept_rows(self, job: Job) -> list[list[int]]:
        """A variation's forced prefix: the top rows of its source image's token grid, for each image."""
        source = await self.image(job.parent_id or "", job.parent_index or 0)
        side = round(len(source.tokens) ** 0.5)
        kept = round(side * (job.strength or Strength.SUBTLE).kept) * side
        return [source.tokens[:kept]] * job.options.count

    async def picture(self, job_id: str, index: int) -> bytes:
        """Image `index` of a finished job, as stored (a PNG), or Refused when it is no longer stored."""
        try:
            return await self._store.read_file((await self.image(job_id, index)).path)
        except FileNotFoundError:
            raise Refused(PICTURE_GONE) from None

    async def upscaled(self, image: Image) -> bytes:
        """A stored image, Lanczos-upscaled to the configured size, as a PNG."""
        try:
            png = await self._store.read_file(image.path)
        except FileNotFoundError:
            raise Refused(PICTURE_GONE) from None
        return await asyncio.to_thread(images.upscale, png, self._settings.upscale_px)

    async def delete(self, job: Job, by: Requester) -> Job:
        """Delete a job's pictures and token grids; the row stays, saying who deleted it."""
        if job.removed_at is None:  # its pictures, and the one it started from (kept whatever its end)
            await self._store.remove_files(folder_of(job.id))
        deleted = replace(job, removed_at=job.removed_at or time.time(), deleted_by=by.user_key)
        await self._store.delete_images(deleted)
        log.info("job %s deleted by %s", job.id, by.user_key)
        return deleted

    # -- retention --

    async def sweep(self, settings: BotSettings, now: float | None = None) -> int:
        """Delete finished jobs' pictures older than `keep_days`, then the oldest while all of them take more
        than `max_data_gb`; one log line each. The jobs' rows and token grids stay. How many were deleted."""
        now = time.time() if now is None else now
        removed = 0
        if settings.keep_days:
            for job in await self._store.with_pictures(finished_before=now - settings.keep_days * 86400):
                await self._remove(job, f"finished {(now - (job.finished_at or now)) / 86400:.0f} days ago; "
                                        f"bot.keep_days = {settings.keep_days:g}", now)
                removed += 1
        if settings.max_data_gb:
            limit = settings.max_data_gb * 2**30
            kept = [(job, await self._store.folder_bytes(folder_of(job.id)))
                    for job in await self._store.with_pictures()]
            total = sum(size for _, size in kept)
            for job, size in kept:
                if total <= limit:
                    break
                await self._remove(job, f"the pictures take {total / 2**30:.2f} GB; bot.max_data_gb = "
                                        f"{settings.max_data_gb:g}", now)
                total -= size
                removed += 1
        return removed

    async def _remove(self, job: Job, why: str, now: float) -> None:
        freed = await self._store.remove_files(folder_of(job.id))
        await self._store.pictures_removed(job.id, now)
        log.info("deleted the pictures of job %s (%.1f MB): %s", job.id, freed / 2**20, why)


def folder_of(job_id: str) -> str:
    """Where a job's pictures are kept, under the data directory."""
    return f"images/{job_id}"
