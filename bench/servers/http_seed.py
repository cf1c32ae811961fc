"""Scenario D's server: the seeds' HTTP/JSON callback, FastAPI on uvicorn.

The plugin side of the neko design: ``POST /tool_invoke`` with the callback
body, answered with ``{"output": ..., "is_error": false}``.
``python -m bench.servers.http_seed``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from bench.payload import CALLBACK_REPLY
from bench.servers._uvicorn import serve


class CallbackRequest(BaseModel):
    name: str
    arguments: dict[str, Any]
    call_id: str = ""
    raw_arguments: str = ""


app = FastAPI()


@app.post("/tool_invoke")
async def tool_invoke(body: CallbackRequest) -> dict[str, Any]:
    return CALLBACK_REPLY


if __name__ == "__main__":
    asyncio.run(serve(app))
