"""JSON responses with money as numbers written with two decimals (the report's encoding)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from cafe_etl.analytics import jsonout
from cafe_etl.errors import redact


class MoneyJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return jsonout.dumps(content, indent=None).encode("utf-8")


def error(status: int, message: str, headers: dict[str, str] | None = None) -> MoneyJSON:
    return MoneyJSON({"error": redact(message)}, status_code=status, headers=headers)
