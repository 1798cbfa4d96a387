"""Per-session files of the app: a private folder per browser session, a fresh folder per request, and the jobs
running for each session; removed when the session ends, and a job's files when its client goes away mid-job.

Uploads are not the app's to delete. Gradio keeps an upload at a path made of its content hash and file name, so two
users who upload the same file share one path, and nothing tells the app which sessions hold it (a page holds it as
soon as the upload finishes, before any event reaches the app; an API client may send it any time later). No count of
references the app can see is complete, so deleting an upload when "its" session ends can break another user's run.
Gradio's own cache cleanup (`delete_cache` in `gradio_app.py`) deletes uploads by age instead; a re-upload of the same
file renews it.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import re
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import JobCancelledError


@dataclass(eq=False)
class Job:
    """One running request of a session. It is stopped once its session ends (`cancelled`) or its client has gone
    (`connected()` says no: the HTTP connection closed, or the client cancelled the request)."""

    session: str | None
    connected: Callable[[], bool] = lambda: True
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    cancelled: bool = False
    folders: list[Path] = field(default_factory=list)

    @property
    def stopped(self) -> bool:
        if not self.cancelled and not self.connected():
            self.cancelled = True
        return self.cancelled


class Workspace:
    """A private temporary folder per browser session under one root, removed when the session ends, with a fresh
    folder per request inside it.

    root: the folder (default: a new temporary one under `parent`, removed at exit). served: the app serves files
    straight from here (the root is inside Gradio's upload folder), so folder names must not reveal session ids: they
    are then keyed hashes of them. Jobs (`start_job`) of a session that ends, or whose client goes away, are stopped
    and their folders removed.
    """

    def __init__(self, root: str | Path | None = None, *, parent: str | Path | None = None, served: bool = False):
        if root:
            self.root = Path(root)
        else:
            if parent is not None:
                Path(parent).mkdir(parents=True, exist_ok=True)
            self.root = Path(tempfile.mkdtemp(prefix="referdino-app-", dir=parent))
        self.root.mkdir(parents=True, exist_ok=True)
        atexit.register(shutil.rmtree, self.root, True)
        self.served = served
        self._secret = secrets.token_bytes(16)
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}

    def folder(self, session: str | None) -> Path:
        """The session's folder (it may not exist yet)."""
        name = session or "anonymous"
        if self.served:
            name = hmac.new(self._secret, name.encode(), hashlib.sha256).hexdigest()[:32]
        return self.root / _safe_name(name)

    def new_folder(self, session: str | None, job: Job | None = None) -> Path:
        """A fresh folder for one request; refused (`JobCancelledError`) when `job` has been stopped."""
        with self._lock:
            if job is not None and job.stopped:
                raise JobCancelledError(SESSION_ENDED)
            parent = self.folder(session)
            parent.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix="run-", dir=parent))
            if job is not None:
                job.folders.append(folder)
            return folder

    def remove(self, session: str | None) -> None:
        """The session ended: stop its running jobs and delete its folder (its uploads are left to Gradio)."""
        if not session:
            return
        with self._lock:
            for job in self._jobs.values():
                if job.session == session:
                    job.cancelled = True
            shutil.rmtree(self.folder(session), ignore_errors=True)

    # jobs
    def start_job(self, session: str | None, connected: Callable[[], bool] | None = None) -> Job:
        job = Job(session, connected or (lambda: True))
        with self._lock:
            self._jobs[job.id] = job
        return job

    def finish_job(self, job: Job) -> None:
        """Forget `job`; if it was stopped meanwhile, delete what it wrote (and the session's folder, when empty)
        first, so that a job no longer counted has no files left."""
        with self._lock:
            if job.stopped:
                for folder in job.folders:
                    shutil.rmtree(folder, ignore_errors=True)
                try:
                    self.folder(job.session).rmdir()
                except OSError:
                    pass  # not empty (earlier results of a live session) or already gone
            self._jobs.pop(job.id, None)

    def cancelled(self, job_id: str) -> bool:
        """Whether the running job `job_id` has been stopped (its session ended or its client went away)."""
        job = self._jobs.get(job_id)
        return job is not None and job.stopped

    def active_jobs(self) -> int:
        return len(self._jobs)

    def jobs(self) -> list[Job]:
        """The running jobs."""
        with self._lock:
            return list(self._jobs.values())


SESSION_ENDED = ("The connection closed before the result was ready (the page was closed, or the client disconnected "
                 "or cancelled the request); the job was stopped and its files deleted. Reload the page and press "
                 "Segment again.")


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:64] or "anonymous"
