"""What every domain event is: a frozen dataclass of the context that owns it, named by its
``TYPE`` (``payment.succeeded``), with a schema ``VERSION`` and the id of its aggregate (the
bus's ordering key). Amounts are integers of minor units. ``paygrid.bus.codec`` turns them into
the one wire form."""

from __future__ import annotations

from typing import ClassVar, Protocol


class DomainEvent(Protocol):
    TYPE: ClassVar[str]
    VERSION: ClassVar[int]

    @property
    def aggregate_id(self) -> str: ...
