"""Per-session files of the app: a private folder per browser session, a fresh folder per request, the jobs
running for each session, and the uploads it used; all removed when the session ends."""

from __future__ import annotations

import atexit
import contextlib
import filecmp
import hashlib
import hmac
import re
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import JobCancelledError

@dataclass(eq=False)
class Job:
    """One running request of a session. `cancelled` becomes True when the session ends before the job does."""

    session: str | None
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    cancelled: bool = False
    folders: list[Path] = field(default_factory=list)


class Workspace:
    """A private temporary folder per browser session under one root, removed when the session ends, with a fresh
    folder per request inside it; and the uploads the session used, removed with it.

    root: the folder (default: a new temporary one under `parent`, removed at exit). served: the app serves files
    straight from here (the root is inside Gradio's upload folder), so folder names must not reveal session ids: they
    are then keyed hashes of them. uploads: Gradio's upload folder; a video from there that a session segmented is
    deleted when the last session using it ends, unless it has the content of one of the `protected` files (the
    examples). Jobs (`start_job`) of a session that ends are marked cancelled and their folders removed.
    """

    MAX_TRACKED_UPLOADS = 1024

    def __init__(self, root: str | Path | None = None, *, parent: str | Path | None = None, served: bool = False,
                 uploads: str | Path | None = None, protected: Iterable[str | Path] = ()):
        if root:
            self.root = Path(root)
        else:
            if parent is not None:
                Path(parent).mkdir(parents=True, exist_ok=True)
            self.root = Path(tempfile.mkdtemp(prefix="referdino-app-", dir=parent))
        self.root.mkdir(parents=True, exist_ok=True)
        atexit.register(shutil.rmtree, self.root, True)
        self.served = served
        self.uploads = Path(uploads).resolve() if uploads else None
        self.protected = [Path(p) for p in protected]
        self._secret = secrets.token_bytes(16)
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._uploads: dict[Path, set[str]] = {}  # upload -> sessions that used it

    def folder(self, session: str | None) -> Path:
        """The session's folder (it may not exist yet)."""
        name = session or "anonymous"
        if self.served:
            name = hmac.new(self._secret, name.encode(), hashlib.sha256).hexdigest()[:32]
        return self.root / _safe_name(name)

    def new_folder(self, session: str | None, job: Job | None = None) -> Path:
        """A fresh folder for one request; refused (`JobCancelledError`) when `job`'s session has ended."""
        with self._lock:
            if job is not None and job.cancelled:
                raise JobCancelledError(SESSION_ENDED)
            parent = self.folder(session)
            parent.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix="run-", dir=parent))
            if job is not None:
                job.folders.append(folder)
            return folder

    def remove(self, session: str | None) -> None:
        """The session ended: cancel its running jobs, delete its folder and the uploads only it used."""
        if not session:
            return
        with self._lock:
            for job in self._jobs.values():
                if job.session == session:
                    job.cancelled = True
            shutil.rmtree(self.folder(session), ignore_errors=True)
            orphans = []
            for path, users in list(self._uploads.items()):
                users.discard(session)
                if not users:
                    del self._uploads[path]
                    orphans.append(path)
        for path in orphans:
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # Gradio's per-upload folder, when empty

    # jobs
    def start_job(self, session: str | None) -> Job:
        job = Job(session)
        with self._lock:
            self._jobs[job.id] = job
        return job

    def finish_job(self, job: Job) -> None:
        """Forget `job`; if its session ended meanwhile, delete what it wrote."""
        with self._lock:
            self._jobs.pop(job.id, None)
            if job.cancelled:
                for folder in job.folders:
                    shutil.rmtree(folder, ignore_errors=True)
                with contextlib.suppress(OSError):
                    self.folder(job.session).rmdir()  # when empty: the session has gone

    def cancelled(self, job_id: str) -> bool:
        job = self._jobs.get(job_id)
        return job is not None and job.cancelled

    # uploads
    def adopt_upload(self, session: str | None, video: str | Path | None) -> None:
        """Remember that `session` used the uploaded `video`, so that it is deleted when no session uses it."""
        if not (session and video and self.uploads):
            return
        path = Path(video).resolve()
        if not path.is_file() or not path.is_relative_to(self.uploads) or path.is_relative_to(self.root.resolve()):
            return
        if any(p.is_file() and p.stat().st_size == path.stat().st_size and filecmp.cmp(p, path, shallow=False)
               for p in self.protected):
            return  # Gradio's copy of an example: every session may still click it
        with self._lock:
            if len(self._uploads) > self.MAX_TRACKED_UPLOADS:  # sessions that never end (API calls without a
                for old in [p for p in self._uploads if not p.exists()]:  # heartbeat): forget what Gradio's own
                    del self._uploads[old]  # cleanup (delete_cache) removed already
            self._uploads.setdefault(path, set()).add(session)

    def active_jobs(self) -> int:
        return len(self._jobs)


SESSION_ENDED = "The session ended before the result was ready (the page was closed or lost its connection); " \
                "the job was stopped and its files deleted. Reload the page and press Segment again."


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:64] or "anonymous"
