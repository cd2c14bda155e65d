"""Live template and certificate edits: watchdog on a directory tells the controller what changed.

Editors save in many ways (write in place, write-then-rename, delete-then-create); every one of
them ends in an event on a path with the watched suffix (`.j2` templates, `.pem` certificates), which
is all the controller needs to hear. Validation and rejection happen downstream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer


class _TemplateEvents(FileSystemEventHandler):
    def __init__(self, on_change: Callable[[str], None], suffix: str):
        self.on_change = on_change
        self.suffix = suffix

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        for path in (event.src_path, getattr(event, "dest_path", "")):
            if path and str(path).endswith(self.suffix):
                self.on_change(Path(str(path)).name)
                return


class TemplateWatcher:
    """Calls `on_change(file name)` whenever a file ending in `suffix` under `directory` is written, moved or removed."""

    def __init__(self, directory: Path, on_change: Callable[[str], None], suffix: str = ".j2"):
        self.directory = directory
        self.observer = Observer()
        self.observer.schedule(_TemplateEvents(on_change, suffix), str(directory), recursive=True)

    def start(self) -> "TemplateWatcher":
        self.observer.daemon = True
        self.observer.start()
        return self

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=5)
