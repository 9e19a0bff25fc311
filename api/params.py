"""The query parameters every resource family takes, declared once so they read and document alike."""

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Query

Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]
Cursor = Annotated[str | None, Query(max_length=200, description="from the previous page's next_cursor")]
From = Annotated[datetime | None, Query(alias="from", description="ISO 8601; naive times are site-local")]
To = Annotated[datetime | None, Query(alias="to", description="ISO 8601, exclusive; default now")]
OrgQ = Annotated[str | None, Query(max_length=300, description="only this org and below (within your own)")]
Crs = Literal["wgs84", "gcj02"]
