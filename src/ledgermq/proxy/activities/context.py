"""What an activity needs to know about the call beyond the request message."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

CLIENT_ID = "x-mq-client-id"
LANGUAGE = "x-mq-language"
NAMESPACE = "x-mq-namespace"
REQUEST_ID = "x-mq-request-id"


@dataclass(frozen=True, slots=True)
class CallContext:
    client_id: str = ""
    language: str = ""
    namespace: str = ""
    request_id: str = ""
    peer: str = ""
    # Seconds left before the client gives up, if it set a deadline.
    time_remaining: float | None = None

    @classmethod
    def from_metadata(
        cls,
        metadata: Iterable[tuple[str, str | bytes]] | None,
        *,
        peer: str = "",
        time_remaining: float | None = None,
    ) -> CallContext:
        # `authorization` is read by nobody: ACL is off, so it is accepted and ignored.
        values: dict[str, str] = {}
        for key, value in metadata or ():
            if isinstance(value, bytes):
                continue
            values[key.lower()] = value
        return cls(
            client_id=values.get(CLIENT_ID, ""),
            language=values.get(LANGUAGE, ""),
            namespace=values.get(NAMESPACE, ""),
            request_id=values.get(REQUEST_ID, ""),
            peer=peer,
            time_remaining=time_remaining,
        )
