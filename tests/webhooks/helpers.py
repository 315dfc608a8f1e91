"""Helpers of the webhook tests: create a webhook, submit a run, the README's receiver example."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from tests.helpers import wait_status

WEBHOOKS = "/api/v1/webhooks"
PY = sys.executable
README = Path(__file__).resolve().parents[2] / "README.md"


async def create_webhook(client, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    response = await client.post(WEBHOOKS, json=body)
    assert response.status_code == 201, response.text
    return response.json()["webhook"], response.json()["secret"]


async def finished_run(client, code: str = "pass", **fields: Any) -> dict[str, Any]:
    """Submit a Python run of `code` and return it once it is terminal."""
    response = await client.post("/api/v1/runs", json={"command": [PY, "-c", code], **fields})
    assert response.status_code == 201, response.text
    return await wait_status(client, response.json()["run"]["id"])


async def deliveries(client, webhook_id: int, **params: Any) -> list[dict[str, Any]]:
    response = await client.get(f"{WEBHOOKS}/{webhook_id}/deliveries", params=params)
    assert response.status_code == 200, response.text
    return response.json()["deliveries"]


def readme_verify():
    """The `verify` function of the README's receiver example, as a user would copy it."""
    text = README.read_text()
    section = text[text.index("## Webhooks"):]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None and "def verify" in block.group(1)
    namespace: dict[str, Any] = {}
    exec(block.group(1), namespace)  # noqa: S102 (the README's own example, run as documented)
    return namespace["verify"]


async def wait_deliveries(client, webhook_id: int, done) -> list[dict[str, Any]]:
    """Poll the webhook's deliveries until `done(deliveries)` (the caller sets the deadline)."""
    import trio

    while True:
        found = await deliveries(client, webhook_id)
        if done(found):
            return found
        await trio.sleep(0.02)
