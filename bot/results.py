"""Finished jobs' pictures: the grid and image files under the data directory, their rows, reading them back."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from bot import images
from bot.config import ImageSettings
from bot.jobs import Cancelled, Done, Event, Failed, Image, Job, Refused, Status, Strength
from bot.store import Store

log = logging.getLogger(__name__)

GENERATOR_GONE = "The image generator stopped before finishing this job; please try again."
IMAGES_GONE = "The images of this job are no longer stored; start a new one with /imagine."


class Results:
    """Writes a finished job's pictures and reads them back for buttons, upscales and late listeners."""

    def __init__(self, store: Store, settings: ImageSettings) -> None:
        self._store = store
        self._settings = settings

    async def save(self, job: Job, pngs: list[bytes], tokens: list[list[int]]) -> tuple[Job, Done]:
        """Write the images and their grid, then record the job as done with its images and usage."""
        folder = f"images/{job.id}"
        grid = pngs[0] if len(pngs) == 1 else await asyncio.to_thread(images.grid, pngs)
        files = {f"{folder}/{i}.png": png for i, png in enumerate(pngs)}
        files[f"{folder}/grid.png"] = grid
        await self._store.save_files(files)
        stored = [Image(job.id, i, f"{folder}/{i}.png", job.seed, grid_tokens) for i, grid_tokens in enumerate(tokens)]
        done = replace(job, status=Status.DONE, finished_at=time.time(), grid_path=f"{folder}/grid.png")
        await self._store.finish_job(done, stored)
        return done, Done(job.id, job.seed, grid, pngs)

    async def final_event(self, job: Job) -> Event:
        """A finished job's final event as stored (Failed if its images have gone from the data directory)."""
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
        raise Refused("That image is no longer stored; start a new job with /imagine.")

    async def kept_rows(self, job: Job) -> list[list[int]]:
        """A variation's forced prefix: the top rows of its source image's token grid, for each image."""
        source = await self.image(job.parent_id or "", job.parent_index or 0)
        side = round(len(source.tokens) ** 0.5)
        kept = round(side * (job.strength or Strength.SUBTLE).kept) * side
        return [source.tokens[:kept]] * job.options.count

    async def upscaled(self, image: Image) -> bytes:
        """A stored image, Lanczos-upscaled to the configured size, as a PNG."""
        png = await self._store.read_file(image.path)
        return await asyncio.to_thread(images.upscale, png, self._settings.upscale_px)
