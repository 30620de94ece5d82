"""A JSON metadata file under <storePathRootDir>/config, written through the Disk door.

RocketMQ keeps a `.bak` of the previous version; the atomic replace makes that
unnecessary for crash safety, but we still fall back to a `.bak` an operator copied from
a real RocketMQ store.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from ledgermq.storage.disk import Disk

log = logging.getLogger(__name__)


@dataclass(slots=True)
class JsonConfigFile:
    disk: Disk
    path: str

    def load(self) -> dict[str, Any] | None:
        for candidate in (self.path, self.path + ".bak"):
            raw = self.disk.read_file(candidate)
            if raw is None or not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except ValueError as exc:
                # A corrupt file must stop startup loudly rather than lose offsets silently.
                raise ValueError(f"{candidate} is not valid JSON: {exc}") from None
            if isinstance(obj, dict):
                return obj
            raise ValueError(f"{candidate} does not hold a JSON object")
        return None

    def save(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False).encode()
        self.disk.makedirs(os.path.dirname(self.path))
        self.disk.replace_file(self.path, data)
