"""An MLflow store, as one value: what kind of place a tracking URI names.

A URI is a tracking server (``http://``, ``https://``), a SQLite file
(``sqlite:///path.db``) or a file store (``file:///folder`` or a bare path).
Every question about it (is it local, does its file exist, where do its
artifacts go, is it usable, how does one open its UI) is answered here, so
the driver, the recorder and the analysis commands classify it one way.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_UI = "http://127.0.0.1:5000"  # `mlflow ui`'s address without --host or --port


class PlaceError(ValueError):
    """A place the study writes to is unusable; the message names the flag."""


@dataclass(frozen=True)
class TrackingStore:
    """The MLflow store a tracking URI names."""

    uri: str

    @classmethod
    def default(cls, working: Path) -> TrackingStore:
        """`MLFLOW_TRACKING_URI`, else a SQLite store in the working folder."""
        return cls(
            os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{(working / 'mlflow.db').resolve()}"
        )

    @property
    def is_server(self) -> bool:
        return self.uri.startswith(("http://", "https://"))

    @property
    def local_path(self) -> Path | None:
        """The SQLite file or the file store's folder; None for any other store."""
        parsed = urlparse(self.uri)
        if parsed.scheme == "sqlite":
            name = self.uri.removeprefix("sqlite:///")  # sqlite:////abs.db -> /abs.db
        elif parsed.scheme == "file":
            name = parsed.path
        elif parsed.scheme == "":
            name = self.uri
        else:
            return None
        return Path(name) if name else None

    @property
    def is_local(self) -> bool:
        return self.local_path is not None

    def missing_file(self) -> Path | None:
        """A local store's file that does not exist (MLflow would create it empty)."""
        path = self.local_path
        return path if path is not None and not path.exists() else None

    def artifact_root(self, working: Path) -> Path | None:
        """Where a local store's artifacts go: beside its database (a server keeps its own)."""
        if self.uri.startswith("sqlite:///"):
            return self.local_path.expanduser().resolve().parent / "mlruns"
        if self.uri.startswith("file:"):
            return working / "mlruns"
        return None  # a bare-path file store keeps artifacts in its own folder; a server too

    def check(self, timeout: float = 5.0) -> None:
        """Raise PlaceError unless the store can be used: a server answers, a folder is
        writable."""
        if self.is_server:
            try:
                with urllib.request.urlopen(f"{self.uri.rstrip('/')}/health", timeout=timeout):
                    pass
            except (urllib.error.URLError, OSError) as error:
                reason = getattr(error, "reason", error)
                raise PlaceError(
                    f"--tracking-uri {self.uri}: no MLflow tracking server answers there "
                    f"({reason}); start it (mlflow server ...) or give another --tracking-uri"
                ) from None
        elif self.uri.startswith("sqlite:"):
            writable_folder(self.local_path.parent, "--tracking-uri")
        elif self.is_local:
            writable_folder(self.local_path, "--tracking-uri")

    def create_whole(self) -> None:
        """A SQLite store that does not exist yet, made whole: MLflow builds its tables in a
        file beside it, which then appears under the store's name at once. A driver killed
        while MLflow migrates a new database in place leaves one that no later run opens."""
        path = self.missing_file()
        if path is None or not self.uri.startswith("sqlite:"):
            return
        from mlflow.tracking import MlflowClient

        path.parent.mkdir(parents=True, exist_ok=True)
        building = path.with_name(f".{path.name}.creating-{os.getpid()}")
        building.unlink(missing_ok=True)
        try:
            MlflowClient(f"sqlite:///{building}").search_experiments(max_results=1)
            try:
                os.link(building, path)  # never over a store another driver just made
            except FileExistsError:
                pass
        finally:
            building.unlink(missing_ok=True)

    @property
    def ui_address(self) -> str:
        """Where this store's UI is served: the server itself, else where `mlflow ui` serves
        by default."""
        return self.uri.rstrip("/") if self.is_server else DEFAULT_UI

    def ui_line(self) -> str:
        """How to open this store's UI: its address, or the `mlflow ui` command."""
        if self.is_server:
            return f"open the MLflow UI at: {self.uri}"
        return f"open the MLflow UI with: mlflow ui --backend-store-uri {self.uri}"


def writable_folder(path: Path, flag: str) -> None:
    """`path` is, or can be made as, a folder this user may write in."""
    path = Path(path).expanduser().absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise PlaceError(f"{flag}: {path} cannot be a folder: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        hint = " (the default is under the working folder)" if flag == "--storage" else ""
        raise PlaceError(
            f"{flag}: {existing} is not writable, so {path} cannot be used{hint}; "
            f"give a writable {flag}"
        )
